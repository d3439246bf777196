"""``Experiment`` and ``Run``: submit, watch, fetch results, as with Azure ML v1."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
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
    from trainhub.hyperdrive.runconfig import HyperDriveConfig
    from trainhub.sdk.environment import Environment
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
        config: Estimator | ScriptRunConfig | HyperDriveConfig,
        tags: dict[str, str] | None = None,
        *,
        max_snapshot_files: int = snapshots.DEFAULT_MAX_FILES,
        max_snapshot_bytes: int = snapshots.DEFAULT_MAX_BYTES,
        priority: int = 0,
        max_retries: int = 0,
        **kwargs: Any,
    ) -> Run:
        """Pack ``config.source_directory`` (uploading it only if the server lacks it) and queue a
        run; a ``HyperDriveConfig`` starts a sweep and answers its ``HyperDriveRun``."""
        if kwargs:
            raise TypeError(f"submit() got unexpected arguments: {', '.join(sorted(kwargs))}")
        from trainhub.hyperdrive.runconfig import HyperDriveConfig  # it builds on the SDK

        if isinstance(config, HyperDriveConfig):
            from trainhub.sdk.hyperdrive_run import HyperDriveRun

            data = {"sweep": json.dumps(config.to_spec())}
            path = f"/api/v1/experiments/{self.name}/sweeps"
        elif isinstance(config, (Estimator, ScriptRunConfig)):
            data = {"estimator": json.dumps(config.to_spec())}
            path = f"/api/v1/experiments/{self.name}/runs"
        else:
            raise TypeError(
                "submit() takes a ScriptRunConfig, an Estimator (or PyTorch / TensorFlow) "
                "or a HyperDriveConfig"
            )
        client = self.workspace.client
        packed = snapshots.pack(
            config.source_directory, max_files=max_snapshot_files, max_bytes=max_snapshot_bytes
        )
        try:
            if tags:
                data["tags"] = json.dumps(tags)
            if priority:
                data["priority"] = str(priority)
            if max_retries:
                data["max_retries"] = str(max_retries)
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
        if isinstance(config, HyperDriveConfig):
            return HyperDriveRun(self, details["runId"], config, _details=details)
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
        tags: str | dict[str, Any] | None = None,
        properties: str | dict[str, Any] | None = None,
        include_children: bool = False,
    ) -> Iterator[Run]:
        """This experiment's runs, newest first, as a generator (Azure ML's). ``type``: 'script'
        or 'interactive' (or Azure ML's 'azureml.scriptrun'); ``tags`` and ``properties``: a key
        the run has, or ``{key: value}`` (every pair must match); child runs only with
        ``include_children``. The server filters: pages of 100 are fetched as they are read."""
        yield from _query(
            self,
            type=type,
            tags=tags,
            properties=properties,
            include_children=include_children,
        )

    def __repr__(self) -> str:
        return f"Experiment(Name: {self.name}, Workspace: {self.workspace.name})"


def _query(experiment: Experiment, **filters: Any) -> Iterator[Run]:
    """Runs of ``experiment`` matching Azure ML's filters, page by page (``nextCursor``)."""
    params: dict[str, Any] = {"experiment": experiment.name, "limit": 100}
    params["tag"] = _pairs("tags", filters.get("tags"))
    params["property"] = _pairs("properties", filters.get("properties"))
    for name, value in (("kind", filters.get("type")), ("status", filters.get("status"))):
        if value is not None:
            params[name] = value
    params["include_children"] = "true" if filters.get("include_children") else "false"
    while True:
        page = experiment.workspace.client.json("GET", "/api/v1/runs", params=params)
        for details in page["runs"]:
            yield Run(experiment, details["runId"], _details=details)
        if not page.get("nextCursor"):
            return
        params["cursor"] = page["nextCursor"]


def _pairs(name: str, want: str | dict[str, Any] | None) -> list[str]:
    """Azure ML's tag or property filter as query values: ``key`` or ``key=value`` each."""
    if want is None:
        return []
    if isinstance(want, str):
        return [want]
    if isinstance(want, dict):
        return [k if v is None else f"{k}={v}" for k, v in want.items()]
    raise TypeError(
        f"{name} is a key (str) or a dict of keys and values, not {type(want).__name__}"
    )


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
        if details.get("kind") == "sweep" and cls is Run:  # Azure ML answers the run's own type
            from trainhub.sdk.hyperdrive_run import HyperDriveRun

            return HyperDriveRun(
                Experiment(workspace, details["experiment"]), run_id, _details=details
            )
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

    # Queries and details, as in Azure ML: filters, set-once properties, names, logs, snapshot.
    @property
    def display_name(self) -> str | None:
        return self._details.get("displayName") if self._details else self._refresh("displayName")

    @display_name.setter
    def display_name(self, value: str | None) -> None:
        self._describe({"displayName": value})

    @property
    def description(self) -> str | None:
        return self._details.get("description") if self._details else self._refresh("description")

    @description.setter
    def description(self, value: str | None) -> None:
        self._describe({"description": value})

    def _refresh(self, key: str) -> Any:
        return self.get_details().get(key)

    def _describe(self, fields: dict[str, Any]) -> None:
        self._details = self._client.json("PATCH", f"/api/v1/runs/{self.id}", json=fields)

    def add_properties(self, properties: dict[str, Any]) -> None:
        """Add properties: set once, as in Azure ML (a key keeps its first value; another value
        is a ``ValidationError`` naming the key)."""
        answer = self._client.json(
            "POST", f"/api/v1/runs/{self.id}/properties", json={"properties": properties}
        )
        if self._details:
            self._details.setdefault("properties", {}).update(answer["properties"])

    def get_properties(self) -> dict[str, Any]:
        """The run's properties: those added with ``add_properties`` and trainhub's own."""
        return dict(self.get_details().get("properties") or {})

    def remove_tags(self, tags: list[str]) -> dict[str, Any]:
        """Remove the tags named in ``tags``; returns the tags left."""
        if isinstance(tags, str):
            tags = [tags]
        answer = self._client.json("DELETE", f"/api/v1/runs/{self.id}/tags", params={"key": tags})
        left: dict[str, Any] = answer["tags"]
        if self._details:
            self._details["tags"] = left
        return left

    def get_details_with_logs(self) -> RunDetails:
        """``get_details()`` with each of ``logFiles`` holding the log's text, not its address."""
        details = self.get_details()
        logs = details["logFiles"] = dict(details.get("logFiles") or {})
        for name, url in logs.items():
            try:
                logs[name] = self._client.request("GET", url).content.decode("utf-8", "replace")
            except RunNotFoundError:  # not written yet (a queued run's driver log)
                logs[name] = ""
        return details

    def get_all_logs(self, destination: str | os.PathLike[str] | None = None) -> list[str]:
        """Download every file under the run's ``logs/`` into ``destination`` (default
        ``./assets/<run id>``, as Azure ML's), keeping their paths; returns the local paths."""
        root = Path(destination) if destination is not None else Path("assets") / self.id
        if root.exists() and not root.is_dir():
            raise TrainhubError(f"{root} exists and is not a directory")
        root.mkdir(parents=True, exist_ok=True)
        return self.download_files(prefix="logs/", output_directory=root)

    def restore_snapshot(
        self, snapshot_id: str | None = None, path: str | os.PathLike[str] | None = None
    ) -> str:
        """The run's source snapshot (or the snapshot ``snapshot_id``) as a zip file, as Azure ML
        returned it: ``path`` when it ends in ``.zip``, else ``<snapshot id>.zip`` in the folder
        ``path`` (default: the current one). Returns the zip's path."""
        snapshot = snapshot_id or self.get_details()["properties"].get("snapshotId")
        if not snapshot:
            raise TrainhubError(f"Run {self.id} has no snapshot (it was started without one)")
        where = Path(path) if path is not None else Path.cwd()
        dest = where if where.suffix.lower() == ".zip" else where / f"{snapshot}.zip"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="trainhub-snapshot-") as scratch:
            archive = Path(scratch) / "snapshot.tar.gz"
            self._client.download(
                f"/api/v1/snapshots/{snapshot}/content", archive, label="Downloading the snapshot"
            )
            snapshots.to_zip(archive, dest)
        return str(dest)

    def get_environment(self) -> Environment:
        """The environment the run was submitted with, as an ``Environment`` (its registered name
        and version when it used one; else Azure ML's ``Experiment <name> Environment``)."""
        from trainhub.sdk.environment import Environment

        details = self.get_details()
        spec = (details.get("runDefinition") or {}).get("estimator")
        if details.get("kind") == "interactive" or not spec:
            raise TrainhubError(
                f"Run {self.id} ran no script, so it has no environment (it was logged to from "
                "a client)"
            )
        ref = spec.get("environment_definition")
        name, version = (
            (ref.get("name"), ref.get("version")) if isinstance(ref, dict) else (ref, None)
        )
        definition = {
            **spec,
            "custom_docker_image": spec.get("custom_docker_image")
            or spec.get("custom_docker_base_image"),
        }
        env = Environment._from_answer(
            {
                "name": name or f"Experiment {self.experiment.name} Environment",
                "version": version,
                "definition": definition,
            }
        )
        env.docker.enabled = bool(spec.get("use_docker", True))
        return env

    @staticmethod
    def list(
        experiment: Experiment,
        type: str | None = None,
        tags: str | dict[str, Any] | None = None,
        properties: str | dict[str, Any] | None = None,
        status: str | None = None,
        include_children: bool = False,
        _rehydrate_runs: bool = True,
    ) -> Iterator[Run]:
        """Runs of ``experiment``, newest first, filtered by the server (``status`` too). It
        comes after the methods annotated with ``list[...]``: below it, ``list`` is this method."""
        return _query(
            experiment,
            type=type,
            tags=tags,
            properties=properties,
            status=status,
            include_children=include_children,
        )

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
