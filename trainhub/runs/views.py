"""What the run pages show: the runs table (filters, keyset page, metric columns), one run's page
(details, timeline, build log tail, artifacts tree) and the clone form (a run's spec as form fields
and back). No HTTP in here; the handlers in :mod:`trainhub.server.pages.runs` only parse and render.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainhub.accounts import User, can_change_run, require_run_owner
from trainhub.runs import service
from trainhub.runs.artifacts import BUILD_LOG, list_artifacts
from trainhub.runs.launcher import Launcher
from trainhub.settings import Settings
from trainhub.spec import SpecError, flatten_script_params, redact, stored_processes_per_node
from trainhub.store import Database
from trainhub.store import nodes as node_store
from trainhub.store import runs as q
from trainhub.store import views as store_views
from trainhub.store.lifecycle import RunStatus
from trainhub.store.views import AGGREGATES, RunFilter, RunPage

MAX_PAGE = 200
MAX_METRIC_COLUMNS = 8
BUILD_LOG_TAIL = 64 * 1024
MAX_PARAMS = 200
MAX_TREE_FILES = 2000  # files shown in a run's artifacts tree; the API lists them all


def parse_filter(
    experiment: str | None, status: str | None, user: str | None, tag: str | None
) -> RunFilter:
    """The runs table's filters from the query string (blank means no filter)."""
    statuses: tuple[RunStatus, ...] | None = None
    if status and status.strip():
        try:
            statuses = tuple(RunStatus(s.strip()) for s in status.split(",") if s.strip())
        except ValueError:
            known = ", ".join(s.value for s in RunStatus)
            raise SpecError("status", f"Unknown status '{status}' (known: {known})") from None
    clean_tag = (tag or "").strip() or None
    if clean_tag is not None and clean_tag.startswith("="):
        raise SpecError("tag", "A tag filter is 'key' or 'key=value'")
    return RunFilter(
        experiment=(experiment or "").strip() or None,
        statuses=statuses,
        user=(user or "").strip() or None,
        tag=clean_tag,
    )


def parse_metric_columns(values: Sequence[str]) -> list[tuple[str, str]]:
    """``["loss:last", "acc:max"]`` -> ``[("loss", "last"), ("acc", "max")]`` (a bare name is last)."""
    columns: list[tuple[str, str]] = []
    for raw in values:
        text = raw.strip()
        if not text:
            continue
        name, colon, aggregate = text.rpartition(":")
        if not colon:
            name, aggregate = text, "last"
        if aggregate not in AGGREGATES:
            raise SpecError("metric", f"metric '{text}': use NAME:last, NAME:min or NAME:max")
        if not name or len(name) > 255:
            raise SpecError("metric", f"metric '{text[:60]}': the name is 1-255 characters")
        if (name, aggregate) not in columns:
            columns.append((name, aggregate))
    if len(columns) > MAX_METRIC_COLUMNS:
        raise SpecError(
            "metric", f"At most {MAX_METRIC_COLUMNS} metric columns (asked for {len(columns)})"
        )
    return columns


@dataclass(frozen=True)
class TableRow:
    run: q.RunRow
    nodes: list[str]
    gpus: str
    duration: str
    metrics: list[Any]


@dataclass(frozen=True)
class RunsTable:
    rows: list[TableRow]
    page: RunPage
    columns: list[tuple[str, str]]
    metric_names: list[str]
    active: bool  # something on the page has not ended: the table keeps refreshing


async def runs_table(
    db: Database,
    filters: RunFilter,
    *,
    before: int | None,
    after: int | None,
    limit: int,
    columns: list[tuple[str, str]],
) -> RunsTable:
    def load(conn: Any) -> RunsTable:
        page = store_views.page_of_runs(conn, filters, before=before, after=after, limit=limit)
        ids = [r.id for r in page.runs]
        held = store_views.allocations_of(conn, ids)
        names = store_views.metric_names(conn, ids)
        values = store_views.metric_columns(conn, ids, {n for n, _ in columns})
        now = time.time()
        rows = [
            TableRow(
                run=r,
                nodes=nodes_of(r, held.get(r.id, [])),
                gpus=gpus_of(r, held.get(r.id, [])),
                duration=duration(r, now),
                metrics=[values.get((r.id, n), {}).get(a) for n, a in columns],
            )
            for r in page.runs
        ]
        wanted = sorted(set(names) | {n for n, _ in columns})
        active = any(not r.status.is_terminal() for r in page.runs)
        return RunsTable(rows, page, columns, wanted, active)

    return await db.read(load)


def nodes_of(run: q.RunRow, held: list[dict[str, Any]]) -> list[str]:
    if held:
        return list(dict.fromkeys(h["node"] for h in held))
    return [run.node] if run.node else []


def gpus_of(run: q.RunRow, held: list[dict[str, Any]]) -> str:
    """The GPUs a running run holds (``n1:0,1``), else how many it asks for."""
    if held:
        parts = [f"{h['node']}:{','.join(str(g) for g in h['gpus'])}" for h in held if h["gpus"]]
        return " ".join(parts) if parts else "0"
    if not run.spec.get("use_gpu"):
        return "0"
    return str(int(run.spec.get("node_count", 1)) * stored_processes_per_node(run.spec))


def duration(run: q.RunRow, now: float) -> str:
    if run.started_at is None:
        return ""
    seconds = max(0, int((run.ended_at or now) - run.started_at))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def shown_number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.6g}"
    return str(value)


# One run's page. -------------------------------------------------------------------------------------
@dataclass
class ArtifactFolder:
    name: str
    path: str
    folders: dict[str, ArtifactFolder] = field(default_factory=dict)
    files: list[tuple[str, str, int]] = field(default_factory=list)  # (name, path, size)
    left_out: int = 0  # files beyond MAX_TREE_FILES (root folder only)

    def size(self) -> int:
        return sum(f[2] for f in self.files) + sum(f.size() for f in self.folders.values())


def artifact_tree(found: list[tuple[str, int]], limit: int = MAX_TREE_FILES) -> ArtifactFolder:
    root = ArtifactFolder("", "", left_out=max(0, len(found) - limit))
    for path, size in found[:limit]:
        parts = path.split("/")
        folder = root
        for i, part in enumerate(parts[:-1]):
            folder = folder.folders.setdefault(part, ArtifactFolder(part, "/".join(parts[: i + 1])))
        folder.files.append((parts[-1], path, size))
    return root


@dataclass(frozen=True)
class RunView:
    run: q.RunRow
    details: dict[str, Any]
    allocation: list[dict[str, Any]]
    queue_position: int | None
    spec_json: str
    can_change: bool


async def run_view(db: Database, run_id: str, user: User) -> RunView:
    run = await service.get(db, run_id)
    events = await db.read(lambda conn: q.run_events(conn, run_id))
    held = await db.read(lambda conn: node_store.allocation_of(conn, run_id))
    position = None
    if run.status is RunStatus.QUEUED:
        position = await db.read(lambda conn: q.queue_position(conn, run))
    info = service.details(run, events)
    return RunView(
        run=run,
        details=info,
        allocation=[{"node": h["node"], "gpus": h["gpus"]} for h in held],
        queue_position=position,
        spec_json=json.dumps(redact(run.spec), indent=2, sort_keys=True),
        can_change=can_change_run(user, run.user),
    )


async def artifacts_of(settings: Settings, run_id: str) -> ArtifactFolder:
    found = await asyncio.to_thread(list_artifacts, settings.run_dir(run_id))
    return artifact_tree(found)


def _tail(path: Path, limit: int) -> tuple[str, bool]:
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - limit))
            data = fh.read(limit)
    except FileNotFoundError:
        return "", False
    cut = size > limit
    if cut:
        data = data[data.find(b"\n") + 1 :]
    return data.decode("utf-8", errors="replace"), cut


async def build_log_tail(settings: Settings, run_id: str) -> tuple[str, bool]:
    """The end of the run's environment build log (and whether it was cut), "" when none."""
    return await asyncio.to_thread(_tail, settings.run_dir(run_id) / BUILD_LOG, BUILD_LOG_TAIL)


def parse_tag_form(key: str, value: str) -> dict[str, str]:
    clean = key.strip()
    if not clean:
        raise SpecError("key", "A tag needs a key")
    return {clean: value}


# The clone form. -------------------------------------------------------------------------------------
@dataclass
class CloneForm:
    params: list[tuple[str, str]]
    environment_variables: str
    pip_packages: str
    conda_packages: str
    image: str
    compute_target: str
    node_count: str
    process_count_per_node: str
    use_gpu: bool


def image_field(spec: dict[str, Any]) -> str:
    return (
        "custom_docker_base_image"
        if spec.get("custom_docker_base_image")
        else "custom_docker_image"
    )


def clone_form(spec: dict[str, Any]) -> CloneForm:
    """A stored spec as the clone form's fields."""
    params = spec.get("script_params") or {}
    return CloneForm(
        params=[(k, "" if v is None else param_text(v)) for k, v in params.items()],
        environment_variables="\n".join(
            f"{k}={v}" for k, v in (spec.get("environment_variables") or {}).items()
        ),
        pip_packages="\n".join(spec.get("pip_packages") or []),
        conda_packages="\n".join(spec.get("conda_packages") or []),
        image=spec.get(image_field(spec)) or "",
        compute_target=str(spec.get("compute_target", "local")),
        node_count=str(spec.get("node_count", 1)),
        process_count_per_node=str(stored_processes_per_node(spec)),
        use_gpu=bool(spec.get("use_gpu")),
    )


def param_text(value: Any) -> str:
    """A script parameter as a person reads it: a data reference as Azure ML showed one,
    ``$AZUREML_DATAREFERENCE_<name>``."""
    return flatten_script_params({"": value})[-1]


def form_from_post(form: Any) -> CloneForm:
    """The posted form (a multi-dict: ``param_name``/``param_value`` repeat, one per row)."""
    names = [str(n) for n in form.getall("param_name", [])]
    values = [str(v) for v in form.getall("param_value", [])]
    if len(names) > MAX_PARAMS:
        raise SpecError("script_params", f"At most {MAX_PARAMS} script parameters")
    rows = [(n.strip(), values[i] if i < len(values) else "") for i, n in enumerate(names)]
    return CloneForm(
        params=[(n, v) for n, v in rows if n],
        environment_variables=str(form.get("environment_variables", "")),
        pip_packages=str(form.get("pip_packages", "")),
        conda_packages=str(form.get("conda_packages", "")),
        image=str(form.get("image", "")).strip(),
        compute_target=str(form.get("compute_target", "")).strip(),
        node_count=str(form.get("node_count", "1")).strip(),
        process_count_per_node=str(form.get("process_count_per_node", "1")).strip(),
        use_gpu=form.get("use_gpu") in ("on", "true", "1"),
    )


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _positive(field_name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SpecError(field_name, f"{field_name} must be a whole number") from None
    if value < 1:
        raise SpecError(field_name, f"{field_name} must be at least 1")
    return value


def spec_from_form(original: dict[str, Any], form: CloneForm) -> dict[str, Any]:
    """The stored spec with the form's edits (the server-side copy keeps what the form does not
    show, such as registry credentials). Values are checked again by ``service.submit``."""
    spec = dict(original)
    old_params = original.get("script_params") or {}
    params: dict[str, Any] = {}
    for name, text in form.params:
        if name in params:
            raise SpecError("script_params", f"The script parameter '{name}' is given twice")
        old = old_params.get(name)
        # Unchanged text keeps the original value's JSON type (0.5 stays a number).
        params[name] = old if name in old_params and _same(old, text) else text
    spec["script_params"] = params
    env: dict[str, str] = {}
    for line in _lines(form.environment_variables):
        key, equals, value = line.partition("=")
        if not equals or not key.strip():
            raise SpecError("environment_variables", f"'{line[:60]}' is not KEY=value")
        env[key.strip()] = value
    environment = {
        "environment_variables": env,
        "pip_packages": _lines(form.pip_packages),
        "conda_packages": _lines(form.conda_packages),
        "use_gpu": form.use_gpu,
    }
    image_key = image_field(original)
    changed = (
        any(
            original.get(k, default) != environment[k]
            for k, default in (
                ("environment_variables", {}),
                ("pip_packages", []),
                ("conda_packages", []),
                ("use_gpu", False),
            )
        )
        or (original.get(image_key) or "") != form.image
    )
    spec.update(environment)
    if form.image:
        spec[image_key] = form.image
    else:
        spec.pop(image_key, None)
    if changed:  # the environment is now the form's, no longer the registered one
        spec.pop("environment_definition", None)
    if not form.compute_target:
        raise SpecError("compute_target", "compute_target must name a compute target")
    spec["compute_target"] = form.compute_target
    spec["node_count"] = _positive("node_count", form.node_count)
    processes = _positive("process_count_per_node", form.process_count_per_node)
    distributed = original.get("distributed_training")
    if isinstance(distributed, dict) and distributed.get("process_count_per_node") is not None:
        spec["distributed_training"] = {**distributed, "process_count_per_node": processes}
    else:
        spec["process_count_per_node"] = processes
    return spec


def _same(old: Any, text: str) -> bool:
    return ("" if old is None else param_text(old)) == text


async def clone(
    settings: Settings,
    db: Database,
    launcher: Launcher,
    run_id: str,
    form: CloneForm,
    user: User,
) -> q.RunRow:
    """Submit the run again with the form's edits: the same snapshot (nothing uploaded), the same
    experiment, priority and retries, by ``user``; tagged ``clonedFrom``."""
    run = await service.get(db, run_id)
    require_run_owner(user, run_id, run.user, "clone")
    if run.snapshot is None:
        raise SpecError("snapshot_id", f"Run {run_id} has no snapshot to run again")
    spec = spec_from_form(run.spec, form)
    return await service.submit(
        settings,
        db,
        launcher,
        experiment=run.experiment,
        estimator=json.dumps(spec),
        snapshot_id=run.snapshot,
        tags=json.dumps({"clonedFrom": run.id}),
        priority=str(run.priority),
        max_retries=str(run.max_retries),
        user=user.name,
    )
