"""``/api/v1/datasets``: Azure ML's ``Dataset.File`` / ``Dataset.Tabular`` records over datastore
paths. Create one (registered under a name, or saved unnamed for a run), read a name's versions
and the runs that used them, list a dataset's files (a client's ``to_pandas_dataframe`` and
``download`` fetch them through the datastore's own file routes), and a run's datasets.

The rules are in :mod:`trainhub.datasets.registry`; these handlers decode, call it and answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException

from trainhub.accounts import User
from trainhub.datasets import registry
from trainhub.datastores.registry import DatastoreNotFound
from trainhub.runs import service as runs
from trainhub.server.api import decode
from trainhub.server.api.models import base_url


class DatasetIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    kind: str
    datastore: str
    paths: list[Any]
    options: dict[str, Any] | None = None
    name: str | None = None
    description: str | None = None
    tags: dict[str, Any] | None = None
    create_new_version: bool = False


@contextmanager
def _answers() -> Iterator[None]:
    try:
        yield
    except (registry.DatasetNotFound, DatastoreNotFound) as exc:
        raise NotFoundException(str(exc)) from None
    except registry.DatasetExists as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None


class DatasetsController(Controller):
    path = "/api/v1"
    tags = ["datasets"]

    @post(
        "/datasets",
        summary="Create a dataset: registered under a name (its next version) or saved unnamed",
    )
    async def create(self, state: State, request: Request[User, Any, Any]) -> Response[Any]:
        data = decode(await request.body(), DatasetIn)
        with _answers():
            row, created = await registry.create(
                state.settings,
                state.db,
                request.user,
                kind=data.kind,
                datastore=data.datastore,
                paths_given=data.paths,
                options=data.options,
                name=data.name,
                description=data.description,
                tags=data.tags,
                create_new_version=data.create_new_version,
            )
        body = {**registry.public(row, base_url(state, request)), "created": created}
        return Response(body, status_code=201 if created else 200)

    @get("/datasets", summary="Registered datasets: each name's latest version")
    async def list_datasets(
        self, state: State, request: Request[User, Any, Any], contains: str | None = None
    ) -> dict[str, Any]:
        names = await registry.list_names(state.db, contains)
        base = base_url(state, request)
        return {
            "datasets": [
                {**registry.public(n.latest, base), "versions": n.versions, "runs": n.runs}
                for n in names
            ]
        }

    @get("/datasets/{name:str}", summary="A registered dataset (its latest version, or ?version=)")
    async def show(
        self,
        state: State,
        request: Request[User, Any, Any],
        name: str,
        version: int | None = None,
    ) -> dict[str, Any]:
        with _answers():
            row = await registry.get_by_name(state.db, name, version)
            versions = await registry.versions(state.db, name)
        uses = await registry.uses_of_name(state.db, name)
        return {
            **registry.public(row, base_url(state, request)),
            "versions": [v.version for v in versions],
            "runs": [registry.public_use(u) for u in uses],
        }

    @get("/datasets/id/{dataset_id:str}", summary="A dataset by its id (registered or saved)")
    async def by_id(
        self, state: State, request: Request[User, Any, Any], dataset_id: str
    ) -> dict[str, Any]:
        with _answers():
            row = await registry.get_by_id(state.db, dataset_id)
        return registry.public(row, base_url(state, request))

    @get(
        "/datasets/id/{dataset_id:str}/files",
        summary="A dataset's files now: paths in its datastore, sizes, SHA-256",
    )
    async def files(self, state: State, dataset_id: str) -> dict[str, Any]:
        with _answers():
            row = await registry.get_by_id(state.db, dataset_id)
            chosen, found = await registry.files_of(state.settings, state.db, row)
        return {
            "id": row.id,
            "datastore": row.datastore,
            "base": chosen.base,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in found],
            "truncated": len(found) >= registry.MAX_LISTED,
        }

    @get("/runs/{run_id:str}/datasets", summary="The datasets a run read and wrote")
    async def of_run(self, state: State, run_id: str) -> dict[str, Any]:
        await runs.get(state.db, run_id)  # a 404 for a run that does not exist
        uses = await registry.uses_of_run(state.db, run_id)
        return {"runId": run_id, "datasets": [registry.public_use(u) for u in uses]}
