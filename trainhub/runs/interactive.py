"""Interactive runs (``experiment.start_logging()``) and child runs made from a client: runs with no
script and no container that the client logs to and ends itself. The launcher and the scheduler never
see them; the watchdog here ends those whose client stopped calling. No HTTP in here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from trainhub.accounts import User, require_run_owner
from trainhub.runs.artifacts import (
    SERVER_FOLDERS,
    SERVER_WRITTEN,
    check_snapshot,
    store_snapshot,
)
from trainhub.runs.service import RunConflict, check_room, get, new_upload_path
from trainhub.settings import Settings
from trainhub.spec import SpecError, check_experiment_name, check_tags
from trainhub.store import Database, interactive, lifecycle, metrics, snapshots
from trainhub.store import runs as q
from trainhub.store.lifecycle import EndReason, RunStatus
from trainhub.store.runs import RunKind

log = logging.getLogger("trainhub.interactive")
TARGET = "local"  # where an interactive run "runs": nowhere the scheduler places anything
MAX_NAME_CHARS = 255
MAX_RECORDS = 1000  # metric records in one call
MAX_VALUE_BYTES = 256 * 1024  # one metric's value, as JSON
MAX_CHILDREN = 1000  # children made in one call
MAX_ERROR_CHARS = 4000
MAX_PATH_CHARS = 1024
_SCALARS = (int, float, str, bool, type(None))


def heartbeat_seconds(settings: Settings) -> float:
    """How often an open run's client says it is still there: well within the timeout."""
    return min(60.0, max(0.5, settings.interactive_timeout_minutes * 60 / 3))


# Starting runs -------------------------------------------------------------------------------------
async def start(
    settings: Settings,
    db: Database,
    *,
    experiment: str,
    user: str,
    display_name: str | None = None,
    tags: Any = None,
    upload: Path | None = None,
    snapshot_id: str | None = None,
) -> q.RunRow:
    """A new interactive run, ``Running`` at once; its snapshot (an upload or one the server
    holds) kept when given."""
    try:
        check_experiment_name(experiment)
        name = _name("display_name", display_name)
        run_tags = check_tags(tags if tags is not None else {})
        sha256 = await _snapshot(settings, db, upload, snapshot_id)
    finally:
        if upload is not None:
            upload.unlink(missing_ok=True)
    return await db.write(
        lambda conn: interactive.insert(
            conn,
            experiment=experiment,
            user=user,
            target=TARGET,
            display_name=name,
            tags=run_tags,
            snapshot=sha256,
        )
    )


async def _snapshot(
    settings: Settings, db: Database, upload: Path | None, snapshot_id: str | None
) -> str | None:
    if upload is not None:
        check_room(settings)
        info = await asyncio.to_thread(
            check_snapshot,
            upload,
            max_files=settings.max_snapshot_files,
            max_expanded_bytes=settings.max_snapshot_expanded_bytes,
        )
        await asyncio.to_thread(store_snapshot, upload, info, settings.snapshots_dir)
        await db.write(
            lambda conn: snapshots.record(
                conn, info.sha256, info.compressed_bytes, sorted(info.files), info.expanded_bytes
            )
        )
        return info.sha256
    if snapshot_id is None:
        return None
    known = await db.read(lambda conn: snapshots.get(conn, snapshot_id))
    if known is None or not settings.snapshot_path(known["sha256"]).exists():
        raise SpecError("snapshot_id", f"This server has no snapshot '{snapshot_id}': upload it")
    return str(known["sha256"])


async def add_children(db: Database, parent_id: str, body: Any, user: User) -> list[q.RunRow]:
    """``run.child_run()`` / ``run.create_children()``: ``{"children": [{"name", "runId",
    "tags"}, ...]}``, all made in one write or none. A parent that has ended takes no children."""
    parent = await get(db, parent_id)
    require_run_owner(user, parent_id, parent.user, "add child runs to")
    wanted = body.get("children") if isinstance(body, dict) else None
    if not isinstance(wanted, list) or not wanted:
        raise SpecError("children", 'Send {"children": [{"name": ..., "runId": ...}, ...]}')
    if len(wanted) > MAX_CHILDREN:
        raise SpecError(
            "children", f"At most {MAX_CHILDREN} child runs at once (asked for {len(wanted)})"
        )
    specs = [_child_spec(index, item) for index, item in enumerate(wanted)]
    ids = [s["run_id"] for s in specs if s["run_id"]]
    if len(set(ids)) != len(ids):
        raise SpecError("children", "The same runId is asked for twice")
    _check_open(parent, "take new child runs")

    def make(conn: Any) -> list[q.RunRow]:
        fresh = q.get_run(conn, parent_id)
        assert fresh is not None
        _check_open(fresh, "take new child runs")  # it may have ended meanwhile
        for run_id in ids:
            if interactive.exists(conn, run_id):
                raise RunConflict(f"A run with the id '{run_id}' exists already")
        return [
            interactive.insert(
                conn,
                experiment=fresh.experiment,
                user=user.name,
                target=fresh.target,
                parent_id=parent_id,
                **spec,
            )
            for spec in specs
        ]

    made: list[q.RunRow] = await db.write(make)
    return made


def _child_spec(index: int, item: Any) -> dict[str, Any]:
    where = f"children[{index}]"
    if not isinstance(item, dict):
        raise SpecError(where, f"{where} must be an object (name, runId, tags)")
    unknown = set(item) - {"name", "runId", "tags"}
    if unknown:
        raise SpecError(where, f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    run_id = item.get("runId")
    if run_id is not None and (
        not isinstance(run_id, str) or not interactive.RUN_ID.fullmatch(run_id)
    ):
        raise SpecError(
            f"{where}.runId",
            f"{where}.runId: 1 to 255 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit",
        )
    try:
        tags = check_tags(item.get("tags") or {})
    except SpecError as exc:
        raise SpecError(f"{where}.tags", f"{where}.{exc.message}") from None
    return {
        "run_id": run_id,
        "display_name": _name(f"{where}.name", item.get("name")),
        "tags": tags,
    }


def _name(field: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME_CHARS:
        raise SpecError(field, f"{field} is a text of at most {MAX_NAME_CHARS} characters")
    return value


# Logging to a run ----------------------------------------------------------------------------------
def _check_open(run: q.RunRow, what: str) -> None:
    if run.status.is_terminal():
        raise RunConflict(f"Run {run.id} has ended ({run.status.value}): it cannot {what} any more")


async def _loggable(db: Database, run_id: str, user: User, what: str) -> q.RunRow:
    run = await get(db, run_id)
    require_run_owner(user, run_id, run.user, "log to")
    _check_open(run, what)
    return run


async def log_metrics(db: Database, run_id: str, body: Any, user: User) -> int:
    """``run.log*`` from a client: ``{"metrics": [{"kind", "name", "value", "description",
    "step"}, ...]}``, stored as a script's records are. Returns how many."""
    await _loggable(db, run_id, user, "take metrics")
    records = body.get("metrics") if isinstance(body, dict) else None
    if not isinstance(records, list):
        raise SpecError("metrics", 'Send {"metrics": [{"kind": "scalar", "name": ..., ...}]}')
    if len(records) > MAX_RECORDS:
        raise SpecError(
            "metrics", f"At most {MAX_RECORDS} metric records at once (got {len(records)})"
        )
    checked = [check_record(f"metrics[{i}]", r) for i, r in enumerate(records)]
    now = time.time()

    def store(conn: Any) -> int:
        fresh = q.get_run(conn, run_id)
        assert fresh is not None
        _check_open(fresh, "take metrics")
        interactive.touch(conn, [run_id], now)
        return metrics.append(conn, run_id, [{**r, "at": now} for r in checked])

    count: int = await db.write(store)
    return count


def check_record(where: str, record: Any) -> dict[str, Any]:
    """One metric record as ``Run.log*`` makes it, or a 422 naming the field and the limit."""
    if not isinstance(record, dict):
        raise SpecError(where, f"{where} must be an object")
    unknown = set(record) - {"kind", "name", "value", "description", "step"}
    if unknown:
        raise SpecError(where, f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    kind, name = record.get("kind", "scalar"), record.get("name")
    if kind not in metrics.KINDS:
        raise SpecError(f"{where}.kind", f"{where}.kind is one of {', '.join(metrics.KINDS)}")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
        raise SpecError(f"{where}.name", f"{where}.name: 1 to {MAX_NAME_CHARS} characters")
    step = record.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise SpecError(f"{where}.step", f"{where}.step is a whole number >= 0")
    description = record.get("description") or ""
    if not isinstance(description, str) or len(description) > 1000:
        raise SpecError(f"{where}.description", f"{where}.description: at most 1000 characters")
    value = record.get("value")
    if not _shaped(kind, value):
        raise SpecError(f"{where}.value", f"{where}.value is not {_SHAPES[kind]}")
    size = len(json.dumps(value))
    if size > MAX_VALUE_BYTES:
        raise SpecError(
            f"{where}.value",
            f"{where}.value is {size} bytes as JSON, over the limit of {MAX_VALUE_BYTES}",
        )
    return {"kind": kind, "name": name, "value": value, "description": description, "step": step}


_SHAPES = {
    "scalar": "a number, a string, true/false or null",
    "list": "a list of numbers or strings",
    "row": "an object of column -> number or string",
    "table": "an object of column -> list of numbers or strings",
    "image": "the path of the run's image file",
}


def _scalar(value: Any) -> bool:
    return isinstance(value, _SCALARS) and not (isinstance(value, float) and math.isnan(value))


def _shaped(kind: str, value: Any) -> bool:
    if kind == "scalar":
        return isinstance(value, _SCALARS)
    if kind == "list":
        return isinstance(value, list) and all(_scalar(v) for v in value)
    if kind == "row":
        return isinstance(value, dict) and all(_scalar(v) for v in value.values())
    if kind == "table":
        return isinstance(value, dict) and all(
            isinstance(c, list) and all(_scalar(v) for v in c) for c in value.values()
        )
    return isinstance(value, str) and clean_path(value) is not None


def clean_path(name: str) -> str | None:
    """A file name inside a run's history that a client may write (``outputs/model.pkl``): relative,
    no ``..``, not the server's own files or folders; None otherwise."""
    name = name.replace("\\", "/").strip("/")
    parts = name.split("/")
    if (
        not name
        or len(name) > MAX_PATH_CHARS
        or "\x00" in name
        or any(p in ("", ".", "..") for p in parts)
        or parts[0] in SERVER_FOLDERS
        or name in SERVER_WRITTEN
        or name.endswith(".part")
    ):
        return None
    return name


async def upload_file(
    settings: Settings,
    db: Database,
    run_id: str,
    name: str,
    chunks: AsyncIterator[bytes],
    user: User,
) -> tuple[str, int]:
    """``run.upload_file(name, path)``: the bytes of ``chunks`` kept as ``name`` in the run's
    history, replacing a file of that name. Returns the stored name and its size."""
    await _loggable(db, run_id, user, "take files")
    relative = clean_path(name)
    if relative is None:
        raise SpecError(
            "name",
            f"'{name.lstrip('/')[:200]}' cannot be a file of the run: a relative path without '..', not "
            f"under {', '.join(sorted(SERVER_FOLDERS))}/ and at most {MAX_PATH_CHARS} characters",
        )
    upload = new_upload_path(settings)
    try:
        with upload.open("wb") as out:
            async for chunk in chunks:
                await asyncio.to_thread(out.write, chunk)
        size = upload.stat().st_size
        await asyncio.to_thread(_place, settings.run_dir(run_id), relative, upload)
    finally:
        upload.unlink(missing_ok=True)
    await db.write(lambda conn: interactive.touch(conn, [run_id], time.time()))
    return relative, size


def _place(run_dir: Path, relative: str, upload: Path) -> None:
    root = run_dir.resolve()
    dest = (root / relative).resolve()
    if not dest.is_relative_to(root) or dest == root:  # a link in the way
        raise SpecError("name", f"'{relative}' would be outside the run's folder")
    if dest.is_dir():
        raise SpecError("name", f"'{relative}' is a folder of the run")
    dest.parent.mkdir(parents=True, exist_ok=True)
    temporary = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
    shutil.copyfile(upload, temporary)
    os.replace(temporary, dest)


async def heartbeat(db: Database, run_id: str, user: User) -> q.RunRow:
    """The client of an open run (and of its open children) is still there."""
    run = await _loggable(db, run_id, user, "take heartbeats")
    await db.write(lambda conn: interactive.touch_tree(conn, run_id, time.time()))
    return run


# Ending runs -------------------------------------------------------------------------------------------
async def end(db: Database, run_id: str, user: User, error: str | None = None) -> q.RunRow:
    """``run.complete()`` (no ``error``) or ``run.fail(error_details)`` of an interactive run; its
    open children end with it."""
    run = await get(db, run_id)
    require_run_owner(user, run_id, run.user, "end")
    if run.kind != RunKind.INTERACTIVE:
        raise RunConflict(
            f"Run {run_id} is a submitted script's run: it ends when its script does (cancel it "
            "to stop it)"
        )
    if error is not None and (not isinstance(error, str) or len(error) > MAX_ERROR_CHARS):
        raise SpecError("error", f"error is a text of at most {MAX_ERROR_CHARS} characters")
    if run.status is (RunStatus.FAILED if error is not None else RunStatus.COMPLETED):
        return run  # said twice: done already
    _check_open(run, "be ended again")
    if error is None:
        done = await db.write(lambda conn: lifecycle.complete_interactive(conn, run_id))
    else:
        message = error or "Failed by its client"
        done = await db.write(lambda conn: lifecycle.fail_interactive(conn, run_id, message))
    fresh = await get(db, run_id)
    if not done:
        _check_open(fresh, "be ended again")
    return fresh


async def children(
    db: Database,
    run_id: str,
    *,
    recursive: bool,
    statuses: list[RunStatus] | None,
    kind: RunKind | None,
    tags: list[str],
    properties: list[str],
    after_seq: int | None,
    limit: int,
) -> list[q.RunRow]:
    await get(db, run_id)
    return await db.read(
        lambda conn: interactive.children(
            conn,
            run_id,
            recursive=recursive,
            statuses=statuses,
            kind=kind,
            tags=tags,
            properties=properties,
            after_seq=after_seq,
            limit=limit,
        )
    )


CHILD_ROWS = 200  # child runs shown on a run's page; the API lists them all


async def tree_of(db: Database, run: q.RunRow) -> tuple[q.RunRow | None, list[q.RunRow], bool]:
    """What a run's page shows of its tree: its parent, its first children, and whether it has
    more."""

    def read(conn: Any) -> tuple[q.RunRow | None, list[q.RunRow], bool]:
        parent = q.get_run(conn, run.parent_id) if run.parent_id else None
        found = interactive.children(conn, run.id, limit=CHILD_ROWS + 1)
        return parent, found[:CHILD_ROWS], len(found) > CHILD_ROWS

    return await db.read(read)


# The watchdog ----------------------------------------------------------------------------------------
class Watchdog:
    """Ends ``Failed`` (reason ``abandoned``) the interactive runs whose client made no call for
    TRAINHUB_INTERACTIVE_TIMEOUT_MINUTES; their open children end with them. Owned by the app's
    lifespan."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._task: asyncio.Task[None] | None = None

    @property
    def timeout(self) -> float:
        return self.settings.interactive_timeout_minutes * 60

    async def start(self) -> None:
        refreshed = await self.db.write(lambda conn: interactive.refresh_watched(conn, time.time()))
        if refreshed:
            log.info("%d interactive run(s) open: their clients get a full timeout", refreshed)
        self._task = asyncio.create_task(self._loop(), name="trainhub-interactive-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        interval = min(60.0, max(0.5, self.timeout / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                ended = await self.check()
            except Exception:  # noqa: BLE001 - the next pass tries again
                log.exception("the interactive runs' watchdog pass failed")
                continue
            for run_id in ended:
                log.warning("interactive run %s: abandoned by its client", run_id)

    async def check(self) -> list[str]:
        """One pass: the abandoned runs are ended (checked and ended in one write)."""
        minutes = f"{self.settings.interactive_timeout_minutes:g}"
        message = (
            f"Its client made no call for {minutes} minutes (TRAINHUB_INTERACTIVE_TIMEOUT_MINUTES):"
            " the run was abandoned"
        )
        before = time.time() - self.timeout

        def sweep(conn: Any) -> list[str]:
            found = interactive.abandoned(conn, before)
            return [
                run_id
                for run_id in found
                if lifecycle.fail(conn, run_id, EndReason.ABANDONED, message)
            ]

        ended: list[str] = await self.db.write(sweep)
        return ended
