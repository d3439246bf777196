"""``GET /api/v1/runs/{run_id}/system-metrics``: what the GPUs a run held did, sampled by the
server (:mod:`trainhub.nodes.telemetry`), with a hint when they sat idle most of the time."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get
from litestar.datastructures import State
from litestar.params import Parameter

from trainhub.nodes.telemetry import IDLE_BELOW, hint_from_counts
from trainhub.runs import service
from trainhub.store import telemetry


class TelemetryController(Controller):
    path = "/api/v1"
    tags = ["runs"]

    @get(
        "/runs/{run_id:str}/system-metrics",
        summary="GPU utilisation and memory used of the run's GPUs, sampled by the server",
    )
    async def system_metrics(
        self,
        state: State,
        run_id: str,
        max_points: Annotated[
            int,
            Parameter(
                ge=10,
                le=100_000,
                description="longer series are averaged into this many points",
            ),
        ] = telemetry.MAX_POINTS,
    ) -> dict[str, Any]:
        """Series ``gpu/<index>/utilization`` (percent) and ``gpu/<index>/memory_used`` (MiB), one
        per GPU of the run's allocation (``gpu/<node>:<index>/...`` for a run on several nodes);
        each point has the sample's step (0, 1, ... per GPU), value and time."""
        await service.get(state.db, run_id)
        series, counts = await state.db.read(
            lambda db: (
                telemetry.series(db, run_id, max_points),
                telemetry.idle_counts(db, run_id, IDLE_BELOW),
            )
        )
        return {
            "runId": run_id,
            "sampleSeconds": state.settings.gpu_sample_seconds,
            "idleHint": hint_from_counts(counts),
            "series": {
                name: [
                    {"step": p["step"], "value": p["value"], "timeUtc": service.iso(p["at"])}
                    for p in points
                ]
                for name, points in series.items()
            },
        }
