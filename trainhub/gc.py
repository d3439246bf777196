"""``trainhub gc``: free the space nobody needs any more, in one go.

Three things, each safe while runs go on:

1. retention (:mod:`trainhub.runs.retention`): the outputs of runs that ended more than
   TRAINHUB_RETENTION_DAYS ago, unless tagged ``keep``;
2. snapshots no run holds (a run holds its snapshot until retention removes its outputs, so every
   queued, running or re-attachable run's snapshot stays), snapshot files without a record and
   uploads left half-way by a dropped connection, all older than :data:`GRACE` (a submission
   stores its snapshot before it inserts its run: the grace, and the record checked again in the
   write that forgets it, keep that window safe);
3. environment images no run used for ``image_days`` days, on every node
   (:func:`trainhub.nodes.images.prune`, as ``trainhub images prune``).

``dry_run`` frees nothing and reports what would be freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainhub.runs import retention
from trainhub.settings import Settings
from trainhub.store import Database
from trainhub.store import disk as disk_store

if TYPE_CHECKING:
    from trainhub.nodes.pool import NodePool

#: Snapshots and uploads younger than this are never collected (see the module's docstring).
GRACE = 3600.0


@dataclass
class Freed:
    """What one kind of thing gc removed: how many and their bytes."""

    count: int = 0
    bytes: int = 0
    names: list[str] = field(default_factory=list)

    def add(self, name: str, size: int) -> None:
        self.count += 1
        self.bytes += size
        self.names.append(name)


@dataclass
class Report:
    dry_run: bool
    retention_days: float
    run_outputs: Freed
    snapshots: Freed
    stray_files: Freed
    images: Freed | None  # None when the images were not looked at (no server: ``--data``)
    unreachable_nodes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        parts = [self.run_outputs, self.snapshots, self.stray_files, self.images]
        return sum(p.bytes for p in parts if p is not None)

    def to_json(self) -> dict[str, Any]:
        def part(p: Freed | None) -> dict[str, Any] | None:
            return None if p is None else {"count": p.count, "bytes": p.bytes, "names": p.names}

        return {
            "dryRun": self.dry_run,
            "retentionDays": self.retention_days,
            "runOutputs": part(self.run_outputs),
            "snapshots": part(self.snapshots),
            "strayFiles": part(self.stray_files),
            "images": part(self.images),
            "unreachableNodes": self.unreachable_nodes,
            "totalBytes": self.total_bytes,
        }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


async def collect_snapshots(
    settings: Settings, db: Database, *, dry_run: bool, now: float
) -> Freed:
    """Snapshots no run holds, stored more than :data:`GRACE` ago."""
    before = now - GRACE
    freed = Freed()
    for row in await db.read(lambda conn: disk_store.unheld_snapshots(conn, before)):
        sha256 = row["sha256"]
        path = settings.snapshot_path(sha256)
        size = _size(path)
        if not dry_run:
            forget = functools.partial(disk_store.forget_snapshot, sha256=sha256, before=before)
            if not await db.write(forget):  # a run took it meanwhile
                continue
            path.unlink(missing_ok=True)
        freed.add(sha256, size)
    return freed


def _stray(settings: Settings, known: set[str], before: float) -> list[Path]:
    """Snapshot files without a record and abandoned uploads, last written before ``before``."""
    found = []
    if settings.snapshots_dir.is_dir():
        for path in settings.snapshots_dir.iterdir():
            sha256 = path.name.removesuffix(".tar.gz")
            if path.is_file() and sha256 not in known and path.stat().st_mtime < before:
                found.append(path)
    if settings.uploads_dir.is_dir():
        for path in settings.uploads_dir.iterdir():
            if path.is_file() and path.stat().st_mtime < before:
                found.append(path)
    return sorted(found)


async def collect_stray_files(
    settings: Settings, db: Database, *, dry_run: bool, now: float
) -> Freed:
    known = await db.read(disk_store.known_snapshots)
    freed = Freed()
    for path in await asyncio.to_thread(_stray, settings, known, now - GRACE):
        size = _size(path)
        if not dry_run:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        freed.add(path.relative_to(settings.data).as_posix(), size)
    return freed


async def collect(
    settings: Settings,
    db: Database,
    pool: NodePool | None,
    *,
    dry_run: bool = False,
    image_days: float = 30.0,
) -> Report:
    """Everything ``trainhub gc`` does; ``pool`` None leaves the images alone."""
    now = time.time()
    applied = await retention.apply(settings, db, dry_run=dry_run, now=now)
    outputs = Freed(len(applied.runs), applied.bytes, applied.runs)
    report = Report(
        dry_run=dry_run,
        retention_days=settings.retention_days,
        run_outputs=outputs,
        snapshots=await collect_snapshots(settings, db, dry_run=dry_run, now=now),
        stray_files=await collect_stray_files(settings, db, dry_run=dry_run, now=now),
        images=None,
    )
    if pool is not None:
        from trainhub.nodes import images  # the engines' client: not needed by ``--data``

        pruned = await images.prune(pool, image_days, now=now, dry_run=dry_run)
        report.images = Freed(len(pruned.removed), pruned.bytes, pruned.removed)
        report.unreachable_nodes = pruned.unreachable
    return report
