"""Submit -> Completed of a trivial two-process MPI run (mpi4py allreduce) on the local node, beside
``docker run --rm IMAGE mpirun -np 2 python3 -c ...`` of the same program, measured in the same run.

Usage: .venv/bin/python bench/mpi_latency.py [--reps 7]
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
SCRIPT = (
    "from mpi4py import MPI\n"
    "c = MPI.COMM_WORLD\n"
    "print(c.Get_rank(), c.allreduce(c.Get_rank() + 1), flush=True)\n"
)


def bare_docker_mpirun() -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "-e",
            "OMPI_ALLOW_RUN_AS_ROOT=1",
            "-e",
            "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
            IMAGE,
            "mpirun",
            "--bind-to",
            "none",
            "--oversubscribe",
            "--mca",
            "btl_vader_single_copy_mechanism",
            "none",
            "-np",
            "2",
            "python3",
            "-c",
            SCRIPT,
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def trainhub_run(client: httpx.Client, snap: bytes) -> float:
    spec = {"entry_script": "train.py", "distributed_backend": "mpi", "process_count_per_node": 2}
    start = time.perf_counter()
    response = client.post(
        "/api/v1/experiments/bench/runs",
        files={
            "estimator": (None, json.dumps(spec)),
            "snapshot": ("s.tar.gz", snap, "application/gzip"),
        },
    )
    response.raise_for_status()
    run_id = response.json()["runId"]
    while True:
        status = client.get(f"/api/v1/runs/{run_id}").json()["status"]
        if status in ("Completed", "Failed", "Canceled"):
            done = time.perf_counter() - start
            break
        time.sleep(0.01)
    if status != "Completed":
        raise SystemExit(f"bench run {run_id} ended {status}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data, running_server(Path(data)) as client:
        snap = one_file_snapshot("train.py", SCRIPT)
        trainhub_run(client, snap)  # warm-up: imports, first container
        bare_docker_mpirun()
        bare, done = [], []
        for _ in range(args.reps):  # interleaved, so machine noise hits both alike
            bare.append(bare_docker_mpirun())
            done.append(trainhub_run(client, snap))
    med_bare, med_done = statistics.median(bare), statistics.median(done)
    print(f"two MPI processes on the local node; repetitions: {args.reps} (medians)")
    print(f"docker run --rm IMAGE mpirun -np 2 (baseline)  {med_bare:6.3f} s")
    print(
        f"trainhub submit -> Completed                   {med_done:6.3f} s"
        f"   ratio {med_done / med_bare:.2f}x"
    )


if __name__ == "__main__":
    main()
