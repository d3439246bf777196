"""Queries behind the experiments pages: the list with counts by status, and comparing runs.

Read-only plain functions of a sqlite_utils.Database (call them with ``await db.read(fn)``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from trainhub.store import runs as q

MAX_COMPARE = 50
MAX_POINTS = 2000  # a run's curve in an overlay chart, at most
CHART_POINTS = 10_000  # all runs' curves in one chart together: 200 a run for 50 runs


def points_per_run(runs: int) -> int:
    """How many points each run's curve gets in a chart of ``runs`` curves (a chart a few hundred
    pixels wide shows no more; the JSON stays small)."""
    return max(1, min(MAX_POINTS, CHART_POINTS // max(runs, 1)))


@dataclass(frozen=True)
class ExperimentSummary:
    name: str
    created_at: float
    counts: dict[str, int]
    total: int
    last_run_id: str | None
    last_number: int | None
    last_status: str | None
    last_user: str | None
    last_created_at: float | None


# The counts come from ``experiment_counts`` (one row per experiment and status, kept by triggers
# on ``runs``: migration 0009): a few rows an experiment. The last run of each experiment is one
# max(seq) seek on runs(experiment, seq).
_COUNTS = "(select {agg} from experiment_counts c where c.experiment = e.name and c.n > 0)"
_LIST = f"""
with grouped as (
  select e.name, e.created_at,
    {_COUNTS.format(agg="json_group_object(c.status, c.n)")} as counts,
    {_COUNTS.format(agg="coalesce(sum(c.n), 0)")} as total,
    (select max(seq) from runs r where r.experiment = e.name) as last_seq
  from experiments e {{where}}
)
select g.name, g.created_at, g.counts, g.total,
  l.id, l.number, l.status, l.user, l.created_at
from grouped g left join runs l on l.seq = g.last_seq
order by coalesce(l.seq, 0) desc, g.name
"""


def list_sql(where: str = "") -> str:
    return _LIST.format(where=where)


def list_experiments(db: sqlite_utils.Database) -> list[ExperimentSummary]:
    """Every experiment with its runs counted by status and its newest run; the most recently
    used experiment first."""
    return _summaries(db, list_sql(), [])


def summary(db: sqlite_utils.Database, name: str) -> ExperimentSummary | None:
    """One experiment's counts and newest run; None when there is no such experiment."""
    found = _summaries(db, list_sql("where e.name = ?"), [name])
    return found[0] if found else None


def _summaries(db: sqlite_utils.Database, sql: str, params: list[Any]) -> list[ExperimentSummary]:
    out = []
    for row in db.execute(sql, params).fetchall():
        out.append(
            ExperimentSummary(
                name=row[0],
                created_at=row[1],
                counts=json.loads(row[2]) if row[2] else {},
                total=int(row[3]),
                last_run_id=row[4],
                last_number=row[5],
                last_status=row[6],
                last_user=row[7],
                last_created_at=row[8],
            )
        )
    return out


def names(db: sqlite_utils.Database) -> list[str]:
    return [row[0] for row in db.execute("select name from experiments order by name")]


def exists(db: sqlite_utils.Database, name: str) -> bool:
    return bool(db.execute("select 1 from experiments where name = ?", [name]).fetchone())


def runs_of(db: sqlite_utils.Database, experiment: str, run_ids: list[str]) -> list[q.RunRow]:
    """The runs ``run_ids`` of ``experiment``, in the order given (ids of other experiments and
    unknown ids are left out)."""
    if not run_ids:
        return []
    # By the unique index on id (with the experiment in the where clause, SQLite would rather
    # walk all of the experiment's runs).
    rows = db.table("runs").rows_where(
        "id in (select value from json_each(?))", [json.dumps(run_ids)]
    )
    found = {
        r.id: r for r in (q.RunRow.from_row(row) for row in rows) if r.experiment == experiment
    }
    return [found[i] for i in run_ids if i in found]


# The distinct metric names of each run walked through the runs' (run_id, name) index one seek at
# a time (a loose index scan), then each name's last record found by one more seek: the cost
# grows with the number of names, not with the number of points logged.
_FINAL = """
with recursive names(run_id, name) as (
  select r.value, (select min(name) from metrics where run_id = r.value) from json_each(?) r
  union all
  select n.run_id,
    (select min(m.name) from metrics m where m.run_id = n.run_id and m.name > n.name)
  from names n where n.name is not null
)
select n.run_id, n.name, m.kind, m.value
from names n join metrics m on m.id = (
  select max(id) from metrics where run_id = n.run_id and name = n.name
)
where n.name is not null
"""


def final_metrics(db: sqlite_utils.Database, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """``{run_id: {metric: last value}}`` of each scalar metric the runs logged."""
    out: dict[str, dict[str, Any]] = {run_id: {} for run_id in run_ids}
    for run_id, name, kind, value in db.execute(_FINAL, [json.dumps(run_ids)]).fetchall():
        if kind == "scalar":
            out[run_id][name] = json.loads(value)
    return out


def metric_series(
    db: sqlite_utils.Database, run_ids: list[str], name: str, max_points: int = MAX_POINTS
) -> dict[str, dict[str, list[float]]]:
    """Each run's scalar series ``name`` as ``{"x": steps, "y": values}`` sorted by step, at most
    ``max_points`` points a run: beyond that points evenly spread, the first and last among them.
    Only the index on (run_id, name) is read for the points left out. A point logged without a step gets its index in
    the series; values that are not finite numbers are left out."""
    out: dict[str, dict[str, list[float]]] = {}
    for run_id in run_ids:
        # The ids as one string, in the index's order (by id): a row per point would cost more in
        # Python than the query. Only the picked ones are turned into numbers.
        joined = db.execute(
            "select group_concat(id) from metrics where run_id = ? and name = ?", [run_id, name]
        ).fetchone()[0]
        ids = joined.split(",") if joined else []
        where = {int(ids[i]): i for i in stride(len(ids), max_points)}
        rows = db.execute(
            "select id, step, value from metrics "
            "where id in (select value from json_each(?)) and kind = 'scalar' order by id",
            [json.dumps(list(where))],
        )
        points: list[tuple[float, float]] = []
        for row_id, step, raw in rows:
            value = _number(raw)
            if value is not None:
                points.append((float(step if step is not None else where[row_id]), value))
        if any(points[i][0] > points[i + 1][0] for i in range(len(points) - 1)):
            points.sort(key=lambda p: p[0])
        out[run_id] = {"x": [p[0] for p in points], "y": [p[1] for p in points]}
    return out


def stride(count: int, limit: int) -> list[int]:
    """Positions ``0 .. count - 1``, or at most ``limit`` of them evenly spread (the last kept)."""
    if count <= limit:
        return list(range(count))
    return [round(i * (count - 1) / (limit - 1)) for i in range(limit)]


def scalar_names(db: sqlite_utils.Database, run_ids: list[str]) -> list[str]:
    """The scalar metrics any of ``run_ids`` logged, sorted."""
    names: set[str] = set()
    for values in final_metrics(db, run_ids).values():
        names.update(k for k, v in values.items() if number_value(v) is not None)
    return sorted(names)


def _number(raw: str) -> float | None:
    """A stored scalar (JSON text) as a finite number, or None. ``float`` reads every number JSON
    writes and refuses ``true`` or a string; NaN and infinities are left out."""
    try:
        number = float(raw)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def number_value(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
