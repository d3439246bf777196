"""TensorBoard through the server: (1) time from an event written in the run's container to its
scalar served through the proxy, with the default sync and reload intervals (median of several);
(2) proxy overhead per request against the same TensorBoard asked directly, same run; (3) the
incremental ./logs sync: bytes copied per sync tick for a 1 GB ./logs with one growing file, beside
the whole-folder copy it replaces.

Usage: .venv/bin/python bench/tensorboard.py [--events 8] [--requests 300] [--mb 1024] [--ticks 5]
Needs a running Docker engine and the base image (./scripts/test sets both up).
Goals: (1) under 10 s; (2) under 5 ms; (3) only the growth.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import docker
import httpx
from _server import running_server  # bench/ is this script's folder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import add_user, login, make_snapshot  # noqa: E402
from tests.test_tensorboard import EVENT_WRITER  # noqa: E402
from trainhub.runs import containers  # noqa: E402
from trainhub.runtime.docker import WORKDIR, DockerEngine  # noqa: E402

IMAGE = "trainhub/base:cpu"
# One event every GAP seconds (not a multiple of the sync or reload interval, so the events land at
# every phase of them); each carries the time it was written as its value's wall time.
TRAIN = textwrap.dedent(
    """
    import os, time
    from events import event, record
    os.makedirs("logs/train", exist_ok=True)
    with open("logs/train/events.out.tfevents.1.bench", "wb") as f:
        f.write(record(event(time.time(), version="brain.Event:2")))
        f.flush()
        for step in range(int(os.environ["EVENTS"])):
            time.sleep(float(os.environ["GAP"]))
            f.write(record(event(time.time(), step=step, tag="loss", value=step)))
            f.flush()
    time.sleep(3)
    """
)


def event_latencies(
    api: httpx.Client, browser: httpx.Client, events: int
) -> tuple[list[float], str]:
    """Seconds from each event's wall time (written by the script) to the moment its point is
    first served through the proxy, polled every 50 ms."""
    snapshot = make_snapshot({"train.py": TRAIN, "events.py": EVENT_WRITER})
    spec = {
        "entry_script": "train.py",
        "environment_variables": {"EVENTS": str(events), "GAP": "6.7"},
    }
    response = api.post(
        "/api/v1/experiments/bench-tb/runs",
        files={
            "estimator": (None, json.dumps(spec), "application/json"),
            "snapshot": ("snapshot.tar.gz", snapshot, "application/gzip"),
        },
    )
    response.raise_for_status()
    run_id = response.json()["runId"]
    base = f"/runs/{run_id}/tensorboard/"
    seen: dict[int, float] = {}
    deadline = time.time() + events * 6.7 + 120
    while len(seen) < events and time.time() < deadline:
        answer = browser.get(
            f"{base}data/plugin/scalars/scalars", params={"run": "logs/train", "tag": "loss"}
        )
        now = time.time()
        if answer.status_code == 200:
            for wall, step, _ in answer.json():
                if int(step) not in seen and step > 0:  # step 0 lands while TensorBoard starts
                    seen[int(step)] = now - wall
        time.sleep(0.05)
    return [seen[s] for s in sorted(seen)], run_id


def board_port(log: Path, run_id: str) -> int:
    """TensorBoard's own port, as the server logged it when it answered."""
    found = re.findall(
        rf"TensorBoard run:{re.escape(run_id)} answers on port (\d+)", log.read_text()
    )
    return int(found[-1])


def proxy_overhead(
    browser: httpx.Client, base: str, port: int, requests: int
) -> dict[str, list[float]]:
    """Seconds per request for the same small answer (a run's scalars) through the proxy and from
    TensorBoard directly, alternating; and two floors of the server on this machine now: /healthz
    (no login) and the same board's slash-less URL (login checked, answered by a redirect: every
    cost of a proxied request but the call to TensorBoard)."""
    query = "data/plugin/scalars/scalars?run=logs/train&tag=loss"
    times: dict[str, list[float]] = {"proxied": [], "direct": [], "healthz": [], "login": []}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as straight:
        for _ in range(10):  # warm both paths
            timed(browser, base + query)
            timed(straight, base + query)
        for _ in range(requests):
            times["proxied"].append(timed(browser, base + query))
            times["direct"].append(timed(straight, base + query))
            times["healthz"].append(timed(browser, "/healthz"))
            times["login"].append(timed(browser, base.rstrip("/"), redirect=True))
    return times


def timed(client: httpx.Client, url: str, redirect: bool = False) -> float:
    start = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - start
    assert response.status_code == (307 if redirect else 200), response.status_code
    return elapsed


def sync_ticks(mb: int, ticks: int, growth: int) -> dict[str, Any]:
    """A container with ``mb`` MB in ./logs (16 MB files and one growing file); the first copy,
    then ``ticks`` syncs each after ``growth`` bytes appended to the growing file; then one copy
    of the whole folder as an archive (what every tick copied before)."""
    client = docker.from_env()
    engine = DockerEngine()
    container = client.containers.run(IMAGE, ["sleep", "3600"], detach=True)
    logs = f"{WORKDIR}/logs"

    def sh(command: str) -> None:
        code, output = container.exec_run(["sh", "-c", command])
        assert code == 0, output

    try:
        sh(
            f"mkdir -p {logs}/train && for i in $(seq {mb // 16}); do "
            f"head -c 16777216 /dev/urandom > {logs}/part$i.bin; done && "
            f"head -c 1000000 /dev/urandom > {logs}/train/events.out.tfevents.1.bench"
        )
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp)
            start = time.perf_counter()
            first = containers.collect(engine, container.id, run_dir, ("logs",))
            first_seconds = time.perf_counter() - start
            copied, seconds = [], []
            for _ in range(ticks):
                sh(f"head -c {growth} /dev/urandom >> {logs}/train/events.out.tfevents.1.bench")
                start = time.perf_counter()
                copied.append(containers.collect(engine, container.id, run_dir, ("logs",)))
                seconds.append(time.perf_counter() - start)
            start = time.perf_counter()
            chunks = engine.get_archive(container.id, logs)
            assert chunks is not None
            archive = sum(len(c) for c in chunks)
            archive_seconds = time.perf_counter() - start
    finally:
        container.remove(force=True)
        client.close()
        engine.close()
    return {
        "first": first,
        "first_seconds": [first_seconds],
        "copied": copied,
        "seconds": seconds,
        "archive": archive,
        "archive_seconds": [archive_seconds],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=8)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--growth", type=int, default=100_000)
    parser.add_argument("--skip-sync", action="store_true", help="only the first two figures")
    args = parser.parse_args()
    raise SystemExit(main_with(args))


def main_with(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as api:
        add_user(api, "bench-viewer")
        base_url = str(api.base_url).rstrip("/")
        browser = login(base_url, "bench-viewer")
        try:
            latencies, run_id = event_latencies(api, browser, args.events + 1)
            base = f"/runs/{run_id}/tensorboard/"
            port = board_port(Path(tmp) / "server.log", run_id)
            times = proxy_overhead(browser, base, port, args.requests)
        finally:
            browser.close()
    ticks = None if args.skip_sync else sync_ticks(args.mb, args.ticks, args.growth)

    print(f"event written in the container -> served through the proxy ({len(latencies)} events)")
    print(
        f"  median {statistics.median(latencies):6.2f} s   max {max(latencies):6.2f} s"
        "   (goal: under 10 s; default sync 3 s + reload 5 s)"
    )
    ms = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"proxy overhead per request ({args.requests} each, alternating, same TensorBoard)")
    print(
        f"  through the proxy {ms['proxied']:7.2f} ms   directly {ms['direct']:7.2f} ms   "
        f"overhead {ms['proxied'] - ms['direct']:6.2f} ms   (goal: under 5 ms)"
    )
    print(
        f"  of which the server's floor: /healthz {ms['healthz']:6.2f} ms, a logged-in redirect "
        f"{ms['login']:6.2f} ms; the proxying itself "
        f"{ms['proxied'] - ms['direct'] - ms['login']:6.2f} ms"
    )
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if ticks is None:
        return 0
    copied = ticks["copied"]
    assert isinstance(copied, list)
    print(f"./logs sync, {args.mb} MB with one growing file (+{args.growth} bytes per tick)")
    print(f"  first copy           {ticks['first']:>13,} bytes  {ticks['first_seconds'][0]:6.2f} s")
    print(
        f"  per tick (median)    {int(statistics.median(copied)):>13,} bytes  "
        f"{statistics.median(ticks['seconds']):6.2f} s   "
        f"(goal: only the growth, {args.growth:,} bytes; "
        f"+{containers.OVERLAP} checked before it)"
    )
    print(
        f"  whole-folder archive {ticks['archive']:>13,} bytes  "
        f"{ticks['archive_seconds'][0]:6.2f} s   (what every tick copied before)"
    )
    return 0


if __name__ == "__main__":
    main()
