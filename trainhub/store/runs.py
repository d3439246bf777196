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
) -> RunRow:
    now = time.time()
    if not db.table("experiments").count_where("name = ?", [experiment]):
        db.table("experiments").insert({"name": experiment, "created_at": now})
    number = db.execute(
        "select coalesce(max(number), 0) + 1 from runs where experiment = ?", [experiment]
    ).fetchone()[0]
    run_id = new_run_id(experiment, now)
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
    tag: str | None = None,
) -> list[RunRow]:
    """Newest first, ``limit`` at most, before ``before_seq`` (keyset paging). ``tag`` is ``key``
    (the run has the tag) or ``key=value``."""
    where: list[str] = []
    params: list[Any] = []
    if experiment is not None:
        where.append("experiment = ?")
        params.append(experiment)
    if user is not None:
        where.append("user = ?")
        params.append(user)
    if tag is not None:
        key, has_value, value = tag.partition("=")
        if has_value:
            where.append("seq in (select seq from run_tags where key = ? and value = ?)")
            params.extend([key, value])
        else:
            where.append("seq in (select seq from run_tags where key = ?)")
            params.append(key)
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
