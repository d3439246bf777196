"""TensorFlow parameter-server runs over the test bed's two nodes (tests/testbed.py): workers and
parameter servers dealt over both, each process with its ``TF_CONFIG`` at the nodes' addresses, in a
container on each node on the nodes' network. The script is the plain-Python stand-in of
tests/tf_env.py. Run under ``flock /tmp/trainhub-testbed.lock``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests import testbed
from tests.helpers import submit, wait_for_log, wait_for_status, wait_until
from tests.test_nodes import _containers_of
from tests.tf_env import PS_SCRIPT

pytestmark = pytest.mark.docker


def _two_nodes(client: httpx.Client, **estimator: Any) -> str:
    run = submit(
        client,
        PS_SCRIPT,
        compute_target="gpu-cluster",
        node_count=2,
        distributed_training={"type": "ps", "worker_count": 2, "parameter_server_count": 2},
        experiment="tf-nodes",
        **estimator,
    )
    return str(run["runId"])


def _file(client: httpx.Client, run_id: str, path: str) -> str:
    found = client.get(f"/api/v1/runs/{run_id}/files/{path}")
    assert found.status_code == 200, (path, found.text)
    return found.text


def _log(client: httpx.Client, run_id: str) -> str:
    return client.get(f"/api/v1/runs/{run_id}/logs").text


def _nodes_of(run: dict[str, Any]) -> tuple[str, str]:
    first = run["properties"]["node"]
    return first, "n2" if first == "n1" else "n1"


def _no_containers_left(bed: dict[str, testbed.Node], run_id: str) -> None:
    wait_until(
        lambda: _containers_of(bed, run_id) == {"n1": "", "n2": ""},
        "the run's containers are gone from both nodes",
        timeout=30,
    )


def test_workers_and_parameter_servers_over_two_nodes_reach_each_other(
    nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    # Worker 1 reaches the parameter servers after worker 0, the first node's only worker, has
    # ended: the first node's parameter server serves on for the other node.
    run_id = _two_nodes(nclient, script_params={"--after-chief": ""})
    done = wait_for_status(nclient, run_id, timeout=180)
    log = _log(nclient, run_id)
    assert done["status"] == "Completed", (done["error"], log)
    first, other = _nodes_of(done)
    addresses = (bed[first].address, bed[other].address)
    seen = [json.loads(_file(nclient, run_id, f"outputs/worker-{i}.json")) for i in range(2)]
    cluster = seen[0]["tf_config"]["cluster"]
    # Round-robin, workers first: worker 0 and ps 0 on the first node, worker 1 and ps 1 on the other.
    hosts = {kind: [a.rsplit(":", 1)[0] for a in cluster[kind]] for kind in cluster}
    assert hosts == {"worker": list(addresses), "ps": list(addresses)}
    ports = [a.rsplit(":", 1)[1] for a in cluster["worker"] + cluster["ps"]]
    assert len(set(ports)) == 4
    for index, worker in enumerate(seen):  # worker 1's file came from the other node
        assert worker["node"] == (first, other)[index]
        assert worker["tf_config"] == {
            "cluster": cluster,
            "task": {"type": "worker", "index": index},
            "environment": "cloud",
        }
        assert worker["answers"] == {cluster["ps"][0]: "ps 0", cluster["ps"][1]: "ps 1"}
    # Every process's own log, from both nodes; the driver log holds the first node's processes.
    for kind in ("worker", "ps"):
        for index, node in enumerate((first, other)):
            own = _file(nclient, run_id, f"logs/tensorflow/{kind}.{index}/stdout")
            assert own.startswith(f"{kind} {index} at {cluster[kind][index]} on {node}: ")
    assert f"[worker 0] worker 0 at {cluster['worker'][0]} on {first}" in log
    assert "[worker 1]" not in log
    assert "worker 1: the chief has ended" in _file(
        nclient, run_id, "logs/tensorflow/worker.1/stdout"
    )
    _no_containers_left(bed, run_id)


def test_a_failing_worker_on_the_second_node_ends_the_run_on_both(
    nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    run_id = _two_nodes(nclient, script_params={"--fail-worker": 1})
    done = wait_for_status(nclient, run_id, timeout=120)  # worker 0 would wait 600 s
    assert done["status"] == "Failed", (done, _log(nclient, run_id))
    assert done["error"]["reason"] == "exit_code"
    other = _nodes_of(done)[1]
    message = done["error"]["message"]
    assert f"worker 1 (node {other}) failed first, with exit code 1" in message
    assert "worker 1 gives up" in message
    assert _file(nclient, run_id, "logs/tensorflow/worker.1/stderr").endswith("worker 1 gives up\n")
    own = _file(nclient, run_id, "logs/tensorflow/worker.0/stdout")  # stopped on the first node
    assert own.endswith("worker 0 waits\nworker 0 stopped by SIGTERM\n"), own
    _no_containers_left(bed, run_id)


def test_cancel_stops_every_process_on_both_nodes(
    nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    run_id = _two_nodes(nclient, script_params={"--hold": ""})
    wait_for_log(nclient, run_id, "[worker 0] worker 0 waits", timeout=120)
    run = nclient.get(f"/api/v1/runs/{run_id}").json()
    other = bed[_nodes_of(run)[1]]
    container = _containers_of(bed, run_id, (other.name,))[other.name]

    def waits() -> bool:  # worker 1, on the other node
        found = testbed.sh(
            "docker", "-H", f"unix://{other.docker_socket}", "exec", container,
            "cat", "logs/tensorflow/worker.1/stdout", check=False,
        )  # fmt: skip
        return "worker 1 waits" in found.stdout

    wait_until(waits, "worker 1 waits on the other node", timeout=60)
    assert nclient.post(f"/api/v1/runs/{run_id}/cancel").status_code == 200
    done = wait_for_status(nclient, run_id, timeout=60)
    assert done["status"] == "Canceled", done
    assert "failed first" not in _log(nclient, run_id)
    for index in range(2):  # both nodes' launchers passed SIGTERM on
        own = _file(nclient, run_id, f"logs/tensorflow/worker.{index}/stdout")
        assert own.endswith(f"worker {index} waits\nworker {index} stopped by SIGTERM\n"), own
    _no_containers_left(bed, run_id)
