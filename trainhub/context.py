"""``Run.get_context()`` inside a run: metrics, tags and files from the training script.

Standard library only: the launcher copies this file into every run's container (as part of a small
``trainhub`` package on ``PYTHONPATH``), so ``from trainhub import Run`` works there with nothing
installed. Records are appended to ``$TRAINHUB_CONTEXT_DIR/metrics.jsonl``; the launcher's sync carries
them to the server while the run goes, so the container needs no route to the server. Outside a run,
:func:`get_context` returns an offline run that keeps everything in memory and says so.

Child runs (``run.child_run()``) travel the same way: a record makes the child on the server, and the
child's own records carry its id (``"run"``); its files go under ``files/.trainhub-children/<id>/``,
which the server moves into the child's history.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import time
import uuid
from typing import Any

CONTEXT_DIR_ENV = "TRAINHUB_CONTEXT_DIR"
INPUT_DATASETS_ENV = "TRAINHUB_INPUT_DATASETS"
# A tabular dataset's encodings, as Python names them.
_ENCODINGS = {"utf8": "utf-8", "iso88591": "iso-8859-1", "utf8bom": "utf-8-sig", "utf16": "utf-16"}
_lock = threading.Lock()
_current: _BaseRun | None = None
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")  # the server's rule (Azure ML's)
_RUN_ID = _MODEL_NAME  # a run id a script may choose: the server's rule too
CHILD_FILES = ".trainhub-children"  # files of child runs, under the context's files/ folder


class _Experiment:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r})"


class PendingModel:
    """What ``register_model`` answers inside a run: the model as asked for. ``version`` is None
    (Azure ML answered a ``Model``): the server takes the next version once the run's outputs are
    stored at its end; ``Model(ws, name)`` on a client then finds it."""

    def __init__(
        self,
        name: str,
        path: str,
        tags: dict[str, Any] | None,
        properties: dict[str, Any] | None,
        description: str | None,
        run_id: str,
    ) -> None:
        self.name = name
        self.path = path
        self.version: int | None = None
        self.tags = dict(tags or {})
        self.properties = dict(properties or {})
        self.description = description
        self.run_id = run_id

    def request(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "tags": self.tags,
            "properties": self.properties,
            "description": self.description,
        }

    def __repr__(self) -> str:
        return f"PendingModel(name={self.name!r}, path={self.path!r}, version=None)"


class _BaseRun:
    """The logging surface of Azure ML's ``Run``, shared by the in-run and offline runs."""

    id: str
    number: int | None
    experiment: _Experiment

    def __init__(self) -> None:
        self._metrics: dict[str, list[Any]] = {}
        self._tags: dict[str, Any] = {}
        self._children: list[_ChildRun] = []
        self._ended: str | None = None  # a child run's end status, once ended

    # -- metrics ------------------------------------------------------------------------------
    def log(self, name: str, value: Any, description: str = "", step: int | None = None) -> None:
        """Log a scalar; repeated calls with the same name build a series."""
        self._record("scalar", name, _scalar(name, value), description, step)

    def log_list(self, name: str, value: list[Any], description: str = "") -> None:
        self._record("list", name, [_scalar(name, v) for v in value], description)

    def log_row(self, name: str, description: str | None = None, **kwargs: Any) -> None:
        self._record(
            "row", name, {k: _scalar(name, v) for k, v in kwargs.items()}, description or ""
        )

    def log_table(self, name: str, value: dict[str, list[Any]], description: str = "") -> None:
        table = {str(k): [_scalar(name, v) for v in col] for k, col in value.items()}
        self._record("table", name, table, description)

    def log_image(
        self, name: str, path: str | None = None, plot: Any = None, description: str = ""
    ) -> None:
        """Keep an image (a file at ``path``, or a matplotlib ``plot``) as ``images/<name>.png``."""
        target = f"images/{_safe_name(name)}.png"
        if plot is not None:
            tmp = os.path.join(self._scratch(), f"{uuid.uuid4().hex}.png")
            plot.savefig(tmp)
            path = tmp
        if path is None:
            raise ValueError("log_image needs path= or plot=")
        self._store_file(target, path)
        self._record("image", name, target, description)

    # -- tags and files -------------------------------------------------------------------------
    def tag(self, key: str, value: Any = None) -> None:
        self._check_open()
        self._tags[key] = "" if value is None else str(value)
        self._emit({"t": "tag", "key": key, "value": self._tags[key]})

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.tag(key, value)

    def get_tags(self) -> dict[str, Any]:
        return dict(self._tags)

    def upload_file(self, name: str, path_or_stream: Any) -> None:
        """Keep a file in the run's history under ``name`` (e.g. ``outputs/model.pkl``)."""
        self._store_file(_relative(name), path_or_stream)

    def register_model(
        self,
        model_name: str,
        model_path: str,
        tags: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        description: str | None = None,
        **kwargs: Any,
    ) -> PendingModel:
        """Ask the server to register ``model_path`` (``outputs/model.pkl``) as ``model_name``'s
        next version. The script cannot reach the server, and its ``./outputs`` are stored when it
        ends: the request is recorded now and carried out then, with this run as the model's
        lineage (the driver log says which version, or why not). Returns a :class:`PendingModel`."""
        if kwargs:
            raise TypeError(f"register_model: trainhub has no {', '.join(sorted(kwargs))}")
        if not isinstance(model_name, str) or not _MODEL_NAME.fullmatch(model_name):
            raise ValueError(
                f"{model_name!r} cannot be a model name: 1 to 255 letters, digits, '-', '_' or "
                "'.', starting with a letter or digit"
            )
        path = model_path.replace("\\", "/") if isinstance(model_path, str) else ""
        if not path.strip("./") or path.startswith("/") or ".." in path.split("/"):
            raise ValueError(
                f"model_path {model_path!r} must be a path in the run (outputs/model.pkl), "
                "relative, without '..'"
            )
        for field, value in (("tags", tags), ("properties", properties)):
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"register_model: {field} is a dict of strings")
        model = PendingModel(model_name, path, tags, properties, description, self.id)
        self._emit({"t": "model", **model.request(), "at": time.time()})
        return model

    def get_metrics(self, name: str | None = None) -> dict[str, Any]:
        items = self._metrics if name is None else {name: self._metrics.get(name, [])}
        return {k: v[0] if len(v) == 1 else list(v) for k, v in items.items() if v}

    @property
    def input_datasets(self) -> dict[str, Any]:
        """The run's datasets by input name: a mounted or downloaded one is its folder's path; one
        given as itself (``as_named_input('x')``) is an object with ``to_pandas_dataframe()``
        (tabular), ``to_path()`` and ``download()``, reading the files the run was given."""
        raw = os.environ.get(INPUT_DATASETS_ENV)
        if not raw:
            return {}
        found: dict[str, Any] = {}
        for name, info in json.loads(raw).items():
            found[name] = info["path"] if info["mode"] != "direct" else _InputDataset(info)
        return found

    def complete(self) -> None:
        """Azure ML scripts call this at the end; the run ends when the script does."""
        self.flush()

    def flush(self) -> None:
        pass

    # -- child runs -----------------------------------------------------------------------------
    def child_run(
        self, name: str | None = None, run_id: str | None = None, outputs: Any = None
    ) -> _ChildRun:
        """A child run of this one, ``Running`` at once. Its metrics and tags travel with this
        run's records; ``child.complete()`` (or ``fail()``, ``cancel()``) ends it, and one still
        open when this run ends ends with it, with its end status."""
        self._check_open()
        child_id = run_id if run_id is not None else f"{self.id}_{uuid.uuid4().hex[:8]}"
        if not isinstance(child_id, str) or not _RUN_ID.fullmatch(child_id):
            raise ValueError(
                f"run_id {child_id!r}: 1 to 255 letters, digits, '.', '_' or '-', starting with "
                "a letter or digit"
            )
        if name is not None and (not isinstance(name, str) or len(name) > 255):
            raise ValueError("a child run's name is a text of at most 255 characters")
        child = _ChildRun(self, child_id, name)
        self._children.append(child)
        self._emit({"t": "child", "id": child_id, "name": name, "at": time.time()})
        return child

    def create_children(
        self, count: int | None = None, tag_key: str | None = None, tag_values: Any = None
    ) -> list[_ChildRun]:
        """``count`` children, or one per value of ``tag_values`` tagged ``tag_key=value``."""
        if tag_key is not None and tag_values is not None:
            children = []
            for value in tag_values:
                child = self.child_run()
                child.tag(tag_key, value)
                children.append(child)
            return children
        if count is None:
            raise ValueError("create_children needs count, or tag_key and tag_values")
        return [self.child_run() for _ in range(count)]

    def get_children(self, recursive: bool = False, **filters: Any) -> list[_ChildRun]:
        """The children this script made (it cannot ask the server), in the order made."""
        if filters:
            raise TypeError(
                f"inside a run, get_children() has no filters ({', '.join(sorted(filters))})"
            )
        found: list[_ChildRun] = []
        for child in self._children:
            found.append(child)
            if recursive:
                found.extend(child.get_children(recursive=True))
        return found

    @property
    def parent(self) -> _BaseRun | None:
        return None

    def _check_open(self) -> None:
        if self._ended is not None:
            raise RuntimeError(
                f"Run {self.id} has ended ({self._ended}): it takes no more metrics, tags, files "
                "or child runs"
            )

    # -- plumbing -----------------------------------------------------------------------------
    def _record(
        self, kind: str, name: str, value: Any, description: str, step: int | None = None
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("a metric needs a non-empty name")
        self._check_open()
        self._metrics.setdefault(name, []).append(value)
        self._emit(
            {
                "t": "metric",
                "kind": kind,
                "name": name,
                "value": value,
                "description": description,
                "step": step,
                "at": time.time(),
            }
        )

    def _emit(self, record: dict[str, Any]) -> None:
        pass

    def _store_file(self, name: str, source: Any) -> None:
        pass

    def _scratch(self) -> str:
        import tempfile

        return tempfile.gettempdir()


class _InRun(_BaseRun):
    def __init__(self, run_id: str, experiment: str, number: int | None, directory: str) -> None:
        super().__init__()
        self.id = run_id
        self.number = number
        self.experiment = _Experiment(experiment)
        self._dir = directory
        os.makedirs(os.path.join(directory, "files"), exist_ok=True)
        self._file = open(os.path.join(directory, "metrics.jsonl"), "a", encoding="utf-8")  # noqa: SIM115

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, experiment={self.experiment.name!r})"

    def _emit(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=str)
        with _lock:
            self._file.write(line + "\n")
            self._file.flush()

    def _store_file(self, name: str, source: Any) -> None:
        dest = os.path.join(self._dir, "files", name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = dest + ".part"
        if isinstance(source, (str, os.PathLike)):
            shutil.copyfile(source, tmp)
        else:
            with open(tmp, "wb") as out:
                shutil.copyfileobj(source, out)
        os.replace(tmp, dest)

    def _scratch(self) -> str:
        return self._dir

    def flush(self) -> None:
        with _lock:
            self._file.flush()


class _OfflineRun(_BaseRun):
    """What ``get_context()`` returns outside a trainhub run: everything works, nothing is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.id = f"OfflineRun_{uuid.uuid4()}"
        self.number = None
        self.experiment = _Experiment("offline")
        self.files: dict[str, Any] = {}
        print(
            "trainhub: not inside a trainhub run; this is an offline run (metrics stay in memory)",
            file=sys.stderr,
        )

    def __repr__(self) -> str:
        return f"OfflineRun(id={self.id!r})"

    @property
    def offline(self) -> bool:
        return True

    def _store_file(self, name: str, source: Any) -> None:
        self.files[name] = source


class _ChildRun(_BaseRun):
    """A child run made inside a run (or an offline run): its records go with its creator's,
    carrying its id, so the server applies them to it."""

    def __init__(self, creator: _BaseRun, run_id: str, name: str | None) -> None:
        super().__init__()
        self.id = run_id
        self.number = None
        self.name = name
        self.experiment = creator.experiment
        self._creator = creator
        self._root: _BaseRun = creator._root if isinstance(creator, _ChildRun) else creator

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, parent={self._creator.id!r})"

    @property
    def parent(self) -> _BaseRun:
        return self._creator

    @property
    def status(self) -> str:
        return self._ended or "Running"

    def complete(self) -> None:
        self._end("Completed")

    def fail(self, error_details: Any = None, error_code: Any = None) -> None:
        self._end("Failed", None if error_details is None else str(error_details))

    def cancel(self) -> None:
        self._end("Canceled")

    def _end(self, status: str, error: str | None = None) -> None:
        if self._ended == status:
            return
        self._check_open()
        self._emit({"t": "end", "status": status, "error": error, "at": time.time()})
        self._ended = status

    def register_model(self, model_name: str, model_path: str, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"child run {self.id}: inside a script, register models on the script's own run "
            "(Run.get_context().register_model): its outputs are the ones stored when it ends"
        )

    def _emit(self, record: dict[str, Any]) -> None:
        self._creator._emit({**record, "run": record.get("run", self.id)})

    def _store_file(self, name: str, source: Any) -> None:
        self._check_open()
        self._root._store_file(f"{CHILD_FILES}/{self.id}/{name}", source)

    def _scratch(self) -> str:
        return self._root._scratch()


class _InputDataset:
    """A dataset given to the run as itself: its files are in the folder the server mounted."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.id: str = info["id"]
        self.name: str | None = info.get("name")
        self.version: int | None = info.get("version")
        self._kind: str = info.get("kind", "file")
        self._options: dict[str, Any] = info.get("options") or {}
        self._folder: str = info["path"]

    def _files(self) -> list[str]:
        found = []
        for top, _, names in os.walk(self._folder):
            found += [os.path.relpath(os.path.join(top, n), self._folder) for n in names]
        return sorted(found)

    def to_path(self) -> list[str]:
        return ["/" + f for f in self._files()]

    def download(self, target_path: str | None = None, overwrite: bool = False) -> list[str]:
        target = target_path or os.path.join(os.getcwd(), "dataset-" + self.id[:8])
        out = []
        for rel in self._files():
            dest = os.path.join(target, rel)
            if os.path.exists(dest) and not overwrite:
                raise FileExistsError(f"{dest} exists: download(..., overwrite=True) replaces it")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(os.path.join(self._folder, rel), dest)
            out.append(dest)
        return out

    def to_pandas_dataframe(self) -> Any:
        import pandas  # the run's environment has it, as it had on Azure ML

        opts = self._options
        encoding = str(opts.get("encoding", "utf8"))
        frames = [
            pandas.read_csv(
                os.path.join(self._folder, rel),
                sep=opts.get("separator", ","),
                header=0 if opts.get("header", True) else None,
                encoding=_ENCODINGS.get(encoding, encoding),
            )
            for rel in self._files()
        ]
        return pandas.concat(frames, ignore_index=True) if frames else pandas.DataFrame()

    def __repr__(self) -> str:
        label = f"{self.name}:{self.version}" if self.name else self.id
        return f"{'TabularDataset' if self._kind == 'tabular' else 'FileDataset'}({label})"


def get_context() -> _BaseRun:
    """The current run inside a trainhub run, else an offline run (the same object on every call)."""
    global _current
    with _lock:
        if _current is None:
            directory = os.environ.get(CONTEXT_DIR_ENV)
            run_id = os.environ.get("TRAINHUB_RUN_ID")
            if directory and run_id:
                number = os.environ.get("TRAINHUB_RUN_NUMBER")
                _current = _InRun(
                    run_id,
                    os.environ.get("TRAINHUB_EXPERIMENT", ""),
                    int(number) if number and number.isdigit() else None,
                    directory,
                )
            else:
                _current = None
        if _current is not None:
            return _current
    offline = _OfflineRun()
    with _lock:
        _current = offline
    return offline


def _scalar(name: str, value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (int, float, str)):
        return value
    try:  # numpy scalars and the like
        return value.item()
    except AttributeError:
        raise TypeError(
            f"metric '{name}': {type(value).__name__} is not a number or a string"
        ) from None


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "image"


def _relative(name: str) -> str:
    name = name.replace("\\", "/").lstrip("/")
    if not name or ".." in name.split("/"):
        raise ValueError(f"upload_file name '{name}' must be a relative path without '..'")
    return name
