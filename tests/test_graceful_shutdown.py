"""SIGTERM (``docker stop``, ``systemctl stop``) leaves running runs running: the server stops
answering, ends its own work, and the next start re-attaches the runs, which complete."""

from __future__ import annotations

import threading
import time

import docker
import httpx

from tests.conftest import TOKEN, ServerFactory
from tests.helpers import history, submit, wait_for_log, wait_for_status, wait_until

TICKS = 24
SCRIPT = f"""
import os, time
os.makedirs("outputs", exist_ok=True)
for i in range({TICKS}):
    print("tick", i, flush=True)
    time.sleep(0.5)
open("outputs/result.txt", "w").write("all ticks")
print("done", flush=True)
"""


def _follow(url: str, run_id: str) -> None:
    """A client following the log, as the README's walk-through does: it must not hold the
    shutdown up (``docker stop`` kills after 10 s)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with httpx.stream(
            "GET", f"{url}/api/v1/runs/{run_id}/logs?follow=true", headers=headers, timeout=60
        ) as response:
            for _ in response.iter_bytes():
                pass
    except httpx.HTTPError:
        pass


def test_sigterm_mid_run_leaves_the_run_running_and_the_next_start_completes_it(
    make_server: ServerFactory,
) -> None:
    server = make_server()
    client = server.client()
    run = submit(client, SCRIPT)
    run_id = run["runId"]
    wait_for_log(client, run_id, "tick 2")
    follower = threading.Thread(target=_follow, args=(server.url, run_id), daemon=True)
    follower.start()
    time.sleep(0.5)

    assert server.proc is not None
    server.proc.terminate()
    server.proc.wait(timeout=10)  # what docker stop allows before SIGKILL
    assert "Application shutdown complete" in server.log_path.read_text()

    engine = docker.from_env()
    try:
        (container,) = server.containers()
        assert engine.api.inspect_container(container)["State"]["Running"]
    finally:
        engine.close()
    time.sleep(1.5)  # the script keeps printing while no server watches it
    server.start()
    client = server.client()
    done = wait_for_status(client, run_id, timeout=60)
    assert done["status"] == "Completed", done["error"]
    assert history(done) == [
        "Queued",
        "Preparing",
        "Starting",
        "Running",
        "Finalizing",
        "Completed",
    ]
    log = client.get(f"/api/v1/runs/{run_id}/logs").text
    assert log.splitlines() == [f"tick {i}" for i in range(TICKS)] + ["done"]
    assert client.get(f"/api/v1/runs/{run_id}/files/outputs/result.txt").text == "all ticks"
    wait_until(lambda: server.containers() == [], "the run's container is removed")
