"""A ``server`` datastore referenced by runs on a remote node: the first run's copy of 1 GB onto the
node beside ``scp`` of the same files over the same link, and what a later run (the copy reused)
adds to ``Preparing`` beside a run without a reference, measured in the same run.

Usage: flock /tmp/trainhub-testbed.lock .venv/bin/python bench/datastore.py [--mb 1024] [--reps 3]
Needs root (the network-namespace test bed of tests/testbed.py) and the base image. Goals: the first
copy at least 80% of scp's throughput; a second run transfers nothing and adds under 0.2 s to
Preparing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from _server import (  # bench/ is this script's folder
    add_remote_target,
    one_file_snapshot,
    running_server,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import testbed  # noqa: E402

PART_MB = 64
COPIED = re.compile(r"copied (\d+) files, ([\d.]+ \w+) to (\S+) in ([\d.]+) s")


def write_data(folder: Path, mb: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(max(1, mb // PART_MB)):
        with (folder / f"part{i:03d}.bin").open("wb") as fh:
            fh.write(os.urandom(PART_MB * 1024 * 1024))


def touch(folder: Path) -> None:
    """New modification times: new content as far as the copy cache knows (a full copy again)."""
    now = time.time_ns()
    for i, path in enumerate(sorted(folder.iterdir())):
        os.utime(path, ns=(now + i, now + i))


def seconds_between(history: list[dict[str, str]], first: str, last: str) -> float:
    times = {
        e["status"]: datetime.fromisoformat(e["timeUtc"].replace("Z", "+00:00")) for e in history
    }
    return (times[last] - times[first]).total_seconds()


def run(client: httpx.Client, snap: bytes, spec: dict[str, Any]) -> dict[str, Any]:
    started = client.post(
        "/api/v1/experiments/bench/runs",
        files={"estimator": (None, json.dumps(spec)), "snapshot": ("s.tar.gz", snap)},
    ).json()
    while (details := client.get(f"/api/v1/runs/{started['runId']}").json())["status"] not in (
        "Completed",
        "Failed",
        "Canceled",
    ):
        time.sleep(0.05)
    if details["status"] != "Completed":
        raise SystemExit(f"bench run ended {details['status']}: {details['error']}")
    details["buildLog"] = client.get(
        f"/api/v1/runs/{started['runId']}/files/logs/build_log.txt"
    ).text
    return details


def scp(key: Path, source: Path, address: str, dest: str) -> float:
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
            str(source),
            f"root@{address}:{dest}",
        ],
        check=True,
    )
    return time.perf_counter() - start


def remove_copies(socket: str) -> None:
    """The node's cached copies, so that the next repetition copies everything again."""
    subprocess.run(
        f"docker -H unix://{socket} volume ls -q --filter label=org.trainhub.kind=datastore-copy"
        f" | xargs -r docker -H unix://{socket} volume rm -f",
        shell=True,
        check=True,
        capture_output=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cached-reps", type=int, default=7)
    args = parser.parse_args()
    root = Path("/tmp/trainhub-bench-bed")
    key = testbed.client_key(root)
    node = testbed.start_node("b3", 7, root / "b3", key, gpus=0)
    copy_s: list[float] = []
    scp_s: list[float] = []
    plain: list[float] = []
    cached: list[float] = []
    reused = 0
    try:
        with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as client:
            add_remote_target(client, "b3", node.address, key, node.docker_socket)
            data = Path(tmp) / "data" / "datastores" / "workspaceblobstore" / "bench"
            write_data(data, args.mb)
            snap = one_file_snapshot("train.py", "import sys\nprint(sys.argv)\n")
            without = {"entry_script": "train.py", "compute_target": "remote"}
            reference = {"$data_reference": {"datastore": "workspaceblobstore", "path": "bench"}}
            spec = {**without, "script_params": {"--data-folder": reference}}
            run(client, snap, without)  # the connection and the image warm on the node
            for rep in range(args.reps):
                touch(data)
                remove_copies(node.docker_socket)
                found = COPIED.search(run(client, snap, spec)["buildLog"])
                if found is None:
                    raise SystemExit("the first run on the node did not copy the data")
                copy_s.append(float(found.group(4)))
                dest = f"/tmp/trainhub-bench-scp-{rep}"
                scp_s.append(scp(key, data, node.address, dest))
                subprocess.run(["rm", "-rf", dest], check=True)
            for _ in range(args.cached_reps):  # the copy of the last repetition, reused
                details = run(client, snap, spec)
                reused += "reused the copy on b3" in details["buildLog"]
                cached.append(seconds_between(details["statusHistory"], "Preparing", "Starting"))
                details = run(client, snap, without)
                plain.append(seconds_between(details["statusHistory"], "Preparing", "Starting"))
            remove_copies(node.docker_socket)
    finally:
        testbed.stop_node("b3", root / "b3")
    mb = (args.mb // PART_MB or 1) * PART_MB
    med_copy, med_scp = statistics.median(copy_s), statistics.median(scp_s)
    med_cached, med_plain = statistics.median(cached), statistics.median(plain)
    print(f"{mb} MB server datastore onto a remote node; medians of {args.reps} repetitions")
    print(f"scp over the same link (baseline)   {med_scp:6.2f} s  {mb / med_scp:7.1f} MB/s")
    print(
        f"trainhub first copy into the cache  {med_copy:6.2f} s  {mb / med_copy:7.1f} MB/s   "
        f"{100 * med_scp / med_copy:.0f}% of scp (goal >= 80%)"
    )
    print(f"Preparing, medians of {args.cached_reps} runs each:")
    print(f"  run without a reference (baseline) {med_plain * 1000:7.1f} ms")
    print(
        f"  run with the copy reused           {med_cached * 1000:7.1f} ms   "
        f"+{(med_cached - med_plain) * 1000:.1f} ms (goal < 200 ms); "
        f"{reused}/{args.cached_reps} said 'reused', none copied"
    )


if __name__ == "__main__":
    main()
