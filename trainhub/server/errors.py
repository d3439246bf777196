"""Every error is JSON with a sentence for a person: ``{"status": 422, "error": "...", "field": "..."}``.

No stack trace ever reaches a client; unexpected errors are logged on the server.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from trainhub.runs.artifacts import SnapshotError
from trainhub.runs.service import RunConflict, RunNotFound
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


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "Internal server error: the server log has the details")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    HTTPException: _http,
    SpecError: _spec,
    SnapshotError: _snapshot,
    RunNotFound: _not_found,
    RunConflict: _conflict,
    Exception: _unexpected,
}
