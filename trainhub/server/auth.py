"""Bearer-token authentication on everything but ``/healthz``. Tokens are looked up by hash."""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from trainhub.store import Database
from trainhub.store.tokens import find_token

PUBLIC_PATHS = ["^/healthz$"]


class BearerTokenAuth(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise NotAuthorizedException(
                "This endpoint needs an API token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        db: Database = connection.app.state.db
        row = await db.read(lambda conn: find_token(conn, token))
        if row is None:
            raise NotAuthorizedException(
                "The API token is not valid",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return AuthenticationResult(user=str(row["name"]), auth=row)
