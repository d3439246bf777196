"""``/metrics``: Prometheus' scrape target. Not behind the login: it checks its own callers (an
allowed client address, the metrics token or an admin's token); anyone else gets 401 (no token,
or one that is not valid) or 403 (a valid token of a user who is not an admin)."""

from __future__ import annotations

from litestar import Request, get
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.response import Response
from prometheus_client import CONTENT_TYPE_LATEST

from trainhub import prometheus
from trainhub.store import Database
from trainhub.store import users as user_store


@get("/metrics", summary="Prometheus metrics (admin or metrics token, or an allowed address)")
async def metrics(request: Request, state: State) -> Response[bytes]:  # type: ignore[type-arg]
    await _check_access(request, state)
    db: Database = state.db
    present = prometheus.Present(await db.read(prometheus.runs_by_status))
    pool = state.get("pool")
    if pool is not None:
        prometheus.gpu_counts(pool, await db.read(prometheus.gpus_held), present)
    return Response(prometheus.exposition(present), media_type=CONTENT_TYPE_LATEST, status_code=200)


async def _check_access(request: Request, state: State) -> None:  # type: ignore[type-arg]
    access: prometheus.MetricsAccess = state.metrics_access
    if access.allows_address(request.client.host if request.client else None):
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise NotAuthorizedException(
            "/metrics needs an admin's token or TRAINHUB_METRICS_TOKEN "
            "('Authorization: Bearer <token>'), or a client address in TRAINHUB_METRICS_ALLOW",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if access.is_metrics_token(token):
        return
    db: Database = state.db
    found = await db.read(lambda conn: user_store.user_for_token(conn, token))
    if found is None or found[0].disabled:
        raise NotAuthorizedException(
            "The token is not valid",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if not found[0].is_admin:
        raise PermissionDeniedException(
            f"Only an admin's token or TRAINHUB_METRICS_TOKEN may read /metrics; "
            f"{found[0].name} is not an admin"
        )
