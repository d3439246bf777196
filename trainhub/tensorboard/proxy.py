"""The reverse proxy in front of a board: a request to ``PREFIX/...`` on the server goes to the same
path on the board's TensorBoard (which serves under that prefix), and its answer streams back as it
comes, compressed as TensorBoard compressed it.

Hop-by-hop headers are dropped both ways, and so are the server's own credentials (its session
cookie, an ``Authorization`` header): TensorBoard needs neither. While TensorBoard is starting, a
page load gets a small "starting" page that reloads itself (a ``<meta http-equiv="refresh">``:
the dashboard's Content-Security-Policy allows no inline script) and any other request waits for it
to answer, so nobody sees a raw 502.
"""

from __future__ import annotations

import html
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from litestar import Request, Response
from litestar.response import Stream

from trainhub.tensorboard.processes import Board, BoardFailed, TensorboardManager

log = logging.getLogger("trainhub.tensorboard")

# RFC 9110 7.6.1, and the proxy headers of RFC 9110 11.7.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
NOT_FORWARDED = HOP_BY_HOP | {"host", "cookie", "authorization", "content-length"}
PAGE_WAIT = 1.5  # seconds a page load waits for a starting board before the "starting" page
REQUEST_WAIT = 90.0  # seconds any other request waits for it
SMALL_BODY = 64 * 1024  # answers up to this size are relayed in one piece, larger ones streamed


def request_headers(request: Request[Any, Any, Any]) -> list[tuple[str, str]]:
    named = {
        token.strip().lower()
        for value in request.headers.getall("connection", [])
        for token in value.split(",")
    }
    return [
        (name, value)
        for name, value in request.headers.items()
        if name.lower() not in NOT_FORWARDED and name.lower() not in named
    ]


def response_headers(upstream: httpx.Response) -> dict[str, str]:
    """TensorBoard's response headers as they came (compression included), less the hop-by-hop
    ones and any cookie (TensorBoard sets none; none may land on the server's own site)."""
    named = {
        token.strip().lower()
        for value in upstream.headers.get_list("connection")
        for token in value.split(",")
    }
    dropped = HOP_BY_HOP | named | {"set-cookie"}
    out: dict[str, str] = {}
    for name, value in upstream.headers.multi_items():
        key = name.lower()
        if key not in dropped:
            out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def wants_page(request: Request[Any, Any, Any]) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


def starting_page(title: str) -> Response[str]:
    body = (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta http-equiv="refresh" content="1">'
        f"<title>Starting TensorBoard · {html.escape(title)}</title>"
        '<link rel="stylesheet" href="/static/app.css"></head>'
        f"<body><main><h1>Starting TensorBoard for {html.escape(title)}…</h1>"
        "<p>This page reloads itself until TensorBoard answers (a few seconds).</p>"
        "</main></body></html>\n"
    )
    return Response(
        body,
        status_code=200,
        media_type="text/html",
        headers={"Cache-Control": "no-store", "Retry-After": "1"},
    )


def failed_page(request: Request[Any, Any, Any], title: str, why: str) -> Response[Any]:
    message = f"TensorBoard for {title} could not start. {why}"
    if not wants_page(request):
        return Response({"status": 503, "error": message}, status_code=503)
    body = (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>TensorBoard · {html.escape(title)}</title>"
        '<link rel="stylesheet" href="/static/app.css"></head>'
        f"<body><main><h1>TensorBoard for {html.escape(title)} could not start</h1>"
        f"<pre>{html.escape(why)}</pre><p>Reload the page to try again.</p></main></body></html>\n"
    )
    return Response(
        body, status_code=503, media_type="text/html", headers={"Cache-Control": "no-store"}
    )


async def forward(
    manager: TensorboardManager, board: Board, request: Request[Any, Any, Any], title: str
) -> Response[Any]:
    """``request`` to ``board``: its answer streamed back, or the starting page meanwhile."""
    try:
        ready = await manager.wait_ready(board, PAGE_WAIT if wants_page(request) else REQUEST_WAIT)
    except BoardFailed as exc:
        return failed_page(request, title, str(exc))
    if not ready:
        return starting_page(title)
    raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    query: bytes = request.scope.get("query_string", b"")
    target = (
        board.url + raw_path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
    )
    body = await request.body() if request.method != "GET" else b""
    upstream_request = manager.client.build_request(
        request.method, target, headers=request_headers(request), content=body
    )
    board.touch()
    try:
        upstream = await manager.client.send(upstream_request, stream=True)
    except httpx.HTTPError as exc:
        log.warning("TensorBoard %s did not answer %s: %s", board.key, request.method, exc)
        return failed_page(request, title, "It stopped answering; reload to start it again.")

    length = upstream.headers.get("content-length", "")
    small = length.isdigit() and int(length) <= SMALL_BODY
    if small or upstream.status_code in (204, 304):  # one message, no chunked encoding
        try:
            content = b"".join([chunk async for chunk in upstream.aiter_raw()])  # as compressed
        finally:
            await upstream.aclose()
        return Response(
            content, status_code=upstream.status_code, headers=response_headers(upstream)
        )

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()
            board.touch()

    return Stream(relay(), status_code=upstream.status_code, headers=response_headers(upstream))
