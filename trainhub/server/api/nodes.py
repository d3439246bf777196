"""``/api/v1/nodes`` and ``/api/v1/targets``: register GPU servers, drain them, group them."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException

from trainhub.nodes.pool import LOCAL, NodeError
from trainhub.store.lifecycle import ACTIVE
from trainhub.spec import SpecError
from trainhub.store import nodes as node_store
from trainhub.store import runs as q


class NodeIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    host: str
    user: str
    key_path: str
    port: int = 22
    docker_socket: str = "/var/run/docker.sock"


class TargetIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    nodes: list[str]


def _decode(raw: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise SpecError(None, f"Invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise SpecError(None, f"The body is not valid JSON: {exc}") from None


async def _describe(state: State, name: str) -> dict[str, Any]:
    pool = state.pool
    held = await state.db.read(node_store.allocations)
    busy = sorted({g for row in held if row["node"] == name for g in row["gpus"]})
    out: dict[str, Any]
    if name == LOCAL:
        out = pool.local_description()
    else:
        row = await state.db.read(lambda db: node_store.get_node(db, name))
        if row is None:
            raise NotFoundException(f"No node named '{name}'")
        out = pool.describe(row)
    out["allocatedGpus"] = busy
    out["runs"] = sorted({row["run_id"] for row in held if row["node"] == name})
    return out


class NodesController(Controller):
    path = "/api/v1"
    tags = ["nodes"]

    @post("/nodes", status_code=201, summary="Add a node reached over SSH (its host key is pinned)")
    async def add(self, state: State, request: Request[Any, Any, Any]) -> dict[str, Any]:
        node = _decode(await request.body(), NodeIn)
        try:
            await state.pool.add(
                node.name, node.host, node.port, node.user, node.key_path, node.docker_socket
            )
        except NodeError as exc:
            raise SpecError("node", str(exc)) from None
        state.launcher.wake()
        return await _describe(state, node.name)

    @get("/nodes", summary="Every node with its state and inventory")
    async def list_nodes(self, state: State) -> dict[str, Any]:
        rows = await state.db.read(node_store.list_nodes)
        return {
            "nodes": [await _describe(state, LOCAL)]
            + [await _describe(state, r.name) for r in rows]
        }

    @get("/nodes/{name:str}", summary="One node")
    async def show(self, state: State, name: str) -> dict[str, Any]:
        return await _describe(state, name)

    @post(
        "/nodes/{name:str}/{action:str}",
        status_code=200,
        summary="drain, enable, disable or trust a node",
    )
    async def act(self, state: State, name: str, action: str) -> dict[str, Any]:
        if name == LOCAL:
            raise HTTPException(
                status_code=400,
                detail="The node 'local' is the server itself: it cannot be changed",
            )
        flags = {
            "drain": {"draining": 1},
            "enable": {"draining": 0, "enabled": 1},
            "disable": {"enabled": 0},
        }
        try:
            if action == "trust":
                await state.pool.trust(name)
            elif action in flags:
                await state.pool.set_flags(name, **flags[action])
            else:
                raise HTTPException(
                    status_code=404,
                    detail=f"Unknown node action '{action}' (drain, enable, disable, trust)",
                )
        except NodeError as exc:
            raise NotFoundException(str(exc)) from None
        state.launcher.wake()
        return await _describe(state, name)

    @delete(
        "/nodes/{name:str}", status_code=200, summary="Remove a node (refused while runs use it)"
    )
    async def remove(self, state: State, name: str) -> dict[str, Any]:
        if name == LOCAL:
            raise HTTPException(
                status_code=400,
                detail="The node 'local' is the server itself: it cannot be removed",
            )
        active = await state.db.read(lambda db: q.runs_with_status(db, ACTIVE))
        using = [r.id for r in active if r.node == name]
        if using:
            raise HTTPException(
                status_code=409,
                detail=f"Node {name} has {len(using)} active run(s); drain it and wait, or cancel them",
            )
        try:
            await state.pool.remove(name)
        except NodeError as exc:
            raise NotFoundException(str(exc)) from None
        return {"removed": name}

    @post(
        "/targets",
        status_code=201,
        summary="Create or change a compute target (a named group of nodes)",
    )
    async def set_target(self, state: State, request: Request[Any, Any, Any]) -> dict[str, Any]:
        target = _decode(await request.body(), TargetIn)
        if target.name == LOCAL:
            raise SpecError("name", "The target 'local' exists already and is the node 'local'")
        if not target.nodes:
            raise SpecError("nodes", "A compute target needs at least one node")
        known = {r.name for r in await state.db.read(node_store.list_nodes)} | {LOCAL}
        unknown = [n for n in target.nodes if n not in known]
        if unknown:
            raise SpecError("nodes", f"Unknown node(s): {', '.join(unknown)}")
        await state.db.write(lambda db: node_store.set_target(db, target.name, target.nodes))
        state.launcher.wake()
        return {"name": target.name, "nodes": target.nodes}

    @get("/targets", summary="Compute targets")
    async def list_targets(self, state: State) -> dict[str, Any]:
        found = await state.db.read(node_store.list_targets)
        return {"targets": [{"name": k, "nodes": v} for k, v in found.items()]}
