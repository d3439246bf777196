"""Azure ML v1's datasets against a trainhub server: ``Dataset.File.from_files``,
``Dataset.Tabular.from_delimited_files``, ``register``, ``Dataset.get_by_name``, a run's
``dataset.as_named_input('x').as_mount()`` / ``.as_download()``, and ``OutputFileDatasetConfig``.

A dataset is a record on the server over paths of one datastore (``(ds, 'folder/**')``, a file, a
glob). It gets an id when it is created (``validate=True``, the default: the server checks its
paths match files) or first used; registering gives it a name and a version. In a run, a dataset
is one folder: its files below their common folder. On this machine, a file dataset's files
download with ``download()``; a tabular dataset's files are read into a pandas DataFrame with
``to_pandas_dataframe()`` (pandas installed here).
"""

from __future__ import annotations

import builtins
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from trainhub.sdk.datastore import DEFAULT, Datastore
from trainhub.sdk.errors import RunNotFoundError, TrainhubError
from trainhub.sdk.transfers import Transfer
from trainhub.sdk.workspace import Workspace

if TYPE_CHECKING:
    import pandas

PREFIX = "/api/v1/datasets"
# A tabular dataset's encodings, as pandas names them.
ENCODINGS = {
    "utf8": "utf-8",
    "iso88591": "iso-8859-1",
    "latin1": "latin-1",
    "ascii": "ascii",
    "utf16": "utf-16",
    "utf32": "utf-32",
    "utf8bom": "utf-8-sig",
    "windows1252": "cp1252",
}


class DatasetNotFoundError(RunNotFoundError):
    """404: no dataset of that name, version or id on the server."""


class DataPath:
    """Azure ML's ``DataPath(datastore, path_on_datastore)``: a path in a datastore."""

    def __init__(self, datastore: Datastore, path_on_datastore: str | None = None) -> None:
        self.datastore = datastore
        self.path_on_datastore = path_on_datastore or ""

    def __repr__(self) -> str:
        return f"DataPath({self.datastore.name!r}, {self.path_on_datastore!r})"


def _sources(path: Any) -> tuple[Datastore, builtins.list[str]]:
    """``(ds, 'p')``, ``DataPath``, or a list of them (one datastore) -> (datastore, paths)."""
    items = path if isinstance(path, builtins.list) else [path]
    found: builtins.list[tuple[Datastore, str]] = []
    for item in items:
        if isinstance(item, DataPath):
            found.append((item.datastore, item.path_on_datastore))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Datastore):
            found.append((item[0], str(item[1] or "")))
        elif isinstance(item, str):
            raise TrainhubError(
                f"path {item!r}: trainhub reads datasets from its datastores, not URLs or local "
                "paths; upload the files to a datastore and give (datastore, 'path')"
            )
        else:
            raise TrainhubError(
                f"path {item!r}: give (datastore, 'path/**'), a DataPath, or a list of them"
            )
    if not found:
        raise TrainhubError("path: a dataset needs at least one (datastore, 'path')")
    names = {ds.name.lower() for ds, _ in found}
    if len(names) > 1:
        raise TrainhubError(f"path: a dataset's paths are in one datastore (got {sorted(names)})")
    return found[0][0], [p for _, p in found]


D = TypeVar("D", bound="AbstractDataset")


class AbstractDataset:
    """What file and tabular datasets share: the record, registering, and using it in a run."""

    kind = ""

    def __init__(
        self,
        datastore: Datastore,
        paths: builtins.list[str],
        options: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self._datastore = datastore
        self.workspace: Workspace = datastore.workspace
        self._paths = paths
        self._options = dict(options or {})
        self._details: dict[str, Any] = details or {}

    # The record -----------------------------------------------------------------------------------
    @property
    def id(self) -> str | None:
        return self._details.get("id")

    @property
    def name(self) -> str | None:
        return self._details.get("name")

    @property
    def version(self) -> int | None:
        return self._details.get("version")

    @property
    def description(self) -> str | None:
        return self._details.get("description")

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._details.get("tags") or {})

    @property
    def data_changed_time(self) -> str | None:
        return self._details.get("createdUtc")

    def _create(self, **extra: Any) -> dict[str, Any]:
        body = {
            "kind": self.kind,
            "datastore": self._datastore.name,
            "paths": self._paths,
            "options": self._options or None,
            **extra,
        }
        return dict(self.workspace.client.json("POST", PREFIX, json=body))

    def _saved_id(self) -> str:
        """The dataset's id, saving it on the server first (unnamed) if it has none yet."""
        if self.id is None:
            self._details = self._create()
        assert self.id is not None
        return self.id

    def register(
        self: D,
        workspace: Workspace,
        name: str,
        description: str | None = None,
        tags: dict[str, Any] | None = None,
        create_new_version: bool = False,
    ) -> D:
        """Register as ``name``: its first version, or its next one with ``create_new_version``
        (registering the same data again answers the version that has it)."""
        details = self._create(
            name=name,
            description=description,
            tags=tags,
            createNewVersion=create_new_version,
        )
        return type(self)(self._datastore, self._paths, self._options, details)

    # In a run -------------------------------------------------------------------------------------
    def as_named_input(self, name: str) -> DatasetConsumptionConfig:
        """The dataset as the run's input ``name``: ``run.input_datasets[name]`` in the script.
        Given as it is, the script's argument is the dataset's id; ``.as_mount()`` and
        ``.as_download()`` make it the dataset's folder in the run."""
        return DatasetConsumptionConfig(name, self)

    def as_mount(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        return self.as_named_input(_input_name()).as_mount(path_on_compute)

    def as_download(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        return self.as_named_input(_input_name()).as_download(path_on_compute)

    # On this machine ------------------------------------------------------------------------------
    def _files(self) -> dict[str, Any]:
        url = f"{PREFIX}/id/{quote(self._saved_id(), safe='')}/files"
        return dict(self.workspace.client.json("GET", url))

    def _fetch(self, target: Path, overwrite: bool, show_progress: bool) -> builtins.list[str]:
        listed = self._files()
        Transfer(self.workspace.client, listed["datastore"]).receive(
            listed["files"], target, overwrite, show_progress, base=listed["base"]
        )
        lead = f"{listed['base']}/" if listed["base"] else ""
        return [str(target / f["path"][len(lead) :]) for f in listed["files"]]

    def __repr__(self) -> str:
        body: dict[str, Any] = {
            "source": [f"('{self._datastore.name}', '{p}')" for p in self._paths],
            "definition": [self.kind, *(f"{k}={v}" for k, v in sorted(self._options.items()))],
        }
        if self.name:
            body["registration"] = {"id": self.id, "name": self.name, "version": self.version}
        return f"{type(self).__name__}\n{json.dumps(body, indent=2)}"


class FileDataset(AbstractDataset):
    """Azure ML's ``FileDataset``: files of a datastore, kept below their common folder."""

    kind = "file"

    def to_path(self) -> builtins.list[str]:
        """The dataset's files as paths below its folder (``/a.csv``), as Azure ML listed them."""
        listed = self._files()
        lead = f"{listed['base']}/" if listed["base"] else ""
        return ["/" + f["path"][len(lead) :] for f in listed["files"]]

    def download(
        self,
        target_path: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> builtins.list[str]:
        """The dataset's files into ``target_path`` (a new temporary folder without one), below
        their common folder; answers their local paths. A local file with other bytes is refused
        unless ``overwrite``."""
        target = Path(target_path) if target_path else Path(tempfile.mkdtemp(prefix="dataset-"))
        return self._fetch(target.absolute(), overwrite, show_progress)

    def mount(self, *args: Any, **kwargs: Any) -> Any:
        raise TrainhubError(
            "FileDataset.mount() on this machine is not supported by trainhub: use download(), "
            "or as_named_input('x').as_mount() to mount it in a run"
        )


class TabularDataset(AbstractDataset):
    """Azure ML's ``TabularDataset``: delimited files read as one table."""

    kind = "tabular"

    def to_pandas_dataframe(self, on_error: str = "null") -> pandas.DataFrame:
        """The files, fetched to a temporary folder and read with pandas, one table."""
        pd = _pandas()
        with tempfile.TemporaryDirectory(prefix="dataset-") as folder:
            local = self._fetch(Path(folder), overwrite=False, show_progress=False)
            frames = [read_table(pd, path, self._options) for path in sorted(local)]
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True)


def read_table(pd: Any, path: str, options: dict[str, Any]) -> Any:
    """One delimited file as a DataFrame, with a tabular dataset's options."""
    return pd.read_csv(
        path,
        sep=options.get("separator", ","),
        header=0 if options.get("header", True) else None,
        encoding=ENCODINGS.get(str(options.get("encoding", "utf8")), "utf-8"),
    )


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise TrainhubError(
            "to_pandas_dataframe() needs pandas on this machine: pip install pandas"
        ) from None
    return pandas


def _input_name() -> str:
    return "input_" + uuid.uuid4().hex[:8]


class DatasetConsumptionConfig:
    """A dataset as a run's named input: ``direct`` (the script's argument is its id; the script
    reads it with ``run.input_datasets[name]``), ``mount`` or ``download`` (the argument is its
    folder in the run)."""

    def __init__(
        self,
        name: str,
        dataset: AbstractDataset,
        mode: str = "direct",
        path_on_compute: str | None = None,
    ) -> None:
        self.name = name
        self.dataset = dataset
        self.mode = mode
        self.path_on_compute = path_on_compute

    def as_mount(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        return DatasetConsumptionConfig(self.name, self.dataset, "mount", path_on_compute)

    def as_download(
        self, path_on_compute: str | None = None, overwrite: bool = False
    ) -> DatasetConsumptionConfig:
        return DatasetConsumptionConfig(self.name, self.dataset, "download", path_on_compute)

    def to_spec(self) -> dict[str, Any]:
        return {
            "$data_reference": {
                "name": self.name,
                "mode": self.mode,
                "path_on_compute": self.path_on_compute,
                "dataset": {"id": self.dataset._saved_id()},
            }
        }

    def __repr__(self) -> str:
        return f"DatasetConsumptionConfig(name={self.name!r}, mode={self.mode!r})"


class OutputFileDatasetConfig:
    """A folder the run writes (its path in the run is the script's argument) that goes into
    ``destination`` — ``(datastore, 'path')``; ``{run-id}`` and ``{output-name}`` are filled in —
    when the run ends, whatever its end. The default destination is the workspace's default
    datastore's ``dataset/{run-id}/{output-name}``. ``register_on_complete(name)`` registers the
    folder as a file dataset's next version then. ``as_mount()`` is the same as ``as_upload()``
    here: the files are copied when the run ends, not while it writes them."""

    def __init__(
        self,
        name: str | None = None,
        destination: tuple[Datastore, str] | None = None,
        source: str | None = None,
    ) -> None:
        self.name = name or "output_" + uuid.uuid4().hex[:8]
        self.destination = destination
        self.source = source
        self.overwrite = False
        self.registration: str | None = None

    def as_upload(
        self, overwrite: bool = False, source_globs: builtins.list[str] | None = None
    ) -> OutputFileDatasetConfig:
        if source_globs:
            raise TrainhubError(
                "as_upload(source_globs=...) is not supported by trainhub: the whole folder goes"
            )
        self.overwrite = overwrite
        return self

    def as_mount(self, disable_metadata_cache: bool = False) -> OutputFileDatasetConfig:
        return self

    def register_on_complete(
        self, name: str, description: str | None = None, tags: dict[str, str] | None = None
    ) -> OutputFileDatasetConfig:
        self.registration = name
        return self

    def to_spec(self) -> dict[str, Any]:
        if self.destination is None:
            datastore, path = DEFAULT, "dataset/{run-id}/{output-name}"
        else:
            store, path = self.destination
            datastore = store.name if isinstance(store, Datastore) else str(store)
        return {
            "$data_reference": {
                "datastore": datastore,
                "path": path or "",
                "mode": "upload",
                "path_on_compute": self.source,
                "name": self.name,
                "overwrite": self.overwrite,
                "register_as": self.registration,
            }
        }

    def __repr__(self) -> str:
        return f"OutputFileDatasetConfig(name={self.name!r})"


# Finding ----------------------------------------------------------------------------------------
def _from_details(workspace: Workspace, details: dict[str, Any]) -> AbstractDataset:
    datastore = Datastore(workspace, details["datastore"])
    kind = TabularDataset if details["kind"] == "tabular" else FileDataset
    return kind(datastore, list(details["paths"]), details.get("options"), details)


def _get(workspace: Workspace, url: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    try:
        return dict(workspace.client.json("GET", url, params=params or {}))
    except RunNotFoundError as exc:
        raise DatasetNotFoundError(exc.status, exc.message, exc.field) from None


class _FileFactory:
    @staticmethod
    def from_files(path: Any, validate: bool = True, **kwargs: Any) -> FileDataset:
        """A file dataset over ``path``: ``(datastore, 'folder/**')``, a file, a folder, a
        glob, a ``DataPath`` or a list of them in one datastore."""
        _refuse_unknown("Dataset.File.from_files", kwargs)
        datastore, paths = _sources(path)
        dataset = FileDataset(datastore, paths)
        if validate:
            dataset._saved_id()
        return dataset


class _TabularFactory:
    @staticmethod
    def from_delimited_files(
        path: Any,
        validate: bool = True,
        include_path: bool = False,
        infer_column_types: bool = True,
        set_column_types: dict[str, Any] | None = None,
        separator: str = ",",
        header: bool = True,
        encoding: str = "utf8",
        **kwargs: Any,
    ) -> TabularDataset:
        """A tabular dataset over delimited files; column types are pandas' own inference."""
        _refuse_unknown("Dataset.Tabular.from_delimited_files", kwargs)
        if include_path or set_column_types:
            raise TrainhubError(
                "include_path and set_column_types are not supported by trainhub: convert the "
                "DataFrame's columns after to_pandas_dataframe()"
            )
        if not isinstance(header, bool):
            header = str(getattr(header, "name", header)).upper() != "NO_HEADERS"
        datastore, paths = _sources(path)
        options = {"separator": separator, "header": header, "encoding": encoding}
        dataset = TabularDataset(datastore, paths, options)
        if validate:
            dataset._saved_id()
        return dataset


class Dataset:
    """``Dataset.File.from_files(...)``, ``Dataset.Tabular.from_delimited_files(...)``,
    ``Dataset.get_by_name(ws, name, version='latest')``, ``Dataset.get_by_id(ws, id)``,
    ``Dataset.get_all(ws)``."""

    File = _FileFactory
    Tabular = _TabularFactory

    @staticmethod
    def get_by_name(
        workspace: Workspace, name: str, version: int | str = "latest", **kwargs: Any
    ) -> AbstractDataset:
        params = {} if version == "latest" else {"version": int(version)}
        details = _get(workspace, f"{PREFIX}/{quote(name, safe='')}", params)
        return _from_details(workspace, details)

    @staticmethod
    def get_by_id(workspace: Workspace, id: str, **kwargs: Any) -> AbstractDataset:  # noqa: A002
        details = _get(workspace, f"{PREFIX}/id/{quote(id, safe='')}")
        return _from_details(workspace, details)

    @staticmethod
    def get_all(workspace: Workspace) -> dict[str, AbstractDataset]:
        """The registered datasets (their latest versions) by name."""
        found = workspace.client.json("GET", PREFIX)["datasets"]
        return {d["name"]: _from_details(workspace, d) for d in found}


def _refuse_unknown(what: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise TrainhubError(f"{what}: {', '.join(sorted(kwargs))} not supported by trainhub")
