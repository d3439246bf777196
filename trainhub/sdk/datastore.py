"""Azure ML's ``Datastore`` and ``DataReference``, against a trainhub server.

``ds = ws.get_default_datastore()`` (``workspaceblobstore``, a folder on the server), or
``Datastore.get(ws, 'name')``. ``ds.upload(...)``/``ds.download(...)`` move files in and out of a
``server`` datastore: each file with its SHA-256, skipped when the same bytes are already there,
resumed where a broken transfer stopped, checked before it appears. ``ds.as_mount()``,
``ds.path('sub/dir').as_download()``... are references a run resolves into paths: a value in an
Estimator's ``script_params`` or an element of its ``inputs``; ``str(ref)`` is Azure ML's
``$AZUREML_DATAREFERENCE_<name>``. The transfers themselves are in :mod:`trainhub.sdk.transfers`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

# DatastoreError is imported from here too (trainhub.sdk).
from trainhub.sdk.transfers import DatastoreError as DatastoreError
from trainhub.sdk.transfers import Transfer, TransferSummary, under_root, walk
from trainhub.sdk.workspace import Workspace

DEFAULT = "workspaceblobstore"
MODES = ("mount", "download", "upload")


# References --------------------------------------------------------------------------------------
def _is_root(path: str | None) -> bool:
    return path is None or path in ("", "/", ".", "./")


class DataReference:
    """Azure ML's ``DataReference``: a path in a datastore and how a run gets it (``mount``: read
    only, ``download``: a copy, ``upload``: a folder the run writes that goes back into the
    datastore when it ends). Without a name, a reference to the datastore's root is named after
    the datastore and one to a sub-path gets a random one, as in Azure ML."""

    def __init__(
        self,
        datastore: Datastore,
        data_reference_name: str | None = None,
        path_on_datastore: str | None = None,
        mode: str = "mount",
        path_on_compute: str | None = None,
        overwrite: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"Invalid mode {mode!r}: one of {', '.join(MODES)}")
        self.datastore = datastore
        self.path_on_datastore = path_on_datastore
        self.mode = mode
        self.path_on_compute = path_on_compute
        self.overwrite = overwrite
        if data_reference_name:
            self.data_reference_name = data_reference_name
        elif _is_root(path_on_datastore):
            self.data_reference_name = datastore.name
        else:
            self.data_reference_name = uuid.uuid4().hex

    def path(
        self, path: str | None = None, data_reference_name: str | None = None
    ) -> DataReference:
        """A reference to ``path`` under this one."""
        if _is_root(path):
            if data_reference_name:
                return DataReference(self.datastore, data_reference_name, self.path_on_datastore)
            return self
        joined = (
            path
            if _is_root(self.path_on_datastore)
            else f"{str(self.path_on_datastore).rstrip('/')}/{path}"
        )
        return DataReference(self.datastore, data_reference_name, joined)

    def as_mount(self) -> DataReference:
        return self._clone(mode="mount")

    def as_download(
        self, path_on_compute: str | None = None, overwrite: bool = False
    ) -> DataReference:
        return self._clone(mode="download", path_on_compute=path_on_compute, overwrite=overwrite)

    def as_upload(
        self, path_on_compute: str | None = None, overwrite: bool = False
    ) -> DataReference:
        return self._clone(mode="upload", path_on_compute=path_on_compute, overwrite=overwrite)

    def to_spec(self) -> dict[str, Any]:
        """The wire format of a reference in an Estimator's ``script_params`` or ``inputs``."""
        return {
            "$data_reference": {
                "datastore": self.datastore.name,
                "path": _normal(self.path_on_datastore),
                "mode": self.mode,
                "path_on_compute": self.path_on_compute,
                "name": self.data_reference_name,
                "overwrite": self.overwrite,
            }
        }

    to_config = to_spec  # Azure ML's name for the run configuration's form of a reference

    def _clone(self, **changes: Any) -> DataReference:
        values: dict[str, Any] = {
            "data_reference_name": self.data_reference_name,
            "path_on_datastore": self.path_on_datastore,
            "mode": self.mode,
            "path_on_compute": self.path_on_compute,
            "overwrite": self.overwrite,
        }
        values.update(changes)
        return DataReference(self.datastore, **values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataReference) and self.to_spec() == other.to_spec()

    def __hash__(self) -> int:
        return hash(str(self.to_spec()))

    def __str__(self) -> str:
        return f"$AZUREML_DATAREFERENCE_{self.data_reference_name}"

    __repr__ = __str__


def _normal(path: str | None) -> str:
    """A path in a datastore as the server keeps it (``./bar/`` is ``bar``; the root is ``""``)."""
    if _is_root(path):
        return ""
    parts = [p for p in str(path).replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def _target(path: str | None, what: str) -> str:
    """A path the SDK sends files to: refused here when it is absolute or climbs out."""
    if path is not None and (path.startswith(("/", "\\")) or os.path.isabs(path)):
        raise DatastoreError(f"{what} '{path}' is absolute: a path in a datastore is relative")
    clean = _normal(path)
    if ".." in clean.split("/"):
        raise DatastoreError(f"{what} '{path}' climbs out of the datastore ('..')")
    return clean


# Datastores --------------------------------------------------------------------------------------
class Datastore:
    """Azure ML's ``Datastore``: ``Datastore(ws, 'name')``, ``Datastore.get(ws, 'name')``,
    ``Datastore.get_default(ws)``; admins register one with :meth:`register_server` (a folder on
    the server) or :meth:`register_shared` (a folder the nodes already have)."""

    name: str
    kind: str
    paths: dict[str, str]
    read_only: bool
    description: str | None
    is_default: bool

    def __init__(self, workspace: Workspace, name: str | None = None) -> None:
        details = workspace.client.json(
            "GET", f"/api/v1/datastores/{quote(name or DEFAULT, safe='')}"
        )
        self._load(workspace, details)

    @classmethod
    def _from_details(cls, workspace: Workspace, details: dict[str, Any]) -> Datastore:
        ds = cls.__new__(cls)
        ds._load(workspace, details)
        return ds

    def _load(self, workspace: Workspace, details: dict[str, Any]) -> None:
        self.workspace = workspace
        self.name = details["name"]
        self.kind = details["kind"]
        self.paths = dict(details.get("paths") or {})
        self.read_only = bool(details.get("readOnly"))
        self.description = details.get("description")
        self.is_default = bool(details.get("isDefault"))

    @staticmethod
    def get(workspace: Workspace, datastore_name: str) -> Datastore:
        return Datastore(workspace, datastore_name)

    @staticmethod
    def get_default(workspace: Workspace) -> Datastore:
        return Datastore(workspace, DEFAULT)

    @staticmethod
    def register_server(
        workspace: Workspace,
        datastore_name: str,
        *,
        read_only: bool = False,
        description: str | None = None,
    ) -> Datastore:
        """(Admins) A datastore whose files live on the server; nodes get a cached copy."""
        return Datastore._register(workspace, datastore_name, "server", {}, read_only, description)

    @staticmethod
    def register_shared(
        workspace: Workspace,
        datastore_name: str,
        path: str | None = None,
        *,
        node_paths: dict[str, str] | None = None,
        read_only: bool = False,
        description: str | None = None,
    ) -> Datastore:
        """(Admins) A folder every node already has (an NFS mount) at ``path``; ``node_paths``
        gives the nodes where it is elsewhere (``{"n2": "/other/path"}``)."""
        paths = {**({"*": path} if path else {}), **(node_paths or {})}
        return Datastore._register(
            workspace, datastore_name, "shared", paths, read_only, description
        )

    @staticmethod
    def _register(
        workspace: Workspace,
        name: str,
        kind: str,
        paths: dict[str, str],
        read_only: bool,
        description: str | None,
    ) -> Datastore:
        body = {
            "name": name,
            "kind": kind,
            "paths": paths,
            "readOnly": read_only,
            "description": description,
        }
        details = workspace.client.json("POST", "/api/v1/datastores", json=body)
        return Datastore._from_details(workspace, details)

    def unregister(self) -> None:
        """(Admins) Forget this datastore; a server datastore's files stay on the server."""
        self.workspace.client.json("DELETE", f"/api/v1/datastores/{quote(self.name)}")

    # References -------------------------------------------------------------------------------
    def path(
        self, path: str | None = None, data_reference_name: str | None = None
    ) -> DataReference:
        return DataReference(self, data_reference_name, path)

    def as_mount(self) -> DataReference:
        return DataReference(self).as_mount()

    def as_download(
        self, path_on_compute: str | None = None, overwrite: bool = False
    ) -> DataReference:
        return DataReference(self).as_download(path_on_compute, overwrite)

    def as_upload(
        self, path_on_compute: str | None = None, overwrite: bool = False
    ) -> DataReference:
        return DataReference(self).as_upload(path_on_compute, overwrite)

    # Files --------------------------------------------------------------------------------------
    def list_files(self, prefix: str | None = None) -> list[dict[str, Any]]:
        """Files whose path starts with ``prefix``: ``path``, ``size``, ``sha256``, ``modifiedUtc``."""
        found: list[dict[str, Any]] = self.workspace.client.json(
            "GET", f"/api/v1/datastores/{quote(self.name)}/files", params={"prefix": prefix or ""}
        )["files"]
        return found

    def upload(
        self,
        src_dir: str | os.PathLike[str],
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> DataReference:
        """Every file under ``src_dir`` to ``target_path``, keeping the folder's layout. A file
        already there with the same bytes is skipped; one with other bytes is refused unless
        ``overwrite`` (nothing is sent then)."""
        self.upload_tree(src_dir, target_path, overwrite, show_progress)
        return self.path(target_path)

    def upload_files(
        self,
        files: Iterable[str | os.PathLike[str]],
        relative_root: str | os.PathLike[str] | None = None,
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> DataReference:
        """``files`` to ``target_path``, each at its path relative to ``relative_root`` (by
        default the folder they all share, as in Azure ML)."""
        self.upload_list(files, relative_root, target_path, overwrite, show_progress)
        return self.path(target_path)

    def upload_list(
        self,
        files: Iterable[str | os.PathLike[str]],
        relative_root: str | os.PathLike[str] | None = None,
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> TransferSummary:
        """:meth:`upload_files`, answering what it did (the CLI prints it)."""
        paths = [Path(f).absolute() for f in files]
        target = _target(target_path, "target_path")
        if not paths:
            return TransferSummary()
        existing = self._existing(target)
        return self._transfer().send(
            under_root(paths, relative_root), target, existing, overwrite, show_progress
        )

    def upload_tree(
        self,
        src_dir: str | os.PathLike[str],
        target_path: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> TransferSummary:
        """:meth:`upload`, answering what it did (the CLI prints it)."""
        target = _target(target_path, "target_path")
        existing = self._existing(target)  # first: the server refuses a shared datastore here
        return self._transfer().send(
            walk(Path(src_dir)), target, existing, overwrite, show_progress
        )

    def download(
        self,
        target_path: str | os.PathLike[str],
        prefix: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> int:
        """The files whose path starts with ``prefix`` into ``target_path`` (at their path in the
        datastore); how many were fetched. A local file with the same bytes is left as it is;
        one with other bytes is refused unless ``overwrite`` (nothing is fetched then)."""
        return self.download_tree(target_path, prefix, overwrite, show_progress).done

    def download_tree(
        self,
        target_path: str | os.PathLike[str],
        prefix: str | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> TransferSummary:
        """:meth:`download`, answering what it did."""
        return self._transfer().receive(
            self.list_files(prefix), Path(target_path).absolute(), overwrite, show_progress
        )

    # Transfers ----------------------------------------------------------------------------------
    def _transfer(self) -> Transfer:
        return Transfer(self.workspace.client, self.name)

    def _existing(self, target: str) -> dict[str, str]:
        """The checksum of every file under ``target`` in the datastore, by path."""
        return {f["path"]: f["sha256"] for f in self.list_files(f"{target}/" if target else "")}

    def __repr__(self) -> str:
        return f"Datastore(name={self.name!r}, kind={self.kind!r})"


def all_datastores(workspace: Workspace) -> dict[str, Datastore]:
    """``ws.datastores``: every datastore by name."""
    found = workspace.client.json("GET", "/api/v1/datastores")["datastores"]
    return {d["name"]: Datastore._from_details(workspace, d) for d in found}
