"""Submit -> first log line and submit -> Completed for a print('hello') run, beside a bare
``docker run --rm IMAGE python3 -c "print('hello')"`` of the same command, measured in the same run.

Usage: .venv/bin/python bench/submit_latency.py [--reps 9]
Needs a running Docker engine and the base image (./scripts/test sets both up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from _server import one_file_snapshot, running_server  # bench/ is this script's folder

IMAGE = "trainhub/base:cpu"
SCRIPT = b"print('hello')\n"


def bare_docker_run() -> float:
    start = time.perf_counter()
    subprocess.run(
        ["docker", "run", "--rm", IMAGE, "python3", "-c", SCRIPT.decode()],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def trainhub_run(client: httpx.Client, snap: bytes) -> tuple[float, float]:
    start = time.perf_counter()
    response = client.post(
        "/api/v1/experiments/bench/runs",
        files={
            "estimator": (None, json.dumps({"entry_script": "hello.py"})),
            "snapshot": ("s.tar.gz", snap, "application/gzip"),
        },
    )
    response.raise_for_status()
    run_id = response.json()["runId"]
    first_line = None
    while True:
        if first_line is None and client.get(f"/api/v1/runs/{run_id}/logs").content:
            first_line = time.perf_counter() - start
        status = client.get(f"/api/v1/runs/{run_id}").json()["status"]
        if status in ("Completed", "Failed", "Canceled"):
            done = time.perf_counter() - start
            break
        time.sleep(0.01)
    if status != "Completed":
        raise SystemExit(f"bench run {run_id} ended {status}")
    return first_line if first_line is not None else done, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data, running_server(Path(data)) as client:
        snap = one_file_snapshot("hello.py", SCRIPT)
        trainhub_run(client, snap)  # warm-up: imports, first container
        bare_docker_run()
        bare, first, done = [], [], []
        for _ in range(args.reps):  # interleaved, so machine noise hits both alike
            bare.append(bare_docker_run())
            f, d = trainhub_run(client, snap)
            first.append(f)
            done.append(d)
    med_bare, med_first, med_done = (statistics.median(x) for x in (bare, first, done))
    print(f"repetitions: {args.reps} (medians)")
    print(f"docker run --rm (baseline)         {med_bare:6.3f} s")
    print(f"trainhub submit -> first log line  {med_first:6.3f} s")
    print(
        f"trainhub submit -> Completed       {med_done:6.3f} s   ratio {med_done / med_bare:.2f}x (goal <= 1.5x)"
    )


if __name__ == "__main__":
    main()
