"""Queries behind the dashboard's run pages: a keyset page of runs in either direction, and what the
runs of one page hold (allocations, metric names, metric columns). Every query here is bounded by
the runs of one page, so its cost does not grow with the number of runs on the server."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from trainhub.store.lifecycle import RunStatus
from trainhub.store.runs import RunRow

AGGREGATES = ("last", "min", "max")


@dataclass(frozen=True)
class RunFilter:
    experiment: str | None = None
    statuses: tuple[RunStatus, ...] | None = None
    user: str | None = None
    tag: str | None = None

    def source(self) -> str:
        """The FROM clause: a tag filter starts from the indexed ``run_tags`` table."""
        return "run_tags t join runs on runs.seq = t.seq" if self.tag is not None else "runs"

    def key(self) -> str:
        """The column that pages are cut on (the one the chosen index is ordered by)."""
        return "t.seq" if self.tag is not None else "runs.seq"

    def where(self) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if self.experiment is not None:
            where.append("runs.experiment = ?")
            params.append(self.experiment)
        if self.user is not None:
            where.append("runs.user = ?")
            params.append(self.user)
        if self.tag is not None:
            key, has_value, value = self.tag.partition("=")
            where.append("t.key = ?")
            params.append(key)
            if has_value:
                where.append("t.value = ?")
                params.append(value)
        if self.statuses is not None:
            where.append(f"runs.status in ({', '.join('?' for _ in self.statuses)})")
            params.extend(s.value for s in self.statuses)
        return where, params


@dataclass(frozen=True)
class RunPage:
    runs: list[RunRow]
    older: int | None  # the cursor of the next older page (its ``before``), None at the end
    newer: int | None  # the cursor of the next newer page (its ``after``), None on the first page


def page_of_runs(
    db: sqlite_utils.Database,
    filters: RunFilter,
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int = 50,
) -> RunPage:
    """Newest first, ``limit`` runs older than ``before`` or newer than ``after`` (keyset paging on
    ``seq``: one index range per filter, never OFFSET and never a count)."""
    where, params = filters.where()
    key = filters.key()
    if after is not None:
        rows = _select(db, filters, [*where, f"{key} > ?"], [*params, after], "asc", limit + 1)
        runs = list(reversed(rows[:limit]))
        newer = runs[0].seq if len(rows) > limit else None
        edge = runs[-1].seq if runs else after + 1
        older = edge if _exists(db, filters, where, params, f"{key} < ?", edge) else None
        return RunPage(runs, older, newer)
    extra = [*where, f"{key} < ?"] if before is not None else where
    rows = _select(
        db, filters, extra, [*params, before] if before is not None else params, "desc", limit + 1
    )
    runs = rows[:limit]
    older = runs[-1].seq if len(rows) > limit else None
    newer = None
    if before is not None:
        edge = runs[0].seq if runs else before - 1
        if _exists(db, filters, where, params, f"{key} > ?", edge):
            newer = edge
    return RunPage(runs, older, newer)


def _select(
    db: sqlite_utils.Database,
    filters: RunFilter,
    where: list[str],
    params: list[Any],
    direction: str,
    limit: int,
) -> list[RunRow]:
    sql = f"select runs.* from {filters.source()}"
    if where:
        sql += " where " + " and ".join(where)
    sql += f" order by {filters.key()} {direction} limit {int(limit)}"
    cursor = db.execute(sql, params)
    columns = [c[0] for c in cursor.description]
    return [RunRow.from_row(dict(zip(columns, row, strict=True))) for row in cursor.fetchall()]


def _exists(
    db: sqlite_utils.Database,
    filters: RunFilter,
    where: list[str],
    params: list[Any],
    clause: str,
    seq: int,
) -> bool:
    sql = f"select 1 from {filters.source()} where " + " and ".join([*where, clause]) + " limit 1"
    return db.execute(sql, [*params, seq]).fetchone() is not None


def allocations_of(
    db: sqlite_utils.Database, run_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """What each of ``run_ids`` holds now (running runs only): node and GPU indexes per node."""
    out: dict[str, list[dict[str, Any]]] = {}
    if not run_ids:
        return out
    marks = ", ".join("?" for _ in run_ids)
    rows = db.execute(
        f"select run_id, node, gpus, slots from allocations where run_id in ({marks}) order by rowid",
        list(run_ids),
    ).fetchall()
    for run_id, node, gpus, slots in rows:
        out.setdefault(run_id, []).append({"node": node, "gpus": json.loads(gpus), "slots": slots})
    return out


def metric_names(db: sqlite_utils.Database, run_ids: Sequence[str], limit: int = 200) -> list[str]:
    """Names of the numeric metrics the runs ``run_ids`` logged (the metric column picker's list)."""
    if not run_ids:
        return []
    marks = ", ".join("?" for _ in run_ids)
    rows = db.execute(
        f"select distinct name from metric_summary where run_id in ({marks}) and kind = 'scalar' "
        f"order by name limit ?",
        [*run_ids, limit],
    ).fetchall()
    return [str(r[0]) for r in rows]


def metric_columns(
    db: sqlite_utils.Database, run_ids: Sequence[str], names: Iterable[str]
) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(run_id, name): {"last": v, "min": v, "max": v}}`` of numeric scalars, only for ``run_ids``
    and ``names``: one row of ``metric_summary`` (kept by a trigger) per run and name, and the last
    points by id."""
    wanted = sorted(set(names))
    out: dict[tuple[str, str], dict[str, Any]] = {}
    if not run_ids or not wanted:
        return out
    run_marks = ", ".join("?" for _ in run_ids)
    name_marks = ", ".join("?" for _ in wanted)
    rows = db.execute(
        f"select run_id, name, min, max, last_id from metric_summary "
        f"where run_id in ({run_marks}) and name in ({name_marks}) and last_id is not null",
        [*run_ids, *wanted],
    ).fetchall()
    last_ids = [r[4] for r in rows]
    last: dict[int, Any] = {}
    if last_ids:
        marks = ", ".join("?" for _ in last_ids)
        for row_id, value in db.execute(
            f"select id, value from metrics where id in ({marks})", last_ids
        ).fetchall():
            last[int(row_id)] = json.loads(value)
    for run_id, name, low, high, last_id in rows:
        out[(run_id, name)] = {"last": last.get(int(last_id)), "min": low, "max": high}
    return out
