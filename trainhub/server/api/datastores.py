"""``/api/v1/datastores``: register datastores (admins), list and read them (everyone), and move
files in and out of ``server`` datastores (members too, unless an admin made one read-only).

The rules are in :mod:`trainhub.datastores`; these handlers decode, call it and answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException
from litestar.response import Stream

from trainhub.accounts import User
from trainhub.datastores import files, registry, transfers
from trainhub.runs.service import iso
from trainhub.server.api import decode
from trainhub.server.auth import admin_only
from trainhub.store.datastores import DatastoreRow


class DatastoreIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    name: str
    kind: str = "server"
    paths: dict[str, str] = msgspec.field(default_factory=dict)
    read_only: bool = False
    description: str | None = None


class DatastoreChange(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    paths: dict[str, str] | None = None
    read_only: bool | None = None
    description: str | None = None


PREFIX = "/api/v1/datastores"


@contextmanager
def _answers() -> Iterator[None]:
    """The datastore services' refusals as HTTP answers (422s and 403s are answered as such
    everywhere: :class:`~trainhub.spec.SpecError`, :class:`~trainhub.accounts.Forbidden`)."""
    try:
        yield
    except registry.DatastoreNotFound as exc:
        raise NotFoundException(str(exc)) from None
    except (registry.DatastoreExists, transfers.UploadConflict) as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None


def relative_path(request: Request[Any, Any, Any], lead: str, path: str) -> str:
    """The path after ``lead`` (``/api/v1/datastores/NAME/files/``) as the client sent it.
    Litestar's ``{path:path}`` (the fallback) folds ``files//etc/x`` into ``/etc/x``, and an
    absolute path must be refused, not taken as a relative one."""
    raw = unquote(request.scope.get("raw_path", b"").decode("latin-1").partition("?")[0])
    return files.clean_path(raw[len(lead) :] if raw.startswith(lead) else path.removeprefix("/"))


def _relative(request: Request[Any, Any, Any], name: str, route: str, path: str) -> str:
    return relative_path(request, f"{PREFIX}/{name}/{route}/", path)


async def send_file(
    root: Path, relative: str, datastore: str, range_header: str | None, *, attachment: bool = False
) -> Stream:
    """A datastore's file, streamed; a ``Range`` resumes a broken download (206, or 416 when it
    is not within the file). Used by the API and the pages."""
    try:
        fh, size = await asyncio.to_thread(transfers.open_file, root, relative)
    except FileNotFoundError:
        raise NotFoundException(f"Datastore '{datastore}' has no file '{relative}'") from None
    try:
        span = transfers.parse_range(range_header, size)
    except transfers.RangeNotSatisfiable:
        fh.close()
        raise HTTPException(
            status_code=416,
            detail=f"'{relative}' has {size} bytes: the range asked for is not within them",
            headers={"Content-Range": f"bytes */{size}"},
        ) from None
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(span.end - span.start)}
    if attachment:
        filename = quote(relative.rpartition("/")[2], safe="")
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{filename}"
    if span.partial:
        headers["Content-Range"] = span.content_range
    return Stream(
        transfers.read_range(fh, span),
        status_code=206 if span.partial else 200,
        media_type="application/octet-stream",
        headers=headers,
    )


class DatastoresController(Controller):
    path = PREFIX
    tags = ["datastores"]

    @get("/", summary="Every datastore (workspaceblobstore, the default, among them)")
    async def list_datastores(self, state: State) -> dict[str, Any]:
        rows = await registry.list_all(state.db)
        return {"datastores": [r.public() for r in rows]}

    @post("/", status_code=201, summary="Register a datastore (admins)", guards=[admin_only])
    async def add(self, state: State, request: Request[User, Any, Any]) -> dict[str, Any]:
        data = decode(await request.body(), DatastoreIn)
        with _answers():
            row = await registry.add(
                state.settings,
                state.db,
                request.user,
                name=data.name,
                kind=data.kind,
                paths=data.paths,
                read_only=data.read_only,
                description=data.description,
            )
        return row.public()

    @get("/{name:str}", summary="One datastore")
    async def show(self, state: State, name: str) -> dict[str, Any]:
        with _answers():
            row = await registry.get(state.db, name)
        return row.public()

    @patch(
        "/{name:str}",
        summary="Change a datastore's paths, read-only flag or description (admins)",
        guards=[admin_only],
    )
    async def change(
        self, state: State, request: Request[User, Any, Any], name: str
    ) -> dict[str, Any]:
        data = decode(await request.body(), DatastoreChange)
        with _answers():
            row = await registry.update(
                state.db,
                request.user,
                name,
                paths=data.paths,
                read_only=data.read_only,
                description=data.description,
            )
        return row.public()

    @delete(
        "/{name:str}",
        status_code=200,
        summary="Remove a datastore (admins; a server datastore's files stay in its folder)",
        guards=[admin_only],
    )
    async def remove(
        self, state: State, request: Request[User, Any, Any], name: str
    ) -> dict[str, Any]:
        with _answers():
            row = await registry.remove(state.db, request.user, name)
        return {"removed": row.name}

    # Files of a server datastore ---------------------------------------------------------------
    @get("/{name:str}/files", summary="Files under a prefix: path, size, SHA-256, time")
    async def list_files(self, state: State, name: str, prefix: str = "") -> dict[str, Any]:
        row, root = await self._server_datastore(state, name)
        clean = files.clean_path(prefix, field="prefix", prefix=True)
        found = await asyncio.to_thread(files.manifest, root, clean)
        return {
            "datastore": row.name,
            "prefix": clean,
            "files": [
                {"path": f.path, "size": f.size, "sha256": f.sha256, "modifiedUtc": iso(f.modified)}
                for f in found
            ],
        }

    @get("/{name:str}/files/{path:path}", summary="Download a file (Range requests resume one)")
    async def download(
        self, state: State, request: Request[User, Any, Any], name: str, path: str
    ) -> Response[Any]:
        _, root = await self._server_datastore(state, name)
        relative = _relative(request, name, "files", path)
        return await send_file(root, relative, name, request.headers.get("range"))

    @put(
        "/{name:str}/files/{path:path}",
        status_code=200,
        summary="Upload a file, or the rest of one (resumable; stored once its SHA-256 matches)",
        request_max_body_size=None,
    )
    async def upload(
        self,
        state: State,
        request: Request[User, Any, Any],
        name: str,
        path: str,
        size: int,
        sha256: str,
        offset: int = 0,
        overwrite: bool = False,
    ) -> Response[dict[str, Any]]:
        """The body is the file's bytes from ``offset`` on (``GET .../uploads/{path}`` says how
        many the server already holds). 201 once the whole file is stored; 200 with ``received``
        while part of it is missing; 409 when the file exists with other content and
        ``overwrite`` is false."""
        row, root = await self._server_datastore(state, name)
        registry.check_writable(row, request.user)
        relative = _relative(request, name, "files", path)
        with _answers():
            answer = await transfers.receive(
                state.settings,
                root,
                relative,
                request.stream(),
                size=size,
                sha256=sha256,
                offset=offset,
                overwrite=overwrite,
            )
        return Response(answer, status_code=201 if answer["stored"] else 200)

    @get("/{name:str}/uploads/{path:path}", summary="How much of an upload the server holds")
    async def upload_state(
        self,
        state: State,
        request: Request[User, Any, Any],
        name: str,
        path: str,
        size: int,
        sha256: str,
    ) -> dict[str, Any]:
        row, root = await self._server_datastore(state, name)
        registry.check_writable(row, request.user)
        relative = _relative(request, name, "uploads", path)
        digest = transfers.check_announced(size, sha256, 0)
        held = await asyncio.to_thread(files.received, root, relative, size, digest)
        return {"path": relative, "size": size, "sha256": digest, "received": held}

    @staticmethod
    async def _server_datastore(state: State, name: str) -> tuple[DatastoreRow, Path]:
        with _answers():
            row = await registry.get(state.db, name)
        return row, registry.folder(state.settings, row)
