"""Registered models in the browser: every name with its latest version (``/models``, filtered by
name), and one version (``/models/{name}/{version}``) with its files to download, its tags and its
lineage: the run it came from, that run's experiment, script parameters and final metrics.

The rules are :mod:`trainhub.models.registry`'s, as for the API (:mod:`trainhub.server.api.models`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Redirect, Template

from trainhub.models import registry
from trainhub.runs.artifacts import human_size
from trainhub.server.api.datastores import relative_path
from trainhub.server.api.models import found, send_model_file
from trainhub.server.pages.cluster import when
from trainhub.store import experiments
from trainhub.store import runs as q

PREFIX = "/models"
HELPERS: dict[str, Any] = {"when": when, "human_size": human_size}


class ModelPages(Controller):
    path = PREFIX
    include_in_schema = False

    @get("/")
    async def models(self, state: State, name: str = "") -> Template:
        names = await registry.list_names(state.db, contains=name.strip() or None)
        return Template(
            "models/list.html", context={**HELPERS, "names": names, "filter": name.strip()}
        )

    @get("/{name:str}")
    async def latest(self, state: State, name: str) -> Redirect:
        """A model's name alone: its latest version."""
        with found():
            row = await registry.get(state.db, name)
        return Redirect(f"{PREFIX}/{quote(row.name, safe='')}/{row.version}", status_code=303)

    @get("/{name:str}/{version:int}")
    async def show(self, state: State, name: str, version: int) -> Template:
        with found():
            row = await registry.get(state.db, name, version)
        listed = await registry.file_list(state.settings, row)
        others = await registry.versions(state.db, name)
        run, metrics = None, {}
        if row.run_id is not None:
            run_id = row.run_id

            def lineage(conn: Any) -> tuple[q.RunRow | None, dict[str, Any]]:
                found_run = q.get_run(conn, run_id)
                return found_run, experiments.final_metrics(conn, [run_id])[run_id]

            run, metrics = await state.db.read(lineage)
        return Template(
            "models/show.html",
            context={
                **HELPERS,
                "model": row,
                "files": listed,
                "versions": others,
                "run": run,
                "params": (run.spec.get("script_params") or {}) if run else {},
                "metrics": metrics,
            },
        )

    @get("/{name:str}/{version:int}/files/{path:path}")
    async def download(
        self, request: HTMXRequest, state: State, name: str, version: int, path: str
    ) -> Response[Any]:
        """A file, as an attachment; a ``Range`` resumes a broken download."""
        with found():
            row = await registry.get(state.db, name, version)
        relative = relative_path(request, f"{PREFIX}/{name}/{version}/files/", path)
        return await send_model_file(
            state, row, relative, request.headers.get("range"), attachment=True
        )
