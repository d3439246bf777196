"""Finished runs in a backup: their folders' rows taken from the previous backup, not walked again.

Most of a data folder is the folders of runs that ended long ago, and those do not change: once a
run has ended and its outputs are back the server measures its folder (``runs.stored_bytes``) and
writes nothing there again; only retention removes files afterwards, and it records
``runs.outputs_removed_at`` before the first one goes. So the runs that the backup's own copy of the
database shows ended and measured, with no retention in the last :data:`RETENTION_DOUBT` seconds,
and whose ancestors (a child run gets files its parent's script uploads) have all ended and been
measured too, are *settled*: their folders are final.

A backup stores the rows of the settled runs it walked as one *segment*: a JSON blob in the store,
named by its hash like any file. The manifest lists its segments, each with the state of its runs
(ended_at, outputs_removed_at, stored_bytes) in that backup's database copy, as one string of
``id:state`` tokens (one JSON string parses and writes far faster than 10,000 small lists). The next backup reuses
a segment by its name when each of its runs is still settled in the same state, and does not even
``lstat`` their folders. A segment with a run changed (retention, the run deleted) is read: the rows
of its other runs go into the new segments as they are, and only the changed runs are walked again.
A segment holds up to :data:`SEGMENT_RUNS` runs, so retention's trickle rewrites few of them. So a
backup with no change neither walks nor parses nor writes the rows of finished runs. Assumed: nobody
edits a finished run's folder by hand; ``--full`` walks every folder.
"""

from __future__ import annotations

import json
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
#: A settled run's id and state as SQLite writes them: ``id:ended_at,outputs_removed_at,bytes``
#: (ids are names, so the test for ``:`` and space never fails; SQLite writes a number's text the
#: same way each time).
#: A child run's folder also gets the files its ancestors' scripts upload for it, until each of
#: them has ended and been measured: the runs still open and all their descendants are not settled.
_SETTLED = (
    "with recursive open_runs(id) as ("
    " select id from runs where ended_at is null or stored_bytes is null"
    " union select r.id from runs r join open_runs o on r.parent_id = o.id) "
    "select id, id || ':' || ended_at || ',' || ifnull(outputs_removed_at, '') || ',' || "
    "stored_bytes from runs where ended_at is not null and stored_bytes is not null "
    "and (outputs_removed_at is null or outputs_removed_at < ?) "
    "and instr(id, ' ') = 0 and instr(id, ':') = 0 and id not in (select id from open_runs)"
)


def settled(db_copy: Path, copied_at: float) -> dict[str, str]:
    """The settled runs of the database copy ``db_copy`` (made at ``copied_at``): id -> token."""
    try:
        conn = sqlite3.connect(f"file:{db_copy}?mode=ro", uri=True)
        try:
            rows = conn.execute(_SETTLED, [copied_at - RETENTION_DOUBT]).fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError:  # no runs table (not a server's database yet): none settled
        return {}
    return dict(rows)


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
    files, bytes, tokens]``) this one reuses, given the settled runs ``now``, and which runs'
    rows it carries over from the others; then the new segments. ``full``: none of either."""

    def __init__(self, store: Store, previous: list[Any], now: dict[str, str], full: bool) -> None:
        self.store = store
        self.now = now
        current = set(now.values())
        self.kept: list[list[Any]] = []
        self.kept_ids: set[str] = set()
        #: The runs not walked: those of the kept segments and the carried ones.
        self.reused: set[str] = set()
        #: Rows of the dropped segments: the carried runs' (dirs, files), and the other files'.
        self.carried: tuple[list[Row], list[Row]] = ([], [])
        self.shortcuts: list[Row] = []
        for entry in previous:
            try:
                tokens = entry[3].split(" ")
            except (IndexError, AttributeError):
                continue  # not a segment entry: its runs are walked
            same = [t.partition(":")[0] for t in tokens if t in current]
            if not full and len(same) == len(tokens):
                self.kept.append(entry)
                self.kept_ids.update(same)
            else:
                self._drop(entry[0], set() if full else set(same))
        self.reused.update(self.kept_ids)
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
        ids = sorted(run_id for run_id in self.now if run_id not in self.kept_ids)
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
            tokens = " ".join(self.now[i] for i in ids[n * SEGMENT_RUNS : (n + 1) * SEGMENT_RUNS])
            self.new.append([sha, len(seg_files), sum(r[3] for r in seg_files), tokens])
        return main[0], main[1], done

    def entries(self) -> list[list[Any]]:
        return self.kept + self.new

    def files(self) -> int:
        return sum(int(e[1]) for e in self.entries())

    def bytes(self) -> int:
        return sum(int(e[2]) for e in self.entries())
