"""PyTorch distributed runs over the test bed's two nodes (tests/testbed.py): ``torchrun`` in a container
on each node, meeting at the first node's address, with the real torch (a CPU wheel,
tests/torch_env.py). Every node builds the torch environment's image once (the first test) and the
others reuse it. Run under ``flock /tmp/trainhub-testbed.lock``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import testbed
from tests.conftest import TOKEN, Server, start_server
from tests.helpers import submit, wait_for_log, wait_for_status, wait_until
from tests.test_nodes import _containers_of
from tests.test_sdk import write_project
from tests.torch_env import ALLREDUCE, TORCH, torch_settings

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def torch_cluster(
    tmp_path_factory: pytest.TempPathFactory, bed: dict[str, testbed.Node]
) -> Iterator[Server]:
    """A server of its own on the bed's nodes, offering the torch wheel folder to its builds."""
    srv = start_server(
        tmp_path_factory,
        "torch-nodes-data",
        ssh_keepalive_seconds="1",
        node_lost_grace_seconds="6",
        sync_interval_seconds="0.5",
        **torch_settings(),
    )
    client = srv.client()
    for node in bed.values():
        testbed.add_to(client, node)
    client.post("/api/v1/targets", json={"name": "gpu-cluster", "nodes": ["n1", "n2"]})
    yield srv
    instance = srv.instance_id()
    srv.cleanup()
    for node in bed.values():  # containers the server left on the nodes (a failed test's)
        docker_cli = f"docker -H unix://{node.docker_socket}"
        subprocess.run(
            f"{docker_cli} ps -aq --filter label=org.trainhub.instance={instance}"
            f" | xargs -r {docker_cli} rm -f",
            shell=True,
            capture_output=True,
        )


@pytest.fixture
def tclient(torch_cluster: Server) -> httpx.Client:
    return torch_cluster.client()


def _two_nodes(client: httpx.Client, script: str, **estimator: Any) -> str:
    run = submit(
        client,
        script,
        compute_target="gpu-cluster",
        node_count=2,
        pip_packages=[TORCH],
        experiment="torch-nodes",
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
    """(first node, other node) of a finished two-node run."""
    first = run["properties"]["node"]
    return first, "n2" if first == "n1" else "n1"


def _no_containers_left(bed: dict[str, testbed.Node], run_id: str) -> None:
    wait_until(
        lambda: _containers_of(bed, run_id) == {"n1": "", "n2": ""},
        "the run's containers are gone from both nodes",
        timeout=30,
    )


@pytest.mark.slow  # each node builds the torch environment's image the first time
def test_a_gloo_allreduce_over_two_nodes_of_two_processes_with_every_nodes_outputs(
    torch_cluster: Server, tclient: httpx.Client, bed: dict[str, testbed.Node], tmp_path: Path
) -> None:
    from trainhub import Experiment, Gloo, PyTorch, Workspace

    write_project(tmp_path / "proj", {"train.py": ALLREDUCE})
    estimator = PyTorch(
        source_directory=str(tmp_path / "proj"),
        entry_script="train.py",
        compute_target="gpu-cluster",
        node_count=2,
        process_count_per_node=2,
        distributed_training=Gloo(),
        pip_packages=[TORCH],
    )
    run = Experiment(Workspace(torch_cluster.url, token=TOKEN), "torch-nodes").submit(estimator)
    done = wait_for_status(tclient, run.id, timeout=900)
    log = _log(tclient, run.id)
    assert done["status"] == "Completed", (done["error"], log)
    first, other = _nodes_of(done)
    address = bed[first].address
    assert json.loads(_file(tclient, run.id, "outputs/world.json")) == {"sum": 10, "size": 4}
    envs = [json.loads(_file(tclient, run.id, f"outputs/env-{rank}.json")) for rank in range(4)]
    port = envs[0]["MASTER_PORT"]
    for rank, env in enumerate(envs):  # ranks 2 and 3 wrote theirs on the other node
        assert env == {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank % 2),
            "WORLD_SIZE": "4",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": address,
            "MASTER_PORT": port,
            "AZ_BATCHAI_PYTORCH_INIT_METHOD": f"tcp://{address}:{port}",
            "AZ_BATCHAI_TASK_INDEX": str(rank),
            "AZ_BATCH_MASTER_NODE": f"{address}:{port}",
            "AZ_BATCHAI_MPI_MASTER_NODE": address,
            "TRAINHUB_DIST_BACKEND": "gloo",
            "TRAINHUB_NODE": first if rank < 2 else other,
        }
        own = _file(tclient, run.id, f"logs/torchrun/rank.{rank}/stdout")
        assert own == f"rank {rank} of 4: allreduce 10\n"
    # The driver log is the first node's: its processes' output.
    assert "rank 0 of 4: allreduce 10" in log and "rank 2 of 4" not in log
    # Both nodes wrote outputs/node.txt: the first node's copy is kept, and the log says so.
    assert _file(tclient, run.id, "outputs/node.txt") == first
    assert _file(tclient, run.id, f"outputs/node-{other}.txt") == other
    assert "1 file(s) were written on more than one node" in log
    assert (
        f"outputs/node.txt: kept from {first} (node rank 0), not from {other} (node rank 1)" in log
    )
    _no_containers_left(bed, run.id)


@pytest.mark.slow
def test_the_older_distributed_backend_spelling_runs_over_both_nodes(
    tclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    run_id = _two_nodes(tclient, ALLREDUCE, distributed_backend="gloo")
    done = wait_for_status(tclient, run_id, timeout=600)
    assert done["status"] == "Completed", (done["error"], _log(tclient, run_id))
    assert json.loads(_file(tclient, run_id, "outputs/world.json")) == {"sum": 3, "size": 2}
    second = json.loads(_file(tclient, run_id, "outputs/env-1.json"))
    assert second["TRAINHUB_DIST_BACKEND"] == "gloo"
    assert second["TRAINHUB_NODE"] == _nodes_of(done)[1]
    assert done["runDefinition"]["communicator"] == "Gloo"


# Process 3 (on the second node) gives up; the others would wait forever.
FAILING = """
import os, sys, time
rank = int(os.environ["RANK"])
print(f"rank {rank} started", flush=True)
if rank == 3:
    time.sleep(1)
    print("rank 3 is about to give up", flush=True)
    sys.exit("rank 3 gives up")
while True:
    time.sleep(0.1)
"""


@pytest.mark.slow
def test_a_failing_process_on_the_second_node_ends_the_run_on_both_with_its_message(
    tclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    run_id = _two_nodes(
        tclient, FAILING, distributed_training={"type": "gloo", "process_count_per_node": 2}
    )
    done = wait_for_status(tclient, run_id, timeout=600)
    assert done["status"] == "Failed", done
    assert done["error"]["reason"] == "exit_code"
    other = _nodes_of(done)[1]
    message = done["error"]["message"]
    assert f"process 3 (node {other}, local rank 1) failed first, with exit code 1" in message
    assert "rank 3 is about to give up" in message and "rank 3 gives up" in message
    assert _file(tclient, run_id, "logs/torchrun/rank.3/stderr") == "rank 3 gives up\n"
    assert _file(tclient, run_id, "logs/torchrun/rank.0/stdout") == "rank 0 started\n"
    assert done["properties"]["allocation"] == []
    _no_containers_left(bed, run_id)


# Every process says it waits, and says so again when SIGTERM reaches it.
STOPPABLE = """
import os, signal, sys, time
rank = int(os.environ["RANK"])

def stopped(signum, frame):
    print(f"rank {rank} stopped by SIGTERM", flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, stopped)
print(f"rank {rank} waits", flush=True)
while True:
    time.sleep(0.1)
"""


def _every_process_waits(client: httpx.Client, bed: dict[str, testbed.Node], run_id: str) -> None:
    """The first node's processes in the driver log, the other node's in their own files there."""
    wait_for_log(client, run_id, "rank 1 waits", timeout=600)
    wait_for_log(client, run_id, "rank 0 waits")
    run = client.get(f"/api/v1/runs/{run_id}").json()
    other = bed[_nodes_of(run)[1]]
    container = _containers_of(bed, run_id, (other.name,))[other.name]

    def says(rank: int) -> bool:
        found = testbed.sh(
            "docker", "-H", f"unix://{other.docker_socket}", "exec", container,
            "cat", f"logs/torchrun/rank.{rank}/stdout", check=False,
        )  # fmt: skip
        return found.stdout == f"rank {rank} waits\n"

    wait_until(lambda: says(2) and says(3), "the other node's processes wait", timeout=60)


def _every_process_was_stopped(client: httpx.Client, run_id: str) -> None:
    for rank in range(4):
        own = _file(client, run_id, f"logs/torchrun/rank.{rank}/stdout")
        assert own == f"rank {rank} waits\nrank {rank} stopped by SIGTERM\n", (rank, own)


@pytest.mark.slow
def test_cancel_stops_every_process_on_both_nodes(
    tclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    run_id = _two_nodes(
        tclient, STOPPABLE, distributed_training={"type": "gloo", "process_count_per_node": 2}
    )
    _every_process_waits(tclient, bed, run_id)
    assert tclient.post(f"/api/v1/runs/{run_id}/cancel").status_code == 200
    done = wait_for_status(tclient, run_id, timeout=90)
    assert done["status"] == "Canceled", done
    _every_process_was_stopped(tclient, run_id)
    assert "failed first" not in _log(tclient, run_id)
    _no_containers_left(bed, run_id)


@pytest.mark.slow
def test_a_run_past_its_max_run_duration_is_stopped_on_both_nodes(
    tclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    run_id = _two_nodes(
        tclient,
        STOPPABLE,
        distributed_training={"type": "nccl", "process_count_per_node": 2},
        max_run_duration_seconds=30,
    )
    _every_process_waits(tclient, bed, run_id)
    done = wait_for_status(tclient, run_id, timeout=120)
    assert done["status"] == "Failed", done
    assert done["properties"]["reason"] == "timeout"
    assert "max_run_duration_seconds (30 s)" in done["error"]["message"]
    _every_process_was_stopped(tclient, run_id)
    _no_containers_left(bed, run_id)
