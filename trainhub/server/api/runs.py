"""``/api/v1`` run endpoints: submit, list, details, cancel, logs, artifacts. Thin handlers."""

from __future__ import annotations

import asyncio
import mimetypes
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post, put
from litestar.datastructures import State, UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import Body, Parameter, QueryParameter
from litestar.response import File, Stream

from trainhub.accounts import User
from trainhub.runs import interactive, queries, service
from trainhub.runs.artifacts import CHUNK, DRIVER_LOG, list_artifacts
from trainhub.settings import Settings
from trainhub.spec import SpecError
from trainhub.store import metrics, snapshots
from trainhub.store import nodes as node_store
from trainhub.store import runs as q
from trainhub.store.lifecycle import RunStatus

FOLLOW_POLL_SECONDS = 0.25
# Repeatable query parameters (lists), made once.
TAG_FILTER = Parameter(default=None, description="`key` or `key=value`; repeat it: all must match")
PROPERTY_FILTER = QueryParameter(
    name="property",
    default=None,
    description="`key` or `key=value` of a property; repeat it: all must match",
)
TAG_KEYS = Parameter(default=None, description="a tag to remove; repeat it")


def artifact_file(found: Path) -> File:
    """A run's file as a download: its own type, never a Content-Encoding guessed from '.gz'
    (clients would decompress it on the way and keep other bytes than the run wrote)."""
    kind, encoding = mimetypes.guess_type(found.name)
    return File(
        path=found,
        filename=found.name,
        content_disposition_type="attachment",
        chunk_size=CHUNK,
        media_type=kind if kind and encoding is None else "application/octet-stream",
    )


class RunsController(Controller):
    path = "/api/v1"
    tags = ["runs"]

    @post("/experiments/{experiment:str}/runs", status_code=201, summary="Submit a run")
    async def submit(
        self,
        request: Request[User, Any, Any],
        state: State,
        experiment: str,
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> dict[str, Any]:
        """Multipart: part ``estimator`` (the spec as JSON) and either part ``snapshot`` (the source
        folder as ``.tar.gz``) or part ``snapshot_id`` (the SHA-256 of one the server holds, see
        ``GET /api/v1/snapshots/{sha256}``); optional parts ``tags`` (a JSON object) and
        ``priority`` (an integer, higher runs first; default 0) and ``max_retries`` (how often a
        run lost with its node is queued again; default 0)."""
        part = await read_submission(data, state.settings, "estimator", "the spec")
        run = await service.submit(
            state.settings,
            state.db,
            state.launcher,
            experiment=experiment,
            estimator=part.spec,
            upload=part.upload,
            snapshot_id=part.snapshot_id,
            tags=part.tags,
            priority=part.priority,
            max_retries=part.max_retries,
            user=request.user.name,
        )
        return service.details(run, public_url=state.settings.public_url)

    @get(
        "/snapshots/{sha256:str}", summary="Whether the server holds a snapshot (no second upload)"
    )
    async def snapshot(self, state: State, sha256: str) -> dict[str, Any]:
        known = await state.db.read(lambda db: snapshots.get(db, sha256))
        if known is None or not state.settings.snapshot_path(sha256).exists():
            raise NotFoundException(f"This server has no snapshot '{sha256}'")
        return {
            "id": known["sha256"],
            "size": known["size"],
            "fileCount": known["file_count"],
            "expandedBytes": known["expanded_bytes"],
        }

    @get("/runs", summary="List runs, newest first")
    async def list_runs(
        self,
        state: State,
        experiment: str | None = None,
        status: str | None = Parameter(default=None, description="comma-separated statuses"),
        limit: int = Parameter(default=50, ge=1, le=500),
        cursor: str | None = None,
        user: str | None = Parameter(default=None, description="who submitted them"),
        tag: list[str] | None = TAG_FILTER,
        prop: Annotated[list[str] | None, PROPERTY_FILTER] = None,
        kind: str | None = Parameter(
            default=None, description="`script` or `interactive` (Azure ML: `azureml.scriptrun`)"
        ),
        include_children: bool = Parameter(
            default=False, description="child runs too (by default only runs with no parent)"
        ),
        parent: str | None = Parameter(default=None, description="the children of this run"),
    ) -> dict[str, Any]:
        tags = queries.parse_key_filters("tag", tag)
        properties = queries.parse_key_filters("property", prop)
        run_kind = queries.parse_kind(kind)
        statuses = None
        if status:
            try:
                statuses = [RunStatus(s.strip()) for s in status.split(",") if s.strip()]
            except ValueError:
                known = ", ".join(s.value for s in RunStatus)
                raise HTTPException(
                    status_code=400, detail=f"Unknown status in 'status': {status} (known: {known})"
                ) from None
        before = None
        if cursor:
            if not cursor.isdigit():
                raise HTTPException(
                    status_code=400, detail="'cursor' is not a cursor this server gave out"
                )
            before = int(cursor)
        rows = await state.db.read(
            lambda db: q.list_runs(
                db,
                experiment=experiment,
                statuses=statuses,
                before_seq=before,
                limit=limit + 1,
                user=user,
                tags=tags,
                properties=properties,
                kind=run_kind,
                parent=parent,
                top_level=not include_children,
            )
        )
        page = rows[:limit]
        next_cursor = str(page[-1].seq) if len(rows) > limit else None
        return {
            "runs": [service.details(r, public_url=state.settings.public_url) for r in page],
            "nextCursor": next_cursor,
        }

    @get("/runs/{run_id:str}", summary="A run's details (Azure ML get_details keys)")
    async def get_run(self, state: State, run_id: str) -> dict[str, Any]:
        run = await service.get(state.db, run_id)
        events = await state.db.read(lambda db: q.run_events(db, run_id))
        out = service.details(run, events, public_url=state.settings.public_url)
        out["logFiles"] = await asyncio.to_thread(
            queries.log_files, state.settings.run_dir(run_id), run_id
        )
        held = await state.db.read(lambda db: node_store.allocation_of(db, run_id))
        out["properties"]["allocation"] = [{"node": r["node"], "gpus": r["gpus"]} for r in held]
        if run.status is RunStatus.QUEUED:
            out["properties"]["queuePosition"] = await state.db.read(
                lambda db: q.queue_position(db, run)
            )
        return out

    @post("/runs/{run_id:str}/cancel", status_code=200, summary="Cancel a run")
    async def cancel(
        self, request: Request[User, Any, Any], state: State, run_id: str
    ) -> dict[str, Any]:
        run = await service.cancel(state.db, state.launcher, run_id, request.user)
        return service.details(run, public_url=state.settings.public_url)

    @get(
        "/runs/{run_id:str}/logs", summary="The driver log; follow=true streams until the run ends"
    )
    async def logs(self, state: State, run_id: str, follow: bool = False) -> Stream:
        await service.get(state.db, run_id)
        path = state.settings.run_dir(run_id) / DRIVER_LOG
        return Stream(_tail(state, run_id, path, follow), media_type="text/plain; charset=utf-8")

    @get(
        "/runs/{run_id:str}/metrics",
        summary="Metrics logged by the script (Azure ML get_metrics shape)",
    )
    async def metrics(self, state: State, run_id: str, name: str | None = None) -> dict[str, Any]:
        await service.get(state.db, run_id)
        rows = await state.db.read(lambda db: metrics.series(db, run_id, name))
        return {
            "runId": run_id,
            "metrics": metrics.summarize(rows),
            "series": _series(rows),
        }

    @post("/runs/{run_id:str}/tags", status_code=200, summary="Add or change tags of a run")
    async def set_tags(
        self, request: Request[User, Any, Any], state: State, run_id: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        merged = await service.set_tags(state.db, run_id, data.get("tags"), request.user)
        return {"runId": run_id, "tags": merged}

    # Run queries and details: properties, tags removed, display name and description, snapshot.
    @post(
        "/runs/{run_id:str}/properties",
        status_code=200,
        summary="Add properties to a run (set once: a key keeps its first value)",
    )
    async def add_properties(
        self, request: Request[User, Any, Any], state: State, run_id: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        merged = await queries.add_properties(
            state.db, run_id, data.get("properties"), request.user
        )
        return {"runId": run_id, "properties": merged}

    @delete("/runs/{run_id:str}/tags", status_code=200, summary="Remove tags of a run")
    async def remove_tags(
        self,
        request: Request[User, Any, Any],
        state: State,
        run_id: str,
        key: list[str] | None = TAG_KEYS,
    ) -> dict[str, Any]:
        left = await queries.remove_tags(state.db, run_id, key, request.user)
        return {"runId": run_id, "tags": left}

    @patch("/runs/{run_id:str}", summary="Change a run's displayName and description")
    async def describe(
        self, request: Request[User, Any, Any], state: State, run_id: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        run = await queries.describe(state.db, run_id, data, request.user)
        return service.details(run, public_url=state.settings.public_url)

    @get(
        "/snapshots/{sha256:str}/content",
        summary="A snapshot's files, as the .tar.gz it was uploaded as",
    )
    async def snapshot_content(self, state: State, sha256: str) -> File:
        path = state.settings.snapshot_path(sha256)
        known = await state.db.read(lambda db: snapshots.get(db, sha256))
        if known is None or not path.is_file():
            raise NotFoundException(f"This server has no snapshot '{sha256}'")
        return File(
            path=path,
            filename=f"{sha256}.tar.gz",
            media_type="application/gzip",  # named, so no "Content-Encoding: gzip" is guessed
            content_disposition_type="attachment",
            chunk_size=CHUNK,
        )

    @get("/runs/{run_id:str}/files", summary="Every artifact of a run with its size")
    async def files(self, state: State, run_id: str) -> dict[str, Any]:
        run = await service.get(state.db, run_id)
        found = await asyncio.to_thread(list_artifacts, state.settings.run_dir(run_id))
        return {
            "runId": run_id,
            "files": [{"path": p, "size": s} for p, s in found],
            # Set once retention removed the outputs (the logs stay): see TRAINHUB_RETENTION_DAYS.
            "outputsRemovedTimeUtc": service.iso(run.outputs_removed_at),
        }

    @get("/runs/{run_id:str}/files/{path:path}", summary="Download one artifact")
    async def download(
        self, request: Request[Any, Any, Any], state: State, run_id: str, path: str
    ) -> File:
        return artifact_file(await service.artifact(state.settings, state.db, run_id, path))

    # Logging to an open run from a client (interactive runs: trainhub.runs.interactive).
    @post("/runs/{run_id:str}/metrics", status_code=200, summary="Log metrics to an open run")
    async def log_metrics(
        self, request: Request[User, Any, Any], state: State, run_id: str, data: Any
    ) -> dict[str, Any]:
        """``{"metrics": [{"kind": "scalar", "name": "loss", "value": 0.3, "step": 1}, ...]}``;
        kinds ``scalar``, ``list``, ``row``, ``table``, ``image``, as ``Run.log*`` make them."""
        count = await interactive.log_metrics(state.db, run_id, data, request.user)
        return {"runId": run_id, "count": count}

    @put(
        "/runs/{run_id:str}/files/{path:path}",
        status_code=201,
        summary="Keep a file in an open run's history (the request body is the file)",
    )
    async def upload_file(
        self, request: Request[User, Any, Any], state: State, run_id: str, path: str
    ) -> dict[str, Any]:
        stored, size = await interactive.upload_file(
            state.settings, state.db, run_id, path, request.stream(), request.user
        )
        return {"runId": run_id, "path": stored, "size": size}


@dataclass(frozen=True)
class Submission:
    """The parts of a run's or a sweep's multipart submission, the snapshot spooled to a file."""

    spec: bytes | str
    upload: Path | None
    snapshot_id: str | None
    tags: bytes | str | None
    priority: str | None
    max_retries: str | None


async def read_submission(
    data: dict[str, Any], settings: Settings, spec_part: str, what: str
) -> Submission:
    """Read a submission's parts (``spec_part`` holds ``what`` as JSON) and spool part ``snapshot``
    (the source folder as ``.tar.gz``) to a new upload file, or take part ``snapshot_id``; every
    part is closed, and nothing is left behind when a part is wrong or the disk is full."""
    upload: Path | None = None
    try:
        spec = await _text_part(data, spec_part)
        tags = await _text_part(data, "tags")
        snapshot_id = await _text_part(data, "snapshot_id")
        priority = await _text_part(data, "priority")
        max_retries = await _text_part(data, "max_retries")
        snapshot = data.get("snapshot")
        if spec is None:
            raise SpecError(
                spec_part, f"The multipart part '{spec_part}' ({what} as JSON) is missing"
            )
        if isinstance(snapshot, UploadFile):
            upload = service.new_upload_path(settings)
            try:
                await asyncio.to_thread(_spool, snapshot, upload)
            except BaseException:  # a full disk, say: no partial upload is left behind
                upload.unlink(missing_ok=True)
                raise
        elif snapshot_id is None:
            raise SpecError(
                "snapshot",
                "The multipart part 'snapshot' (the source folder as .tar.gz) is missing",
            )
    finally:
        for part in data.values():
            if isinstance(part, UploadFile):
                await part.close()
    return Submission(
        spec=spec,
        upload=upload,
        snapshot_id=None if upload else _as_str(snapshot_id),
        tags=tags,
        priority=_as_str(priority),
        max_retries=_as_str(max_retries),
    )


async def _text_part(data: dict[str, Any], name: str) -> bytes | str | None:
    part = data.get(name)
    if isinstance(part, UploadFile):
        content: bytes = await part.read()
        return content
    if isinstance(part, list):
        raise SpecError(name, f"The multipart part '{name}' was sent more than once")
    return part if isinstance(part, (str, bytes)) else None


def _as_str(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return (
        value.decode("utf-8", errors="replace").strip()
        if isinstance(value, bytes)
        else value.strip()
    )


def _spool(upload: UploadFile, dest: Path) -> None:
    upload.file.seek(0)
    with dest.open("wb") as out:
        shutil.copyfileobj(upload.file, out, CHUNK)


def _series(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["name"], []).append(
            {
                "kind": r["kind"],
                "step": r["step"],
                "value": r["value"],
                "timeUtc": service.iso(r["at"]),
            }
        )
    return out


async def _tail(state: State, run_id: str, path: Path, follow: bool) -> AsyncIterator[bytes]:
    position = 0
    while True:
        chunk = await asyncio.to_thread(_read_from, path, position)
        if chunk:
            position += len(chunk)
            yield chunk
            continue
        if not follow:
            return
        run = await state.db.read(lambda db: q.get_run(db, run_id))
        if run is None or run.status.is_terminal():
            rest = await asyncio.to_thread(_read_from, path, position)
            if rest:
                yield rest
            return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)


def _read_from(path: Path, position: int) -> bytes:
    try:
        with path.open("rb") as fh:
            fh.seek(position)
            return fh.read(CHUNK)
    except FileNotFoundError:
        return b""
