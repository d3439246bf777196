"""The queue (``/queue``) and the nodes (``/nodes``, ``/nodes/{name}``): what waits and why, and
what every node has, what its GPUs do now and which run holds each.

Both pages poll a partial of themselves with htmx (the queue's table, the nodes' cards). GPU
utilisation and memory used come from :class:`trainhub.nodes.telemetry.GpuTelemetry` (at most one
``nvidia-smi`` call per node per sampling interval, however many pages watch). Draining and enabling
a node is for admins, checked here with :func:`trainhub.accounts.require_admin`, done through
:mod:`trainhub.nodes.service` like the API. Only queued runs and allocations are read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Redirect, Template

from trainhub.accounts import User, require_admin
from trainhub.nodes import service
from trainhub.nodes.pool import LOCAL
from trainhub.nodes.telemetry import GpuTelemetry, Reading
from trainhub.runs.artifacts import human_size
from trainhub.store import cluster
from trainhub.store import nodes as node_store

# The longest a page waits for a node's nvidia-smi before showing its GPUs without a reading.
READING_TIMEOUT_SECONDS = 3.0
# Actions an admin has buttons for on these pages (the API and CLI have disable and trust too).
PAGE_ACTIONS = ("drain", "enable")


@dataclass(frozen=True)
class GpuView:
    index: int
    name: str
    memory_mib: int | None
    utilization: float | None
    memory_used: float | None
    run_id: str | None  # the run holding it

    @property
    def memory_share(self) -> float | None:
        if self.memory_used is None or not self.memory_mib:
            return None
        return min(100.0, 100.0 * self.memory_used / self.memory_mib)


@dataclass(frozen=True)
class NodeView:
    name: str
    host: str | None
    state: str
    error: str | None
    cpus: int | None
    memory_bytes: int | None
    gpu_support: bool
    docker_version: str | None
    runtimes: list[str]
    last_seen_at: float | None
    gpus: list[GpuView]
    runs: list[str]
    slots: int
    actions: list[str] = field(default_factory=list)

    @property
    def gpus_free(self) -> int:
        return sum(1 for g in self.gpus if g.run_id is None)


def gpu_views(
    inventory: list[dict[str, Any]], held: dict[int, str], readings: dict[int, Reading]
) -> list[GpuView]:
    """A node's GPUs as the page shows them: from its inventory, with what each does now and the
    run holding it."""
    views: list[GpuView] = []
    for gpu in inventory:
        index = int(gpu.get("index", len(views)))
        reading = readings.get(index)
        views.append(
            GpuView(
                index=index,
                name=str(gpu.get("name") or "GPU"),
                memory_mib=gpu.get("memory_mib"),
                utilization=reading.utilization if reading else None,
                memory_used=reading.memory_used if reading else None,
                run_id=held.get(index),
            )
        )
    return views


def actions_for(name: str, state: str, enabled: bool, draining: bool) -> list[str]:
    """The buttons an admin gets for a node: drain a node taking runs, enable a drained or disabled
    one; none for ``local`` (the server itself)."""
    if name == LOCAL:
        return []
    found = []
    if enabled and not draining and state != "Untrusted":
        found.append("drain")
    if draining or not enabled:
        found.append("enable")
    return found


def node_view(
    description: dict[str, Any],
    holding: dict[str, Any],
    readings: dict[int, Reading],
    enabled: bool = True,
    draining: bool = False,
) -> NodeView:
    facts = description.get("inventory") or {}
    name = str(description["name"])
    state = str(description.get("state") or "")
    return NodeView(
        name=name,
        host=description.get("host"),
        state=state,
        error=description.get("error"),
        cpus=facts.get("cpus"),
        memory_bytes=facts.get("memory_bytes"),
        gpu_support=bool(facts.get("gpu_support")),
        docker_version=facts.get("docker_version"),
        runtimes=list(description.get("runtimes") or []),
        last_seen_at=description.get("lastSeenUtc"),
        gpus=gpu_views(facts.get("gpus") or [], holding.get("gpus", {}), readings),
        runs=list(holding.get("runs", [])),
        slots=int(holding.get("slots", 0)),
        actions=actions_for(name, state, enabled, draining),
    )


async def _readings(state: State, descriptions: list[dict[str, Any]]) -> list[dict[int, Reading]]:
    """What each node's GPUs do now (nothing for nodes without GPUs or not reachable)."""
    telemetry: GpuTelemetry | None = state.get("telemetry")

    async def one(description: dict[str, Any]) -> dict[int, Reading]:
        facts = description.get("inventory") or {}
        if (
            telemetry is None
            or not facts.get("gpus")
            or description.get("state")
            in (
                "Unreachable",
                "Untrusted",
                "Disabled",
            )
        ):
            return {}
        return await telemetry.current(str(description["name"]), READING_TIMEOUT_SECONDS)

    return list(await asyncio.gather(*(one(d) for d in descriptions)))


async def nodes_view(state: State, only: str | None = None) -> list[NodeView]:
    """Every node (or only ``only``; NotFoundException when there is no such node)."""
    pool = state.pool
    rows = await state.db.read(lambda db: cluster_rows(db, only))
    if only is not None and only != LOCAL and not rows:
        raise NotFoundException(f"No node named '{only}'")
    holding = await state.db.read(cluster.holders)
    descriptions: list[tuple[dict[str, Any], bool, bool]] = []
    if only in (None, LOCAL):
        descriptions.append((pool.local_description(), True, False))
    descriptions += [(pool.describe(row), row.enabled, row.draining) for row in rows]
    readings = await _readings(state, [d for d, _, _ in descriptions])
    return [
        node_view(d, holding.get(str(d["name"]), {}), found, enabled, draining)
        for (d, enabled, draining), found in zip(descriptions, readings, strict=True)
    ]


def cluster_rows(db: Any, only: str | None) -> list[node_store.NodeRow]:
    """The stored nodes (``local`` is not one), or only ``only``."""
    if only is None:
        return node_store.list_nodes(db)
    if only == LOCAL:
        return []
    row = node_store.get_node(db, only)
    return [row] if row is not None else []


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def waited(ts: float) -> str:
    """How long a run has waited, for a person: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    seconds = max(0, int(datetime.now(UTC).timestamp() - ts))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} d {hours % 24} h"


HELPERS: dict[str, Any] = {"when": when, "waited": waited, "human_size": human_size}


def _poll_seconds(state: State) -> float:
    return max(2.0, float(state.settings.gpu_sample_seconds))


class ClusterPages(Controller):
    include_in_schema = False

    @get("/queue")
    async def queue(self, request: HTMXRequest, state: State) -> Template:
        runs, total = await state.db.read(cluster.queue)
        context = {**HELPERS, "runs": runs, "total": total, "poll": _poll_seconds(state)}
        if request.htmx and request.htmx.target == "queue-body":
            return Template("cluster/_queue.html", context=context)
        return Template("cluster/queue.html", context=context)

    @get("/nodes")
    async def nodes(self, request: HTMXRequest, state: State) -> Template:
        found = await nodes_view(state)
        context = {**HELPERS, "nodes": found, "poll": _poll_seconds(state), "one": None}
        if request.htmx and request.htmx.target == "nodes-body":
            return Template("cluster/_nodes.html", context=context)
        return Template("cluster/nodes.html", context=context)

    @get("/nodes/{name:str}")
    async def node(self, request: HTMXRequest, state: State, name: str) -> Template:
        (found,) = await nodes_view(state, name)
        context = {**HELPERS, "nodes": [found], "poll": _poll_seconds(state), "one": found}
        if request.htmx and request.htmx.target == "nodes-body":
            return Template("cluster/_nodes.html", context=context)
        return Template("cluster/node.html", context=context)

    @post("/nodes/{name:str}/{action:str}", status_code=303)
    async def act(self, request: HTMXRequest, state: State, name: str, action: str) -> Redirect:
        user: User = request.user
        require_admin(user, "drain or enable nodes")
        if action not in PAGE_ACTIONS:
            raise NotFoundException(f"Unknown node action '{action}' (drain, enable)")
        try:
            await service.act(state.pool, state.launcher.wake, name, action)
        except service.LocalNodeFixed as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        except service.NodeNotFound as exc:
            raise NotFoundException(str(exc)) from None
        form = await request.form()
        back = "/nodes" if form.get("back") != "node" else f"/nodes/{name}"
        return Redirect(back, status_code=303)
