from __future__ import annotations

from litestar import get

from trainhub import __version__


@get("/healthz", summary="Liveness (no token needed)", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}
