"""Finished runs in a backup: their folders' rows taken from the previous backup, not walked again.

Most of a data folder is the folders of runs that ended long ago, and those do not change: once a
run has ended and its outputs are back the server measures its folder (``runs.stored_bytes``) and
writes nothing there again; only retention removes files afterwards, and it records
``runs.outputs_removed_at`` before the first one goes. So the runs that the backup's own copy of the
database shows ended and measured, with no retention in the last :data:`RETENTION_DOUBT` seconds,
are *settled*: their folders are final.

A backup stores the rows of the settled runs it walked as one *segment*: a JSON blob in the store,
named by its hash like any file. The manifest lists its segments, each with the state of its runs
(ended_at, outputs_removed_at, stored_bytes) in that backup's database copy. The next backup reuses
a segment by its name when each of its runs is still settled in the same state, and does not even
``lstat`` their folders. A segment with a run changed (retention, the run deleted) is read: the rows
of its other runs go into the new segments as they are, and only the changed runs are walked again.
A segment holds up to :data:`SEGMENT_RUNS` runs, so retention's trickle rewrites few of them. So a
backup with no change neither walks nor parses nor writes the rows of finished runs. Assumed: nobody
edits a finished run's folder by hand; ``--full`` walks every folder.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainhub.backup import Row, Store

RUNS = "runs"
#: Retention marks a run and then removes its files: a mark this recent may still be under way.
RETENTION_DOUBT = 600.0
SEGMENT_RUNS = 1000
_NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]*")

#: A run's state: [run id, ended_at, outputs_removed_at, stored_bytes].
Key = list[Any]


def settled(db_copy: Path, copied_at: float) -> dict[str, Key]:
    """The settled runs of the database copy ``db_copy`` (made at ``copied_at``), by id."""
    try:
        conn = sqlite3.connect(f"file:{db_copy}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "select id, ended_at, outputs_removed_at, stored_bytes from runs "
                "where ended_at is not null and stored_bytes is not null "
                "and (outputs_removed_at is null or outputs_removed_at < ?)",
                [copied_at - RETENTION_DOUBT],
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError:  # no runs table (not a server's database yet): none settled
        return {}
    return {r[0]: list(r) for r in rows if isinstance(r[0], str) and _NAME.fullmatch(r[0])}


@dataclass
class NewSegment:
    objects: int = 0
    bytes: int = 0


def run_of(path: str) -> str | None:
    """The run id of a path under ``runs/``, else None."""
    parts = path.split("/", 2)
    return parts[1] if len(parts) > 1 and parts[0] == RUNS else None


class Segments:
    """Which segments of the previous backup (``previous``: its manifest's entries, ``[blake3,
    files, bytes, keys]``) this one reuses, given the settled runs ``now``, and which runs'
    rows it carries over from the others; then the new segments. ``full``: none of either."""

    def __init__(self, store: Store, previous: list[Any], now: dict[str, Key], full: bool) -> None:
        self.store = store
        self.now = now
        self.kept: list[list[Any]] = []
        #: The runs not walked: those of the kept segments and the carried ones.
        self.reused: set[str] = set()
        #: Rows of the dropped segments: the carried runs' (dirs, files), and the other files'.
        self.carried: tuple[list[Row], list[Row]] = ([], [])
        self.shortcuts: list[Row] = []
        for entry in previous:
            try:
                keys = entry[3]
                same = [key[0] for key in keys if now.get(key[0]) == key]
            except (IndexError, KeyError, TypeError):
                continue  # not a segment entry: its runs are walked
            if not full and len(same) == len(keys):
                self.kept.append(entry)
                self.reused.update(same)
            else:
                self._drop(entry[0], set() if full else set(same))
        self.new: list[list[Any]] = []

    def _drop(self, sha: Any, carry: set[str]) -> None:
        """Read a dropped segment: the rows of its runs in ``carry`` are taken as they are, the
        other files' rows serve as shortcuts (an unchanged file is not read again)."""
        try:
            body = json.loads(self.store.read(sha))
            dirs, files = body["dirs"], body["files"]
        except Exception:  # noqa: BLE001 - damaged or missing: its runs are walked again
            return
        self.reused.update(carry)
        for rows, into in ((dirs, self.carried[0]), (files, self.carried[1])):
            for row in rows:
                if isinstance(row, list) and len(row) == 5 and isinstance(row[0], str):
                    if run_of(row[0]) in carry:
                        into.append(row)
                    elif rows is files:
                        self.shortcuts.append(row)

    def split(self, dirs: list[Row], files: list[Row]) -> tuple[list[Row], list[Row], NewSegment]:
        """Move the rows of the settled runs walked now out of ``dirs`` and ``files``, add the
        carried ones, and store them as new segments of up to SEGMENT_RUNS runs each; the rest
        stays in the manifest."""
        kept = {key[0] for entry in self.kept for key in entry[3]}
        ids = sorted(run_id for run_id in self.now if run_id not in kept)
        done = NewSegment()
        if not ids:
            return dirs, files, done
        chunk = {run_id: n // SEGMENT_RUNS for n, run_id in enumerate(ids)}
        parts: list[tuple[list[Row], list[Row]]] = [
            ([], []) for _ in range(0, len(ids), SEGMENT_RUNS)
        ]
        main: tuple[list[Row], list[Row]] = ([], [])
        for side, rows in enumerate((dirs + self.carried[0], files + self.carried[1])):
            for row in rows:
                n = chunk.get(run_of(row[0]) or "")
                (main if n is None else parts[n])[side].append(row)
        for n, (seg_dirs, seg_files) in enumerate(parts):
            body = json.dumps({"dirs": seg_dirs, "files": seg_files}, separators=(",", ":"))
            sha, size, new = self.store.add_bytes(body.encode())
            done.objects += new
            done.bytes += size if new else 0
            keys = [self.now[run_id] for run_id in ids[n * SEGMENT_RUNS : (n + 1) * SEGMENT_RUNS]]
            self.new.append([sha, len(seg_files), sum(r[3] for r in seg_files), keys])
        return main[0], main[1], done

    def entries(self) -> list[list[Any]]:
        return self.kept + self.new

    def files(self) -> int:
        return sum(int(e[1]) for e in self.entries())

    def bytes(self) -> int:
        return sum(int(e[2]) for e in self.entries())
