"""Run history on disk over the years: each run's folder measured once its history is final, and
retention (TRAINHUB_RETENTION_DAYS) removing the outputs of runs that ended long ago.

Retention keeps a run's logs (``logs/``), its metrics, its record and TensorBoard's event files
(made from the metrics); it removes every other file of the run's folder, records when in
``runs.outputs_removed_at`` and lets go of the run's snapshot (``trainhub gc`` then frees a snapshot
no run holds). A run tagged ``keep`` keeps everything, and only ended runs are ever touched: a
queued, running, re-attachable or still open interactive run has no end time.

The server applies it at start and then hourly (:class:`DiskKeeper`, owned by the lifespan), and
``trainhub gc`` on demand. A pass reads the partial index of ended runs whose outputs are still
there, older than the cutoff: the runs already through retention are not in it, so a pass costs the
same however many runs have piled up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainhub.runs.artifacts import SERVER_FOLDERS, tree_bytes
from trainhub.settings import Settings
from trainhub.store import Database
from trainhub.store import disk as disk_store

log = logging.getLogger("trainhub.retention")

SECONDS_PER_DAY = 86400
#: What retention leaves in a run's folder.
KEPT_FOLDERS = frozenset({"logs"}) | SERVER_FOLDERS
#: Runs measured or pruned per write (a pass loops until nothing is left).
BATCH = 200
#: How often the server measures newly ended runs, and applies retention.
MEASURE_EVERY = 60.0
RETENTION_EVERY = 3600.0


class OutputsRemoved(LookupError):
    """A file of a run whose outputs retention removed (answered 410 Gone)."""

    def __init__(self, run_id: str, at: float) -> None:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))
        super().__init__(
            f"The outputs of run {run_id} were removed by retention on {when} "
            "(TRAINHUB_RETENTION_DAYS); its logs and metrics are kept"
        )


def is_kept_path(relative: str) -> bool:
    """Whether a file of a run's folder stays through retention (its logs)."""
    return relative.lstrip("/").split("/")[0] in KEPT_FOLDERS


def removable(run_dir: Path) -> list[Path]:
    """The entries of a run's folder that retention removes."""
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if p.name not in KEPT_FOLDERS)


def _entries_bytes(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            total += tree_bytes(path)
        else:
            with contextlib.suppress(OSError):
                total += path.lstat().st_size
    return total


def _remove(paths: list[Path]) -> int:
    freed = _entries_bytes(paths)
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return freed


async def measure(settings: Settings, db: Database, run_id: str) -> int:
    """Record the size of a run's folder (once its outputs and logs are copied back)."""
    size = await asyncio.to_thread(tree_bytes, settings.run_dir(run_id))
    await db.write(lambda conn: disk_store.set_stored_bytes(conn, run_id, size))
    return size


async def measure_ended(settings: Settings, db: Database) -> int:
    """Measure every ended run not measured yet (interactive runs, runs that ended before they
    ran, runs that ended while the server was down): the index holds only those."""
    done = 0
    while ids := await db.read(lambda conn: disk_store.unmeasured(conn, BATCH)):
        for run_id in ids:
            await measure(settings, db, run_id)
        done += len(ids)
    return done


async def disk_use(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Disk use per experiment and per user for the admin page: a GROUP BY over the recorded
    sizes (:func:`trainhub.store.disk.usage`), never a walk of the disk."""

    def both(conn: Any) -> dict[str, list[dict[str, Any]]]:
        return {by: disk_store.usage(conn, by) for by in ("experiment", "user")}

    return await db.read(both)


@dataclass
class Retention:
    """What a retention pass removed (or would remove: ``dry_run``)."""

    days: float
    runs: list[str] = field(default_factory=list)
    bytes: int = 0


async def apply(
    settings: Settings, db: Database, *, dry_run: bool = False, now: float | None = None
) -> Retention:
    """One retention pass with TRAINHUB_RETENTION_DAYS (nothing when it is 0)."""
    days = settings.retention_days
    result = Retention(days)
    if days <= 0:
        return result
    cutoff = (time.time() if now is None else now) - days * SECONDS_PER_DAY
    if dry_run:
        for row in await db.read(lambda conn: disk_store.expired(conn, cutoff, -1)):
            paths = removable(settings.run_dir(row["id"]))
            result.bytes += await asyncio.to_thread(_entries_bytes, paths)
            result.runs.append(row["id"])
        return result
    while rows := await db.read(lambda conn: disk_store.expired(conn, cutoff, BATCH)):
        for row in rows:
            run_id = row["id"]
            at = time.time()
            mark = functools.partial(
                disk_store.mark_outputs_removed, run_id=run_id, cutoff=cutoff, at=at
            )
            if not await db.write(mark):  # tagged keep meanwhile
                continue
            run_dir = settings.run_dir(run_id)
            result.bytes += await asyncio.to_thread(_remove, removable(run_dir))
            result.runs.append(run_id)
            await measure(settings, db, run_id)
    if result.runs:
        log.info(
            "retention: removed the outputs of %d run(s) that ended over %g days ago (%d bytes)",
            len(result.runs),
            days,
            result.bytes,
        )
    return result


class DiskKeeper:
    """Owned by the lifespan: measures newly ended runs every minute and applies retention at
    start and then hourly. Each pass reads a partial index, so it stays cheap at any number of
    runs."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="trainhub-disk-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        last_retention = 0.0
        while True:
            try:
                await measure_ended(self.settings, self.db)
                if time.monotonic() - last_retention >= RETENTION_EVERY or not last_retention:
                    last_retention = time.monotonic()
                    await apply(self.settings, self.db)
            except Exception:  # noqa: BLE001 - the next pass tries again
                log.exception("the disk pass (measuring runs, retention) failed")
            await asyncio.sleep(MEASURE_EVERY)
