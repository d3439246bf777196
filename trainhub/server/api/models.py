"""``/api/v1/models``: registered models (Azure ML's ``Model``). Register a run's file or folder
(``POST /api/v1/runs/{id}/models``) or a client's (a tar body), list and read them, download their
files (Range resumes), change tags and description, delete a version (admins).

The rules are in :mod:`trainhub.models.registry`; these handlers decode, call it and answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException

from trainhub.accounts import User
from trainhub.datastores.files import inside
from trainhub.models import registry
from trainhub.models.registry import ModelNotFound
from trainhub.server.api import decode
from trainhub.server.api.datastores import relative_path, send_file
from trainhub.spec import SpecError
from trainhub.store.models import ModelRow


class ModelIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    path: str
    tags: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    description: str | None = None


class ModelChange(msgspec.Struct, forbid_unknown_fields=True):
    tags: dict[str, Any] | None = None
    description: str | None = None


PREFIX = "/api/v1/models"


@contextmanager
def found() -> Iterator[None]:
    try:
        yield
    except ModelNotFound as exc:
        raise NotFoundException(str(exc)) from None


def base_url(state: State, request: Request[Any, Any, Any]) -> str:
    """Where the dashboard is: TRAINHUB_PUBLIC_URL, else the address this request came to."""
    return str(state.settings.public_url or request.base_url)


def _json_param(raw: str | None, field: str) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise SpecError(field, f"{field} is a JSON object of strings: {raw[:100]!r}") from None


async def send_model_file(
    state: State, row: ModelRow, relative: str, range_header: str | None, *, attachment: bool
) -> Response[Any]:
    root = registry.version_dir(state.settings, row)
    if not inside(root, relative).is_file():
        raise NotFoundException(f"Model {row.id} has no file '{relative}'")
    return await send_file(root, relative, row.id, range_header, attachment=attachment)


class ModelsController(Controller):
    path = "/api/v1"
    tags = ["models"]

    @post(
        "/runs/{run_id:str}/models",
        status_code=201,
        summary="Register a file or folder of a run's outputs as a model's next version",
    )
    async def register_from_run(
        self, state: State, request: Request[User, Any, Any], run_id: str
    ) -> dict[str, Any]:
        data = decode(await request.body(), ModelIn)
        row = await registry.register_from_run(
            state.settings,
            state.db,
            request.user,
            run_id,
            name=data.name,
            path=data.path,
            tags=data.tags,
            properties=data.properties,
            description=data.description,
        )
        return registry.public(row, base_url(state, request))

    @post(
        "/models/{name:str}",
        status_code=201,
        summary="Register a client's file or folder (a tar body holding it) as a model",
        request_max_body_size=None,
    )
    async def register_upload(
        self,
        state: State,
        request: Request[User, Any, Any],
        name: str,
        path: str,
        description: str | None = None,
        tags: str | None = None,
        properties: str | None = None,
    ) -> dict[str, Any]:
        row = await registry.register_upload(
            state.settings,
            state.db,
            request.user,
            request.stream(),
            name=name,
            path=path,
            tags=_json_param(tags, "tags"),
            properties=_json_param(properties, "properties"),
            description=description,
        )
        return registry.public(row, base_url(state, request))

    @get("/models", summary="Model versions, newest first (by name, by tags: key or key=value)")
    async def list_models(
        self,
        state: State,
        request: Request[User, Any, Any],
        name: str | None = None,
        tag: list[str] | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        rows = await registry.list_versions(
            state.db, name=name, tags=tag, before=before, limit=limit
        )
        base = base_url(state, request)
        return {
            "models": [registry.public(r, base) for r in rows],
            "next": rows[-1].seq if len(rows) == limit else None,
        }

    @get("/models/{name:str}", summary="A model's latest version")
    async def latest(
        self, state: State, request: Request[User, Any, Any], name: str
    ) -> dict[str, Any]:
        with found():
            row = await registry.get(state.db, name)
        return registry.public(row, base_url(state, request))

    @get("/models/{name:str}/versions/{version:int}", summary="One version of a model")
    async def show(
        self, state: State, request: Request[User, Any, Any], name: str, version: int
    ) -> dict[str, Any]:
        with found():
            row = await registry.get(state.db, name, version)
        return registry.public(row, base_url(state, request))

    @get("/models/{name:str}/versions/{version:int}/files", summary="A version's files")
    async def list_files(self, state: State, name: str, version: int) -> dict[str, Any]:
        with found():
            row = await registry.get(state.db, name, version)
        listed = await registry.file_list(state.settings, row)
        return {"id": row.id, "files": [{"path": p, "size": s} for p, s in listed]}

    @get(
        "/models/{name:str}/versions/{version:int}/files/{path:path}",
        summary="Download a file of a model (Range requests resume one)",
    )
    async def download(
        self, state: State, request: Request[User, Any, Any], name: str, version: int, path: str
    ) -> Response[Any]:
        with found():
            row = await registry.get(state.db, name, version)
        lead = f"{PREFIX}/{name}/versions/{version}/files/"
        relative = relative_path(request, lead, path)
        return await send_model_file(
            state, row, relative, request.headers.get("range"), attachment=False
        )

    @patch(
        "/models/{name:str}/versions/{version:int}",
        summary="Replace a version's tags and/or description (who registered it, or an admin)",
    )
    async def change(
        self, state: State, request: Request[User, Any, Any], name: str, version: int
    ) -> dict[str, Any]:
        data = decode(await request.body(), ModelChange)
        with found():
            row = await registry.update(
                state.db,
                request.user,
                name,
                version,
                tags=data.tags,
                description=data.description,
            )
        return registry.public(row, base_url(state, request))

    @delete(
        "/models/{name:str}/versions/{version:int}",
        status_code=200,
        summary="Delete a version and its files (admins)",
    )
    async def remove(
        self, state: State, request: Request[User, Any, Any], name: str, version: int
    ) -> dict[str, Any]:
        with found():
            row = await registry.remove(state.settings, state.db, request.user, name, version)
        return {"removed": row.id}
