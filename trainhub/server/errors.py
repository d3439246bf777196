"""Every error is JSON with a sentence for a person: ``{"status": 422, "error": "...", "field": "..."}``.

No stack trace ever reaches a client; unexpected errors are logged on the server.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.response import Redirect, Template

from trainhub.accounts import AccountError, Forbidden
from trainhub.runs.artifacts import SnapshotError, free_bytes, human_size, is_disk_full
from trainhub.runs.retention import OutputsRemoved
from trainhub.runs.service import RunConflict, RunNotFound, StorageFull
from trainhub.server.auth import answers_json
from trainhub.spec import SpecError
from trainhub.store.users import UserExists

log = logging.getLogger("trainhub.server")

TITLES = {
    400: "Bad request",
    401: "Log in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "Conflict",
    410: "Gone",
    413: "Too large",
    422: "Check the form",
    429: "Too many tries",
    500: "Something went wrong",
    503: "Try again",
    507: "Out of space",
}


def error_response(status: int, message: str, field: str | None = None) -> Response[Any]:
    body: dict[str, Any] = {"status": status, "error": message}
    if field:
        body["field"] = field
    return Response(body, status_code=status)


def answer(
    request: Request[Any, Any, Any],
    status: int,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    """JSON for the API; for pages, a page for a person (and the login page instead of a 401)."""
    path = request.scope.get("path", "/")
    if answers_json(path, request.headers):
        response = error_response(status, message, field)
    elif status == 401:
        return _to_login(request)
    else:
        response = Template(
            "error.html",
            context={
                "status": status,
                "title": TITLES.get(status, "Error"),
                "message": message,
                "field": field,
            },
            status_code=status,
        )
    if headers:
        response.headers.update(headers)
    return response


def _to_login(request: Request[Any, Any, Any]) -> Response[Any]:
    """Back to where the person was after logging in. htmx requests are told to go there."""
    if request.headers.get("hx-request"):
        current = request.headers.get("hx-current-url", "/")
        # hx-current-url is absolute: keep its path and query only.
        after_host = current.split("://", 1)[-1]
        where = "/" + after_host.split("/", 1)[1] if "/" in after_host else "/"
        return Response(
            "", status_code=401, headers={"HX-Redirect": f"/login?next={quote(where, safe='/')}"}
        )
    where = request.scope.get("path", "/")
    query = request.scope.get("query_string", b"").decode("latin-1")
    if query:
        where += "?" + query
    return Redirect(f"/login?next={quote(where, safe='/')}", status_code=303)


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    message = str(exc.detail)
    if status == 413:
        limit = request.app.state.settings.max_snapshot_mb
        message = (
            f"The upload is larger than the snapshot limit of {limit} MB "
            "(the server's TRAINHUB_MAX_SNAPSHOT_MB setting)"
        )
    elif isinstance(exc, ValidationException) and exc.extra:
        parts = []
        for item in exc.extra if isinstance(exc.extra, list) else [exc.extra]:
            if isinstance(item, dict):
                parts.append(f"{item.get('key', '')}: {item.get('message', '')}".strip(": "))
        if parts:
            message = f"{message}: {'; '.join(parts)}"
    return answer(request, status, message, headers=exc.headers)


def _spec(request: Request[Any, Any, Any], exc: SpecError) -> Response[Any]:
    return answer(request, 422, exc.message, exc.field)


def _account(request: Request[Any, Any, Any], exc: AccountError) -> Response[Any]:
    return answer(request, 422, exc.message, exc.field)


def _snapshot(request: Request[Any, Any, Any], exc: SnapshotError) -> Response[Any]:
    return answer(request, exc.status_code, exc.message, exc.field)


def _not_found(request: Request[Any, Any, Any], exc: RunNotFound) -> Response[Any]:
    return answer(request, 404, str(exc))


def _gone(request: Request[Any, Any, Any], exc: OutputsRemoved) -> Response[Any]:
    return answer(request, 410, str(exc))


def _forbidden(request: Request[Any, Any, Any], exc: Forbidden) -> Response[Any]:
    return answer(request, 403, str(exc))


def _conflict(request: Request[Any, Any, Any], exc: RunConflict | UserExists) -> Response[Any]:
    return answer(request, 409, str(exc))


def _storage_full(request: Request[Any, Any, Any], exc: StorageFull) -> Response[Any]:
    return answer(request, 507, str(exc))


def _database(request: Request[Any, Any, Any], exc: sqlite3.OperationalError) -> Response[Any]:
    log.error("database error on %s %s: %s", request.method, request.url.path, exc)
    return answer(
        request,
        503,
        f"The server's database could not do this now ({exc}); nothing was changed, try again",
    )


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if is_disk_full(exc):
        data = request.app.state.settings.data
        log.error("disk full on %s %s: %s", request.method, request.url.path, exc)
        return answer(
            request,
            507,
            f"The server's data folder ({data}) is out of space ({human_size(free_bytes(data))} "
            "free): nothing was stored",
        )
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return answer(request, 500, "Internal server error: the server log has the details")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    HTTPException: _http,
    SpecError: _spec,
    SnapshotError: _snapshot,
    RunNotFound: _not_found,
    OutputsRemoved: _gone,
    RunConflict: _conflict,
    UserExists: _conflict,
    Forbidden: _forbidden,
    AccountError: _account,
    StorageFull: _storage_full,
    sqlite3.OperationalError: _database,
    Exception: _unexpected,
}
