"""``/api/v1/nodes`` and ``/api/v1/targets``: register GPU servers, drain them, group them.

A node's private key is ``key_path`` (a file on the server's machine, as ``trainhub node add``
names it) or ``private_key`` (the key's text, as ``ComputeTarget.attach`` sends it from a user's
computer); no answer ever holds either.

The rules are in :mod:`trainhub.nodes.service`; these handlers decode, call it and answer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException

from trainhub.nodes import service
from trainhub.server.api import decode
from trainhub.server.auth import admin_only
from trainhub.slurm import targets as slurm_targets
from trainhub.spec import SpecError
from trainhub.store import slurm as slurm_store


class NodeIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    host: str
    user: str
    key_path: str | None = None
    private_key: str | None = None
    port: int = 22
    docker_socket: str = "/var/run/docker.sock"


class TargetIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    nodes: list[str] = []
    kind: str = "nodes"  # or "slurm": a Slurm cluster through its login node (the fields below)
    host: str | None = None
    port: int = 22
    user: str | None = None
    key_path: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    work_dir: str = "/shared/trainhub"


def slurm_fields(target: TargetIn) -> dict[str, Any]:
    """A Slurm target's fields; the ones it cannot do without are named when missing."""
    for field in ("host", "user", "key_path", "partition"):
        if getattr(target, field) is None:
            raise SpecError(field, f"A target of kind 'slurm' needs {field}")
    if target.nodes:
        raise SpecError("nodes", "A target of kind 'slurm' has no nodes of trainhub's")
    return {
        f: getattr(target, f)
        for f in ("name", "host", "port", "user", "key_path", "partition", "account", "qos")
    } | {"work_dir": target.work_dir}


@contextmanager
def _answers() -> Iterator[None]:
    """The node service's refusals as HTTP answers."""
    try:
        yield
    except service.LocalNodeFixed as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    except (service.NodeNotFound, service.TargetNotFound, service.UnknownAction) as exc:
        raise NotFoundException(str(exc)) from None
    except service.NodeBusy as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None


class NodesController(Controller):
    path = "/api/v1"
    tags = ["nodes"]

    @post(
        "/nodes",
        status_code=201,
        summary="Add a node reached over SSH (its host key is pinned)",
        guards=[admin_only],
    )
    async def add(self, state: State, request: Request[Any, Any, Any]) -> dict[str, Any]:
        node = decode(await request.body(), NodeIn)
        return await service.add(
            state.pool,
            state.launcher.wake,
            name=node.name,
            host=node.host,
            port=node.port,
            user=node.user,
            key_path=node.key_path,
            docker_socket=node.docker_socket,
            private_key=node.private_key,
        )

    @get("/nodes", summary="Every node with its state and inventory")
    async def list_nodes(self, state: State) -> dict[str, Any]:
        return {"nodes": await service.describe_all(state.pool)}

    @get("/nodes/{name:str}", summary="One node")
    async def show(self, state: State, name: str) -> dict[str, Any]:
        with _answers():
            return await service.describe(state.pool, name)

    @post(
        "/nodes/{name:str}/{action:str}",
        status_code=200,
        summary="drain, enable, disable or trust a node",
        guards=[admin_only],
    )
    async def act(self, state: State, name: str, action: str) -> dict[str, Any]:
        with _answers():
            return await service.act(state.pool, state.launcher.wake, name, action)

    @delete(
        "/nodes/{name:str}",
        status_code=200,
        summary="Remove a node (refused while runs use it)",
        guards=[admin_only],
    )
    async def remove(self, state: State, name: str) -> dict[str, Any]:
        with _answers():
            await service.remove(state.pool, name)
        return {"removed": name}

    @post(
        "/targets",
        status_code=201,
        summary="Create or change a compute target (a named group of nodes)",
        guards=[admin_only],
    )
    async def set_target(self, state: State, request: Request[Any, Any, Any]) -> dict[str, Any]:
        target = decode(await request.body(), TargetIn)
        if target.kind == "slurm":
            return await slurm_targets.create(state.db, **slurm_fields(target))
        if target.kind != "nodes":
            raise SpecError("kind", f"Unknown target kind {target.kind!r} (nodes, slurm)")
        if target.name in await state.db.read(slurm_store.target_names):
            raise SpecError("name", f"A Slurm target is named '{target.name}' already")
        return await service.set_target(state.db, state.launcher.wake, target.name, target.nodes)

    @delete(
        "/targets/{name:str}",
        status_code=200,
        summary="Remove a compute target, not its nodes (refused while runs wait for it or use it)",
        guards=[admin_only],
    )
    async def remove_target(self, state: State, name: str) -> dict[str, Any]:
        try:
            if await slurm_targets.remove(state.db, name):
                return {"removed": name}
        except slurm_targets.TargetBusy as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        with _answers():
            await service.remove_target(state.db, name)
        return {"removed": name}

    @get("/targets", summary="Compute targets")
    async def list_targets(self, state: State) -> dict[str, Any]:
        found = await service.targets(state.db) + await slurm_targets.listed(state.db)
        return {"targets": found}
