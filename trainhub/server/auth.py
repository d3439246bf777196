"""Who is asking: API requests carry a bearer token, pages a session cookie.

``/api/...`` takes only ``Authorization: Bearer <token>`` (tokens are looked up by hash; a session
cookie is never enough there, so the API needs no CSRF token). Every other path but the public ones
takes only the login session. Either way ``request.user`` is a :class:`trainhub.accounts.User`;
a disabled user is refused. What a user may do is decided by :mod:`trainhub.accounts`.
"""

from __future__ import annotations

import time
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from trainhub.accounts import User
from trainhub.store import Database
from trainhub.store import users as user_store

# /metrics checks its own callers (trainhub.server.api.metrics).
PUBLIC_PATHS = ["^/healthz$", "^/login$", "^/static/", "^/favicon.ico$", "^/metrics$"]

# How often a session's "last seen" time is written back into its cookie.
SESSION_TOUCH_SECONDS = 60.0


def is_api(path: str) -> bool:
    return path.startswith("/api/")


def answers_json(path: str, headers: Any) -> bool:
    """Whether an error here is JSON (the API, or a program asking for the schema)."""
    return (
        is_api(path)
        or path == "/metrics"
        or (path.startswith("/schema") and "text/html" not in headers.get("accept", ""))
    )


class Authenticate(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        path = connection.scope["path"]
        # The OpenAPI schema is for programs (a token) and people (a login) alike.
        if answers_json(path, connection.headers) or (
            path.startswith("/schema") and "authorization" in connection.headers
        ):
            return await _bearer(connection)
        return await _session(connection)


async def _bearer(connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise NotAuthorizedException(
            "This endpoint needs an API token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    db: Database = connection.app.state.db
    found = await db.read(lambda conn: user_store.user_for_token(conn, token))
    if found is None or found[0].disabled:
        raise NotAuthorizedException(
            "The API token is not valid",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    user, token_id, last_used = found
    now = time.time()
    if last_used is None or now - last_used > user_store.TOKEN_TOUCH_SECONDS:
        await db.write(lambda conn: user_store.touch_token(conn, token_id, now))
    return AuthenticationResult(user=user, auth=token_id)


async def _session(connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
    raw = connection.scope.get("session")
    session: dict[str, Any] = raw if isinstance(raw, dict) else {}
    uid = session.get("uid")
    seen = session.get("seen")
    settings = connection.app.state.settings
    now = time.time()
    if not isinstance(uid, int) or not isinstance(seen, (int, float)):
        raise NotAuthorizedException("Log in to see this page")
    if now - seen > settings.session_hours * 3600:
        connection.clear_session()
        raise NotAuthorizedException("Your session has expired: log in again")
    db: Database = connection.app.state.db
    found = await db.read(lambda conn: user_store.session_user(conn, uid))
    if found is None or found[0].disabled:
        connection.clear_session()
        raise NotAuthorizedException("Log in to see this page")
    user, password_changed = found
    if password_changed is not None and password_changed > float(session.get("at") or 0):
        connection.clear_session()
        raise NotAuthorizedException("Your password was changed: log in again")
    if now - seen > SESSION_TOUCH_SECONDS:
        connection.set_session({**session, "seen": now})
    return AuthenticationResult(user=user, auth="session")


def admin_only(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """A litestar guard: only admins pass."""
    user = connection.user
    if not isinstance(user, User) or not user.is_admin:
        name = user.name if isinstance(user, User) else "anonymous"
        raise PermissionDeniedException(f"Only an admin may do this; {name} is not an admin")
