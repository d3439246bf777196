"""Multi-node MPI runs on the test bed's nodes (tests/testbed.py, fixtures in tests/conftest.py): what
the README promises about them beyond a plain run: a server restart in the middle, the run's time
limit, and the network Open MPI is told to use."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import testbed
from tests.conftest import Server, start_server
from tests.helpers import get_run, submit, wait_for_status, wait_until
from tests.test_nodes import GATE, _containers_of, release

# Every rank says hello, then waits for the test's go (release()) in its own container, then they
# meet once more and rank 0 writes who was where.
MPI_GATED = f"""
import json, os, time
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
me = {{"rank": rank, "node": os.environ["TRAINHUB_NODE"],
      "btl": os.environ.get("OMPI_MCA_btl_tcp_if_include"),
      "oob": os.environ.get("OMPI_MCA_oob_tcp_if_include")}}
print("rank", rank, "of", size, "on", me["node"], flush=True)
while not os.path.exists("{GATE}"):
    time.sleep(0.1)
world = comm.gather(me, root=0)
print("rank", rank, "done", flush=True)
if rank == 0:
    os.makedirs("outputs", exist_ok=True)
    json.dump(world, open("outputs/world.json", "w"))
"""


def _submit_two_node_run(client: httpx.Client, **estimator: Any) -> str:
    run = submit(
        client,
        MPI_GATED,
        compute_target="gpu-cluster",
        node_count=2,
        distributed_training={"type": "mpi", "process_count_per_node": 2},
        experiment="mpi-nodes",
        **estimator,
    )
    return str(run["runId"])


def _log(client: httpx.Client, run_id: str) -> str:
    return client.get(f"/api/v1/runs/{run_id}/logs").text


def _all_ranks_said_hello(client: httpx.Client, run_id: str) -> None:
    wait_until(
        lambda: all(f"rank {r} of 4 on n" in _log(client, run_id) for r in range(4)),
        "every rank has said hello",
        timeout=90,
    )


def _world(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    found = client.get(f"/api/v1/runs/{run_id}/files/outputs/world.json")
    assert found.status_code == 200, found.text
    world: list[dict[str, Any]] = json.loads(found.content)
    return world


def _no_containers_left(bed: dict[str, testbed.Node], run_id: str) -> None:
    wait_until(
        lambda: _containers_of(bed, run_id) == {"n1": "", "n2": ""},
        "the run's containers are gone from both nodes",
        timeout=30,
    )


def test_a_two_node_mpi_run_survives_a_server_kill(
    cluster: Server, bed: dict[str, testbed.Node]
) -> None:
    client = cluster.client()
    run_id = _submit_two_node_run(client)
    _all_ranks_said_hello(client, run_id)
    assert all(_containers_of(bed, run_id).values())
    cluster.kill()  # SIGKILL: no shutdown code runs; the ranks wait for their go meanwhile
    cluster.start()
    client = cluster.client()
    wait_until(
        lambda: all(client.get(f"/api/v1/nodes/{n}").json()["state"] == "Ready" for n in bed),
        "the restarted server reaches both nodes again",
        timeout=60,
    )
    assert get_run(client, run_id)["status"] == "Running"
    release(bed, run_id)
    done = wait_for_status(client, run_id, timeout=120)
    log = _log(client, run_id)
    assert done["status"] == "Completed", (done["error"], log)
    assert done["properties"]["retries"] == 0
    assert [e["status"] for e in done["statusHistory"]].count("Queued") == 1
    world = _world(client, run_id)
    assert [w["rank"] for w in world] == [0, 1, 2, 3]
    assert sorted(w["node"] for w in world) == ["n1", "n1", "n2", "n2"]
    for rank in range(4):  # the whole log, each line once, though the server read it twice
        assert log.count(f"rank {rank} of 4 on n") == 1 and log.count(f"rank {rank} done") == 1
        own = client.get(f"/api/v1/runs/{run_id}/files/logs/mpi/1/rank.{rank}/stdout")
        assert own.status_code == 200 and own.text.startswith(f"rank {rank} of 4 on n")
        assert f"rank {rank} done" in own.text
    # The other node's sshd wrote its log into the run's logs: what to read when it was not reached.
    sshd = [client.get(f"/api/v1/runs/{run_id}/files/logs/mpi/sshd-{n}.txt") for n in bed]
    assert [r.status_code for r in sshd].count(200) == 1  # the node that did not run mpirun
    assert any("Accepted publickey for root" in r.text for r in sshd if r.status_code == 200)
    assert done["properties"]["allocation"] == []
    _no_containers_left(bed, run_id)


def test_a_two_node_run_past_its_max_run_duration_fails_with_timeout_on_every_node(
    nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    run_id = _submit_two_node_run(nclient, max_run_duration_seconds=15)
    _all_ranks_said_hello(nclient, run_id)  # never released: only the time limit ends it
    assert all(_containers_of(bed, run_id).values())
    done = wait_for_status(nclient, run_id, timeout=90)
    assert done["status"] == "Failed", done
    assert done["properties"]["reason"] == "timeout"
    assert "max_run_duration_seconds (15 s)" in done["error"]["message"]
    assert done["properties"]["allocation"] == []
    assert all(n["allocatedGpus"] == [] for n in nclient.get("/api/v1/nodes").json()["nodes"])
    _no_containers_left(bed, run_id)


@pytest.fixture(scope="module")
def mpi_network_server(
    tmp_path_factory: pytest.TempPathFactory, bed: dict[str, testbed.Node]
) -> Iterator[Server]:
    """A second server on the same nodes, with TRAINHUB_MPI_NETWORK set to the nodes' network (the
    shared one stays as it is; this one only costs a start and two node registrations)."""
    srv = start_server(
        tmp_path_factory,
        "mpi-network-data",
        ssh_keepalive_seconds="1",
        sync_interval_seconds="0.5",
        mpi_network=f"{testbed.SUBNET}.0/24",
    )
    client = srv.client()
    for node in bed.values():
        testbed.add_to(client, node)
    client.post("/api/v1/targets", json={"name": "gpu-cluster", "nodes": ["n1", "n2"]})
    yield srv
    srv.cleanup()


def test_the_mpi_network_setting_reaches_mpirun_and_the_run_completes(
    mpi_network_server: Server, bed: dict[str, testbed.Node]
) -> None:
    client = mpi_network_server.client()
    run_id = _submit_two_node_run(client)
    _all_ranks_said_hello(client, run_id)
    release(bed, run_id)
    done = wait_for_status(client, run_id, timeout=120)
    assert done["status"] == "Completed", (done["error"], _log(client, run_id))
    world = _world(client, run_id)
    assert sorted(w["node"] for w in world) == ["n1", "n1", "n2", "n2"]
    # What mpirun was told, as every rank on both nodes sees it (Open MPI exports --mca values).
    network = f"{testbed.SUBNET}.0/24"
    assert {(w["btl"], w["oob"]) for w in world} == {(network, network)}
    _no_containers_left(bed, run_id)


def test_an_mpi_network_no_node_has_is_reported_by_open_mpi_in_the_runs_log(
    mpi_network_server: Server, bed: dict[str, testbed.Node]
) -> None:
    """Open MPI ignores a network that matches no interface, and says so in the run's log: the run
    still completes, over whatever network Open MPI picks."""
    mpi_network_server.stop()
    mpi_network_server.env["TRAINHUB_MPI_NETWORK"] = "10.99.0.0/24"
    mpi_network_server.start()
    client = mpi_network_server.client()
    wait_until(
        lambda: all(client.get(f"/api/v1/nodes/{n}").json()["state"] == "Ready" for n in bed),
        "the restarted server reaches both nodes again",
        timeout=60,
    )
    run_id = _submit_two_node_run(client)
    _all_ranks_said_hello(client, run_id)
    release(bed, run_id)
    done = wait_for_status(client, run_id, timeout=120)
    log = _log(client, run_id)
    assert done["status"] == "Completed", (done["error"], log)
    assert "An invalid value was given for btl_tcp_if_include" in log
    assert "Did not find interface matching this subnet" in log
    assert {(w["btl"], w["oob"]) for w in _world(client, run_id)} == {
        ("10.99.0.0/24", "10.99.0.0/24")
    }
    _no_containers_left(bed, run_id)
