"""Hyperparameter sweeps (migration 0016): the sweep's row, its children's values, and the reads the
controller makes each tick. Write functions run on the writer thread.

A sweep's parent run (``HD_<hex>``, kind ``sweep``) is inserted ``Running``; nothing of its own
runs. Each child is an ordinary queued script run (``HD_<hex>_<index>``) inserted by
:func:`insert_child` in the same transaction as its ``sweep_children`` row and the sweep's
``next_index``: after a crash a child either exists with its values or not at all.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from trainhub.store import lifecycle
from trainhub.store.lifecycle import TERMINAL, RunStatus
from trainhub.store.runs import RunKind, RunRow, get_run, insert_run

RUNNING, ENDING, CANCELING, DONE = "running", "ending", "canceling", "done"


@dataclass(frozen=True)
class SweepRow:
    id: str
    spec: dict[str, Any]
    state: str
    max_total_runs: int
    max_concurrent_runs: int
    next_index: int
    end_reason: str | None
    created_at: float

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SweepRow:
        return cls(**{**row, "spec": json.loads(row["spec"])})


@dataclass(frozen=True)
class ChildRow:
    index: int
    run_id: str
    hyperparameters: dict[str, Any]
    stop: dict[str, Any] | None
    status: RunStatus
    created_at: float

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


def insert_sweep(
    db: sqlite_utils.Database,
    *,
    sweep_id: str,
    experiment: str,
    spec: dict[str, Any],
    run_config: dict[str, Any],
    concurrency: int,
    snapshot: str,
    target: str,
    tags: dict[str, Any],
    priority: int,
    max_retries: int,
    user: str | None,
) -> RunRow:
    """The parent run, ``Running`` at once (kind ``sweep``), and the sweep's row."""
    now = time.time()
    if not db.table("experiments").count_where("name = ?", [experiment]):
        db.table("experiments").insert({"name": experiment, "created_at": now})
    number = db.execute(
        "select coalesce(max(number), 0) + 1 from runs where experiment = ?", [experiment]
    ).fetchone()[0]
    db.table("runs").insert(
        {
            "id": sweep_id,
            "experiment": experiment,
            "number": number,
            "status": RunStatus.RUNNING.value,
            "target": target,
            "spec": json.dumps(run_config),
            "snapshot": snapshot,
            "created_at": now,
            "started_at": now,
            "tags": json.dumps(tags),
            "priority": priority,  # its children's
            "max_retries": max_retries,
            "user": user,
            "kind": RunKind.SWEEP.value,
            "properties": json.dumps(
                {
                    "primary_metric_name": spec["primary_metric_name"],
                    "primary_metric_goal": spec["primary_metric_goal"],
                }
            ),
        }
    )
    db.table("run_events").insert(
        {"run_id": sweep_id, "status": RunStatus.RUNNING.value, "at": now, "detail": "sweep"}
    )
    db.table("sweeps").insert(
        {
            "id": sweep_id,
            "spec": json.dumps(spec),
            "state": RUNNING,
            "max_total_runs": spec["max_total_runs"],
            "max_concurrent_runs": concurrency,
            "next_index": 0,
            "created_at": now,
        }
    )
    found = get_run(db, sweep_id)
    assert found is not None
    return found


def get_sweep(db: sqlite_utils.Database, sweep_id: str) -> SweepRow | None:
    rows = list(db.table("sweeps").rows_where("id = ?", [sweep_id]))
    return SweepRow.from_row(rows[0]) if rows else None


def open_sweeps(db: sqlite_utils.Database) -> list[SweepRow]:
    rows = db.table("sweeps").rows_where("state != ?", [DONE], order_by="created_at")
    return [SweepRow.from_row(r) for r in rows]


def children(db: sqlite_utils.Database, sweep_id: str) -> list[ChildRow]:
    rows = db.execute(
        "select c.idx, c.run_id, c.hyperparameters, c.stop, r.status, c.created_at"
        " from sweep_children c join runs r on r.id = c.run_id"
        " where c.sweep_id = ? order by c.idx",
        [sweep_id],
    ).fetchall()
    return [
        ChildRow(
            index=row[0],
            run_id=row[1],
            hyperparameters=json.loads(row[2]),
            stop=json.loads(row[3]) if row[3] else None,
            status=RunStatus(row[4]),
            created_at=row[5],
        )
        for row in rows
    ]


def insert_child(
    db: sqlite_utils.Database,
    parent: RunRow,
    index: int,
    hyperparameters: dict[str, Any],
    spec: dict[str, Any],
) -> RunRow | None:
    """Child ``index`` with its values and its queued run, if the sweep still expects that index
    and is running (``None`` otherwise: nothing written)."""
    moved = db.execute(
        "update sweeps set next_index = next_index + 1"
        " where id = ? and next_index = ? and state = ?",
        [parent.id, index, RUNNING],
    ).rowcount
    if moved != 1:
        return None
    values = json.dumps(hyperparameters)
    run_id = f"{parent.id}_{index}"
    db.table("sweep_children").insert(
        {
            "sweep_id": parent.id,
            "idx": index,
            "run_id": run_id,
            "hyperparameters": values,
            "created_at": time.time(),
        }
    )
    return insert_run(
        db,
        experiment=parent.experiment,
        spec=spec,
        snapshot=parent.snapshot or "",
        target=parent.target,
        tags=parent.tags,
        priority=parent.priority,
        max_retries=parent.max_retries,
        user=parent.user,
        run_id=run_id,
        parent_id=parent.id,
        properties={"hyperparameters": values},
    )


def set_state(
    db: sqlite_utils.Database, sweep_id: str, state: str, end_reason: str | None = None
) -> None:
    """A new state; the first end reason given is kept."""
    db.execute(
        "update sweeps set state = ?, end_reason = coalesce(end_reason, ?) where id = ?",
        [state, end_reason, sweep_id],
    )


def set_limits(
    db: sqlite_utils.Database,
    sweep_id: str,
    max_total_runs: int | None,
    max_concurrent_runs: int | None,
) -> None:
    """New limits; a sweep that had stopped starting children at max_total_runs goes on when the
    new one is higher."""
    if max_total_runs is not None:
        db.execute("update sweeps set max_total_runs = ? where id = ?", [max_total_runs, sweep_id])
        db.execute(
            "update sweeps set state = ?, end_reason = null where id = ? and state = ?"
            " and end_reason = 'max_total_runs' and next_index < max_total_runs",
            [RUNNING, sweep_id, ENDING],
        )
    if max_concurrent_runs is not None:
        db.execute(
            "update sweeps set max_concurrent_runs = ? where id = ?",
            [max_concurrent_runs, sweep_id],
        )


def stop_child(db: sqlite_utils.Database, run_id: str, stop: dict[str, Any], message: str) -> bool:
    """End a child for the sweep (a policy, the sweep's duration): a queued one ``Canceled`` at
    once, a running one ``CancelRequested`` (the launcher stops it and ends it ``Canceled``), one
    whose script has ended (``Finalizing``) left to finish; its error says why, with the numbers.
    Returns whether the driver must be told to stop it."""
    error = json.dumps(
        {"code": "UserError", "reason": stop["policy"], "message": message, "details": stop}
    )
    db.execute("update sweep_children set stop = ? where run_id = ?", [json.dumps(stop), run_id])
    if lifecycle.move(
        db,
        run_id,
        RunStatus.CANCELED,
        expect=[RunStatus.QUEUED],
        detail=message,
        reason=lifecycle.EndReason.CANCELED.value,
        error=error,
    ):
        return False
    return lifecycle.move(
        db,
        run_id,
        RunStatus.CANCEL_REQUESTED,
        expect=[RunStatus.PREPARING, RunStatus.STARTING, RunStatus.RUNNING],  # not once it ended
        detail=message,
        cancel_requested_at=time.time(),
        error=error,
    )


def primary_counts(db: sqlite_utils.Database, run_ids: list[str], name: str) -> int:
    """How many primary metric values the children have logged in all (one summary row each):
    the controller evaluates the policy when this grows."""
    if not run_ids:
        return 0
    marks = ", ".join("?" for _ in run_ids)
    row = db.execute(
        f"select coalesce(sum(n), 0) from metric_summary where name = ? and run_id in ({marks})",
        [name, *run_ids],
    ).fetchone()
    return int(row[0])


def primary_series(
    db: sqlite_utils.Database, run_ids: list[str], name: str
) -> dict[str, list[float]]:
    """Each child's numeric values of the primary metric, in logging order."""
    if not run_ids:
        return {}
    marks = ", ".join("?" for _ in run_ids)
    out: dict[str, list[float]] = {}
    for run_id, value in db.execute(
        f"select run_id, value from metrics where name = ? and kind = 'scalar'"
        f" and run_id in ({marks}) order by id",
        [name, *run_ids],
    ):
        number = json.loads(value)
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            out.setdefault(run_id, []).append(float(number))  # NaN too: a policy's worst value
    return out


def best_values(
    db: sqlite_utils.Database, run_ids: list[str], name: str, maximize: bool
) -> dict[str, float]:
    """Each child's best value of the primary metric (children without one are left out)."""
    if not run_ids:
        return {}
    marks = ", ".join("?" for _ in run_ids)
    column = "max" if maximize else "min"
    rows = db.execute(
        f"select run_id, {column} from metric_summary where name = ? and run_id in ({marks})"
        f" and {column} is not null",
        [name, *run_ids],
    )
    return {row[0]: float(row[1]) for row in rows}


def sweep_children_of(db: sqlite_utils.Database, sweep_ids: list[str]) -> list[ChildRow]:
    """The children of earlier sweeps (``resume_from``)."""
    return [child for sweep_id in sweep_ids for child in children(db, sweep_id)]


def request_cancel(db: sqlite_utils.Database, sweep_id: str) -> list[str]:
    """Cancel a sweep: no more children, its queued children ``Canceled`` at once, its active ones
    and the parent ``CancelRequested`` (the controller ends the parent once they have ended).
    Returns the children whose driver must be told to stop them."""
    sweep = get_sweep(db, sweep_id)
    if sweep is None or sweep.state == DONE:
        return []
    set_state(db, sweep_id, CANCELING, "canceled")
    now = time.time()
    lifecycle.request_cancel(db, sweep_id, now)
    driven = []
    for child in children(db, sweep_id):
        if child.finished:
            continue
        if lifecycle.move(
            db,
            child.run_id,
            RunStatus.CANCELED,
            expect=[RunStatus.QUEUED],
            detail=f"its sweep {sweep_id} was canceled",
            reason=lifecycle.EndReason.CANCELED.value,
        ):
            continue
        if lifecycle.request_cancel(db, child.run_id, now):
            driven.append(child.run_id)
    return driven
