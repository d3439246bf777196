"""Sweep services for the API: submit, the sweep's details, its limits while it runs. No HTTP here.

A sweep is submitted as a run is (the same checks of its run config and the same snapshot
upload, :func:`trainhub.runs.service.admit`), then its parent run and row are written; the
controller starts its children. Cancel is the run's (``POST /api/v1/runs/{id}/cancel``).
"""

from __future__ import annotations

import functools
import json
import secrets
from pathlib import Path
from typing import Any

import msgspec

from trainhub.accounts import User, require_run_owner
from trainhub.hyperdrive.spec import (
    MAX_CONCURRENT_RUNS,
    MAX_TOTAL_RUNS,
    SweepSpec,
    parse_sweep,
)
from trainhub.runs import service
from trainhub.runs.launcher import Launcher
from trainhub.settings import Settings
from trainhub.spec import EstimatorSpec, SpecError
from trainhub.store import Database
from trainhub.store import runs as q
from trainhub.store import sweeps as store
from trainhub.store.lifecycle import RunStatus

LIMITS = {"max_total_runs": MAX_TOTAL_RUNS, "max_concurrent_runs": MAX_CONCURRENT_RUNS}


async def submit(
    settings: Settings,
    db: Database,
    launcher: Launcher,
    *,
    experiment: str,
    sweep: bytes | str,
    upload: Path | None = None,
    snapshot_id: str | None = None,
    tags: bytes | str | None = None,
    priority: str | None = None,
    max_retries: str | None = None,
    user: str | None = None,
) -> q.RunRow:
    """Check the sweep (a 422 naming the field), admit its run config and snapshot as a run's,
    write the parent run ``HD_<hex>`` and the sweep."""
    try:
        spec = parse_sweep(sweep)
        await _check_resume_from(db, spec)
    except BaseException:
        if upload is not None:
            upload.unlink(missing_ok=True)
        raise
    try:
        admitted = await service.admit(
            settings,
            db,
            launcher,
            experiment=experiment,
            estimator=msgspec.json.encode(spec.run_config),
            upload=upload,
            snapshot_id=snapshot_id,
            tags=tags,
            priority=priority,
            max_retries=max_retries,
            user=user,
        )
    except SpecError as exc:  # the run config's fields are under run_config
        if exc.field and exc.field.split(".")[0].split("[")[0] in EstimatorSpec.__struct_fields__:
            raise type(exc)(f"run_config.{exc.field}", exc.message) from None
        raise
    full = msgspec.structs.replace(spec, run_config=admitted.spec)
    sweep_id = f"HD_{secrets.token_hex(8)}"
    return await db.write(
        lambda conn: store.insert_sweep(
            conn,
            sweep_id=sweep_id,
            experiment=experiment,
            spec=full.to_builtins(),
            run_config=msgspec.to_builtins(admitted.spec),
            concurrency=full.concurrency,
            snapshot=admitted.snapshot,
            target=admitted.spec.compute_target,
            tags=admitted.tags,
            priority=admitted.priority,
            max_retries=admitted.max_retries,
            user=user,
        )
    )


async def _check_resume_from(db: Database, spec: SweepSpec) -> None:
    for number, run_id in enumerate(spec.resume_from):
        found = await db.read(functools.partial(store.get_sweep, sweep_id=run_id))
        if found is None:
            raise SpecError(
                f"resume_from[{number}]", f"'{run_id}' is not a sweep on this server (HD_...)"
            )


async def get_sweep(db: Database, sweep_id: str) -> store.SweepRow:
    found = await db.read(lambda conn: store.get_sweep(conn, sweep_id))
    if found is None:
        raise service.RunNotFound(f"No sweep with id '{sweep_id}'")
    return found


async def details(db: Database, sweep_id: str, public_url: str | None = None) -> dict[str, Any]:
    """The parent run's details with ``sweep``: the spec (no secrets), where it stands, counts of
    its children by status, and each child with its values, best primary metric and, when the
    sweep stopped it, why."""
    sweep = await get_sweep(db, sweep_id)
    parent = await service.get(db, sweep_id)
    spec = msgspec.convert(sweep.spec, SweepSpec)

    def read(conn: Any) -> tuple[list[store.ChildRow], dict[str, str | None], dict[str, float]]:
        kids = store.children(conn, sweep_id)
        runs = q.list_runs(conn, parent=sweep_id, limit=len(kids) + 1)
        ids = [child.run_id for child in kids]
        best = store.best_values(conn, ids, spec.primary_metric_name, spec.maximize)
        return kids, {run.id: run.error for run in runs}, best

    kids, errors, best = await db.read(read)
    counts = {status.value: 0 for status in RunStatus}
    for child in kids:
        counts[child.status.value] += 1
    ranked = sorted(
        (child for child in kids if child.run_id in best),
        key=lambda c: best[c.run_id],
        reverse=spec.maximize,
    )
    out = service.details(parent, public_url=public_url)
    out["sweep"] = {
        "spec": spec.to_public(),
        "state": sweep.state,
        "endReason": sweep.end_reason,
        "maxTotalRuns": sweep.max_total_runs,
        "maxConcurrentRuns": sweep.max_concurrent_runs,
        "primaryMetricName": spec.primary_metric_name,
        "primaryMetricGoal": spec.primary_metric_goal,
        "counts": {"total": len(kids), **{k: v for k, v in counts.items() if v}},
        "bestChildRunId": ranked[0].run_id if ranked else None,
        "children": [
            {
                "runId": child.run_id,
                "index": child.index,
                "status": child.status.value,
                "hyperparameters": child.hyperparameters,
                "bestMetric": best.get(child.run_id),
                "stopped": child.stop,
                "error": json.loads(error) if (error := errors.get(child.run_id)) else None,
            }
            for child in kids
        ],
    }
    return out


async def change_limits(db: Database, sweep_id: str, data: Any, user: User) -> None:
    """``max_concurrent_runs`` and ``max_total_runs`` while the sweep runs (trainhub's own: Azure
    ML's are fixed at submission). ``max_total_runs`` is never below the children it has."""
    sweep = await get_sweep(db, sweep_id)
    parent = await service.get(db, sweep_id)
    require_run_owner(user, sweep_id, parent.user, "change")
    if not isinstance(data, dict) or not data:
        raise SpecError("sweep", 'Send {"max_concurrent_runs": N} and/or {"max_total_runs": N}')
    values: dict[str, int] = {}
    for name, value in data.items():
        if name not in LIMITS:
            raise SpecError(str(name), f"Only {' and '.join(LIMITS)} can change while a sweep runs")
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= LIMITS[name]:
            raise SpecError(name, f"{name} must be a whole number from 1 to {LIMITS[name]}")
        values[name] = value
    total = values.get("max_total_runs")
    if total is not None and total < sweep.next_index:
        raise SpecError(
            "max_total_runs",
            f"max_total_runs must be at least {sweep.next_index}: the sweep has that many children",
        )
    if sweep.state in (store.DONE, store.CANCELING):
        raise service.RunConflict(f"Sweep {sweep_id} has ended: its limits no longer change")
    await db.write(
        lambda conn: store.set_limits(conn, sweep_id, total, values.get("max_concurrent_runs"))
    )
