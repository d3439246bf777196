"""Experiments: the list with counts by status, one experiment's runs, and comparing chosen runs
(parameters and final metrics side by side, metric curves overlaid)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from litestar import Controller, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import Parameter
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Template

from trainhub.runs.views import param_text
from trainhub.store import Database
from trainhub.store import experiments as ex
from trainhub.store import runs as q

PAGE_SIZE = 50


def when(ts: float | None) -> str:
    """A time for a table cell, in UTC."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(start: float | None, end: float | None) -> str:
    """``1 h 02 min``, ``3 min 05 s``, ``12 s``; up to now for a run still going."""
    if start is None:
        return ""
    seconds = int((end if end is not None else time.time()) - start)
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def parse_run_ids(raw: list[str] | None) -> list[str]:
    """``?runs=a,b,c`` or ``?runs=a&runs=b`` (the experiment page's checkboxes), deduplicated."""
    ids = [part.strip() for item in raw or [] for part in item.split(",")]
    chosen = list(dict.fromkeys(i for i in ids if i))
    if len(chosen) > ex.MAX_COMPARE:
        raise HTTPException(
            status_code=400,
            detail=f"runs: compare at most {ex.MAX_COMPARE} runs at once (got {len(chosen)})",
        )
    return chosen


def shown(value: Any) -> str:
    """A parameter or metric value as a cell shows it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):  # a data reference
        return param_text(value)
    return str(value)


async def _require_experiment(db: Database, name: str) -> None:
    if not await db.read(lambda conn: ex.exists(conn, name)):
        raise NotFoundException(f"No experiment named '{name}'")


async def _chosen_runs(db: Database, name: str, raw: list[str] | None) -> list[q.RunRow]:
    await _require_experiment(db, name)
    ids = parse_run_ids(raw)
    runs = await db.read(lambda conn: ex.runs_of(conn, name, ids))
    missing = [i for i in ids if i not in {r.id for r in runs}]
    if missing:
        raise NotFoundException(f"Experiment '{name}' has no run '{missing[0]}'")
    return runs


def comparison(runs: list[q.RunRow], finals: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Columns (parameters, then final metrics), each with one cell per run (None where the run
    has no such value); a column whose cells are not all the same is marked ``differs``."""

    def column(kind: str, key: str, sources: list[dict[str, Any]]) -> dict[str, Any]:
        cells = [shown(src[key]) if key in src else None for src in sources]
        return {"kind": kind, "key": key, "cells": cells, "differs": len(set(cells)) > 1}

    params = [r.spec.get("script_params") or {} for r in runs]
    metrics = [finals.get(r.id, {}) for r in runs]
    param_keys = list(dict.fromkeys(k for p in params for k in p))
    metric_keys = sorted({k for m in metrics for k in m})
    columns = [column("param", k, params) for k in param_keys]
    columns += [column("metric", k, metrics) for k in metric_keys]
    rows = [{"run": r, "cells": [col["cells"][i] for col in columns]} for i, r in enumerate(runs)]
    return {"columns": columns, "rows": rows}


class ExperimentPages(Controller):
    include_in_schema = False

    @get("/experiments")
    async def experiments(self, request: HTMXRequest, state: State) -> Template:
        found = await state.db.read(ex.list_experiments)
        return Template(
            "experiments/list.html",
            context={"experiments": found, "when": when, "statuses": STATUS_ORDER},
        )

    @get("/experiments/{name:str}")
    async def experiment(
        self,
        request: HTMXRequest,
        state: State,
        name: str,
        before: int | None = Parameter(default=None, ge=1),
    ) -> Template:
        summary = await state.db.read(lambda conn: ex.summary(conn, name))
        if summary is None:
            raise NotFoundException(f"No experiment named '{name}'")
        rows = await state.db.read(
            lambda conn: q.list_runs(conn, experiment=name, before_seq=before, limit=PAGE_SIZE + 1)
        )
        page = rows[:PAGE_SIZE]
        return Template(
            "experiments/runs.html",
            context={
                "name": name,
                "runs": page,
                "summary": summary,
                "statuses": STATUS_ORDER,
                "older": page[-1].seq if len(rows) > PAGE_SIZE else None,
                "paged": before is not None,
                "max_compare": ex.MAX_COMPARE,
                "when": when,
                "duration": duration,
                "arguments": lambda r: " ".join(
                    f"{k} {shown(v)}".strip()
                    for k, v in (r.spec.get("script_params") or {}).items()
                ),
            },
        )

    @get("/experiments/{name:str}/compare")
    async def compare(
        self,
        request: HTMXRequest,
        state: State,
        name: str,
        runs: list[str] | None = None,
    ) -> Template:
        chosen = await _chosen_runs(state.db, name, runs)
        ids = [r.id for r in chosen]
        finals = await state.db.read(lambda conn: ex.final_metrics(conn, ids))
        table = comparison(chosen, finals)
        charted = sorted(
            {k for v in finals.values() for k, x in v.items() if ex.number_value(x) is not None}
        )
        return Template(
            "experiments/compare.html",
            context={
                "name": name,
                "runs": chosen,
                "ids": ",".join(ids),
                "table": table,
                "charted": charted,
                "max_points": ex.points_per_run(len(ids)),
            },
        )

    @get("/experiments/{name:str}/compare/metrics")
    async def compare_metrics(
        self,
        state: State,
        name: str,
        runs: list[str] | None = None,
        metric: str | None = None,
    ) -> dict[str, Any]:
        """The chosen runs' scalar series for the overlay charts, at most ``points_per_run``
        points a run (2,000 for a few runs, 200 for 50):
        ``{"metrics": {name: [{"runId", "label", "x", "y"}]}}`` (one metric when ``metric`` is
        given)."""
        chosen = await _chosen_runs(state.db, name, runs)
        ids = [r.id for r in chosen]
        labels = {r.id: f"#{r.number}" for r in chosen}
        per_run = ex.points_per_run(len(ids))

        def read(conn: Any) -> dict[str, Any]:
            names = [metric] if metric is not None else ex.scalar_names(conn, ids)
            out: dict[str, Any] = {}
            for one in names:
                series = ex.metric_series(conn, ids, one, per_run)
                out[one] = [
                    {"runId": i, "label": labels[i], "x": series[i]["x"], "y": series[i]["y"]}
                    for i in ids
                ]
            return out

        return {
            "experiment": name,
            "pointsPerRun": per_run,
            "metrics": await state.db.read(read),
        }


STATUS_ORDER = [
    "Queued",
    "Preparing",
    "Starting",
    "Running",
    "Finalizing",
    "CancelRequested",
    "Completed",
    "Failed",
    "Canceled",
]
