"""Retention and disk use at lab scale: what the server's hourly retention pass, its per-minute
measuring pass and the admin page's disk-use tables cost on a database of many runs.

The runs are those of bench/dashboard.py (ended runs over several experiments and users), each
with a recorded size; all but the last day's have been through retention already (years of
history), so a pass finds nothing to do, as it does almost every hour. The baselines are the same
queries told not to use an index (``NOT INDEXED``: a scan of every run), measured in the same run.
Figures are medians of ``--reps`` calls.

Usage: .venv/bin/python bench/retention.py [--runs 10000 100000] [--reps 50]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlite_utils

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboard import bulk_runs  # noqa: E402 - bench/ is this script's folder

from trainhub.store import Database  # noqa: E402
from trainhub.store import disk as disk_store  # noqa: E402
from trainhub.store.lifecycle import TERMINAL  # noqa: E402

SPEC = {"entry_script": "train.py", "compute_target": "local"}
DAY = 86400.0


def prepare(folder: Path, count: int) -> tuple[Path, float]:
    path = folder / "trainhub.db"
    Database(path).close()  # the migrations
    conn = sqlite3.connect(path)
    with conn:
        bulk_runs(conn, SPEC, count)
        newest = conn.execute("select max(ended_at) from runs").fetchone()[0]
        cutoff = newest - DAY
        conn.execute("update runs set stored_bytes = 1000 + (seq * 7919) % 100000")
        conn.execute(
            "update runs set outputs_removed_at = ended_at + 90 * ? where ended_at < ?",
            [DAY, cutoff],
        )
    conn.execute("analyze")
    conn.close()
    return path, cutoff


def median_ms(fn: Callable[[], Any], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def bench(count: int, reps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path, cutoff = prepare(Path(tmp), count)
        db = sqlite_utils.Database(path)
        expired_scan = (
            "select id from runs not indexed where "
            f"{disk_store._expired_where('?')} order by ended_at limit 200"
        )
        terminal = sorted(s.value for s in TERMINAL)
        unmeasured_scan = (
            "select id from runs not indexed where stored_bytes is null and ended_at is not null "
            "order by ended_at limit 200"
        )
        rows = [
            (
                "retention pass, nothing to do (baseline: scan)",
                lambda: db.execute(
                    expired_scan, [cutoff, *terminal, disk_store.KEEP_TAG]
                ).fetchall(),
            ),
            ("retention pass, nothing to do", lambda: disk_store.expired(db, cutoff, 200)),
            (
                "measuring pass (baseline: scan)",
                lambda: db.execute(unmeasured_scan).fetchall(),
            ),
            ("measuring pass", lambda: disk_store.unmeasured(db, 200)),
            ("disk use per experiment", lambda: disk_store.usage(db, "experiment")),
            ("disk use per user", lambda: disk_store.usage(db, "user")),
        ]
        print(f"{count} runs")
        for name, fn in rows:
            print(f"  {name:<52} {median_ms(fn, reps):8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()
    for count in args.runs:
        bench(count, args.reps)


if __name__ == "__main__":
    main()
