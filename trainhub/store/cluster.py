"""What the queue and nodes pages read: the queued runs in the scheduler's order, and what runs hold
on each node. Only queued runs and allocations are read, so neither page slows down as finished
runs pile up."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from trainhub.spec import stored_processes_per_node

# The queue page shows this many runs at most (and says how many more wait).
QUEUE_PAGE = 500


@dataclass(frozen=True)
class QueuedRun:
    position: int  # 1 for the run the scheduler considers first
    id: str
    experiment: str
    number: int
    user: str | None
    target: str
    priority: int
    created_at: float
    wait_reason: str | None
    retries: int
    node_count: int
    gpus_per_node: int  # 0 for a CPU run
    processes_per_node: int
    slurm_job: str | None = None  # waiting in a Slurm cluster's queue as this job


def queue(db: sqlite_utils.Database, limit: int = QUEUE_PAGE) -> tuple[list[QueuedRun], int]:
    """The first ``limit`` queued runs in the order the scheduler considers them (priority, then
    age), and how many runs are queued in all."""
    total = int(db.execute("select count(*) from runs where status = 'Queued'").fetchone()[0])
    rows = db.execute(
        "select r.id, r.experiment, r.number, r.user, r.target, r.priority, r.created_at, "
        "r.wait_reason, r.retries, j.job_id, r.spec from runs r "
        "left join slurm_jobs j on j.run_id = r.id "
        "where r.status = 'Queued' order by r.priority desc, r.seq limit ?",
        [limit],
    ).fetchall()
    found = [_queued(p, row, json.loads(row[-1])) for p, row in enumerate(rows, start=1)]
    return found, total


def _queued(position: int, row: tuple[Any, ...], spec: dict[str, Any]) -> QueuedRun:
    run_id, experiment, number, user, target, priority, created, reason, retries, job, _ = row
    per_node = stored_processes_per_node(spec)
    return QueuedRun(
        position=position,
        id=str(run_id),
        experiment=str(experiment),
        number=int(number),
        user=user,
        target=str(target or "local"),
        priority=int(priority or 0),
        created_at=float(created),
        wait_reason=reason,
        retries=int(retries or 0),
        node_count=int(spec.get("node_count", 1)),
        gpus_per_node=per_node if spec.get("use_gpu") else 0,
        processes_per_node=per_node,
        slurm_job=None if job is None else str(job),
    )


def holders(db: sqlite_utils.Database) -> dict[str, dict[str, Any]]:
    """node -> ``{"gpus": {index: run id}, "runs": [run ids], "slots": n}`` for every node where
    runs hold something now."""
    found: dict[str, dict[str, Any]] = {}
    for run_id, node, gpus, slots in db.execute(
        "select run_id, node, gpus, slots from allocations order by run_id"
    ).fetchall():
        entry = found.setdefault(str(node), {"gpus": {}, "runs": [], "slots": 0})
        for index in json.loads(gpus or "[]"):
            entry["gpus"][int(index)] = str(run_id)
        entry["runs"].append(str(run_id))
        entry["slots"] += int(slots or 0)
    return found
