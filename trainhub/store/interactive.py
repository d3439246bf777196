"""Interactive runs (``experiment.start_logging()``) and run trees: queries of ``store.runs``' table.

An interactive run has no script: it is inserted ``Running`` and its client (or, for a child made
inside a submitted script, that script's records) logs to it. ``last_seen_at`` is its client's last
call; a run whose liveness is not a client's (a child made inside a script ends with its parent) has
none, and is never abandoned. Write functions run on the writer thread.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from typing import Any

import sqlite_utils

from trainhub.store.lifecycle import TERMINAL, RunStatus
from trainhub.store.runs import RunKind, RunRow, get_run, new_run_id

# A run id a client or a script may choose (``child_run(run_id=...)``): a URL path segment as is.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_OPEN = ", ".join(f"'{s.value}'" for s in RunStatus if s not in TERMINAL)
_TREE = (
    "with recursive tree(id, depth) as ("
    " select id, 1 from runs where parent_id = :root"
    " union all select r.id, t.depth + 1 from runs r join tree t on r.parent_id = t.id"
    " where t.depth < :depth)"
)


def insert(
    db: sqlite_utils.Database,
    *,
    experiment: str,
    user: str | None,
    target: str,
    parent_id: str | None = None,
    run_id: str | None = None,
    display_name: str | None = None,
    tags: dict[str, Any] | None = None,
    snapshot: str | None = None,
    watched: bool = True,
    why: str = "started by its client",
) -> RunRow:
    """A new interactive run, already ``Running``. ``watched``: its client's calls keep it open
    (``last_seen_at``); otherwise it ends with its parent only."""
    now = time.time()
    if not db.table("experiments").count_where("name = ?", [experiment]):
        db.table("experiments").insert({"name": experiment, "created_at": now})
    number = db.execute(
        "select coalesce(max(number), 0) + 1 from runs where experiment = ?", [experiment]
    ).fetchone()[0]
    new_id = run_id or new_run_id(experiment, now)
    db.table("runs").insert(
        {
            "id": new_id,
            "experiment": experiment,
            "number": number,
            "status": RunStatus.RUNNING.value,
            "target": target,
            "spec": "{}",
            "snapshot": snapshot,
            "created_at": now,
            "started_at": now,
            "tags": json.dumps(tags or {}),
            "snapshot_uploaded": int(snapshot is not None),
            "user": user,
            "kind": RunKind.INTERACTIVE.value,
            "parent_id": parent_id,
            "display_name": display_name,
            "last_seen_at": now if watched else None,
        }
    )
    db.table("run_events").insert(
        {"run_id": new_id, "status": RunStatus.RUNNING.value, "at": now, "detail": why}
    )
    found = get_run(db, new_id)
    assert found is not None
    return found


def exists(db: sqlite_utils.Database, run_id: str) -> bool:
    return db.execute("select 1 from runs where id = ?", [run_id]).fetchone() is not None


def touch(db: sqlite_utils.Database, run_ids: Iterable[str], now: float) -> None:
    """A call from the runs' client: they are not abandoned (runs nobody watches stay so)."""
    for run_id in run_ids:
        db.execute(
            "update runs set last_seen_at = ? where id = ? and last_seen_at is not null",
            [now, run_id],
        )


def touch_tree(db: sqlite_utils.Database, run_id: str, now: float) -> None:
    """A heartbeat: the run and every open run below it (one client keeps its whole tree open)."""
    touch(db, [run_id, *open_descendants(db, run_id)], now)


def open_descendants(db: sqlite_utils.Database, run_id: str) -> list[str]:
    rows = db.execute(
        f"{_TREE} select runs.id from tree join runs on runs.id = tree.id"
        f" where runs.status in ({_OPEN})",
        {"root": run_id, "depth": 1000},
    )
    return [row[0] for row in rows]


def descendants(db: sqlite_utils.Database, run_id: str) -> set[str]:
    rows = db.execute(f"{_TREE} select id from tree", {"root": run_id, "depth": 1000})
    return {row[0] for row in rows}


def abandoned(db: sqlite_utils.Database, before: float) -> list[str]:
    """Open interactive runs whose client's last call was before ``before``."""
    rows = db.execute(
        "select id from runs where kind = ? and status = ? and last_seen_at < ? order by seq",
        [RunKind.INTERACTIVE.value, RunStatus.RUNNING.value, before],
    )
    return [row[0] for row in rows]


def refresh_watched(db: sqlite_utils.Database, now: float) -> int:
    """After a server restart: the clients of open interactive runs could not call while it was
    down, so each gets a full timeout from now. Returns how many."""
    cursor = db.execute(
        "update runs set last_seen_at = ? where kind = ? and status = ? and last_seen_at is not null",
        [now, RunKind.INTERACTIVE.value, RunStatus.RUNNING.value],
    )
    return int(cursor.rowcount)


def children(
    db: sqlite_utils.Database,
    run_id: str,
    *,
    recursive: bool = False,
    statuses: Iterable[RunStatus] | None = None,
    kind: RunKind | None = None,
    tags: Iterable[str] = (),
    properties: Iterable[str] = (),
    after_seq: int | None = None,
    limit: int = 100,
) -> list[RunRow]:
    """The run's children (``recursive``: and theirs) in the order they were made, ``limit`` at
    most, after ``after_seq`` (keyset paging). ``tags`` and ``properties`` are each ``key`` (the run
    has it) or ``key=value``; all of them must match."""
    where = ["runs.id in (select id from tree)"]
    params: dict[str, Any] = {"root": run_id, "depth": 1000 if recursive else 1, "limit": limit}
    if statuses is not None:
        names = []
        for index, status in enumerate(statuses):
            params[f"s{index}"] = status.value
            names.append(f":s{index}")
        where.append(f"status in ({', '.join(names) or 'null'})")
    if kind is not None:
        where.append("kind = :kind")
        params["kind"] = kind.value
    for index, tag in enumerate(tags):
        key, has_value, value = tag.partition("=")
        params[f"tk{index}"] = key
        if has_value:
            params[f"tv{index}"] = value
            where.append(
                f"seq in (select seq from run_tags where key = :tk{index} and value = :tv{index})"
            )
        else:
            where.append(f"seq in (select seq from run_tags where key = :tk{index})")
    for index, prop in enumerate(properties):
        key, has_value, value = prop.partition("=")
        params[f"pk{index}"] = f'$."{key}"'
        if has_value:
            params[f"pv{index}"] = value
            where.append(f"json_extract(properties, :pk{index}) = :pv{index}")
        else:
            where.append(f"json_type(properties, :pk{index}) is not null")
    if after_seq is not None:
        where.append("seq > :after")
        params["after"] = after_seq
    rows = db.execute(
        f"{_TREE} select * from runs where {' and '.join(where)} order by seq limit :limit", params
    )
    columns = [c[0] for c in rows.description]
    return [RunRow.from_row(dict(zip(columns, row, strict=True))) for row in rows]
