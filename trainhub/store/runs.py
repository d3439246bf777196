"""Queries on runs, experiments and their status history. Plain functions of a sqlite_utils.Database.

Write functions run on the writer thread (``await db.write(fn)``); they are short and never touch
Docker or the network.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlite_utils

from trainhub.store.lifecycle import RunStatus


@dataclass(frozen=True)
class RunRow:
    seq: int
    id: str
    experiment: str
    number: int
    status: RunStatus
    target: str
    node: str | None
    spec: dict[str, Any]
    snapshot: str | None
    container_id: str | None
    exit_code: int | None
    reason: str | None
    error: str | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    cancel_requested_at: float | None
    tags: dict[str, Any]
    context_lines: int
    snapshot_uploaded: int
    image: str | None
    pid: int | None
    priority: int
    wait_reason: str | None
    max_retries: int
    retries: int
    user: str | None
    kind: str  # RunKind: 'script' (a submitted script) or 'interactive' (start_logging, children)
    parent_id: str | None
    display_name: str | None
    description: str | None
    properties: dict[str, Any]
    last_seen_at: float | None  # an interactive run's last call from its client
    stored_bytes: int | None = None  # its folder's size once its history is final (disk use)
    outputs_removed_at: float | None = None  # when retention removed its outputs (logs stay)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunRow:
        values = dict(row)
        values["status"] = RunStatus(values["status"])
        values["spec"] = json.loads(values["spec"])
        values["tags"] = json.loads(values.get("tags") or "{}")
        values["properties"] = json.loads(values.get("properties") or "{}")
        return cls(**values)


class RunKind(StrEnum):
    SCRIPT = "script"  # a submitted script: the launcher runs it in a container or a process
    INTERACTIVE = "interactive"  # no script: a client (or a parent run's script) logs to it
    SWEEP = "sweep"  # a hyperparameter sweep's parent (HD_<id>): its children are script runs


def new_run_id(experiment: str, now: float) -> str:
    return f"{experiment}_{int(now)}_{secrets.token_hex(4)}"


def insert_run(
    db: sqlite_utils.Database,
    *,
    experiment: str,
    spec: dict[str, Any],
    snapshot: str,
    target: str,
    tags: dict[str, Any] | None = None,
    snapshot_uploaded: bool = True,
    priority: int = 0,
    max_retries: int = 0,
    user: str | None = None,
    run_id: str | None = None,
    parent_id: str | None = None,
    properties: dict[str, str] | None = None,
) -> RunRow:
    """A new queued script run; ``run_id``, ``parent_id`` and ``properties`` are given for a
    sweep's children (``HD_<id>_<index>``)."""
    now = time.time()
    if not db.table("experiments").count_where("name = ?", [experiment]):
        db.table("experiments").insert({"name": experiment, "created_at": now})
    number = db.execute(
        "select coalesce(max(number), 0) + 1 from runs where experiment = ?", [experiment]
    ).fetchone()[0]
    run_id = run_id or new_run_id(experiment, now)
    db.table("runs").insert(
        {
            "id": run_id,
            "experiment": experiment,
            "number": number,
            "status": RunStatus.QUEUED.value,
            "target": target,
            "spec": json.dumps(spec),
            "snapshot": snapshot,
            "created_at": now,
            "tags": json.dumps(tags or {}),
            "snapshot_uploaded": int(snapshot_uploaded),
            "priority": priority,
            "max_retries": max_retries,
            "user": user,
            "parent_id": parent_id,
            "properties": json.dumps(properties or {}),
        }
    )
    db.table("run_events").insert(
        {"run_id": run_id, "status": RunStatus.QUEUED.value, "at": now, "detail": None}
    )
    found = get_run(db, run_id)
    assert found is not None
    return found


def get_run(db: sqlite_utils.Database, run_id: str) -> RunRow | None:
    rows = list(db.table("runs").rows_where("id = ?", [run_id]))
    return RunRow.from_row(rows[0]) if rows else None


def list_runs(
    db: sqlite_utils.Database,
    *,
    experiment: str | None = None,
    statuses: Iterable[RunStatus] | None = None,
    before_seq: int | None = None,
    limit: int = 50,
    user: str | None = None,
    tags: Iterable[str] = (),
    properties: Iterable[str] = (),
    kind: RunKind | None = None,
    parent: str | None = None,
    top_level: bool = False,
) -> list[RunRow]:
    """Newest first, ``limit`` at most, before ``before_seq`` (keyset paging). Each of ``tags`` and
    ``properties`` is ``key`` (the run has it) or ``key=value``; all must match. ``parent`` keeps a
    run's children, ``top_level`` the runs that have no parent."""
    where: list[str] = []
    params: list[Any] = []
    if experiment is not None:
        where.append("experiment = ?")
        params.append(experiment)
    if user is not None:
        where.append("user = ?")
        params.append(user)
    _filter_runs(where, params, tags, properties, kind, parent, top_level)
    if statuses is not None:
        values = [s.value for s in statuses]
        where.append(f"status in ({', '.join('?' for _ in values)})")
        params.extend(values)
    if before_seq is not None:
        where.append("seq < ?")
        params.append(before_seq)
    rows = db.table("runs").rows_where(
        " and ".join(where) or None, params, order_by="seq desc", limit=limit
    )
    return [RunRow.from_row(r) for r in rows]


def runs_with_status(db: sqlite_utils.Database, statuses: Iterable[RunStatus]) -> list[RunRow]:
    values = [s.value for s in statuses]
    rows = db.table("runs").rows_where(
        f"status in ({', '.join('?' for _ in values)})", values, order_by="seq"
    )
    return [RunRow.from_row(r) for r in rows]


def update_run(db: sqlite_utils.Database, run_id: str, **fields: Any) -> None:
    seq = db.execute("select seq from runs where id = ?", [run_id]).fetchone()[0]
    db.table("runs").update(seq, fields)


def set_wait_reasons(db: sqlite_utils.Database, reasons: dict[str, str]) -> None:
    """Why each queued run waits (as the scheduler says), for runs still queued."""
    for run_id, reason in reasons.items():
        db.execute(
            "update runs set wait_reason = ? where id = ? and status = 'Queued'", [reason, run_id]
        )


def run_events(db: sqlite_utils.Database, run_id: str) -> list[dict[str, Any]]:
    return list(db.table("run_events").rows_where("run_id = ?", [run_id], order_by="id"))


def instance_id(db: sqlite_utils.Database) -> str:
    return str(db.table("meta").get("instance_id")["value"])


def session_secret(db: sqlite_utils.Database) -> str:
    """The key that signs and encrypts login sessions and CSRF tokens (made by a migration)."""
    return str(db.table("meta").get("session_secret")["value"])


def queue_position(db: sqlite_utils.Database, run: RunRow) -> int:
    """1 for the run the scheduler considers first (priority, then age)."""
    ahead = db.execute(
        "select count(*) from runs where status = 'Queued' and "
        "(priority > ? or (priority = ? and seq < ?))",
        [run.priority, run.priority, run.seq],
    ).fetchone()[0]
    return int(ahead) + 1


# Run queries and details: kind, parent and property filters, set-once properties, tags removed.


class PropertyAlreadySet(Exception):
    """A property is set once (as in Azure ML): ``key`` already holds another value."""

    def __init__(self, key: str, value: Any) -> None:
        self.key, self.value = key, value
        super().__init__(key)


def _filter_runs(
    where: list[str],
    params: list[Any],
    tags: Iterable[str],
    properties: Iterable[str],
    kind: RunKind | None,
    parent: str | None,
    top_level: bool,
) -> None:
    """Tags and properties are read from their indexed tables (``run_tags``, ``run_properties``,
    kept by triggers). The first of them picks the candidate runs (``seq in``: one index range);
    the others are checked on those runs only (``exists``), properties first as they are rarer:
    two ``in`` lists of a common tag cost ten times more. ``+parent_id`` keeps the parent index
    out of a top-level listing's plan: SQLite's statistics average over every parent, most runs
    have none, and the index looked far more selective than it is (bench/run_queries.py)."""
    pairs = [("run_properties", p) for p in properties] + [("run_tags", t) for t in tags]
    for number, (table, pair) in enumerate(pairs):
        key, has_value, value = pair.partition("=")
        match = "x.key = ? and x.value = ?" if has_value else "x.key = ?"
        if number == 0:
            where.append(f"seq in (select x.seq from {table} x where {match})")
        else:
            where.append(f"exists (select 1 from {table} x where x.seq = runs.seq and {match})")
        params.extend([key, value] if has_value else [key])
    if kind is not None:
        where.append("kind = ?")
        params.append(kind.value)
    if parent is not None:
        where.append("parent_id = ?")
        params.append(parent)
    elif top_level:
        where.append("+parent_id is null")


def add_properties(db: sqlite_utils.Database, run_id: str, new: dict[str, str]) -> dict[str, Any]:
    """Merge ``new`` into the run's properties; a key that holds another value already raises
    ``PropertyAlreadySet`` (checked in the same write as the change). Returns all of them."""
    row = db.execute("select seq, properties from runs where id = ?", [run_id]).fetchone()
    have: dict[str, Any] = json.loads(row[1] or "{}")
    for key, value in new.items():
        if key in have and have[key] != value:
            raise PropertyAlreadySet(key, have[key])
    merged = {**have, **new}
    if merged != have:
        db.table("runs").update(row[0], {"properties": json.dumps(merged)})
    return merged


def remove_tags(db: sqlite_utils.Database, run_id: str, keys: Iterable[str]) -> dict[str, Any]:
    """Drop the tags ``keys`` (those the run lacks are no error); returns the tags left."""
    row = db.execute("select seq, tags from runs where id = ?", [run_id]).fetchone()
    tags: dict[str, Any] = json.loads(row[1] or "{}")
    drop = set(keys)
    left = {k: v for k, v in tags.items() if k not in drop}
    if left != tags:
        db.table("runs").update(row[0], {"tags": json.dumps(left)})
    return left
