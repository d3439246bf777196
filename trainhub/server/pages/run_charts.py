"""The run page's charts: one per scalar metric (and per GPU series the server sampled), each loading
its points only when scrolled into view, at most ``MAX_POINTS`` of them (:mod:`trainhub.store.charts`);
tables, rows and images the script logged, as HTML tables and images."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import File, Template

from trainhub.nodes.telemetry import IDLE_BELOW, hint_from_counts
from trainhub.runs import service
from trainhub.runs.artifacts import resolve_artifact
from trainhub.store import charts, telemetry

JSON_SUFFIX = ".json"


def _system_chart_names(gpus: list[tuple[str, int]]) -> list[str]:
    names = []
    for node, gpu in gpus:
        label = telemetry.label(gpus, node, gpu)
        names += [f"gpu/{label}/utilization", f"gpu/{label}/memory_used"]
    return names


def _layout(infos: list[charts.MetricInfo]) -> dict[str, list[charts.MetricInfo]]:
    """Metrics by how they are shown: charts, single values, tables, images."""
    out: dict[str, list[charts.MetricInfo]] = {
        "charts": [],
        "values": [],
        "tables": [],
        "images": [],
    }
    for info in infos:
        if info.kind == "list" or (info.kind == "scalar" and info.several):
            out["charts"].append(info)
        elif info.kind == "scalar":
            out["values"].append(info)
        elif info.kind in ("table", "row"):
            out["tables"].append(info)
        elif info.kind == "image":
            out["images"].append(info)
    return out


def _series_json(series: charts.Series, system: bool = False) -> dict[str, Any]:
    return {
        "name": series.name,
        "x": series.x,
        "system": system,
        "total": series.total,
        "sampled": series.sampled,
        "points": len(series.xs),
        "data": [series.xs, series.ys],
    }


class RunChartPages(Controller):
    include_in_schema = False
    path = "/runs/{run_id:str}"

    @get("/charts")
    async def charts_fragment(self, request: HTMXRequest, state: State, run_id: str) -> Template:
        """Every metric of the run: placeholders for charts (``static/charts.js`` loads each one's
        points when it comes into view), single values, tables and images."""
        run = await service.get(state.db, run_id)

        def read(db: Any) -> dict[str, Any]:
            infos = charts.metric_names(db, run_id)
            layout = _layout(infos)
            tables = [(i, charts.table_of(db, run_id, i.name, i.kind)) for i in layout["tables"]]
            gpus = telemetry.gpus_of(db, run_id)
            hint = hint_from_counts(telemetry.idle_counts(db, run_id, IDLE_BELOW)) if gpus else None
            return {
                **layout,
                "tables": tables,
                "system": _system_chart_names(gpus),
                "idle_hint": hint,
                "capped": len(infos) >= charts.MAX_NAMES,
            }

        context = {"run": run, "max_names": charts.MAX_NAMES, **(await state.db.read(read))}
        if request.htmx:
            return HTMXTemplate(template_name="runs/_charts.html", context=context)
        return Template("runs/_charts_page.html", context=context)

    @get("/metrics/{name:path}")
    async def series(
        self, state: State, run_id: str, name: str, system: bool = False
    ) -> dict[str, Any]:
        """``/runs/{id}/metrics/{name}.json``: a chart's points as uPlot takes them
        (``data: [xs, ys]``); ``system=true`` for the GPU series the server sampled."""
        await service.get(state.db, run_id)
        metric = name.lstrip("/")
        if not metric.endswith(JSON_SUFFIX):
            raise NotFoundException(f"No such page: a metric's points are at {metric}{JSON_SUFFIX}")
        metric = metric[: -len(JSON_SUFFIX)]
        if system:
            sampled = await state.db.read(lambda db: telemetry.series(db, run_id))
            if metric not in sampled:
                raise NotFoundException(f"Run {run_id} has no system metric '{metric}'")
            points = sampled[metric]
            xs = [p["step"] for p in points if p["value"] is not None]
            ys = [p["value"] for p in points if p["value"] is not None]
            steps = int(points[-1]["step"]) + 1 if points else 0
            series = charts.Series(metric, "step", xs, ys, steps, sampled=steps > len(points))
            return _series_json(series, system=True)

        found = await state.db.read(lambda db: charts.chart_series(db, run_id, metric))
        if found is None:
            raise NotFoundException(f"Run {run_id} has no metric '{metric}' to chart")
        return _series_json(found)

    @get("/images/{name:path}")
    async def image(self, state: State, run_id: str, name: str) -> File:
        """The latest image the script logged as ``name`` (``log_image``), a PNG."""
        await service.get(state.db, run_id)
        metric = name.lstrip("/")
        relative = await state.db.read(lambda db: charts.image_path(db, run_id, metric))
        found = (
            await asyncio.to_thread(resolve_artifact, state.settings.run_dir(run_id), relative)
            if relative and relative.startswith("images/") and relative.endswith(".png")
            else None
        )
        if found is None:
            raise NotFoundException(f"Run {run_id} has no image '{metric}'")
        return File(
            path=found,
            filename=found.name,
            media_type="image/png",
            content_disposition_type="inline",
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=60"},
        )
