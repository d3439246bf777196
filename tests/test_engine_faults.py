"""A node's Docker engine stops and starts again (an upgrade, a crash), or its disk fills up, while
runs use it.

Real engines: node n2's own dockerd, in its namespace, is stopped and started (the suite's main
engine is never touched). Run under ``flock /tmp/trainhub-testbed.lock`` like the other node tests.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import testbed
from tests.helpers import get_run, submit, wait_for_log, wait_for_status, wait_until
from tests.test_nodes import GATED_SCRIPT, _submit, release


def _node(client: httpx.Client, name: str) -> dict[str, object]:
    found: dict[str, object] = client.get(f"/api/v1/nodes/{name}").json()
    return found


def test_an_engine_restart_ends_its_runs_engine_restarted_and_a_retry_completes(
    nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    n2 = bed["n2"]
    nclient.post("/api/v1/targets", json={"name": "only-n2", "nodes": ["n2"]})
    only_n2 = '{"compute_target": "only-n2"}'
    plain = _submit(nclient, GATED_SCRIPT, spec=only_n2)
    retried = _submit(nclient, GATED_SCRIPT, spec=only_n2, max_retries="1")
    for run in (plain, retried):
        wait_for_log(nclient, str(run["runId"]), "started on n2", timeout=60)

    testbed.stop_dockerd(n2)
    try:
        # The machine stopped the scripts: said so, never "the script exited with code 143".
        ended = wait_for_status(nclient, str(plain["runId"]), timeout=60)
        assert ended["status"] == "Failed", ended
        assert ended["properties"]["reason"] == "engine_restarted"
        assert ended["error"]["message"].startswith(
            "The Docker engine of node n2 stopped or restarted while the run was running"
        )
        assert ended["properties"]["allocation"] == []
        # While its engine is down the node is Unreachable, and new runs wait for it.
        wait_until(lambda: _node(nclient, "n2")["state"] == "Unreachable", "n2 Unreachable")
        assert "Docker engine does not answer" in str(_node(nclient, "n2")["error"])
        waiting = _submit(nclient, "print('after the engine is back')", spec=only_n2)
        wait_until(
            lambda: (
                "n2 Unreachable"
                in str(get_run(nclient, str(waiting["runId"]))["properties"]["waitReason"])
            ),
            "the new run waits for n2",
        )
        assert get_run(nclient, str(retried["runId"]))["status"] in ("Running", "Queued")
        # sshd back before the engine, as after a reboot: the server reconnects, finds no engine
        # and keeps trying (it used to give the node up for good, never Ready again).
        testbed.restart_sshd(n2)
        wait_until(
            lambda: (
                "SSH answers but the Docker engine does not" in str(_node(nclient, "n2")["error"])
            ),
            "the server reconnected to n2 and found no engine",
            timeout=30,
        )
        assert _node(nclient, "n2")["state"] == "Unreachable"
    finally:
        testbed.start_dockerd(n2)

    wait_until(lambda: _node(nclient, "n2")["state"] == "Ready", "n2 Ready again", timeout=60)
    done = wait_for_status(nclient, str(waiting["runId"]), timeout=60)
    assert done["status"] == "Completed", done["error"]
    # The run with a retry left is queued again and runs a second attempt on the restarted engine.
    wait_for_log(nclient, str(retried["runId"]), "started on n2", timeout=60)
    again = wait_for_status(nclient, str(retried["runId"]), "Running", timeout=60)
    assert again["properties"]["retries"] == 1
    requeued = [e for e in again["statusHistory"][1:] if e["status"] == "Queued"]
    assert len(requeued) == 1 and "engine_restarted" in requeued[0]["detail"]
    release(bed, str(retried["runId"]))
    finished = wait_for_status(nclient, str(retried["runId"]), timeout=60)
    assert finished["status"] == "Completed", finished["error"]


@pytest.fixture
def small_node(nclient: httpx.Client, bed: dict[str, testbed.Node]) -> Iterator[testbed.Node]:
    """Node n4, whose Docker engine keeps its images and containers on a 700 MB disk of its own."""
    root = bed["n1"].root.parent / "n4"
    data_root = Path("/var/lib/docker-thn4")
    testbed.stop_node("n4", root)
    subprocess.run(["umount", "-l", str(data_root)], capture_output=True)
    data_root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700m", "tmpfs", str(data_root)], check=True)
    node = testbed.start_node("n4", 4, root, bed["n1"].client_key, gpus=0)
    try:
        testbed.add_to(nclient, node, "n4")
        nclient.post("/api/v1/targets", json={"name": "only-n4", "nodes": ["n4"]})
        yield node
    finally:
        nclient.delete("/api/v1/nodes/n4")
        testbed.stop_node("n4", root)
        subprocess.run(["umount", "-l", str(data_root)], capture_output=True)


FILL_THE_DISK = """
import os
chunk = b"x" * (1024 * 1024)
with open("/tmp/fill", "wb") as f:
    for _ in range(2000):
        f.write(chunk)
"""


def test_a_full_node_disk_fails_the_run_node_disk_full_with_the_sentence(
    nclient: httpx.Client, small_node: testbed.Node
) -> None:
    free = _node(nclient, "n4")["inventory"]["disk_free_bytes"]  # type: ignore[index]
    assert isinstance(free, int) and 0 < free < 700 * 1024 * 1024
    run = submit(nclient, FILL_THE_DISK, compute_target="only-n4", experiment="disk")
    ended = wait_for_status(nclient, run["runId"], timeout=120)
    assert ended["status"] == "Failed", ended
    assert ended["properties"]["reason"] == "node_disk_full"
    message = ended["error"]["message"]
    assert message.startswith("The node's disk is full (")
    assert " free): the script failed with code 1" in message
    assert ended["properties"]["allocation"] == []
    # The run's container (and what it wrote) is gone: the node has its space back.
    wait_until(
        lambda: (
            testbed.sh(
                "docker", "-H", f"unix://{small_node.docker_socket}", "ps", "-aq"
            ).stdout.strip()
            == ""
        ),
        "no container left on n4",
    )
    ok = submit(nclient, "print('room again')", compute_target="only-n4", experiment="disk")
    assert wait_for_status(nclient, ok["runId"], timeout=60)["status"] == "Completed"
