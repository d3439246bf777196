"""A sweep's page (``/sweeps/{id}``): its limits and counts, a form to change the limits while it
runs, its children best first (the best pinned at the top) with their hyperparameters, status and
why the sweep stopped each one it stopped, two charts and a TensorBoard link over the children.

Thin handlers over :mod:`trainhub.hyperdrive.service` (the same details and permission checks as
``GET``/``PATCH /api/v1/sweeps/{id}``). The live part (``sweep-live``) is polled every 2 s until
the parent run ends, as a run's page is.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Redirect, Template

from trainhub.accounts import User, can_change_run
from trainhub.hyperdrive import service as sweeps
from trainhub.hyperdrive.ranking import ranked, why_stopped
from trainhub.hyperdrive.spec import DEFAULT_MAX_DURATION_MINUTES
from trainhub.server.pages import sweep_charts
from trainhub.server.pages.runs import HELPERS, STOP_POLLING
from trainhub.spec import SpecError
from trainhub.store import sweeps as store
from trainhub.store.lifecycle import RunStatus
from trainhub.tensorboard.processes import MAX_VIEW_RUNS

CHART_CHILDREN = 50  # the best this many are drawn: more lines would be a blur
TERMINAL = {s.value for s in RunStatus if s.is_terminal()}


def _user(request: HTMXRequest) -> User:
    user: User = request.user
    return user


async def _context(state: State, sweep_id: str, user: User) -> dict[str, Any]:
    details = await sweeps.details(state.db, sweep_id, state.settings.public_url)
    sweep = details["sweep"]
    children = ranked(sweep)
    best = next((c for c in children if c["runId"] == sweep["bestChildRunId"]), None)
    names = sorted({name for c in children for name in c["hyperparameters"]})
    metric = sweep["primaryMetricName"]
    drawn = children[:CHART_CHILDREN]
    series = await state.db.read(
        lambda conn: store.primary_series(conn, [c["runId"] for c in drawn], metric)
    )
    lines = [
        sweep_charts.Line(
            c["runId"],
            [c["hyperparameters"].get(name) for name in names] + [c["bestMetric"]],
            best=c is best,
            stopped=bool(c["stopped"]),
        )
        for c in drawn
    ]
    board = ",".join(c["runId"] for c in children[:MAX_VIEW_RUNS])
    return {
        **HELPERS,
        "details": details,
        "sweep": sweep,
        "best": best,
        "others": [c for c in children if c is not best],
        "names": names,
        "why_stopped": why_stopped,
        "ended": details["status"] in TERMINAL,
        "can_change": can_change_run(user, details.get("submittedBy")),
        "parallel": sweep_charts.parallel_coordinates([*names, metric], lines),
        "steps": sweep_charts.metric_over_steps(metric, series, lines),
        "tensorboard": f"/experiments/{details['experiment']}/tensorboard?runs={board}"
        if children
        else None,
        "board_cut": len(children) > MAX_VIEW_RUNS,
        "max_view_runs": MAX_VIEW_RUNS,
        "default_minutes": DEFAULT_MAX_DURATION_MINUTES,
        "chart_cut": len(children) > CHART_CHILDREN,
    }


def _limit(form: Any, name: str) -> int | None:
    """A limit from the form: empty is 'unchanged'; anything else must be a whole number."""
    raw = str(form.get(name, "")).strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise SpecError(name, f"{name} must be a whole number")
    return int(raw)


class SweepPages(Controller):
    path = "/sweeps"
    include_in_schema = False

    @get("/{sweep_id:str}")
    async def sweep(self, request: HTMXRequest, state: State, sweep_id: str) -> Template:
        context = await _context(state, sweep_id, _user(request))
        if request.htmx and request.htmx.target == "sweep-live":
            return Template(
                "sweeps/_live.html",
                context=context,
                status_code=STOP_POLLING if context["ended"] else 200,
            )
        return Template("sweeps/sweep.html", context=context)

    @post("/{sweep_id:str}/limits", status_code=303)
    async def limits(
        self, request: HTMXRequest, state: State, sweep_id: str
    ) -> Redirect | Template:
        form = await request.form()
        try:
            values = {
                name: value for name in sweeps.LIMITS if (value := _limit(form, name)) is not None
            }
            await sweeps.change_limits(state.db, sweep_id, values, _user(request))
        except SpecError as exc:
            context = await _context(state, sweep_id, _user(request))
            context["limit_error"] = f"{exc.field}: {exc.message}"
            return Template("sweeps/sweep.html", context=context, status_code=422)
        state.sweeps.wake()
        return Redirect(f"/sweeps/{sweep_id}", status_code=303)
