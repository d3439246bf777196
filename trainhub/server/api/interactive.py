"""``/api/v1`` endpoints of interactive runs and child runs: start, heartbeat, end, and a run's
children. Thin handlers over :mod:`trainhub.runs.interactive`; logging and uploading to an open run
are on the paths :class:`~trainhub.server.api.runs.RunsController` reads them from."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import IO, Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State, UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.params import Body, Parameter, QueryParameter

from trainhub.accounts import User
from trainhub.runs import interactive, service
from trainhub.runs.artifacts import CHUNK
from trainhub.spec import SpecError
from trainhub.store.lifecycle import RunStatus
from trainhub.store.runs import RunKind

# Repeatable query parameters (``?tag=a&tag=b=1``): every one must match.
TAG_FILTER = Parameter(default=None, description="`key` or `key=value`, repeatable")
PROPERTY_FILTER = QueryParameter(
    name="property", default=None, description="`key` or `key=value`, repeatable"
)


class InteractiveController(Controller):
    path = "/api/v1"
    tags = ["interactive runs"]

    @post(
        "/experiments/{experiment:str}/interactive-runs",
        status_code=201,
        summary="Start an interactive run (experiment.start_logging())",
    )
    async def start(
        self,
        request: Request[User, Any, Any],
        state: State,
        experiment: str,
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> dict[str, Any]:
        """Multipart, every part optional: ``display_name``, ``tags`` (a JSON object), and the
        snapshot to keep as ``snapshot`` (``.tar.gz``) or ``snapshot_id`` (one the server holds).
        The run is ``Running`` at once; its client keeps it open by calling (a heartbeat every
        ``heartbeatSeconds``)."""
        upload: Path | None = None
        try:
            parts = {k: await _text(data, k) for k in ("display_name", "tags", "snapshot_id")}
            snapshot = data.get("snapshot")
            if isinstance(snapshot, UploadFile):
                upload = service.new_upload_path(state.settings)
                await asyncio.to_thread(_spool, snapshot.file, upload)
        except BaseException:
            if upload is not None:
                upload.unlink(missing_ok=True)
            raise
        finally:
            for part in data.values():
                if isinstance(part, UploadFile):
                    await part.close()
        try:
            tags = json.loads(parts["tags"]) if parts["tags"] else None
        except ValueError:
            raise SpecError("tags", "tags must be a JSON object of strings") from None
        run = await interactive.start(
            state.settings,
            state.db,
            experiment=experiment,
            user=request.user.name,
            display_name=parts["display_name"],
            tags=tags,
            upload=upload,
            snapshot_id=None if upload else parts["snapshot_id"],
        )
        out = service.details(run, public_url=state.settings.public_url)
        out["heartbeatSeconds"] = interactive.heartbeat_seconds(state.settings)
        return out

    @post("/runs/{run_id:str}/children", status_code=201, summary="Start child runs of a run")
    async def add_children(
        self, request: Request[User, Any, Any], state: State, run_id: str, data: Any
    ) -> dict[str, Any]:
        """``{"children": [{"name": ..., "runId": ..., "tags": {...}}, ...]}``: interactive runs
        under the run, ``Running`` at once (one call: all of them or none)."""
        made = await interactive.add_children(state.db, run_id, data, request.user)
        return {
            "runs": [service.details(r, public_url=state.settings.public_url) for r in made],
            "heartbeatSeconds": interactive.heartbeat_seconds(state.settings),
        }

    @get("/runs/{run_id:str}/children", summary="A run's child runs, in the order they were made")
    async def children(
        self,
        state: State,
        run_id: str,
        recursive: bool = False,
        status: str | None = Parameter(default=None, description="comma-separated statuses"),
        kind: str | None = Parameter(default=None, description="`script` or `interactive`"),
        tag: list[str] | None = TAG_FILTER,
        props: Annotated[list[str] | None, PROPERTY_FILTER] = None,
        limit: int = Parameter(default=100, ge=1, le=500),
        cursor: str | None = None,
    ) -> dict[str, Any]:
        statuses = None
        if status:
            try:
                statuses = [RunStatus(s.strip()) for s in status.split(",") if s.strip()]
            except ValueError:
                known = ", ".join(s.value for s in RunStatus)
                raise SpecError(
                    "status", f"Unknown status in {status!r} (known: {known})"
                ) from None
        try:
            run_kind = RunKind(kind) if kind else None
        except ValueError:
            raise SpecError("kind", "kind is 'script' or 'interactive'") from None
        if cursor is not None and not cursor.isdigit():
            raise HTTPException(
                status_code=400, detail="'cursor' is not a cursor this server gave out"
            )
        rows = await interactive.children(
            state.db,
            run_id,
            recursive=recursive,
            statuses=statuses,
            kind=run_kind,
            tags=tag or [],
            properties=props or [],
            after_seq=int(cursor) if cursor else None,
            limit=limit + 1,
        )
        page = rows[:limit]
        return {
            "runs": [service.details(r, public_url=state.settings.public_url) for r in page],
            "nextCursor": str(page[-1].seq) if len(rows) > limit else None,
        }

    @post("/runs/{run_id:str}/heartbeat", status_code=200, summary="An open run's client is there")
    async def heartbeat(
        self, request: Request[User, Any, Any], state: State, run_id: str
    ) -> dict[str, Any]:
        run = await interactive.heartbeat(state.db, run_id, request.user)
        return {
            "runId": run_id,
            "status": run.status.value,
            "heartbeatSeconds": interactive.heartbeat_seconds(state.settings),
        }

    @post("/runs/{run_id:str}/complete", status_code=200, summary="End an interactive run")
    async def complete(
        self, request: Request[User, Any, Any], state: State, run_id: str
    ) -> dict[str, Any]:
        run = await interactive.end(state.db, run_id, request.user)
        return service.details(run, public_url=state.settings.public_url)

    @post("/runs/{run_id:str}/fail", status_code=200, summary="End an interactive run as Failed")
    async def fail(
        self,
        request: Request[User, Any, Any],
        state: State,
        run_id: str,
        data: Any = None,
    ) -> dict[str, Any]:
        """Optional body ``{"error": "what went wrong"}``."""
        error = data.get("error") if isinstance(data, dict) else None
        run = await interactive.end(
            state.db, run_id, request.user, error="" if error is None else error
        )
        return service.details(run, public_url=state.settings.public_url)


async def _text(data: dict[str, Any], name: str) -> str | None:
    part = data.get(name)
    if isinstance(part, list):
        raise SpecError(name, f"The multipart part '{name}' was sent more than once")
    if isinstance(part, UploadFile):
        part = await part.read()
    if isinstance(part, bytes):
        part = part.decode("utf-8", errors="replace")
    return part.strip() if isinstance(part, str) else None


def _spool(source: IO[bytes], dest: Path) -> None:
    source.seek(0)
    with dest.open("wb") as out:
        shutil.copyfileobj(source, out, CHUNK)
