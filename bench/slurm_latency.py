"""Submit -> Completed of a trivial run on a Slurm target beside ``sbatch --wait`` of the same
command over SSH to the login node, in the same run (medians over --reps, the order alternating);
then the status poll's cost for 1,000 tracked jobs (one ``squeue`` through the kept connection).

Usage: .venv/bin/python bench/slurm_latency.py [--reps 7] [--poll 1.0] [--jobs 1000]
Needs root and Debian's slurm-wlm and munge: it starts the single-node cluster of tests/slurm_bed.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _server import one_file_snapshot, running_server  # bench/ is this script's folder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import slurm_bed, testbed  # noqa: E402
from trainhub.slurm.login import Login, host_key_of  # noqa: E402
from trainhub.slurm.service import job_states  # noqa: E402
from trainhub.store.slurm import SlurmTarget  # noqa: E402

SCRIPT = "print('hello')"


def ssh(bed: slurm_bed.SlurmBed, command: str) -> str:
    done = subprocess.run(
        [
            "ssh",
            "-i",
            str(bed.client_key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            f"root@{bed.address}",
            command,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def baseline(bed: slurm_bed.SlurmBed) -> float:
    start = time.perf_counter()
    ssh(
        bed,
        f'sbatch --wait --output={bed.work_dir}/baseline.out --wrap "srun python3 -c '
        f'\\"{SCRIPT}\\""',
    )
    return time.perf_counter() - start


def through_trainhub(client, snapshot: bytes) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    response = client.post(
        "/api/v1/experiments/bench/runs",
        files={
            "estimator": (None, json.dumps({"entry_script": "t.py", "compute_target": "hpc"})),
            "snapshot": ("s.tar.gz", snapshot, "application/gzip"),
        },
    )
    assert response.status_code == 201, response.text
    run_id = response.json()["runId"]
    while True:
        status = client.get(f"/api/v1/runs/{run_id}").json()["status"]
        if status in ("Completed", "Failed", "Canceled"):
            assert status == "Completed", status
            return time.perf_counter() - start
        time.sleep(0.02)


async def poll_cost(bed: slurm_bed.SlurmBed, jobs: int, reps: int) -> tuple[float, int]:
    """Median seconds of one status pass over ``jobs`` held jobs, and how many it saw."""
    ids = ssh(
        bed,
        f"for i in $(seq {jobs}); do sbatch --hold --parsable --output=/dev/null --wrap true; done",
    ).split()
    host_key = await host_key_of(bed.address, 22, "root", str(bed.client_key))
    target = SlurmTarget(
        "hpc",
        bed.address,
        22,
        "root",
        str(bed.client_key),
        host_key,
        slurm_bed.PARTITION,
        None,
        None,
        str(bed.work_dir),
        0.0,
    )
    login = Login(target, keepalive=5.0)
    await login.run("true")  # the connection is up, as in a running server
    times, seen = [], 0
    for _ in range(reps):
        start = time.perf_counter()
        states = await job_states(login, ids)
        times.append(time.perf_counter() - start)
        seen = len(states)
    login.close()
    ssh(bed, "scancel --user=root")
    return statistics.median(times), seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--poll", type=float, default=1.0, help="TRAINHUB_SLURM_POLL_SECONDS")
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    root = Path("/tmp/trainhub-slurmbed")
    bed = slurm_bed.start(root, testbed.client_key(root))
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            running_server(Path(tmp), slurm_poll_seconds=str(args.poll)) as client,
        ):
            body = {
                "name": "hpc",
                "kind": "slurm",
                "host": bed.address,
                "user": "root",
                "key_path": str(bed.client_key),
                "partition": slurm_bed.PARTITION,
                "work_dir": str(bed.work_dir),
            }
            assert client.post("/api/v1/targets", json=body).status_code == 201
            snapshot = one_file_snapshot("t.py", SCRIPT)
            through_trainhub(client, snapshot)  # warm: the first connection, the first job
            baseline(bed)
            ours, theirs = [], []
            for rep in range(args.reps):
                pair = [
                    (ours, lambda: through_trainhub(client, snapshot)),
                    (theirs, lambda: baseline(bed)),
                ]
                for into, measure in pair if rep % 2 == 0 else reversed(pair):
                    into.append(measure())
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"submit -> Completed via trainhub (poll {args.poll} s): median {a:.2f} s")
        print(f"sbatch --wait over SSH:                  median {b:.2f} s")
        print(f"ratio {a / b:.2f}x (goal <= 1.3x)")
        cost, seen = asyncio.run(poll_cost(bed, args.jobs, args.reps))
        print(
            f"status pass over {args.jobs} tracked jobs ({seen} seen): median {cost * 1000:.0f} ms"
        )
    finally:
        slurm_bed.stop(root)


if __name__ == "__main__":
    main()
