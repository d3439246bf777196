"""The GPU check (run by bench/gpu_check.sh, inside the venv it made): a ``trainhub serve`` with no
Docker engine, a ``PyTorch`` estimator (``use_docker=False``, ``use_gpu=True``, ``Nccl()``, one process
per GPU) training bench/gpu_cnn.py submitted with the SDK, then the same script under a bare
``torchrun --standalone``, interleaved; prints both throughputs (medians) and their ratio.

``--cpu``: the same submission with ``Gloo()`` on two CPU processes (no GPU needed), as a check of
everything but the GPUs.

Usage: python bench/gpu_check.py [--cpu] [--reps 3] [--steps 300]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _server import TOKEN, running_server  # bench/ is this script's folder

HERE = Path(__file__).resolve().parent
GOAL = 0.98


def gpu_count() -> int:
    import torch

    return int(torch.cuda.device_count())


def through_trainhub(
    url: str, project: Path, procs: int, cpu: bool, params: dict[str, str | int]
) -> float:
    from trainhub import Experiment, Gloo, Nccl, PyTorch, Workspace

    estimator = PyTorch(
        source_directory=str(project),
        entry_script="gpu_cnn.py",
        use_docker=False,
        use_gpu=not cpu,
        process_count_per_node=procs,
        distributed_training=Gloo() if cpu else Nccl(),
        script_params=params,
    )
    run = Experiment(Workspace(url, token=TOKEN), "gpu-check").submit(estimator)
    run.wait_for_completion(show_output=False)
    if run.get_status() != "Completed":
        print(run.get_details().get("error"), file=sys.stderr)
        raise SystemExit(f"gpu_check: run {run.id} ended {run.get_status()}")
    value = run.get_metrics(name="images_per_s")["images_per_s"]
    return float(value[-1] if isinstance(value, list) else value)


def direct(project: Path, procs: int, params: dict[str, str | int]) -> float:
    """The same script under torchrun, with this Python, outside trainhub."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", str(procs), "gpu_cnn.py"]
    command += [str(part) for pair in params.items() for part in pair]
    done = subprocess.run(command, cwd=project, capture_output=True, text=True, check=False)
    found = re.search(r"images_per_s=([0-9.]+)", done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"gpu_check: torchrun failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", action="store_true", help="Gloo on two CPU processes")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=0, help="timed steps (default 500, CPU 20)")
    args = parser.parse_args()
    started = time.monotonic()
    procs = 2 if args.cpu else gpu_count()
    if procs < 1:
        raise SystemExit("gpu_check: torch sees no GPU (torch.cuda.device_count() is 0); try --cpu")
    steps = args.steps or (20 if args.cpu else 500)
    params: dict[str, str | int] = {"--steps": steps, "--device": "cpu" if args.cpu else "cuda"}
    if args.cpu:
        params.update({"--batch": 32, "--warmup": 3})
    work = Path(tempfile.mkdtemp(prefix="trainhub-gpu-check-"))
    project = work / "project"
    project.mkdir()
    shutil.copy(HERE / "gpu_cnn.py", project / "gpu_cnn.py")
    os.environ["DOCKER_HOST"] = f"unix://{work / 'no-engine.sock'}"  # no engine, whatever is here
    (work / "no-index").mkdir()
    settings = {
        "process_python": sys.executable,  # this venv: trainhub and the machine's torch
        "pip_index_url": f"file://{work / 'no-index'}",
    }
    mode = "CPU, Gloo" if args.cpu else "GPU, NCCL"
    print(f"gpu_check: {procs} processes ({mode}), {steps} timed steps, {args.reps} reps each")
    ours: list[float] = []
    theirs: list[float] = []
    with running_server(work / "server", **settings) as client:
        health = client.get("/healthz").json()["details"]["nodes"]["local"]
        print(f"gpu_check: server up with no engine: local {health['state']}, {health['runtimes']}")
        for rep in range(args.reps):
            ours.append(through_trainhub(str(client.base_url), project, procs, args.cpu, params))
            theirs.append(direct(project, procs, params))
            print(f"  rep {rep + 1}: trainhub {ours[-1]:,.0f} images/s, torchrun {theirs[-1]:,.0f}")
    mine, bare = statistics.median(ours), statistics.median(theirs)
    ratio = mine / bare
    print(f"trainhub (use_docker=False): {mine:,.0f} images/s (median of {len(ours)})")
    print(f"torchrun directly:           {bare:,.0f} images/s (median of {len(theirs)})")
    verdict = "met" if ratio >= GOAL else "NOT met"
    print(f"ratio: {ratio:.3f} (goal >= {GOAL:.2f}: {verdict}); {time.monotonic() - started:.0f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
