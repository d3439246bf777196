"""Datasets in the browser: every registered name with its latest version (``/datasets``, filtered
by part of a name, the table alone swapped in by htmx), and one version (``/datasets/{name}``, or
``?version=N``) with its paths, its other versions, the runs that read or wrote the name, and for a
``server`` datastore its first files with download links (the datastore's own file routes).

The rules are :mod:`trainhub.datasets.registry`'s, as for the API (:mod:`trainhub.server.api.datasets`).
The files are matched as a run gets them, but only stat'ed (no checksums, which the API's listing
computes once per content): a page shows :data:`FILES_SHOWN` of them and counts the rest up to
:data:`~trainhub.datasets.registry.MAX_LISTED`, so a dataset of many files costs one walk, not one
hash per file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import Controller, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import Parameter
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Template

from trainhub.datasets import paths, registry
from trainhub.datasets.paths import Selection
from trainhub.datastores import registry as datastores
from trainhub.datastores.registry import DatastoreNotFound
from trainhub.runs.artifacts import human_size
from trainhub.server.pages.cluster import when
from trainhub.store.datasets import DatasetRow
from trainhub.store.datastores import DatastoreKind

PREFIX = "/datasets"
# The most files of a dataset its page lists; the rest are counted.
FILES_SHOWN = 50
# The most names the list shows (store.datasets.list_names's limit): a filter finds the others.
NAMES_SHOWN = 500
HELPERS: dict[str, Any] = {"when": when, "human_size": human_size}


@dataclass(frozen=True)
class Files:
    """The first files of a ``server`` datastore's dataset, and how many it has."""

    base: str  # the folder a run sees as the dataset's root
    shown: list[tuple[str, int]]  # (path in the datastore, size)
    total: int  # counted up to MAX_LISTED
    total_bytes: int
    more: bool  # more than MAX_LISTED: the total is a lower bound

    def relative(self, path: str) -> str:
        """A file's path as a run sees it, below the dataset's folder."""
        return path[len(self.base) + 1 :] if self.base else path


def first_files(root: Path, chosen: Selection) -> Files:
    shown: list[tuple[str, int]] = []
    total = size = 0
    more = False
    for relative, st in paths.matched(root, chosen):
        if total >= registry.MAX_LISTED:
            more = True
            break
        total += 1
        size += st.st_size
        if len(shown) < FILES_SHOWN:
            shown.append((relative, st.st_size))
    return Files(chosen.base, shown, total, size, more)


@contextmanager
def _found() -> Iterator[None]:
    """An unknown dataset or version is the site's 404 page."""
    try:
        yield
    except registry.DatasetNotFound as exc:
        raise NotFoundException(str(exc)) from None


class DatasetPages(Controller):
    path = PREFIX
    include_in_schema = False

    @get("/")
    async def datasets(self, request: HTMXRequest, state: State, contains: str = "") -> Template:
        wanted = contains.strip()
        names = await registry.list_names(state.db, wanted or None)
        context = {
            **HELPERS,
            "names": names,
            "filter": wanted,
            "limited": len(names) >= NAMES_SHOWN,
        }
        htmx = request.htmx
        if htmx and htmx.target == "datasets-results" and not htmx.history_restore_request:
            return Template("datasets/_results.html", context=context)
        return Template("datasets/list.html", context=context)

    @get("/{name:str}")
    async def show(
        self, state: State, name: str, version: int | None = Parameter(default=None, ge=1)
    ) -> Template:
        with _found():
            row = await registry.get_by_name(state.db, name, version)
            versions = await registry.versions(state.db, name)
        uses = await registry.uses_of_name(state.db, name)
        datastore, files = await self._files(state, row)
        return Template(
            "datasets/show.html",
            context={
                **HELPERS,
                "dataset": row,
                "latest": versions[0].version,
                "versions": versions,
                "uses": uses,
                "datastore": datastore,
                "files": files,
            },
        )

    async def _files(self, state: State, row: DatasetRow) -> tuple[Any, Files | None]:
        """The dataset's datastore (None when removed since) and, for a ``server`` one, its
        first files."""
        try:
            datastore = await datastores.get(state.db, row.datastore)
        except DatastoreNotFound:
            return None, None
        if datastore.kind != DatastoreKind.SERVER:
            return datastore, None
        chosen = registry.selection(state.settings, datastore, row.paths)
        root = datastores.folder(state.settings, datastore)
        return datastore, await asyncio.to_thread(first_files, root, chosen)
