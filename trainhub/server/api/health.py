"""``/healthz``: liveness for load balancers and people, with what an admin checks first."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import get
from litestar.datastructures import State

from trainhub import __version__
from trainhub.nodes.pool import LOCAL
from trainhub.runs.artifacts import GB, free_bytes


@get("/healthz", summary="Liveness and the server's vital signs (no token needed)", tags=["health"])
async def healthz(state: State) -> dict[str, Any]:
    settings = state.settings
    free = await asyncio.to_thread(free_bytes, settings.data)
    floor = int(settings.min_free_gb * GB)
    details: dict[str, Any] = {
        "dataFreeBytes": free,
        "dataMinFreeBytes": floor,
        "dataDiskOk": free >= floor,
    }
    pool = state.get("pool")
    if pool is not None:
        details["nodes"] = {
            name: {
                "state": pool.state(name),
                "runtimes": pool.runtimes(name),  # docker, process (use_docker=False)
                "diskFreeBytes": pool.inventory(name).get("disk_free_bytes"),
            }
            for name in [LOCAL, *pool.remotes]
        }
    launcher = state.get("launcher")
    if launcher is not None:  # counts only: no token is needed here
        details.update({k: len(v) for k, v in (await launcher.health()).items()})
    return {"status": "ok", "version": __version__, "details": details}
