"""TensorBoard behind the server's login: a run's at ``/runs/{id}/tensorboard/``, several runs' at
``/tensorboard/{view}/`` (reached from ``/experiments/{name}/tensorboard?runs=a,b``), and the API the
SDK's ``Tensorboard([...]).start()`` calls. The boards themselves: :mod:`trainhub.tensorboard`."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, Request, Response, delete, get, post, route
from litestar.datastructures import State
from litestar.enums import HttpMethod
from litestar.exceptions import NotFoundException, ValidationException
from litestar.response import Redirect

from trainhub.runs import service
from trainhub.settings import Settings
from trainhub.store import Database
from trainhub.store import runs as q
from trainhub.tensorboard import processes, proxy
from trainhub.tensorboard.processes import MAX_VIEW_RUNS, TensorboardManager

PROXIED = [HttpMethod.GET, HttpMethod.POST]  # TensorBoard's frontend only ever GETs and POSTs


def get_manager(state: State) -> TensorboardManager:
    """The app's manager (made by the lifespan; made here on first use when it is not)."""
    manager: TensorboardManager | None = state.get("tensorboard")
    if manager is None:
        manager = state.tensorboard = TensorboardManager(state.settings, state.db)
    return manager


def _slash_redirect(request: Request[Any, Any, Any]) -> Redirect | None:
    """``/runs/x/tensorboard`` -> ``/runs/x/tensorboard/`` (TensorBoard's page loads its files
    relative to it); None when the URL already ends with the slash."""
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    if raw.endswith(b"/"):
        return None
    query = request.scope.get("query_string", b"").decode("latin-1")
    return Redirect(raw.decode("latin-1") + "/" + (f"?{query}" if query else ""), status_code=307)


async def _run_exists(state: State, run_id: str) -> None:
    """A 404 for a run that does not exist. A run whose board is running exists (runs are never
    removed), so the many requests of an open TensorBoard page skip the database."""
    if f"run:{run_id}" not in get_manager(state).boards:
        await service.get(state.db, run_id)


async def _existing(db: Database, run_ids: list[str]) -> list[str]:
    """``run_ids`` if every one exists (a 404 naming the first that does not)."""
    for run_id in run_ids:
        await service.get(db, run_id)
    return run_ids


def _parse_runs(raw: str | None, field: str = "runs") -> list[str]:
    ids = list(dict.fromkeys(r.strip() for r in (raw or "").split(",") if r.strip()))
    if len(ids) > MAX_VIEW_RUNS:
        raise ValidationException(
            f"{field}: at most {MAX_VIEW_RUNS} runs in one TensorBoard, got {len(ids)}"
        )
    return ids


class TensorboardPages(Controller):
    include_in_schema = False

    @route("/runs/{run_id:str}/tensorboard", http_method=PROXIED)
    async def run_board_root(
        self, request: Request[Any, Any, Any], state: State, run_id: str
    ) -> Response[Any]:
        await _run_exists(state, run_id)  # 404 before anything starts
        redirect = _slash_redirect(request)
        if redirect is not None:
            return redirect
        return await self._run_board(request, state, run_id)

    @route("/runs/{run_id:str}/tensorboard/{path:path}", http_method=PROXIED)
    async def run_board(
        self, request: Request[Any, Any, Any], state: State, run_id: str, path: str
    ) -> Response[Any]:
        await _run_exists(state, run_id)
        return await self._run_board(request, state, run_id)

    async def _run_board(
        self, request: Request[Any, Any, Any], state: State, run_id: str
    ) -> Response[Any]:
        manager = get_manager(state)
        await manager.start()
        board = await manager.for_run(run_id)
        return await proxy.forward(manager, board, request, f"run {run_id}")

    @get("/experiments/{name:str}/tensorboard")
    async def experiment_board(
        self, state: State, name: str, runs: list[str] | None = None
    ) -> Redirect:
        """One TensorBoard over the chosen runs of the experiment (``?runs=a,b``, or ``runs``
        repeated as a form of checkboxes sends it), or over its latest runs when none are chosen."""
        db: Database = state.db
        chosen = _parse_runs(",".join(runs or []))
        if chosen:
            for run_id in chosen:
                run = await service.get(db, run_id)
                if run.experiment != name:
                    raise NotFoundException(f"Run '{run_id}' is not in experiment '{name}'")
        else:
            found = await db.read(
                lambda conn: q.list_runs(conn, experiment=name, limit=MAX_VIEW_RUNS)
            )
            chosen = [r.id for r in found]
            if not chosen:
                raise NotFoundException(f"No runs in experiment '{name}'")
        return Redirect(await _view_url(state.settings, chosen), status_code=303)

    @route("/tensorboard/{view_id:str}", http_method=PROXIED)
    async def view_board_root(
        self, request: Request[Any, Any, Any], state: State, view_id: str
    ) -> Response[Any]:
        run_ids = _view_or_404(state.settings, view_id)
        redirect = _slash_redirect(request)
        if redirect is not None:
            return redirect
        return await self._view_board(request, state, view_id, run_ids)

    @route("/tensorboard/{view_id:str}/{path:path}", http_method=PROXIED)
    async def view_board(
        self, request: Request[Any, Any, Any], state: State, view_id: str, path: str
    ) -> Response[Any]:
        run_ids = _view_or_404(state.settings, view_id)
        return await self._view_board(request, state, view_id, run_ids)

    async def _view_board(
        self, request: Request[Any, Any, Any], state: State, view_id: str, run_ids: list[str]
    ) -> Response[Any]:
        manager = get_manager(state)
        await manager.start()
        board = await manager.for_view(view_id, run_ids)
        return await proxy.forward(manager, board, request, f"{len(run_ids)} runs")


def _view_or_404(settings: Settings, view_id: str) -> list[str]:
    run_ids = processes.view_runs(settings, view_id)
    if run_ids is None:
        raise NotFoundException(f"No TensorBoard '{view_id}'")
    return run_ids


async def _view_url(settings: Settings, run_ids: list[str]) -> str:
    view_id = await asyncio.to_thread(processes.prepare_view, settings, run_ids)
    return processes.view_prefix(view_id) + "/"


class TensorboardApi(Controller):
    """``Tensorboard([run1, run2]).start()``: the board started now, its URL returned."""

    path = "/api/v1/tensorboards"

    @post("/", status_code=201)
    async def start(self, state: State, data: dict[str, Any]) -> dict[str, Any]:
        raw = data.get("runs") if isinstance(data, dict) else None
        if not isinstance(raw, list) or not raw or not all(isinstance(r, str) for r in raw):
            raise ValidationException("runs: a non-empty list of run ids")
        run_ids = await _existing(state.db, _parse_runs(",".join(raw)))
        manager = get_manager(state)
        await manager.start()
        if len(run_ids) == 1:
            board = await manager.for_run(run_ids[0])
            url = processes.run_prefix(run_ids[0]) + "/"
        else:
            url = await _view_url(state.settings, run_ids)
            view_id = url.strip("/").rsplit("/", 1)[-1]
            board = await manager.for_view(view_id, sorted(run_ids))
        return {"id": board.key, "url": url, "runs": list(board.run_ids)}

    @delete("/{board_id:str}", status_code=204)
    async def stop(self, state: State, board_id: str) -> None:
        if not await get_manager(state).close(board_id):
            raise NotFoundException(f"No TensorBoard '{board_id}' is running")
