"""1 GB of ./outputs copied back from a remote node (through the kept-open SSH connection and the
forwarded Docker socket), beside ``scp`` of the same files over the same link, same run.

Usage: .venv/bin/python bench/artifacts.py [--mb 1024] [--reps 3]
Needs root (the network-namespace test bed of tests/testbed.py) and the base image. Goal: at least
80% of scp's throughput.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _server import (  # bench/ is this script's folder
    add_remote_target,
    one_file_snapshot,
    running_server,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import testbed  # noqa: E402


def write_script(mb: int) -> str:
    return (
        "import os\nos.makedirs('outputs', exist_ok=True)\n"
        f"for i in range({mb // 64}):\n"
        "    with open(f'outputs/part{i}.bin', 'wb') as f:\n"
        "        f.write(os.urandom(64 * 1024 * 1024))\n"
    )


def seconds_between(history: list[dict[str, str]], first: str, last: str) -> float:
    times = {
        e["status"]: datetime.fromisoformat(e["timeUtc"].replace("Z", "+00:00")) for e in history
    }
    return (times[last] - times[first]).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    root = Path("/tmp/trainhub-bench-bed")
    key = testbed.client_key(root)
    node = testbed.start_node("b2", 6, root / "b2", key, gpus=0)
    ours, theirs = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as client:
            add_remote_target(client, "b2", node.address, key, node.docker_socket)
            snap = one_file_snapshot("write.py", write_script(args.mb))
            spec = json.dumps({"entry_script": "write.py", "compute_target": "remote"})
            for rep in range(args.reps):
                run = client.post(
                    "/api/v1/experiments/bench/runs",
                    files={"estimator": (None, spec), "snapshot": ("s.tar.gz", snap)},
                ).json()
                while (details := client.get(f"/api/v1/runs/{run['runId']}").json())[
                    "status"
                ] not in ("Completed", "Failed"):
                    time.sleep(0.2)
                if details["status"] != "Completed":
                    raise SystemExit(f"bench run failed: {details['error']}")
                ours.append(seconds_between(details["statusHistory"], "Finalizing", "Completed"))
                # The same files over the same link with scp (written on the node's filesystem first).
                source = root / "b2" / f"scp-{rep}"
                source.mkdir(exist_ok=True)
                subprocess.run(
                    f"head -c {args.mb * 1024 * 1024} /dev/urandom > {source}/data.bin",
                    shell=True,
                    check=True,
                )
                dest = Path(tmp) / f"scp-{rep}"
                start = time.perf_counter()
                subprocess.run(
                    [
                        "scp",
                        "-q",
                        "-r",
                        "-i",
                        str(key),
                        "-o",
                        "StrictHostKeyChecking=no",
                        "-o",
                        "UserKnownHostsFile=/dev/null",
                        f"root@{node.address}:{source}",
                        str(dest),
                    ],
                    check=True,
                )
                theirs.append(time.perf_counter() - start)
                subprocess.run(["rm", "-rf", str(source), str(dest)], check=True)
    finally:
        testbed.stop_node("b2", root / "b2")
    mb = args.mb
    med_ours, med_scp = statistics.median(ours), statistics.median(theirs)
    print(f"{mb} MB of outputs from a remote node; repetitions: {args.reps} (medians)")
    print(f"scp over the same link (baseline)      {med_scp:6.2f} s  {mb / med_scp:7.1f} MB/s")
    print(
        f"trainhub Finalizing (copy into history) {med_ours:6.2f} s  {mb / med_ours:7.1f} MB/s   "
        f"{100 * med_scp / med_ours:.0f}% of scp (goal >= 80%)"
    )


if __name__ == "__main__":
    main()
