"""Submit -> Completed of a two-process PyTorch Gloo run (an allreduce) on the local node, beside
``docker run --rm IMAGE python -m torch.distributed.run --nproc-per-node 2`` of the same script in the
same image (the run's torch environment image), measured in the same run.

Usage: .venv/bin/python bench/torchrun_latency.py [--reps 7]
Needs a running Docker engine, the base image, and pip able to fetch torch's CPU wheel (pip's
find-links folder on this project's machines holds it). The environment image is built on the first
run (about a minute and a half) and kept by the engine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _server import one_file_snapshot, running_server  # bench/ is this script's folder

TORCH = "torch==2.13.0"  # pinned: an unpinned torch pulls a CUDA build of several GB
WHEELS = Path("/tmp/trainhub-torch-wheels")  # the tests' folder: the same image
SCRIPT = """
import torch
import torch.distributed as dist
dist.init_process_group("gloo")
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
print(dist.get_rank(), total.item(), flush=True)
dist.destroy_process_group()
"""


def bare_docker_torchrun(image: str, folder: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["docker", "run", "--rm", "-v", f"{folder}:/bench:ro", "-e", "GLOO_SOCKET_IFNAME=lo"]
        + [image, "python", "-m", "torch.distributed.run", "--nproc-per-node", "2"]
        + ["--master-addr", "127.0.0.1", "--master-port", "29500", "/bench/train.py"],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def trainhub_run(client: httpx.Client, snap: bytes) -> tuple[float, str]:
    spec = {
        "entry_script": "train.py",
        "framework": "PyTorch",
        "distributed_training": {"type": "gloo"},
        "process_count_per_node": 2,
        "pip_packages": [TORCH],
    }
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
        run = client.get(f"/api/v1/runs/{run_id}").json()
        if run["status"] in ("Completed", "Failed", "Canceled"):
            done = time.perf_counter() - start
            break
        # A 100 Hz poll would take a good part of a core from a CPU-bound run of several seconds
        # on this 2-core machine; 20 Hz keeps the error of the measure under 1%.
        time.sleep(0.05)
    if run["status"] != "Completed":
        raise SystemExit(f"bench run {run_id} ended {run['status']}: {run['error']}")
    return done, str(run["runDefinition"]["image"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    subprocess.run(
        [sys.executable, "-m", "pip", "download", TORCH, "--only-binary=:all:", "--quiet"]
        + ["--dest", str(WHEELS)],
        check=True,
    )
    settings = {"wheel_dir": str(WHEELS), "pip_index_url": "file:///trainhub-build/no-index"}
    with (
        tempfile.TemporaryDirectory() as data,
        running_server(Path(data), **settings) as client,
    ):
        (Path(data) / "script").mkdir()
        (Path(data) / "script" / "train.py").write_text(SCRIPT)
        snap = one_file_snapshot("train.py", SCRIPT)
        _, image = trainhub_run(client, snap)  # warm-up: the environment image, imports
        bare_docker_torchrun(image, Path(data) / "script")
        bare, done = [], []
        for _ in range(args.reps):  # interleaved, so machine noise hits both alike
            bare.append(bare_docker_torchrun(image, Path(data) / "script"))
            done.append(trainhub_run(client, snap)[0])
    med_bare, med_done = statistics.median(bare), statistics.median(done)
    print(f"two Gloo processes on the local node; repetitions: {args.reps} (medians)")
    print(f"docker run --rm IMAGE torchrun --nproc-per-node 2 (baseline)  {med_bare:6.3f} s")
    print(
        f"trainhub submit -> Completed                                 {med_done:6.3f} s"
        f"   ratio {med_done / med_bare:.2f}x (goal <= 1.2x)"
    )


if __name__ == "__main__":
    main()
