"""The runs table (``/runs``), a run's page (``/runs/{id}``), its files, tags, cancel and clone.

Thin handlers over :mod:`trainhub.runs.views` and :mod:`trainhub.runs.service` (the same permission
checks as the API). htmx asks for pieces of a page, told apart by the element it targets: the
table's body (``runs-body``, polled while a run on the page has not ended), the filtered table
(``runs-page``) and a run's live part (``run-live``, polled until the run ends).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.plugins.htmx import HTMXRequest
from litestar.response import File, Redirect, Template

from trainhub.accounts import User, require_run_owner
from trainhub.datasets import registry as datasets
from trainhub.runs import interactive, service, views
from trainhub.runs.artifacts import BUILD_LOG, human_size
from trainhub.server.api.runs import artifact_file
from trainhub.spec import SpecError
from trainhub.store import nodes as node_store
from trainhub.store.lifecycle import RunStatus

# 286 tells htmx to stop polling (litestar's HXStopPolling, but with the final content swapped in).
STOP_POLLING = 286


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


HELPERS: dict[str, Any] = {
    "when": when,
    "number": views.shown_number,
    "human_size": human_size,
    "statuses": [s.value for s in RunStatus],
}


def _user(request: HTMXRequest) -> User:
    user: User = request.user
    return user


class RunPages(Controller):
    path = "/runs"
    include_in_schema = False

    @get("/")
    async def runs(
        self,
        request: HTMXRequest,
        state: State,
        experiment: str | None = None,
        status: str | None = None,
        user: str | None = None,
        tag: str | None = None,
        metric: list[str] | None = None,
        before: int | None = Parameter(default=None, ge=0),
        after: int | None = Parameter(default=None, ge=0),
        limit: int = Parameter(default=50, ge=1, le=views.MAX_PAGE),
    ) -> Template:
        filters = views.parse_filter(experiment, status, user, tag)
        columns = views.parse_metric_columns(metric or [])
        table = await views.runs_table(
            state.db, filters, before=before, after=after, limit=limit, columns=columns
        )
        kept: list[tuple[str, str]] = [
            (k, v)
            for k, v in (
                ("experiment", filters.experiment),
                ("status", status.strip() if status else None),
                ("user", filters.user),
                ("tag", filters.tag),
            )
            if v
        ]
        kept += [("metric", f"{n}:{a}") for n, a in columns]
        if limit != 50:
            kept.append(("limit", str(limit)))
        cursor: list[tuple[str, str]] = []
        if before is not None:
            cursor = [("before", str(before))]
        elif after is not None:
            cursor = [("after", str(after))]
        page = table.page
        context = {
            **HELPERS,
            "table": table,
            "limit": limit,
            "filters": filters,
            "status": (status or "").strip(),
            "selected": {f"{n}:{a}" for n, a in columns},
            "this_url": "/runs?" + urlencode(kept + cursor),
            "older_url": "/runs?" + urlencode([*kept, ("before", str(page.older))])
            if page.older is not None
            else None,
            "newer_url": "/runs?" + urlencode([*kept, ("after", str(page.newer))])
            if page.newer is not None
            else None,
            "filtered": bool(kept and any(k != "limit" for k, _ in kept)) or bool(cursor),
        }
        target = request.htmx.target if request.htmx else None
        if target == "runs-body":
            return Template(
                "runs/_rows.html",
                context=context,
                status_code=200 if table.active else STOP_POLLING,
            )
        if request.htmx and not request.htmx.history_restore_request:
            return Template("runs/_page.html", context=context)
        return Template("runs/list.html", context=context)

    @get("/{run_id:str}")
    async def run(self, request: HTMXRequest, state: State, run_id: str) -> Template:
        view = await views.run_view(state.db, run_id, _user(request))
        context: dict[str, Any] = {**HELPERS, "view": view, "run": view.run}
        terminal = view.run.status.is_terminal()
        if request.htmx and request.htmx.target == "run-live":
            if terminal:  # the last refresh: the artifacts the run left come along (out of band)
                context["artifacts"] = await views.artifacts_of(state.settings, run_id)
                context["oob"] = True
            return Template(
                "runs/_live.html",
                context=context,
                status_code=STOP_POLLING if terminal else 200,
            )
        context["artifacts"] = await views.artifacts_of(state.settings, run_id)
        context["build_log"], context["build_log_cut"] = await views.build_log_tail(
            state.settings, run_id
        )
        context["build_log_path"] = BUILD_LOG
        context["datasets"] = await datasets.uses_of_run(state.db, run_id)
        tree = await interactive.tree_of(state.db, view.run)
        context["parent_run"], context["child_runs"], context["more_children"] = tree
        return Template("runs/run.html", context=context)

    @get("/{run_id:str}/files/{path:path}")
    async def download(self, state: State, run_id: str, path: str) -> File:
        return artifact_file(await service.artifact(state.settings, state.db, run_id, path))

    @post("/{run_id:str}/cancel", status_code=303)
    async def cancel(self, request: HTMXRequest, state: State, run_id: str) -> Redirect:
        await service.cancel(state.db, state.launcher, run_id, _user(request))
        return Redirect(f"/runs/{run_id}", status_code=303)

    @post("/{run_id:str}/tags", status_code=303)
    async def tag(self, request: HTMXRequest, state: State, run_id: str) -> Redirect:
        form = await request.form()
        tags = views.parse_tag_form(str(form.get("key", "")), str(form.get("value", "")))
        await service.set_tags(state.db, run_id, tags, _user(request))
        return Redirect(f"/runs/{run_id}#tags", status_code=303)

    @get("/{run_id:str}/clone")
    async def clone_page(self, request: HTMXRequest, state: State, run_id: str) -> Template:
        run = await service.get(state.db, run_id)
        require_run_owner(_user(request), run_id, run.user, "clone")
        return await self._clone_template(state, run, views.clone_form(run.spec), None)

    @post("/{run_id:str}/clone", status_code=303)
    async def clone(self, request: HTMXRequest, state: State, run_id: str) -> Redirect | Template:
        form = views.form_from_post(await request.form())
        try:
            new = await views.clone(
                state.settings, state.db, state.launcher, run_id, form, _user(request)
            )
        except SpecError as exc:
            run = await service.get(state.db, run_id)
            return await self._clone_template(state, run, form, exc, status_code=422)
        return Redirect(f"/runs/{new.id}", status_code=303)

    async def _clone_template(
        self,
        state: State,
        run: Any,
        form: views.CloneForm,
        error: SpecError | None,
        status_code: int = 200,
    ) -> Template:
        targets = await state.db.read(node_store.list_targets)
        field = (error.field or "") if error else ""
        return Template(
            "runs/clone.html",
            context={
                **HELPERS,
                "run": run,
                "form": form,
                "targets": sorted({"local", *targets}),
                "error": error.message if error else None,
                "error_field": field.split(".")[0].split("[")[0],
            },
            status_code=status_code,
        )
