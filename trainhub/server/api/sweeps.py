"""``/api/v1`` sweep endpoints (HyperDrive): submit a sweep, read it, change its limits. Thin
handlers over :mod:`trainhub.hyperdrive.service`; a sweep is canceled as a run is."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, patch, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body

from trainhub.accounts import User
from trainhub.hyperdrive import service as sweeps
from trainhub.server.api.runs import read_submission


class SweepsController(Controller):
    path = "/api/v1"
    tags = ["sweeps"]

    @post("/experiments/{experiment:str}/sweeps", status_code=201, summary="Submit a sweep")
    async def submit(
        self,
        request: Request[User, Any, Any],
        state: State,
        experiment: str,
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> dict[str, Any]:
        """Multipart as a run's submission, with part ``sweep`` (``HyperDriveConfig``'s spec as
        JSON: its ``run_config`` is the children's estimator) instead of ``estimator``; parts
        ``snapshot`` or ``snapshot_id``, ``tags``, ``priority`` and ``max_retries`` as there (the
        children get them). Answers the sweep as ``GET /api/v1/sweeps/{id}`` does."""
        part = await read_submission(data, state.settings, "sweep", "the sweep")
        run = await sweeps.submit(
            state.settings,
            state.db,
            state.launcher,
            experiment=experiment,
            sweep=part.spec,
            upload=part.upload,
            snapshot_id=part.snapshot_id,
            tags=part.tags,
            priority=part.priority,
            max_retries=part.max_retries,
            user=request.user.name,
        )
        state.sweeps.wake()
        return await sweeps.details(state.db, run.id, state.settings.public_url)

    @get("/sweeps/{run_id:str}", summary="A sweep: its spec, counts and children")
    async def get_sweep(self, state: State, run_id: str) -> dict[str, Any]:
        return await sweeps.details(state.db, run_id, state.settings.public_url)

    @patch(
        "/sweeps/{run_id:str}",
        summary="Change max_concurrent_runs and max_total_runs while the sweep runs",
    )
    async def change(
        self, request: Request[User, Any, Any], state: State, run_id: str, data: Any
    ) -> dict[str, Any]:
        await sweeps.change_limits(state.db, run_id, data, request.user)
        state.sweeps.wake()
        return await sweeps.details(state.db, run_id, state.settings.public_url)
