"""What the run page's charts read: a run's metric names, a scalar metric as at most ``MAX_POINTS``
points (the lowest and the highest value of each bucket of steps, so no spike is lost), tables
and rows as bounded tables. Each read costs about the same for ten points or a million: names are
walked one index seek at a time, series are bucketed by SQLite, tables are cut at ``MAX_ROWS``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

MAX_POINTS = 2000  # points of one chart at most
MAX_NAMES = 200  # metrics listed on a run page at most
MAX_ROWS = 200  # rows of one table shown at most
MAX_COLUMNS = 50  # columns of one table shown at most
CHART_KINDS = ("scalar", "list")

# A value SQLite can read as a finite number (not NaN, Infinity, text, lists or objects).
_NUMERIC = "value glob '[0-9-]*' and value not glob '*[^0-9eE.+-]*'"


@dataclass(frozen=True)
class MetricInfo:
    """One metric of a run: its name, the kind of its latest record, whether it was logged more
    than once, and the latest value."""

    name: str
    kind: str
    several: bool
    last: Any
    step: int | None


@dataclass(frozen=True)
class Series:
    """A chart's points: ``xs`` are steps (``x == "step"``) or the record's index (``"index"``)."""

    name: str
    x: str
    xs: list[float]
    ys: list[float]
    total: int  # records of the metric (numeric or not)
    sampled: bool  # True when buckets' lowest and highest stand for all the points


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    total_rows: int
    cut: bool = False
    cut_columns: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def metric_names(
    db: sqlite_utils.Database, run_id: str, limit: int = MAX_NAMES
) -> list[MetricInfo]:
    """The run's metrics in name order, at most ``limit``: one index seek per name (a metric with
    a million points costs what one with a single point does)."""
    out: list[MetricInfo] = []
    name: str | None = None
    while len(out) < limit:
        if name is None:
            row = db.execute(
                "select name from metrics where run_id = ? order by name limit 1", [run_id]
            ).fetchone()
        else:
            row = db.execute(
                "select name from metrics where run_id = ? and name > ? order by name limit 1",
                [run_id, name],
            ).fetchone()
        if row is None:
            break
        name = str(row[0])
        latest = db.execute(
            "select kind, value, step from metrics where run_id = ? and name = ? "
            "order by id desc limit 2",
            [run_id, name],
        ).fetchall()
        kind, value, step = latest[0]
        out.append(MetricInfo(name, str(kind), len(latest) > 1, _loads(value), step))
    return out


def _loads(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def scalar_series(
    db: sqlite_utils.Database, run_id: str, name: str, max_points: int = MAX_POINTS
) -> Series:
    """The metric's numeric values against their steps (or their index when some record has no
    step). More than ``max_points`` values are cut into ``max_points // 2`` buckets of steps, each
    kept as its lowest and its highest value at their own steps."""
    where = "run_id = ? and name = ? and kind = 'scalar'"
    params = [run_id, name]
    total, with_step, low, high = db.execute(
        f"select count(*), count(step), min(step), max(step) from metrics where {where}", params
    ).fetchone()
    by_step = total > 0 and with_step == total
    x = "step" if by_step else "index"
    if total <= max_points:
        xs: list[float] = []
        ys: list[float] = []
        rows = db.execute(f"select step, value from metrics where {where} order by id", params)
        for index, (step, raw) in enumerate(rows):
            value = _number(_loads(raw))
            if value is not None:
                xs.append(step if by_step else index)
                ys.append(value)
        if by_step:
            pairs = sorted(zip(xs, ys, strict=True), key=lambda p: p[0])
            xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        return Series(name, x, xs, ys, total, sampled=False)
    buckets = max(1, max_points // 2)
    if by_step:
        span = int(high) - int(low) + 1
        source = (
            f"select (step - {int(low)}) * {buckets} / {span} as b, step as x, "
            f"cast(value as real) as v from metrics where {where} and {_NUMERIC}"
        )
    else:
        source = (
            f"select (row_number() over (order by id) - 1) * {buckets} / {total} as b, "
            f"row_number() over (order by id) - 1 as x, value from metrics where {where}"
        )
        source = f"select b, x, cast(value as real) as v from ({source}) where {_NUMERIC}"
    points: dict[tuple[float, float], None] = {}
    for pick in ("min", "max"):
        # SQLite fills the bare column x from the row that holds the min (max) of its group.
        query = f"select b, x, {pick}(v) from ({source}) group by b"
        for _, px, pv in db.execute(query, params):
            points[(float(px), float(pv))] = None
    ordered = sorted(points)
    return Series(name, x, [p[0] for p in ordered], [p[1] for p in ordered], total, sampled=True)


def chart_series(db: sqlite_utils.Database, run_id: str, name: str) -> Series | None:
    """The points of a metric drawn as a chart (a scalar logged repeatedly, or a list); None when
    the run has no such metric or its latest record is of another kind."""
    row = db.execute(
        "select kind from metrics where run_id = ? and name = ? order by id desc limit 1",
        [run_id, name],
    ).fetchone()
    if row is None or row[0] not in CHART_KINDS:
        return None
    if row[0] == "list":
        return list_series(db, run_id, name)
    return scalar_series(db, run_id, name)


def list_series(
    db: sqlite_utils.Database, run_id: str, name: str, max_points: int = MAX_POINTS
) -> Series:
    """A ``log_list`` metric: its latest list against the index (every n-th value past
    ``max_points``)."""
    row = db.execute(
        "select value from metrics where run_id = ? and name = ? and kind = 'list' "
        "order by id desc limit 1",
        [run_id, name],
    ).fetchone()
    values = _loads(row[0]) if row else None
    values = values if isinstance(values, list) else []
    pairs = [(i, v) for i, raw in enumerate(values) if (v := _number(raw)) is not None]
    sampled = len(pairs) > max_points
    if sampled:
        pairs = pairs[:: -(-len(pairs) // max_points)]
    return Series(name, "index", [p[0] for p in pairs], [p[1] for p in pairs], len(values), sampled)


def table_of(db: sqlite_utils.Database, run_id: str, name: str, kind: str) -> Table:
    """A ``log_table`` (its latest value: columns of equal length) or the ``log_row`` records of a
    metric merged into one table, at most ``MAX_ROWS`` rows and ``MAX_COLUMNS`` columns."""
    if kind == "table":
        row = db.execute(
            "select value from metrics where run_id = ? and name = ? and kind = 'table' "
            "order by id desc limit 1",
            [run_id, name],
        ).fetchone()
        value = _loads(row[0]) if row else None
        columns_of: dict[str, list[Any]] = (
            {str(k): v if isinstance(v, list) else [v] for k, v in value.items()}
            if isinstance(value, dict)
            else {}
        )
        names = list(columns_of)
        height = max((len(v) for v in columns_of.values()), default=0)
        shown = names[:MAX_COLUMNS]
        rows = [
            [columns_of[c][i] if i < len(columns_of[c]) else None for c in shown]
            for i in range(min(height, MAX_ROWS))
        ]
        return Table(shown, rows, height, height > MAX_ROWS, len(names) > MAX_COLUMNS)
    total = db.execute(
        "select count(*) from metrics where run_id = ? and name = ? and kind = 'row'",
        [run_id, name],
    ).fetchone()[0]
    records = [
        _loads(r[0])
        for r in db.execute(
            "select value from metrics where run_id = ? and name = ? and kind = 'row' "
            "order by id limit ?",
            [run_id, name, MAX_ROWS],
        )
    ]
    columns: dict[str, None] = {}
    for record in records:
        if isinstance(record, dict):
            for key in record:
                columns.setdefault(str(key), None)
    names = list(columns)
    shown = names[:MAX_COLUMNS]
    rows = [
        [record.get(c) if isinstance(record, dict) else None for c in shown] for record in records
    ]
    return Table(shown, rows, int(total), int(total) > MAX_ROWS, len(names) > MAX_COLUMNS)


def image_path(db: sqlite_utils.Database, run_id: str, name: str) -> str | None:
    """Where the run's latest image ``name`` lies, relative to the run's folder."""
    row = db.execute(
        "select value from metrics where run_id = ? and name = ? and kind = 'image' "
        "order by id desc limit 1",
        [run_id, name],
    ).fetchone()
    value = _loads(row[0]) if row else None
    return value if isinstance(value, str) else None
