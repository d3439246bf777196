"""``Experiment`` and ``Run``: submit, watch, fetch results, as with Azure ML v1."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from trainhub import context
from trainhub.sdk import interactive
from trainhub.sdk import snapshot as snapshots
from trainhub.sdk.errors import ActivityFailedException, RunNotFoundError, TrainhubError
from trainhub.sdk.estimator import Estimator
from trainhub.sdk.script_run_config import ScriptRunConfig
from trainhub.sdk.workspace import Workspace

if TYPE_CHECKING:  # the model module builds on this one
    from trainhub.sdk.model import Model

log = logging.getLogger("trainhub.sdk")
TERMINAL = ("Completed", "Failed", "Canceled")


class RunDetails(dict[str, Any]):
    """What ``Run.get_details()`` answers: a dict, as in Azure ML, whose keys also read as
    attributes (the Azure ML documentation's first example prints ``run.get_details().status``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"run details have no {name!r}") from None


class Experiment:
    """A named group of runs: ``Experiment(ws, "sklearn-demo").submit(est)``."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.name = name

    def submit(
        self,
        config: Estimator | ScriptRunConfig,
        tags: dict[str, str] | None = None,
        *,
        max_snapshot_files: int = snapshots.DEFAULT_MAX_FILES,
        max_snapshot_bytes: int = snapshots.DEFAULT_MAX_BYTES,
        priority: int = 0,
        max_retries: int = 0,
        **kwargs: Any,
    ) -> Run:
        """Pack ``config.source_directory`` (uploading it only if the server lacks it) and queue a run."""
        if kwargs:
            raise TypeError(f"submit() got unexpected arguments: {', '.join(sorted(kwargs))}")
        if not isinstance(config, (Estimator, ScriptRunConfig)):
            raise TypeError(
                "submit() takes a ScriptRunConfig or an Estimator (or PyTorch / TensorFlow)"
            )
        client = self.workspace.client
        packed = snapshots.pack(
            config.source_directory, max_files=max_snapshot_files, max_bytes=max_snapshot_bytes
        )
        try:
            data = {"estimator": json.dumps(config.to_spec())}
            if tags:
                data["tags"] = json.dumps(tags)
            if priority:
                data["priority"] = str(priority)
            if max_retries:
                data["max_retries"] = str(max_retries)
            path = f"/api/v1/experiments/{self.name}/runs"
            if self._server_has(packed.sha256):
                log.info("snapshot %s is already on the server: not uploaded", packed.sha256[:12])
                details = client.json(
                    "POST", path, files={"snapshot_id": (None, packed.sha256)}, data=data
                )
            else:
                log.info("uploading snapshot %s (%d bytes)", packed.sha256[:12], packed.size)
                details = client.upload(
                    path, data=data, file_field="snapshot", file_path=packed.path
                )
        finally:
            packed.remove()
        return Run(self, details["runId"], _details=details)

    def start_logging(
        self,
        *,
        snapshot_directory: str | os.PathLike[str] | None = None,
        outputs: str | os.PathLike[str] | bool | None = None,
        display_name: str | None = None,
        tags: dict[str, Any] | None = None,
    ) -> Run:
        """An interactive run (a notebook's): ``Running`` at once, logged to and ended from here
        (``run.complete()``); ``snapshot_directory`` kept as its snapshot, ``outputs`` (default
        ``./outputs``, False for none) uploaded when it ends."""
        return interactive.start_logging(self, snapshot_directory, outputs, display_name, tags)

    def _server_has(self, sha256: str) -> bool:
        try:
            self.workspace.client.json("GET", f"/api/v1/snapshots/{sha256}")
        except RunNotFoundError:
            return False
        return True

    def get_runs(
        self,
        type: str | None = None,
        tags: Any = None,
        properties: Any = None,
        include_children: bool = False,
    ) -> Iterator[Run]:
        """This experiment's runs, newest first."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"experiment": self.name, "limit": 100}
            if cursor:
                params["cursor"] = cursor
            page = self.workspace.client.json("GET", "/api/v1/runs", params=params)
            for details in page["runs"]:
                run = Run(self, details["runId"], _details=details)
                if tags is None or _tags_match(details.get("tags", {}), tags):
                    yield run
            cursor = page.get("nextCursor")
            if not cursor:
                return

    def __repr__(self) -> str:
        return f"Experiment(Name: {self.name}, Workspace: {self.workspace.name})"


def _tags_match(have: dict[str, Any], want: Any) -> bool:
    if isinstance(want, str):
        return want in have
    if isinstance(want, dict):
        return all(have.get(k) == v for k, v in want.items())
    return True


class Run(interactive.InteractiveRun):
    """A submitted or interactive run. ``Run.get_context()`` inside a training script is the
    current run."""

    def __init__(
        self, experiment: Experiment, run_id: str, _details: dict[str, Any] | None = None
    ) -> None:
        self.experiment = experiment
        self.id = run_id
        self._details = _details or {}

    @staticmethod
    def get_context(allow_offline: bool = True, **kwargs: Any) -> Any:
        """Inside a trainhub run, that run (log metrics, tags, files); elsewhere an offline run."""
        return context.get_context()

    @classmethod
    def get(cls, workspace: Workspace, run_id: str) -> Run:
        details = workspace.client.json("GET", f"/api/v1/runs/{run_id}")
        return cls(Experiment(workspace, details["experiment"]), run_id, _details=details)

    @property
    def _client(self) -> Any:
        return self.experiment.workspace.client

    @property
    def number(self) -> int:
        return int(self._details.get("number") or self.get_details()["number"])

    @property
    def status(self) -> str:
        return str(self._details.get("status", "NotStarted"))

    @property
    def properties(self) -> dict[str, Any]:
        return dict(self._details.get("properties") or {})

    @property
    def tags(self) -> dict[str, Any]:
        return dict(self._details.get("tags") or {})

    def get_details(self) -> RunDetails:
        self._details = self._client.json("GET", f"/api/v1/runs/{self.id}")
        return RunDetails(self._details)

    def get_portal_url(self) -> str:
        """The run's page on the server's dashboard (Azure ML: its studio link). The server names
        it (``portalUrl``: its TRAINHUB_PUBLIC_URL, or a path on the address used here)."""
        given = self._details.get("portalUrl")
        if isinstance(given, str) and given.startswith(("http://", "https://")):
            return given
        path = given if isinstance(given, str) and given.startswith("/") else None
        return f"{self._client.url}{path or '/runs/' + quote(self.id, safe='')}"

    def get_status(self) -> str:
        return str(self.get_details()["status"])

    def wait_for_completion(
        self,
        show_output: bool = False,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
    ) -> dict[str, Any]:
        """Block until the run ends; with ``show_output`` stream its log live, then a summary."""
        if show_output:
            print(f"RunId: {self.id}")
            print(f"Web View: {self.get_portal_url()}\n")
            print("Streaming logs/driver_log.txt")
            print("=" * 28 + "\n", flush=True)
            with self._client.stream(
                "GET", f"/api/v1/runs/{self.id}/logs", params={"follow": "true"}, timeout=None
            ) as response:
                for text in response.iter_text():
                    sys.stdout.write(text)
                    sys.stdout.flush()
        delay = 0.2
        details = self.get_details()
        while details["status"] not in TERMINAL:
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)
            details = self.get_details()
        if show_output:
            print("\nExecution Summary")
            print("=================")
            print(f"RunId: {self.id}")
            print(f"Status: {details['status']}")
            if details.get("error"):
                print(f"Error: {details['error'].get('message')}")
            print(flush=True)
        if raise_on_error and details["status"] != "Completed":
            raise ActivityFailedException(self.id, details["status"], details.get("error"))
        return details

    def get_file_names(self) -> list[str]:
        files = self._client.json("GET", f"/api/v1/runs/{self.id}/files")["files"]
        return [f["path"] for f in files]

    def download_file(
        self,
        name: str,
        output_file_path: str | os.PathLike[str] | None = None,
        _validate_checksum: bool = False,
    ) -> None:
        """Download artifact ``name``; ``output_file_path`` may be a file or an existing folder."""
        dest = Path(output_file_path) if output_file_path is not None else Path(Path(name).name)
        if dest.is_dir():
            dest = dest / Path(name).name
        self._client.download(
            f"/api/v1/runs/{self.id}/files/{name}", dest, label=f"Downloading {name}"
        )

    def download_files(
        self,
        prefix: str | None = None,
        output_directory: str | os.PathLike[str] | None = None,
        output_paths: list[str] | None = None,
        batch_size: int = 100,
        append_prefix: bool = True,
    ) -> list[str]:
        """Download every artifact (under ``prefix``) into ``output_directory``, keeping paths."""
        root = Path(output_directory) if output_directory is not None else Path.cwd()
        names = [n for n in self.get_file_names() if prefix is None or n.startswith(prefix)]
        written = []
        for name in names:
            relative = name if append_prefix or not prefix else name[len(prefix) :].lstrip("/")
            dest = (root / relative).resolve()
            if not dest.is_relative_to(root.resolve()):
                raise TrainhubError(f"refusing to write {name} outside {root}")
            self._client.download(
                f"/api/v1/runs/{self.id}/files/{name}", dest, label=f"Downloading {name}"
            )
            written.append(str(dest))
        return written

    def register_model(
        self,
        model_name: str,
        model_path: str,
        tags: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        description: str | None = None,
        **kwargs: Any,
    ) -> Model:
        """Register the run's file or folder ``model_path`` (``outputs/model.pkl``) as
        ``model_name``'s next version; the server copies it, so the model outlives the run."""
        from trainhub.sdk.model import _refuse_unknown, register_from_run

        _refuse_unknown("Run.register_model", kwargs)
        return register_from_run(self, model_name, model_path, tags, properties, description)

    def cancel(self) -> None:
        self._details = self._client.json("POST", f"/api/v1/runs/{self.id}/cancel")

    def tag(self, key: str, value: Any = None) -> None:
        self.set_tags({key: "" if value is None else value})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._client.json("POST", f"/api/v1/runs/{self.id}/tags", json={"tags": tags})

    def get_tags(self) -> dict[str, Any]:
        return dict(self.get_details().get("tags") or {})

    def get_metrics(
        self,
        name: str | None = None,
        recursive: bool = False,
        run_type: str | None = None,
        populate: bool = False,
    ) -> dict[str, Any]:
        params = {"name": name} if name else {}
        metrics: dict[str, Any] = self._client.json(
            "GET", f"/api/v1/runs/{self.id}/metrics", params=params
        )["metrics"]
        return metrics

    def __repr__(self) -> str:
        return f"Run(Experiment: {self.experiment.name},\nId: {self.id},\nType: trainhub.scriptrun,\nStatus: {self.status})"

    def _repr_html_(self) -> str:
        """A notebook shows a run as Azure ML does: a table with a link to its page."""
        cells = [
            ("Experiment", escape(self.experiment.name)),
            ("Id", escape(self.id)),
            ("Type", "trainhub.scriptrun"),
            ("Status", escape(self.status)),
            (
                "Details Page",
                f'<a href="{escape(self.get_portal_url())}" target="_blank" '
                'rel="noopener">Link to the run\'s page</a>',
            ),
        ]
        head = "".join(f"<th>{name}</th>" for name, _ in cells)
        body = "".join(f"<td>{value}</td>" for _, value in cells)
        return f"<table><tr>{head}</tr><tr>{body}</tr></table>"
