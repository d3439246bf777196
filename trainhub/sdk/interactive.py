"""Interactive runs from a client (``experiment.start_logging()``, a notebook's habit) and child runs:
what a ``Run`` does when the client itself logs to it and ends it.

Every call goes straight to the server and says there whether it worked (logging to a run that has
ended is an error at the call). While a run this process started is open, a daemon thread tells the
server every ``heartbeatSeconds`` that its client is still there; a process that goes away without
``complete()`` leaves its run to the server's watchdog, which ends it ``Failed`` (``abandoned``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self
from urllib.parse import quote

from trainhub import context
from trainhub.sdk import snapshot as snapshots
from trainhub.sdk.client import ApiClient
from trainhub.sdk.errors import ServiceError, TrainhubError

if TYPE_CHECKING:
    from trainhub.sdk.run import Experiment, Run

log = logging.getLogger("trainhub.sdk")
# Azure ML's run types, as ``get_children(type=...)`` takes them, to trainhub's kinds of run.
RUN_TYPES = {
    "azureml.scriptrun": "script",
    "trainhub.scriptrun": "script",
    "script": "script",
    "interactive": "interactive",
    "hyperdrive": "sweep",
}
UPLOAD_CHUNK = 1024 * 1024


def start_logging(
    experiment: Experiment,
    snapshot_directory: str | os.PathLike[str] | None,
    outputs: str | os.PathLike[str] | bool | None,
    display_name: str | None,
    tags: dict[str, Any] | None,
) -> Run:
    """``Experiment.start_logging``: a run on the server, ``Running`` at once, with
    ``snapshot_directory`` kept as its snapshot when given."""
    from trainhub.sdk.run import Run

    client = experiment.workspace.client
    path = f"/api/v1/experiments/{experiment.name}/interactive-runs"
    parts = {"tags": json.dumps(tags or {})}
    if display_name is not None:
        parts["display_name"] = display_name
    if snapshot_directory is None:
        details = client.json("POST", path, files={k: (None, v) for k, v in parts.items()})
    else:
        packed = snapshots.pack(snapshot_directory)
        try:
            if experiment._server_has(packed.sha256):
                parts["snapshot_id"] = packed.sha256
                details = client.json("POST", path, files={k: (None, v) for k, v in parts.items()})
            else:
                details = client.upload(
                    path, data=parts, file_field="snapshot", file_path=packed.path
                )
        finally:
            packed.remove()
    run = Run(experiment, details["runId"], _details=details)
    run._open(outputs, details.get("heartbeatSeconds"))
    return run


class InteractiveRun:
    """The client-side logging, ending and children of Azure ML's ``Run`` (a mixin of
    :class:`trainhub.sdk.run.Run`)."""

    id: str
    experiment: Experiment
    _details: dict[str, Any]
    _outputs: Path | None = None  # the folder uploaded as ``outputs/`` when the run ends

    @property
    def _api(self) -> ApiClient:
        return self.experiment.workspace.client

    def _open(self, outputs: str | os.PathLike[str] | bool | None, beat: Any) -> None:
        """This process started the run: track ``outputs`` and keep the run open."""
        self._outputs = outputs_folder(outputs)
        HEARTBEATS.add(self.id, self._api, float(beat or 60))

    # -- metrics --------------------------------------------------------------------------------
    def log(self, name: str, value: Any, description: str = "", step: int | None = None) -> None:
        """Log a scalar; repeated calls with the same name build a series."""
        self._send("scalar", name, context._scalar(name, value), description, step)

    def log_list(self, name: str, value: list[Any], description: str = "") -> None:
        self._send("list", name, [context._scalar(name, v) for v in value], description)

    def log_row(self, name: str, description: str | None = None, **kwargs: Any) -> None:
        row = {k: context._scalar(name, v) for k, v in kwargs.items()}
        self._send("row", name, row, description or "")

    def log_table(self, name: str, value: dict[str, list[Any]], description: str = "") -> None:
        table = {str(k): [context._scalar(name, v) for v in col] for k, col in value.items()}
        self._send("table", name, table, description)

    def log_image(
        self, name: str, path: str | None = None, plot: Any = None, description: str = ""
    ) -> None:
        """Keep an image (a file at ``path``, or a matplotlib ``plot``) as ``images/<name>.png``."""
        target = f"images/{context._safe_name(name)}.png"
        if plot is not None:
            with tempfile.TemporaryDirectory() as scratch:
                drawn = os.path.join(scratch, "plot.png")
                plot.savefig(drawn)
                self.upload_file(target, drawn)
        elif path is not None:
            self.upload_file(target, path)
        else:
            raise ValueError("log_image needs path= or plot=")
        self._send("image", name, target, description)

    def _send(
        self, kind: str, name: str, value: Any, description: str, step: int | None = None
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("a metric needs a non-empty name")
        record = {"kind": kind, "name": name, "value": value, "description": description}
        if step is not None:
            record["step"] = step
        self._api.json("POST", f"/api/v1/runs/{self.id}/metrics", json={"metrics": [record]})

    # -- files ----------------------------------------------------------------------------------
    def upload_file(self, name: str, path_or_stream: Any) -> None:
        """Keep a file (a path, or an open binary stream) in the run's history as ``name``
        (``outputs/model.pkl``)."""
        relative = context._relative(name)
        if isinstance(path_or_stream, (str, os.PathLike)):
            with open(path_or_stream, "rb") as stream:
                self._put(relative, stream)
        else:
            self._put(relative, path_or_stream)

    def upload_files(self, names: list[str], paths: list[str]) -> None:
        for name, path in zip(names, paths, strict=True):
            self.upload_file(name, path)

    def upload_folder(self, name: str, path: str | os.PathLike[str]) -> None:
        """Every file under ``path`` (links not followed), kept under ``name/``."""
        root = Path(path)
        if not root.is_dir():
            raise TrainhubError(f"upload_folder: '{root}' is not a folder")
        for file in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            self.upload_file(f"{name.rstrip('/')}/{file.relative_to(root).as_posix()}", file)

    def _put(self, relative: str, stream: IO[bytes]) -> None:
        def chunks() -> Iterator[bytes]:
            while chunk := stream.read(UPLOAD_CHUNK):
                yield chunk

        self._api.request(
            "PUT", f"/api/v1/runs/{self.id}/files/{quote(relative)}", content=chunks()
        )

    # -- ending ---------------------------------------------------------------------------------
    def complete(self, _set_status: bool = True) -> None:
        """End the run ``Completed`` (its ``outputs`` folder uploaded first); its open child runs
        end with it."""
        self._upload_outputs()
        self._details = self._api.json("POST", f"/api/v1/runs/{self.id}/complete")
        HEARTBEATS.discard(self.id)

    def fail(
        self,
        error_details: Any = None,
        error_code: str | None = None,
        _set_status: bool = True,
    ) -> None:
        """End the run ``Failed`` with ``error_details`` (a sentence or an exception)."""
        self._upload_outputs()
        error = "" if error_details is None else str(error_details) or type(error_details).__name__
        self._details = self._api.json(
            "POST", f"/api/v1/runs/{self.id}/fail", json={"error": error}
        )
        HEARTBEATS.discard(self.id)

    def _upload_outputs(self) -> None:
        if self._outputs is not None and self._outputs.is_dir():
            self.upload_folder("outputs", self._outputs)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """``with experiment.start_logging() as run:`` ends it ``Completed``, or ``Failed`` with
        the exception that left the block."""
        if error is None:
            self.complete()
        else:
            self.fail(error)

    # -- children -------------------------------------------------------------------------------
    def child_run(
        self,
        name: str | None = None,
        run_id: str | None = None,
        outputs: str | os.PathLike[str] | bool | None = None,
    ) -> Run:
        """A run under this one, ``Running`` at once; ``name`` is its display name."""
        child: Run = self._make_children([{"name": name, "runId": run_id}])[0]
        child._outputs = outputs_folder(outputs)
        return child

    def create_children(
        self,
        count: int | None = None,
        tag_key: str | None = None,
        tag_values: list[str] | None = None,
    ) -> list[Run]:
        """``count`` children, or one per value of ``tag_values`` tagged ``tag_key=value``, in
        one call."""
        if tag_key is not None and tag_values is not None:
            if count is not None and count != len(tag_values):
                raise ValueError("create_children: count differs from the number of tag_values")
            wanted = [{"tags": {tag_key: value}} for value in tag_values]
        elif count is not None:
            wanted = [{} for _ in range(count)]
        else:
            raise ValueError("create_children needs count, or tag_key and tag_values")
        if not wanted:
            return []
        return self._make_children(wanted)

    def _make_children(self, wanted: list[dict[str, Any]]) -> list[Run]:
        from trainhub.sdk.run import Run

        answer = self._api.json(
            "POST",
            f"/api/v1/runs/{self.id}/children",
            json={"children": [{k: v for k, v in w.items() if v is not None} for w in wanted]},
        )
        made = [Run(self.experiment, d["runId"], _details=d) for d in answer["runs"]]
        if not HEARTBEATS.covers(self.id):  # a parent this process did not start
            for child in made:
                HEARTBEATS.add(child.id, self._api, float(answer.get("heartbeatSeconds") or 60))
        return made

    def get_children(
        self,
        recursive: bool = False,
        tags: str | dict[str, Any] | None = None,
        properties: str | dict[str, Any] | None = None,
        type: str | None = None,
        status: str | None = None,
        _rehydrate_runs: bool = True,
    ) -> Iterator[Run]:
        """The run's children in the order they were made (``recursive``: theirs too), filtered
        by tags and properties (a key, or a dict of key -> value), run type and status."""
        from trainhub.sdk.run import Run

        params: dict[str, Any] = {"recursive": str(recursive).lower(), "limit": 100}
        params["tag"] = _key_values(tags)
        params["property"] = _key_values(properties)
        if type is not None:
            if type not in RUN_TYPES:
                raise ValueError(f"type is one of {', '.join(RUN_TYPES)}, not {type!r}")
            params["kind"] = RUN_TYPES[type]
        if status is not None:
            params["status"] = status
        while True:
            page = self._api.json("GET", f"/api/v1/runs/{self.id}/children", params=params)
            for details in page["runs"]:
                yield Run(self.experiment, details["runId"], _details=details)
            if not page.get("nextCursor"):
                return
            params["cursor"] = page["nextCursor"]

    @property
    def parent(self) -> Run | None:
        """The run this one is a child of (None for a top-level run)."""
        from trainhub.sdk.run import Run

        parent_id = self._details.get("parentRunId")
        if "parentRunId" not in self._details:
            parent_id = self._api.json("GET", f"/api/v1/runs/{self.id}").get("parentRunId")
        return Run.get(self.experiment.workspace, parent_id) if parent_id else None


def outputs_folder(outputs: str | os.PathLike[str] | bool | None) -> Path | None:
    """The folder a run tracks (Azure ML's ``outputs``): ``./outputs`` unless told, none for False."""
    if outputs is False:
        return None
    return Path("outputs" if outputs is None or outputs is True else outputs).resolve()


def _key_values(wanted: str | dict[str, Any] | None) -> list[str]:
    if wanted is None:
        return []
    if isinstance(wanted, str):
        return [wanted]
    return [key if value is None else f"{key}={value}" for key, value in wanted.items()]


class _Heartbeats:
    """One daemon thread per process telling the server that the client of each open run it
    started is still there (a heartbeat also covers the run's open children). A run that has ended
    (the server answers 409) or is gone is dropped; an unreachable server is tried again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[ApiClient, float]] = {}
        self._covered: set[str] = set()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, run_id: str, client: ApiClient, interval: float) -> None:
        with self._lock:
            self._runs[run_id] = (client, interval)
            self._covered.add(run_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="trainhub-heartbeat", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def covers(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._covered

    def discard(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def _loop(self) -> None:
        due: dict[str, float] = {}  # run -> when its next heartbeat is due
        while True:
            with self._lock:
                runs = dict(self._runs)
                if not runs:
                    self._thread = None
                    return
            now = time.monotonic()
            for run_id, (client, interval) in runs.items():
                if due.setdefault(run_id, now + interval) > now:
                    continue
                due[run_id] = now + interval
                try:
                    client.json("POST", f"/api/v1/runs/{run_id}/heartbeat")
                except ServiceError as exc:
                    if exc.status in (403, 404, 409):
                        self.discard(run_id)
                except TrainhubError as exc:  # the server is away: the next beat tries again
                    log.debug("heartbeat of %s: %s", run_id, exc)
            self._wake.wait(max(0.0, min(due[r] for r in runs) - time.monotonic()))
            self._wake.clear()


HEARTBEATS = _Heartbeats()
