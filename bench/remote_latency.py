"""Submit -> Completed of a trivial run on a remote node (over the kept-open SSH connection), beside
``docker -H <that node's socket> run --rm`` of the same command, measured in the same run.

Usage: .venv/bin/python bench/remote_latency.py [--reps 7]
Needs root (it builds the network-namespace test bed of tests/testbed.py) and the base image.
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

from _server import (  # bench/ is this script's folder
    add_remote_target,
    one_file_snapshot,
    running_server,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import testbed  # noqa: E402

SCRIPT = "print('hello')"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    root = Path("/tmp/trainhub-bench-bed")
    key = testbed.client_key(root)
    node = testbed.start_node("b1", 5, root / "b1", key, gpus=0)
    try:
        with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as client:
            add_remote_target(client, "b1", node.address, key, node.docker_socket)
            snap = one_file_snapshot("hello.py", SCRIPT + "\n")
            spec = json.dumps({"entry_script": "hello.py", "compute_target": "remote"})

            def trainhub_run() -> float:
                start = time.perf_counter()
                run = client.post(
                    "/api/v1/experiments/bench/runs",
                    files={
                        "estimator": (None, spec),
                        "snapshot": ("s.tar.gz", snap, "application/gzip"),
                    },
                ).json()
                while True:
                    status = client.get(f"/api/v1/runs/{run['runId']}").json()["status"]
                    if status in ("Completed", "Failed", "Canceled"):
                        break
                    time.sleep(0.01)
                if status != "Completed":
                    raise SystemExit(f"bench run ended {status}")
                return time.perf_counter() - start

            def bare_run() -> float:
                start = time.perf_counter()
                subprocess.run(
                    [
                        "docker",
                        "-H",
                        f"unix://{node.docker_socket}",
                        "run",
                        "--rm",
                        testbed.BASE_IMAGE,
                        "python3",
                        "-c",
                        SCRIPT,
                    ],
                    check=True,
                    capture_output=True,
                )
                return time.perf_counter() - start

            trainhub_run()
            bare_run()
            ours, bare = [], []
            for _ in range(args.reps):
                bare.append(bare_run())
                ours.append(trainhub_run())
    finally:
        testbed.stop_node("b1", root / "b1")
    med_ours, med_bare = statistics.median(ours), statistics.median(bare)
    print(f"remote node over SSH; repetitions: {args.reps} (medians)")
    print(f"docker -H <node socket> run --rm (baseline)  {med_bare:6.3f} s")
    print(
        f"trainhub submit -> Completed on the node     {med_ours:6.3f} s   ratio {med_ours / med_bare:.2f}x (goal <= 1.5x)"
    )


if __name__ == "__main__":
    main()
