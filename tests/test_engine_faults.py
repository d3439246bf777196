"""A node's Docker engine stops and starts again (an upgrade, a crash) while runs use it.

Real engines: node n2's own dockerd, in its namespace, is stopped and started (the suite's main
engine is never touched). Run under ``flock /tmp/trainhub-testbed.lock`` like the other node tests.
"""

from __future__ import annotations

import httpx

from tests import testbed
from tests.helpers import get_run, wait_for_log, wait_for_status, wait_until
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

    testbed.sh("kill", testbed.sh("cat", str(n2.pidfile("dockerd"))).stdout.strip())
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
