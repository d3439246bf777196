"""Azure ML's ``Datastore`` and ``DataReference``, against a trainhub server.

``ds = ws.get_default_datastore()`` (``workspaceblobstore``, a folder on the server), or
``Datastore.get(ws, 'name')``. ``ds.upload(...)``/``ds.download(...)`` move files in and out of a
``server`` datastore: each file with its SHA-256, skipped when the same bytes are already there,
resumed where a broken transfer stopped, checked before it appears. ``ds.as_mount()``,
``ds.path('sub/dir').as_download()``... are references a run resolves into paths: a value in an
Estimator's ``script_params`` or an element of its ``inputs``; ``str(ref)`` is Azure ML's
``$AZUREML_DATAREFERENCE_<name>``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from threading import Lock
from typing import Any
from urllib.parse import quote

from rich.progress import Progress, TaskID

from trainhub.sdk.client import CHUNK, transfer_progress
from trainhub.sdk.errors import ServiceError, TrainhubError
from trainhub.sdk.workspace import Workspace

log = logging.getLogger("trainhub.sdk")

DEFAULT = "workspaceblobstore"
MODES = ("mount", "download", "upload")
RESUME_MIN = 1024 * 1024  # below this, a file is simply sent again rather than asked about
RETRIES = 3
WORKERS = 4
PARTIAL_SUFFIX = ".trainhub-partial"
MAX_LISTED = 10


class DatastoreError(TrainhubError):
    """A transfer refused on this side: a link out of the folder, files that differ, a bad path."""


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
@dataclass
class TransferSummary:
    """What a transfer did: files sent (or fetched), skipped as identical, resumed, bytes moved."""

    done: int = 0
    skipped: int = 0
    resumed: int = 0
    bytes: int = 0
    lock: Lock = field(default_factory=Lock, repr=False)

    def add(self, moved: int, resumed: bool) -> None:
        with self.lock:
            self.done += 1
            self.bytes += moved
            self.resumed += int(resumed)

    def public(self) -> dict[str, int]:
        return {
            "transferred": self.done,
            "skipped": self.skipped,
            "resumed": self.resumed,
            "bytes": self.bytes,
        }


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
        root = Path(relative_root).absolute() if relative_root else _common_folder(paths)
        chosen: list[tuple[Path, str]] = []
        for path in paths:
            if not path.is_file():
                raise DatastoreError(f"'{path}' is not a file")
            if not path.is_relative_to(root):
                raise DatastoreError(f"'{path}' is not under relative_root '{root}'")
            chosen.append((path, path.relative_to(root).as_posix()))
        return self._send(chosen, target, existing, overwrite, show_progress)

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
        return self._send(_walk(Path(src_dir)), target, existing, overwrite, show_progress)

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
        dest = Path(target_path).absolute()
        summary = TransferSummary()
        wanted: list[tuple[dict[str, Any], Path]] = []
        conflicts: list[str] = []
        for entry in self.list_files(prefix):
            local = (dest / entry["path"]).resolve()
            if not local.is_relative_to(dest.resolve()):
                raise DatastoreError(f"'{entry['path']}' would be written outside '{dest}'")
            if local.is_file():
                if _sha256(local) == entry["sha256"]:
                    summary.skipped += 1
                    continue
                if not overwrite:
                    conflicts.append(str(local))
                    continue
            wanted.append((entry, local))
        _refuse_conflicts(conflicts, "local files differ from the datastore's")
        total = sum(e["size"] for e, _ in wanted)
        with _progress(show_progress) as progress:
            task = progress.add_task(f"Downloading from {self.name}", total=total)
            with ThreadPoolExecutor(WORKERS) as pool:
                for moved, resumed in pool.map(
                    lambda item: self._fetch(item[0], item[1], progress, task), wanted
                ):
                    summary.add(moved, resumed)
        return summary

    # Transfers ----------------------------------------------------------------------------------
    def _url(self, route: str, path: str) -> str:
        # Every segment quoted, dots too: no client may fold '..' away before the server sees it.
        quoted = "/".join(
            quote(s, safe="") if s not in (".", "..") else s.replace(".", "%2E")
            for s in path.split("/")
        )
        return f"/api/v1/datastores/{quote(self.name)}/{route}/{quoted}"

    def _existing(self, target: str) -> dict[str, str]:
        """The checksum of every file under ``target`` in the datastore, by path."""
        return {f["path"]: f["sha256"] for f in self.list_files(f"{target}/" if target else "")}

    def _send(
        self,
        chosen: list[tuple[Path, str]],
        target: str,
        existing: dict[str, str],
        overwrite: bool,
        show_progress: bool,
    ) -> TransferSummary:
        summary = TransferSummary()
        wanted: list[tuple[Path, str, int, str]] = []
        conflicts: list[str] = []
        for local, relative in chosen:
            dest = f"{target}/{relative}" if target else relative
            digest = _sha256(local)
            if existing.get(dest) == digest:
                summary.skipped += 1
            elif dest in existing and not overwrite:
                conflicts.append(dest)
            else:
                wanted.append((local, dest, local.stat().st_size, digest))
        _refuse_conflicts(conflicts, f"files in datastore '{self.name}' have other content")
        with _progress(show_progress) as progress:
            task = progress.add_task(f"Uploading to {self.name}", total=sum(w[2] for w in wanted))
            with ThreadPoolExecutor(WORKERS) as pool:
                sends = [(*w, overwrite, progress, task, i == 0) for i, w in enumerate(wanted)]
                for moved, resumed in pool.map(lambda a: self._put(*a), sends):
                    summary.add(moved, resumed)
        log.info("datastore %s: %s", self.name, summary.public())
        return summary

    def _put(
        self,
        local: Path,
        dest: str,
        size: int,
        digest: str,
        overwrite: bool,
        progress: Progress,
        task: TaskID,
        ask_first: bool,
    ) -> tuple[int, bool]:
        """Send one file, first asking how much of it the server holds (from a broken earlier
        try); a connection that breaks is tried again from where it stopped. (bytes sent,
        resumed)."""
        client = self.workspace.client
        query = {"size": size, "sha256": digest}
        bar = _Bar(progress, task)
        sent = 0
        resumed = False
        for attempt in range(RETRIES + 1):
            offset = 0
            if ask_first or size >= RESUME_MIN or attempt:
                offset = client.json("GET", self._url("uploads", dest), params=query)["received"]
            if offset:
                resumed = True
                log.info("resuming %s at byte %d of %d", dest, offset, size)
            bar.at(offset)
            try:
                response = client.request(
                    "PUT",
                    self._url("files", dest),
                    params={**query, "offset": offset, "overwrite": str(overwrite).lower()},
                    content=_chunks(local, offset, bar),
                    headers={"Content-Type": "application/octet-stream"},
                )
            except ServiceError as exc:
                # 409: the server was still taking in what a broken try delivered; ask again.
                if exc.status != 409 or attempt == RETRIES:
                    raise
                time.sleep(0.5 * (attempt + 1))
                continue
            except TrainhubError:  # the connection broke: the server keeps what arrived
                if attempt == RETRIES:
                    raise
                time.sleep(0.5 * (attempt + 1))
                continue
            sent += size - offset
            if response.json().get("complete"):
                return sent, resumed
        raise DatastoreError(f"'{dest}' could not be uploaded in {RETRIES + 1} tries")

    def _fetch(
        self, entry: dict[str, Any], local: Path, progress: Progress, task: TaskID
    ) -> tuple[int, bool]:
        """Fetch one file into ``<local>.trainhub-partial``, resuming what is there (a byte
        range), check its SHA-256, then rename it into place. (bytes fetched, resumed)."""
        client = self.workspace.client
        size, digest = entry["size"], entry["sha256"]
        part = local.with_name(local.name + PARTIAL_SUFFIX)
        local.parent.mkdir(parents=True, exist_ok=True)
        part.touch()
        bar = _Bar(progress, task)
        fetched = 0
        resumed = False
        for attempt in range(RETRIES + 1):
            held = part.stat().st_size
            if held > size:
                part.write_bytes(b"")
                held = 0
            bar.at(held)
            if held == size:
                break
            resumed = resumed or held > 0
            headers = {"Range": f"bytes={held}-"} if held else {}
            try:
                with client.stream("GET", self._url("files", entry["path"]), headers=headers) as r:
                    if r.status_code != 206:
                        bar.at(0)
                    with part.open("ab" if r.status_code == 206 else "wb") as out:
                        for block in r.iter_bytes(CHUNK):
                            out.write(block)
                            fetched += len(block)
                            bar.advance(len(block))
                break
            except ServiceError:
                raise
            except TrainhubError:  # the connection broke: what arrived stays in the partial file
                if attempt == RETRIES:
                    raise
                time.sleep(0.5 * (attempt + 1))
        if _sha256(part) != digest:
            part.unlink()
            raise DatastoreError(
                f"'{entry['path']}' arrived with another SHA-256 than the datastore's: "
                "it was not kept, download again"
            )
        part.replace(local)
        return fetched, resumed

    def __repr__(self) -> str:
        return f"Datastore(name={self.name!r}, kind={self.kind!r})"


class _Bar:
    """One file's share of a transfer's progress bar, moved back when a try starts over."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task
        self._counted = 0

    def advance(self, done: int) -> None:
        self._counted += done
        self._progress.advance(self._task, done)

    def at(self, position: int) -> None:
        self.advance(position - self._counted)


def all_datastores(workspace: Workspace) -> dict[str, Datastore]:
    """``ws.datastores``: every datastore by name."""
    found = workspace.client.json("GET", "/api/v1/datastores")["datastores"]
    return {d["name"]: Datastore._from_details(workspace, d) for d in found}


def _chunks(local: Path, offset: int, bar: _Bar) -> Iterator[bytes]:
    with local.open("rb") as fh:
        fh.seek(offset)
        while block := fh.read(CHUNK):
            bar.advance(len(block))
            yield block


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _walk(root: Path) -> list[tuple[Path, str]]:
    """Every file under ``root`` with its path relative to it, sorted. A link to a file is sent as
    the file; a link that leads out of ``root`` is refused (nothing is read outside the folder
    asked for); links to folders are not entered."""
    base = root.resolve()
    if not base.is_dir():
        raise DatastoreError(f"src_dir '{root}' is not a folder")
    found: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(filenames):
            full = here / name
            relative = full.relative_to(base).as_posix()
            if full.is_symlink() and not full.resolve().is_relative_to(base):
                raise DatastoreError(
                    f"'{relative}' is a link to '{os.readlink(full)}', outside '{root}': "
                    "copy the file in or leave the link out"
                )
            if full.is_file():
                found.append((full, relative))
    return found


def _common_folder(paths: list[Path]) -> Path:
    return Path(os.path.commonpath([p.parent for p in paths]))


def _refuse_conflicts(conflicts: list[str], what: str) -> None:
    if not conflicts:
        return
    shown = ", ".join(conflicts[:MAX_LISTED])
    more = f" and {len(conflicts) - MAX_LISTED} more" if len(conflicts) > MAX_LISTED else ""
    raise DatastoreError(
        f"{len(conflicts)} {what}: {shown}{more}. Nothing was transferred; pass overwrite=True "
        "to replace them"
    )


def _progress(show: bool) -> Progress:
    return transfer_progress() if show else Progress(disable=True)
