"""Every error is JSON with a sentence for a person: ``{"status": 422, "error": "...", "field": "..."}``.

No stack trace ever reaches a client; unexpected errors are logged on the server.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from trainhub.runs.artifacts import SnapshotError, free_bytes, human_size, is_disk_full
from trainhub.runs.service import RunConflict, RunNotFound, StorageFull
from trainhub.spec import SpecError

log = logging.getLogger("trainhub.server")


def error_response(status: int, message: str, field: str | None = None) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"status": status, "error": message}
    if field:
        body["field"] = field
    return Response(body, status_code=status)


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
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
    response = error_response(status, message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def _spec(_: Request[Any, Any, Any], exc: SpecError) -> Response[dict[str, Any]]:
    return error_response(422, exc.message, exc.field)


def _snapshot(_: Request[Any, Any, Any], exc: SnapshotError) -> Response[dict[str, Any]]:
    return error_response(exc.status_code, exc.message, exc.field)


def _not_found(_: Request[Any, Any, Any], exc: RunNotFound) -> Response[dict[str, Any]]:
    return error_response(404, str(exc))


def _conflict(_: Request[Any, Any, Any], exc: RunConflict) -> Response[dict[str, Any]]:
    return error_response(409, str(exc))


def _storage_full(_: Request[Any, Any, Any], exc: StorageFull) -> Response[dict[str, Any]]:
    return error_response(507, str(exc))


def _database(
    request: Request[Any, Any, Any], exc: sqlite3.OperationalError
) -> Response[dict[str, Any]]:
    log.error("database error on %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        503,
        f"The server's database could not do this now ({exc}); nothing was changed, try again",
    )


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if is_disk_full(exc):
        data = request.app.state.settings.data
        log.error("disk full on %s %s: %s", request.method, request.url.path, exc)
        return error_response(
            507,
            f"The server's data folder ({data}) is out of space ({human_size(free_bytes(data))} "
            "free): nothing was stored",
        )
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "Internal server error: the server log has the details")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    HTTPException: _http,
    SpecError: _spec,
    SnapshotError: _snapshot,
    RunNotFound: _not_found,
    RunConflict: _conflict,
    StorageFull: _storage_full,
    sqlite3.OperationalError: _database,
    Exception: _unexpected,
}
