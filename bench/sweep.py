"""A sweep of N trivial children with max_concurrent_runs 4, beside N plain submits of the same
script kept 4 at a time by a client loop, in the same server and the same run: the wall time of
each and their ratio (goal: the sweep at most 1.1x the loop). Children and runs are process runs
(``use_docker=False``), so that what is measured is the sweep's own overhead, not the engine.

Usage: .venv/bin/python bench/sweep.py [--children 100] [--concurrent 4] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from _server import one_file_snapshot, running_server  # bench/ is this script's folder

SCRIPT = "from trainhub import Run\nRun.get_context().log('score', 1.0)\n"
RUN_CONFIG = {"entry_script": "train.py", "use_docker": False}
TERMINAL = {"Completed", "Failed", "Canceled"}
POLL_SECONDS = 0.02


def sweep(client: httpx.Client, snap: bytes, children: int, concurrent: int) -> float:
    """Submit -> the parent run Completed, for a random sweep of ``children``."""
    spec = {
        "run_config": RUN_CONFIG,
        "hyperparameter_sampling": {
            "type": "random",
            "parameter_space": {"--x": ["uniform", [0, 1]]},
            "properties": {"seed": 1},
        },
        "primary_metric_name": "score",
        "primary_metric_goal": "MAXIMIZE",
        "max_total_runs": children,
        "max_concurrent_runs": concurrent,
    }
    start = time.perf_counter()
    response = client.post(
        "/api/v1/experiments/bench-sweep/sweeps",
        files={
            "sweep": (None, json.dumps(spec)),
            "snapshot": ("s.tar.gz", snap, "application/gzip"),
        },
    )
    response.raise_for_status()
    sweep_id = response.json()["runId"]
    while (status := client.get(f"/api/v1/runs/{sweep_id}").json()["status"]) not in TERMINAL:
        time.sleep(POLL_SECONDS)
    if status != "Completed":
        raise SystemExit(f"bench sweep {sweep_id} ended {status}")
    return time.perf_counter() - start


def plain_loop(client: httpx.Client, snap: bytes, runs: int, concurrent: int) -> float:
    """Submit -> the last of ``runs`` plain runs ended, never more than ``concurrent`` open."""
    start = time.perf_counter()
    open_runs: list[str] = []
    submitted = 0
    snapshot_id: str | None = None
    while submitted < runs or open_runs:
        while submitted < runs and len(open_runs) < concurrent:
            files: dict[str, tuple[str | None, bytes | str] | tuple[str, bytes, str]] = {
                "estimator": (None, json.dumps({**RUN_CONFIG, "script_params": {"--x": submitted}}))
            }
            if snapshot_id is None:  # uploaded once, then named (as the SDK does)
                files["snapshot"] = ("s.tar.gz", snap, "application/gzip")
            else:
                files["snapshot_id"] = (None, snapshot_id)
            response = client.post("/api/v1/experiments/bench-loop/runs", files=files)
            response.raise_for_status()
            details = response.json()
            snapshot_id = details["properties"]["snapshotId"]
            open_runs.append(details["runId"])
            submitted += 1
        time.sleep(POLL_SECONDS)
        for run_id in list(open_runs):
            status = client.get(f"/api/v1/runs/{run_id}").json()["status"]
            if status in TERMINAL:
                if status != "Completed":
                    raise SystemExit(f"bench run {run_id} ended {status}")
                open_runs.remove(run_id)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    snap = one_file_snapshot("train.py", SCRIPT)
    swept, looped = [], []
    with tempfile.TemporaryDirectory() as data, running_server(Path(data)) as client:
        plain_loop(client, snap, args.concurrent, args.concurrent)  # warm-up: imports, caches
        sweep(client, snap, args.concurrent, args.concurrent)
        for rep in range(args.reps):  # interleaved, first one then the other, so noise hits both
            if rep % 2:
                swept.append(sweep(client, snap, args.children, args.concurrent))
                looped.append(plain_loop(client, snap, args.children, args.concurrent))
            else:
                looped.append(plain_loop(client, snap, args.children, args.concurrent))
                swept.append(sweep(client, snap, args.children, args.concurrent))
    med_sweep, med_loop = statistics.median(swept), statistics.median(looped)
    print(
        f"{args.children} trivial children, {args.concurrent} at a time;"
        f" repetitions: {args.reps} (medians)"
    )
    print(f"client loop of plain submits (baseline)  {med_loop:7.2f} s")
    print(
        f"sweep (max_concurrent_runs {args.concurrent})          {med_sweep:7.2f} s"
        f"   ratio {med_sweep / med_loop:.2f}x (goal <= 1.1x)"
    )


if __name__ == "__main__":
    main()
