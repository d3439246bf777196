"""``/api/v1/gc`` and ``/api/v1/disk`` (admins): free unused space, and disk use per experiment and
user. ``trainhub gc`` calls the first, so that the server's one writer and its node pool do the
work while runs go on."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import Parameter

from trainhub import gc
from trainhub.runs import retention
from trainhub.server.auth import admin_only


class DiskController(Controller):
    path = "/api/v1"
    tags = ["disk"]
    guards = [admin_only]

    @post(
        "/gc",
        status_code=200,
        summary="Apply retention, remove unused snapshots and environment images (admins)",
    )
    async def collect(
        self,
        state: State,
        dry_run: bool = Parameter(query="dryRun", default=False),
        image_days: float = Parameter(query="imageDays", default=30.0, ge=0),
    ) -> dict[str, Any]:
        report = await gc.collect(
            state.settings, state.db, state.pool, dry_run=dry_run, image_days=image_days
        )
        return report.to_json()

    @get("/disk", summary="Disk use per experiment and per user, as recorded (admins)")
    async def usage(self, state: State) -> dict[str, Any]:
        found = await retention.disk_use(state.db)
        return {
            f"{key}s": [
                {
                    "name": r["name"],
                    "runs": r["runs"],
                    "runBytes": r["run_bytes"],
                    "snapshotBytes": r["snapshot_bytes"],
                    "unmeasuredRuns": r["unmeasured"],
                }
                for r in rows
            ]
            for key, rows in found.items()
        }
