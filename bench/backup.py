"""``trainhub backup`` of a data folder with many runs beside ``tar -cf`` of the same folder in the same
run, then a second backup with nothing changed (medians over --reps; the order alternates per rep),
wall and CPU (user + system) seconds.

Usage: .venv/bin/python bench/backup.py [--runs 10000] [--gb 5] [--reps 3] [--dir /var/tmp]
The data folder is synthetic (made in seconds): a real schema with one row per run and a few metrics,
each run a driver log and an outputs file (sizes vary; 5 GB in all by default), and 200 snapshots.
Needs free disk for three copies of --gb (folder, tar, backup store).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from trainhub.store import Database

BLOCK = 64 * 1024 * 1024


def make_data(data: Path, runs: int, total_bytes: int) -> None:
    """A data folder as a server leaves it (runs ended and measured); every outputs file unique
    (its run id leads it)."""
    Database(data / "trainhub.db").close()
    rng = random.Random(15)
    block = rng.randbytes(BLOCK)
    ids = [f"bench_{i}_{uuid.UUID(int=rng.getrandbits(128)).hex[:8]}" for i in range(runs)]
    now = time.time()
    weights = [rng.uniform(0.2, 1.8) for _ in ids]
    scale = total_bytes / sum(weights)
    conn = sqlite3.connect(data / "trainhub.db")
    with conn:
        conn.execute("insert into experiments (name, created_at) values ('bench', ?)", (now,))
        conn.executemany(
            "insert into runs (id, experiment, number, status, spec, created_at, ended_at, "
            "stored_bytes) values (?, 'bench', ?, 'Completed', '{}', ?, ?, ?)",
            [
                (run_id, n + 1, now, now, int(weight * scale))
                for n, (run_id, weight) in enumerate(zip(ids, weights, strict=True))
            ],
        )
        conn.executemany(
            "insert into metrics (run_id, name, kind, step, value) values (?, ?, 'scalar', ?, ?)",
            [(run_id, "loss", s, json.dumps(1 / (s + 1))) for run_id in ids for s in range(5)],
        )
    conn.close()
    for run_id, weight in zip(ids, weights, strict=True):
        run = data / "runs" / run_id
        (run / "logs").mkdir(parents=True)
        (run / "outputs").mkdir()
        (run / "logs" / "driver_log.txt").write_text(f"{run_id}\n" + "epoch 1 loss 0.5\n" * 100)
        size = int(weight * scale)
        start = rng.randrange(BLOCK - min(size, BLOCK) + 1)
        with (run / "outputs" / "model.bin").open("wb") as out:
            out.write(run_id.encode())
            left = size
            while left > 0:
                piece = block[start : start + min(left, BLOCK - start)]
                out.write(piece)
                left -= len(piece)
                start = 0
    (data / "snapshots").mkdir()
    for i in range(200):
        (data / "snapshots" / f"{i:064x}.tar.gz").write_bytes(block[i * 4096 : i * 4096 + 40_000])


def timed(cmd: list[str], cpu: list[float] | None = None) -> tuple[float, str]:
    """Wall seconds of ``cmd`` (and its CPU seconds, user + system, appended to ``cpu``: on a
    shared machine the wall time depends on the others' load, the CPU time much less)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--gb", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the folders go (default: a temp dir)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trainhub-bench-backup-", dir=args.dir))
    data = work / "data"
    try:
        started = time.perf_counter()
        make_data(data, args.runs, int(args.gb * 1e9))
        print(
            f"data folder: {args.runs} runs, {args.gb} GB, made in "
            f"{time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        trainhub = [sys.executable, "-m", "trainhub"]
        tar_s, first_s, second_s, start_s = [], [], [], []
        tar_cpu: list[float] = []
        first_cpu: list[float] = []
        second_cpu: list[float] = []
        store, archive = work / "store", work / "data.tar"
        for rep in range(args.reps):

            def tar() -> None:
                tar_s.append(timed(["tar", "-cf", str(archive), "-C", str(data), "."], tar_cpu)[0])

            def backup() -> None:
                seconds, out = timed(
                    [*trainhub, "backup", str(store), "--data", str(data), "--json"], first_cpu
                )
                first_s.append(seconds)
                assert json.loads(out)["new_objects"] > args.runs

            for step in (tar, backup) if rep % 2 == 0 else (backup, tar):
                step()
            seconds, out = timed(
                [*trainhub, "backup", str(store), "--data", str(data), "--json"], second_cpu
            )
            assert json.loads(out)["new_objects"] == 0, out
            second_s.append(seconds)
            start_s.append(timed([*trainhub, "--version"])[0])
            archive.unlink()
            shutil.rmtree(store)
        tar_m, first_m, second_m = (statistics.median(x) for x in (tar_s, first_s, second_s))
        tar_c, first_c, second_c = (statistics.median(x) for x in (tar_cpu, first_cpu, second_cpu))
        print(f"{'':32}{'wall':>8}{'cpu':>10}")
        print(f"{'tar -cf (baseline)':32}{tar_m:7.2f} s{tar_c:8.2f} s")
        print(
            f"{'trainhub backup (first)':32}{first_m:7.2f} s{first_c:8.2f} s   ratio "
            f"{first_m / tar_m:.2f}x wall, {first_c / tar_c:.2f}x cpu (goal <= 1.0x)"
        )
        print(
            f"{'trainhub backup (no change)':32}{second_m:7.2f} s{second_c:8.2f} s   "
            f"{second_m / first_m:.1%} of the first's wall (goal < 5%)"
        )
        print(
            f"  of which `trainhub --version` {statistics.median(start_s):7.2f} s "
            "(interpreter and imports)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.pop("TRAINHUB_DATA", None)
    main()
