"""What runs and snapshots keep on disk: runs' measured sizes, retention's candidates and marks,
unreferenced snapshots, and disk use per experiment and user, all from SQL (never a walk).

A snapshot is *held* by every run whose outputs are still there (retention lets go of it along
with the outputs; a run that is queued, running or re-attachable has never been through retention,
so it always holds its snapshot). Plain functions of a ``sqlite_utils.Database``.
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

from trainhub.store.lifecycle import TERMINAL

#: The tag that keeps a run's outputs whatever its age (``run.tag("keep")``).
KEEP_TAG = "keep"

_TERMINAL = tuple(sorted(s.value for s in TERMINAL))
_IN_TERMINAL = f"status in ({', '.join('?' for _ in _TERMINAL)})"


def unmeasured(db: sqlite_utils.Database, limit: int) -> list[str]:
    """Ended runs whose folder was not measured yet (idx_runs_unmeasured holds only those)."""
    rows = db.execute(
        "select id from runs indexed by idx_runs_unmeasured "
        "where stored_bytes is null and ended_at is not null order by ended_at limit ?",
        [limit],
    ).fetchall()
    return [r[0] for r in rows]


def set_stored_bytes(db: sqlite_utils.Database, run_id: str, size: int) -> None:
    db.execute("update runs set stored_bytes = ? where id = ?", [size, run_id])


def _expired_where(cutoff_param: str) -> str:
    return (
        f"outputs_removed_at is null and ended_at is not null and ended_at < {cutoff_param} "
        f"and {_IN_TERMINAL} and not exists "
        "(select 1 from run_tags t where t.seq = runs.seq and t.key = ?)"
    )


def expired(db: sqlite_utils.Database, cutoff: float, limit: int) -> list[dict[str, Any]]:
    """Ended runs older than ``cutoff`` whose outputs are still there and that are not tagged
    ``keep``: a range of idx_runs_retention (runs already through retention are not in it)."""
    return list(
        db.query(
            "select id, experiment, user, ended_at, stored_bytes from runs "
            f"indexed by idx_runs_retention where {_expired_where('?')} order by ended_at limit ?",
            [cutoff, *_TERMINAL, KEEP_TAG, limit],
        )
    )


def mark_outputs_removed(db: sqlite_utils.Database, run_id: str, cutoff: float, at: float) -> bool:
    """Record that retention removes the run's outputs, if it still qualifies (not tagged
    ``keep`` meanwhile): checked in the same write, before any file goes."""
    cursor = db.execute(
        f"update runs set outputs_removed_at = ? where id = ? and {_expired_where('?')}",
        [at, run_id, cutoff, *_TERMINAL, KEEP_TAG],
    )
    return cursor.rowcount == 1


def unheld_snapshots(db: sqlite_utils.Database, before: float) -> list[dict[str, Any]]:
    """Snapshots stored before ``before`` that no run holds (see the module's docstring)."""
    return list(
        db.query(
            "select sha256, size from snapshots s where created_at < ? and not exists "
            "(select 1 from runs r where r.snapshot = s.sha256 and r.outputs_removed_at is null)",
            [before],
        )
    )


def forget_snapshot(db: sqlite_utils.Database, sha256: str, before: float) -> bool:
    """Delete a snapshot's record if still no run holds it (a submission may have come in since
    it was listed: the writer serialises this with the run's insert, which checks the record)."""
    cursor = db.execute(
        "delete from snapshots where sha256 = ? and created_at < ? and not exists "
        "(select 1 from runs r where r.snapshot = ? and r.outputs_removed_at is null)",
        [sha256, before, sha256],
    )
    return cursor.rowcount == 1


def snapshot_known(db: sqlite_utils.Database, sha256: str) -> bool:
    return db.execute("select 1 from snapshots where sha256 = ?", [sha256]).fetchone() is not None


def known_snapshots(db: sqlite_utils.Database) -> set[str]:
    return {r[0] for r in db.execute("select sha256 from snapshots").fetchall()}


def usage(db: sqlite_utils.Database, by: str) -> list[dict[str, Any]]:
    """Disk use grouped ``by`` 'experiment' or 'user': runs, their folders' bytes (outputs and
    logs, as measured), the bytes of the distinct snapshots they hold, and how many ended runs
    are not measured yet. A snapshot shared by two groups counts in both."""
    column = {"experiment": "experiment", "user": "user"}[by]
    # Both read an index only: (column, stored_bytes) covers the first, the second reads the
    # partial index of the ended runs not measured yet (a minute's worth at most).
    folders = db.execute(
        f"select {column}, count(*), coalesce(sum(stored_bytes), 0) from runs group by {column}"
    ).fetchall()
    unmeasured_runs = dict(
        db.execute(
            f"select {column}, count(*) from runs indexed by idx_runs_unmeasured "
            f"where stored_bytes is null and ended_at is not null group by {column}"
        ).fetchall()
    )
    held = dict(
        db.execute(
            f"select g, sum(s.size) from (select distinct {column} as g, snapshot from runs "
            "where snapshot is not null and outputs_removed_at is null) h "
            "join snapshots s on s.sha256 = h.snapshot group by g"
        ).fetchall()
    )
    rows = [
        {
            "name": name,
            "runs": count,
            "run_bytes": folder_bytes,
            "snapshot_bytes": held.get(name) or 0,
            "unmeasured": unmeasured_runs.get(name, 0),
        }
        for name, count, folder_bytes in folders
    ]
    rows.sort(key=lambda r: (-(r["run_bytes"] + r["snapshot_bytes"]), str(r["name"])))
    return rows
