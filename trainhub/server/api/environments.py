"""``/api/v1/environments``: named, versioned environments (Azure ML's registered ``Environment``).

Registry passwords are stored on the server only; every answer redacts them.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException

from trainhub.runs.service import iso
from trainhub.server.auth import admin_only
from trainhub.spec import parse_environment_definition, redact
from trainhub.store import environments as env_store


def _public(found: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": found["name"],
        "version": found["version"],
        "createdTimeUtc": iso(found["created_at"]),
        "definition": redact(found["definition"]),
    }


class EnvironmentsController(Controller):
    path = "/api/v1/environments"
    tags = ["environments"]

    @post(
        "/",
        status_code=201,
        summary="Register an environment (a new version of its name; admins)",
        guards=[admin_only],
    )
    async def register(self, state: State, request: Request[Any, Any, Any]) -> dict[str, Any]:
        env = parse_environment_definition(await request.body())
        definition = msgspec.to_builtins(env)
        version = await state.db.write(
            lambda db: env_store.add_definition(db, env.name, definition)
        )
        found = await state.db.read(lambda db: env_store.get_definition(db, env.name, version))
        assert found is not None
        return _public(found)

    @get("/", summary="Registered environments (latest versions)")
    async def list_environments(self, state: State) -> dict[str, Any]:
        found = await state.db.read(env_store.list_definitions)
        return {"environments": [_public(f) for f in found]}

    @get("/{name:str}", summary="One registered environment")
    async def get_environment(
        self, state: State, name: str, version: int | None = None
    ) -> dict[str, Any]:
        found = await state.db.read(lambda db: env_store.get_definition(db, name, version))
        if found is None:
            which = f"'{name}'" + (f" version {version}" if version else "")
            hint = (
                ": Azure ML's curated environments are not built into trainhub; an admin can "
                "register one under this name (POST /api/v1/environments, or "
                "Environment(name).register(ws))"
                if name.startswith("AzureML-")
                else ""
            )
            raise NotFoundException(f"No environment {which} is registered on this server{hint}")
        return _public(found)
