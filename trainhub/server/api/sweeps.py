"""``/api/v1`` sweep endpoints (HyperDrive): submit a sweep, read it, change its limits. Thin
handlers over :mod:`trainhub.hyperdrive.service`; a sweep is canceled as a run is."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from litestar import Controller, Request, get, patch, post
from litestar.datastructures import State, UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body

from trainhub.accounts import User
from trainhub.hyperdrive import service as sweeps
from trainhub.runs import service
from trainhub.server.api.runs import _as_str, _spool, _text_part
from trainhub.spec import SpecError


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
        upload: Path | None = None
        try:
            spec = await _text_part(data, "sweep")
            tags = await _text_part(data, "tags")
            snapshot_id = await _text_part(data, "snapshot_id")
            priority = await _text_part(data, "priority")
            max_retries = await _text_part(data, "max_retries")
            snapshot = data.get("snapshot")
            if spec is None:
                raise SpecError(
                    "sweep", "The multipart part 'sweep' (the sweep as JSON) is missing"
                )
            if isinstance(snapshot, UploadFile):
                upload = service.new_upload_path(state.settings)
                try:
                    await asyncio.to_thread(_spool, snapshot, upload)
                except BaseException:
                    upload.unlink(missing_ok=True)
                    raise
            elif snapshot_id is None:
                raise SpecError(
                    "snapshot",
                    "The multipart part 'snapshot' (the source folder as .tar.gz) is missing",
                )
        finally:
            for part in data.values():
                if isinstance(part, UploadFile):
                    await part.close()
        run = await sweeps.submit(
            state.settings,
            state.db,
            state.launcher,
            experiment=experiment,
            sweep=spec,
            upload=upload,
            snapshot_id=None if upload else _as_str(snapshot_id),
            tags=tags,
            priority=_as_str(priority),
            max_retries=_as_str(max_retries),
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
