"""Datastores in the browser: every datastore and where its data is (``/datastores``), a ``server``
datastore's files folder by folder (``/datastores/{name}?prefix=sub/dir/``) with download links,
and, for admins, registering one, making one read-only or writable again, and removing one.

The rules are :mod:`trainhub.datastores`'s, as for the API (:mod:`trainhub.server.api.datastores`):
names, kinds, paths and who may change what are checked there, and a refusal naming a field is
shown beside that field of the form. A folder is read with one ``scandir`` (no recursion, no
checksums) and only :data:`FOLDER_PAGE` of its entries are stat'ed and shown at a time, so a folder
of 100,000 files costs one directory read, not 100,000 table rows.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotFoundException
from litestar.params import Body, Parameter
from litestar.plugins.htmx import ClientRedirect, HTMXRequest
from litestar.response import Redirect, Template

from trainhub.accounts import User
from trainhub.datastores import files, registry
from trainhub.runs.artifacts import human_size
from trainhub.server.api.datastores import relative_path, send_file
from trainhub.server.auth import admin_only
from trainhub.server.pages.cluster import when
from trainhub.spec import SpecError
from trainhub.store.datastores import DEFAULT, DatastoreKind, DatastoreRow

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]

# The most entries of one folder a page shows; the rest are a "next" link away.
FOLDER_PAGE = 500
PREFIX = "/datastores"


class FolderNotFound(LookupError):
    """No folder at that prefix (HTTP 404)."""


@dataclass(frozen=True)
class Entry:
    name: str
    path: str  # in the datastore; a folder's ends with "/"
    is_folder: bool
    size: int | None = None
    modified: float | None = None


@dataclass(frozen=True)
class Listing:
    """One page of a folder: sub-folders first, then files, each group by name."""

    prefix: str  # "" (the root) or "sub/dir/"
    entries: list[Entry]
    folders: int  # in the whole folder
    files: int
    start: int
    end: int  # the index after the last entry of this page

    @property
    def total(self) -> int:
        return self.folders + self.files

    @property
    def after(self) -> int:
        """How many entries come after this page."""
        return max(0, self.total - self.end)


def _linked_file_inside(entry: os.DirEntry[str], base: Path) -> bool:
    """A link to a file of the datastore is listed; one leading out of it never is (as in
    :func:`trainhub.datastores.files.walk`)."""
    if not entry.is_symlink():
        return False
    target = Path(entry.path).resolve()
    return target.is_relative_to(base) and target.is_file()


def list_folder(root: Path, prefix: str, start: int = 0, limit: int = FOLDER_PAGE) -> Listing:
    """The entries ``start`` to ``start + limit`` of the folder ``prefix`` (a
    :func:`~trainhub.datastores.files.clean_path` prefix) of the datastore at ``root``."""
    base = root.resolve()
    folder = prefix.rstrip("/")
    here = files.inside(root, folder, field="prefix") if folder else base
    if not here.is_dir():
        raise FolderNotFound(folder)
    folders: list[str] = []
    names: list[str] = []
    with os.scandir(here) as found:
        for entry in found:
            if not folder and entry.name == files.RESERVED:
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.name)
                elif entry.is_file(follow_symlinks=False) or _linked_file_inside(entry, base):
                    names.append(entry.name)
            except OSError:
                continue  # vanished meanwhile
    folders.sort()
    names.sort()
    lead = f"{folder}/" if folder else ""
    ordered = [(n, True) for n in folders] + [(n, False) for n in names]
    if start >= len(ordered):  # past the end (the folder shrank): its last page
        start = max(0, len(ordered) - limit)
    chosen = ordered[start : start + limit]
    entries: list[Entry] = []
    for name, is_folder in chosen:
        if is_folder:
            entries.append(Entry(name, f"{lead}{name}/", True))
            continue
        try:
            st = os.stat(here / name)
        except OSError:
            continue
        entries.append(Entry(name, lead + name, False, st.st_size, st.st_mtime))
    return Listing(lead, entries, len(folders), len(names), start, start + len(chosen))


def crumbs(prefix: str) -> list[tuple[str, str]]:
    """``a/b/`` as the links above a listing: (``a``, ``a/``), (``b``, ``a/b/``)."""
    found: list[tuple[str, str]] = []
    lead = ""
    for segment in prefix.rstrip("/").split("/") if prefix else []:
        lead += segment + "/"
        found.append((segment, lead))
    return found


def parse_paths(text: str) -> dict[str, str]:
    """A shared datastore's paths as the form takes them, one a line: ``/mnt/data`` for every
    node, or ``NODE=PATH`` for one (as ``trainhub datastore add --node-path``; ``*=PATH`` is every
    node too). The paths themselves are checked by :func:`registry.check_paths`."""
    paths: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        node, sep, path = line.partition("=")
        if line.startswith("/"):
            node, path = "*", line
        elif not sep:
            raise SpecError(
                "paths", f"Line {number} ({line!r}) is neither /PATH (every node) nor NODE=PATH"
            )
        node = node.strip()
        if node in paths:
            raise SpecError("paths", f"Line {number}: '{node}' has a path on an earlier line")
        paths[node] = path.strip()
    return paths


def where(row: DatastoreRow) -> list[tuple[str, str]]:
    """Where a shared datastore's data is, for a person: every node first, then named nodes."""
    ordered = sorted(row.paths.items(), key=lambda item: (item[0] != "*", item[0]))
    return [("every node" if node == "*" else node, path) for node, path in ordered]


def _relative(request: Request[Any, Any, Any], name: str, path: str) -> str:
    return relative_path(request, f"{PREFIX}/{name}/files/", path)


@contextmanager
def _found() -> Iterator[None]:
    """An unknown datastore is a 404 page."""
    try:
        yield
    except registry.DatastoreNotFound as exc:
        raise NotFoundException(str(exc)) from None


async def _datastore(state: State, name: str) -> DatastoreRow:
    with _found():
        return await registry.get(state.db, name)


HELPERS: dict[str, Any] = {
    "when": when,
    "human_size": human_size,
    "where": where,
    "DEFAULT": DEFAULT,
}
EMPTY_FORM = {"name": "", "kind": "server", "paths": "", "read_only": "", "description": ""}


class DatastorePages(Controller):
    path = PREFIX
    include_in_schema = False

    # The list, and registering (admins) ----------------------------------------------------------
    async def _list(
        self,
        state: State,
        *,
        status: int = 200,
        error: dict[str, str] | None = None,
        flash: str | None = None,
        form: dict[str, str] | None = None,
    ) -> Template:
        rows = await registry.list_all(state.db)
        rows.sort(key=lambda row: row.name != DEFAULT)  # the default first, then by name
        return Template(
            "datastores/list.html",
            context={
                **HELPERS,
                "datastores": rows,
                "kinds": [k.value for k in DatastoreKind],
                "error": error,
                "flash": flash,
                "form": form or EMPTY_FORM,
            },
            status_code=status,
        )

    @get("/")
    async def datastores(self, state: State) -> Template:
        return await self._list(state)

    @post("/", guards=[admin_only], status_code=201)
    async def add(self, request: HTMXRequest, state: State, data: Form) -> Template:
        form = {key: str(data.get(key, "")) for key in EMPTY_FORM}
        try:
            name = registry.check_name(form["name"].strip())  # named first, as the API does
            row = await registry.add(
                state.settings,
                state.db,
                request.user,
                name=name,
                kind=form["kind"],
                paths=parse_paths(form["paths"]),
                read_only=bool(form["read_only"]),
                description=form["description"],
            )
        except (SpecError, registry.DatastoreExists) as exc:
            field, message = (
                (exc.field or "", exc.message) if isinstance(exc, SpecError) else ("name", str(exc))
            )
            return await self._list(
                state,
                status=422 if isinstance(exc, SpecError) else 409,
                error={
                    "form": "add",
                    "field": field,
                    "input": field.split(".")[0],
                    "message": message,
                },
                form={k: v[:5000] for k, v in form.items()},
            )
        return await self._list(
            state, status=201, flash=f"Registered the {row.kind} datastore {row.name}"
        )

    @post("/{name:str}/read-only", guards=[admin_only], status_code=303)
    async def make_read_only(self, request: HTMXRequest, state: State, name: str) -> Redirect:
        with _found():
            await registry.update(state.db, request.user, name, read_only=True)
        return Redirect(PREFIX, status_code=303)

    @post("/{name:str}/writable", guards=[admin_only], status_code=303)
    async def make_writable(self, request: HTMXRequest, state: State, name: str) -> Redirect:
        with _found():
            await registry.update(state.db, request.user, name, read_only=False)
        return Redirect(PREFIX, status_code=303)

    @post("/{name:str}/remove", guards=[admin_only], status_code=303)
    async def remove(
        self, request: HTMXRequest, state: State, name: str
    ) -> Redirect | ClientRedirect:
        """The default datastore is refused by the service (a 422 page naming it)."""
        with _found():
            await registry.remove(state.db, request.user, name)
        if request.htmx:  # the button asked for a confirmation first (hx-confirm)
            return ClientRedirect(PREFIX)
        return Redirect(PREFIX, status_code=303)

    # One datastore: its files, folder by folder ------------------------------------------------
    @get("/{name:str}")
    async def show(
        self,
        request: HTMXRequest,
        state: State,
        name: str,
        prefix: str = "",
        start: int = Parameter(default=0, ge=0),
    ) -> Template:
        row = await _datastore(state, name)
        user: User = request.user
        context: dict[str, Any] = {
            **HELPERS,
            "ds": row,
            "listing": None,
            "crumbs": [],
            "page": FOLDER_PAGE,
            "can_write": not row.read_only or user.is_admin,
        }
        if row.kind == DatastoreKind.SERVER:
            clean = files.clean_path(prefix, field="prefix", prefix=True)
            root = registry.folder(state.settings, row)
            try:
                listing = await asyncio.to_thread(list_folder, root, clean, start)
            except FolderNotFound as exc:
                raise NotFoundException(
                    f"Datastore '{row.name}' has no folder '{exc}/' (upload into it to make it)"
                ) from None
            context["listing"] = listing
            context["crumbs"] = crumbs(listing.prefix)
        return Template("datastores/show.html", context=context)

    @get("/{name:str}/files/{path:path}")
    async def download(
        self, request: HTMXRequest, state: State, name: str, path: str
    ) -> Response[Any]:
        """A file, as an attachment; a ``Range`` resumes a broken download."""
        row = await _datastore(state, name)
        root = registry.folder(state.settings, row)
        relative = _relative(request, name, path)
        return await send_file(
            root, relative, row.name, request.headers.get("range"), attachment=True
        )
