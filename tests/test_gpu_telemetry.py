"""GPU telemetry: the server asks each node's nvidia-smi how busy the GPUs that runs hold are and
keeps the readings per run as system metrics. The test bed's nodes have a stand-in nvidia-smi
whose readings a test sets (``Node.set_gpu_usage``) and which counts how often it was asked; real
server, real sshd nodes, real engines there. Pure parts (parsing, attribution, the idle hint, the
store) are tested without them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import testbed
from tests.conftest import Server, start_server
from tests.helpers import TERMINAL, get_run, submit, wait_for_status, wait_until
from trainhub.nodes.telemetry import (
    Reading,
    attribute,
    hint_from_counts,
    idle_hint,
    parse_usage,
)
from trainhub.store import Database
from trainhub.store import telemetry as store

# Holds its GPUs until the test releases it.
HOLD = """
import os, time
print("holding", flush=True)
while not os.path.exists("/tmp/release"):
    time.sleep(0.1)
"""
TWO_GPUS = {"type": "mpi", "process_count_per_node": 2}


# Pure parts ---------------------------------------------------------------------------------
def test_parse_usage_reads_nvidia_smis_csv_and_what_a_gpu_cannot_say() -> None:
    csv = "0, 35, 1024\n1, [N/A], [Not Supported]\n\nNo devices were found\n2, 100, 40536\n"
    assert parse_usage(csv) == {
        0: Reading(0, 35.0, 1024.0),
        1: Reading(1, None, None),
        2: Reading(2, 100.0, 40536.0),
    }


def test_each_held_gpu_reading_goes_to_the_run_holding_it_and_no_other() -> None:
    holders = {"n1": {0: "run-a", 2: "run-b", 3: "run-b"}, "n2": {0: "run-c"}}
    readings = {
        "n1": {i: Reading(i, 10.0 * i, 100.0 * i) for i in range(4)},
        # n2 gave no answer this tick: run-c gets nothing rather than a made-up value.
    }
    samples = attribute(holders, readings, 123.0)
    assert [(s.run_id, s.node, s.gpu, s.utilization, s.memory_used) for s in samples] == [
        ("run-a", "n1", 0, 0.0, 0.0),
        ("run-b", "n1", 2, 20.0, 200.0),
        ("run-b", "n1", 3, 30.0, 300.0),
    ]
    assert {s.at for s in samples} == {123.0}


def test_idle_hint_names_the_gpus_that_sat_idle_most_of_the_run() -> None:
    assert idle_hint({"0": [3, 2, 50, 1, 0, 4, 9, 8, 7, 6]}) == (
        "GPU 0 was under 10% busy for 90% of the run"
    )
    assert idle_hint({"0": [0, 0, 0, 0, 0], "1": [90, 95, 99, 97, 98], "2": [1, 2, 3, 80, 5]}) == (
        "GPUs 0 and 2 were under 10% busy for at least 80% of the run"
    )
    assert idle_hint({"n1:0": [1, 1, 1], "n2:0": [2, 2, 2], "n2:1": [0, 0, 0]}) == (
        "GPUs n1:0, n2:0 and n2:1 were under 10% busy for at least 100% of the run"
    )


def test_no_idle_hint_for_busy_gpus_or_too_few_samples() -> None:
    assert idle_hint({"0": [80, 90, 5, 2, 95]}) is None  # idle 40% of the time
    assert idle_hint({"0": [10, 10, 10, 10]}) is None  # 10% is not under 10%
    assert idle_hint({"0": [0, 0]}) is None  # two samples say nothing yet
    assert idle_hint({}) is None
    # 199 of 200 samples idle is 99%, never rounded up to 100%.
    assert hint_from_counts({"0": (199, 200)}) == "GPU 0 was under 10% busy for 99% of the run"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "trainhub.db")
    yield database
    database.close()


def _allocate(db: Database, run_id: str, node: str, gpus: list[int]) -> None:
    db.write_sync(
        lambda conn: conn.table("allocations").insert(
            {"run_id": run_id, "node": node, "gpus": str(gpus), "slots": 0, "created_at": 0.0}
        )
    )


def _free(db: Database, run_id: str) -> None:
    db.write_sync(lambda conn: conn.execute("delete from allocations where run_id = ?", [run_id]))


def test_samples_are_kept_only_for_a_run_still_holding_that_gpu(db: Database) -> None:
    _allocate(db, "a", "n1", [0])
    _allocate(db, "b", "n1", [1, 2])
    _allocate(db, "c", "n2", [])
    assert db.read_sync(store.gpu_holders) == {"n1": {0: "a", 1: "b", 2: "b"}}
    first = [
        store.Sample("a", "n1", 0, 1.0, 5.0, 10.0),
        store.Sample("b", "n1", 1, 1.0, 50.0, 20.0),
    ]
    assert db.write_sync(lambda conn: store.add_samples(conn, first)) == 2
    # Read before run a ended and GPU 0 went to run d: nothing of that reading is kept for a.
    _free(db, "a")
    _allocate(db, "d", "n1", [0])
    late = [store.Sample("a", "n1", 0, 2.0, 6.0, 11.0), store.Sample("b", "n1", 1, 2.0, 60.0, 21.0)]
    assert db.write_sync(lambda conn: store.add_samples(conn, late)) == 1

    assert db.read_sync(lambda conn: store.series(conn, "a")) == {
        "gpu/0/utilization": [{"step": 0, "at": 1.0, "value": 5.0}],
        "gpu/0/memory_used": [{"step": 0, "at": 1.0, "value": 10.0}],
    }
    assert db.read_sync(lambda conn: store.series(conn, "b")) == {
        "gpu/1/utilization": [
            {"step": 0, "at": 1.0, "value": 50.0},
            {"step": 1, "at": 2.0, "value": 60.0},
        ],
        "gpu/1/memory_used": [
            {"step": 0, "at": 1.0, "value": 20.0},
            {"step": 1, "at": 2.0, "value": 21.0},
        ],
    }
    assert db.read_sync(lambda conn: store.series(conn, "d")) == {}


def test_a_run_on_two_nodes_names_its_gpus_by_node(db: Database) -> None:
    _allocate(db, "mpi", "n1", [3])
    _allocate(db, "mpi", "n2", [3])
    samples = [store.Sample("mpi", n, 3, 1.0, u, 1.0) for n, u in (("n1", 1.0), ("n2", 99.0))]
    db.write_sync(lambda conn: store.add_samples(conn, samples))
    names = sorted(db.read_sync(lambda conn: store.series(conn, "mpi")))
    assert names == [
        "gpu/n1:3/memory_used",
        "gpu/n1:3/utilization",
        "gpu/n2:3/memory_used",
        "gpu/n2:3/utilization",
    ]
    assert db.read_sync(lambda conn: store.idle_counts(conn, "mpi", 10.0)) == {
        "n1:3": (1, 1),
        "n2:3": (0, 1),
    }


def test_a_long_series_is_read_as_averages_of_consecutive_samples(db: Database) -> None:
    _allocate(db, "long", "n1", [0])
    samples = [store.Sample("long", "n1", 0, float(i), float(i % 4), 0.0) for i in range(100)]
    db.write_sync(lambda conn: store.add_samples(conn, samples))
    full = db.read_sync(lambda conn: store.series(conn, "long"))["gpu/0/utilization"]
    assert [p["value"] for p in full] == [float(i % 4) for i in range(100)]
    points = db.read_sync(lambda conn: store.series(conn, "long", max_points=25))
    utilization = points["gpu/0/utilization"]
    assert len(utilization) == 25
    assert utilization[0] == {"step": 0, "at": 0.0, "value": 1.5}  # (0 + 1 + 2 + 3) / 4
    assert [p["step"] for p in utilization] == list(range(0, 100, 4))
    # Counted by SQLite: utilisation 0 is under 10% in every sample.
    assert db.read_sync(lambda conn: store.idle_counts(conn, "long", 10.0)) == {"0": (100, 100)}
    assert db.read_sync(lambda conn: store.idle_counts(conn, "long", 1.0)) == {"0": (25, 100)}


# On the test bed ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sampled(
    tmp_path_factory: pytest.TempPathFactory, bed: dict[str, testbed.Node]
) -> Iterator[Server]:
    """A server of its own sampling every 0.3 s, with the test bed's n1 (4 GPUs) and n2 (2)."""
    srv = start_server(tmp_path_factory, "telemetry-data", gpu_sample_seconds="0.3")
    try:
        client = srv.client()
        for node in bed.values():
            testbed.add_to(client, node)
            client.post("/api/v1/targets", json={"name": f"only-{node.name}", "nodes": [node.name]})
        yield srv
    finally:
        srv.cleanup()
        for node in bed.values():
            node.set_gpu_usage({})


@pytest.fixture
def sclient(sampled: Server) -> httpx.Client:
    return sampled.client()


Held = list[tuple[httpx.Client, str]]


@pytest.fixture
def held(bed: dict[str, testbed.Node]) -> Iterator[Held]:
    """Runs a test holds: any still going when it ends are released and waited for."""
    runs: Held = []
    yield runs
    for client, run_id in runs:
        if get_run(client, run_id)["status"] not in TERMINAL:
            client.post(f"/api/v1/runs/{run_id}/cancel")
            wait_for_status(client, run_id)


def _hold(client: httpx.Client, held: Held, node: str, **estimator: Any) -> dict[str, Any]:
    """A run on ``node`` that holds what it was given until released; once it runs."""
    run = submit(client, HOLD, compute_target=f"only-{node}", experiment="telemetry", **estimator)
    held.append((client, run["runId"]))
    return wait_for_status(client, run["runId"], "Running", timeout=60)


def _release(node: testbed.Node, run_id: str) -> None:
    socket = f"unix://{node.docker_socket}"
    found = testbed.sh(
        "docker", "-H", socket, "ps", "-q", "--filter", f"label=org.trainhub.run_id={run_id}"
    ).stdout.split()
    assert len(found) == 1, found
    testbed.sh("docker", "-H", socket, "exec", found[0], "touch", "/tmp/release")


def _gpus(client: httpx.Client, run_id: str) -> list[int]:
    (allocation,) = get_run(client, run_id)["properties"]["allocation"]
    return list(allocation["gpus"])


def _system(client: httpx.Client, run_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/runs/{run_id}/system-metrics")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _values(client: httpx.Client, run_id: str, name: str) -> list[float]:
    return [p["value"] for p in _system(client, run_id)["series"].get(name, [])]


def _wait_for_points(client: httpx.Client, run_id: str, name: str, count: int) -> None:
    wait_until(
        lambda: len(_values(client, run_id, name)) >= count,
        f"{count} points of {name} for {run_id}",
        timeout=30,
    )


def test_a_gpu_run_keeps_what_nvidia_smi_said_about_its_own_gpus(
    sclient: httpx.Client, bed: dict[str, testbed.Node], held: Held
) -> None:
    n1 = bed["n1"]
    n1.set_gpu_usage({0: (11, 1100), 1: (22, 2200), 2: (33, 3300), 3: (44, 4400)})
    one = _hold(sclient, held, "n1", use_gpu=True)["runId"]
    two = _hold(sclient, held, "n1", use_gpu=True, distributed_training=TWO_GPUS)["runId"]
    assert (_gpus(sclient, one), _gpus(sclient, two)) == ([0], [1, 2])
    _wait_for_points(sclient, two, "gpu/1/utilization", 3)
    _wait_for_points(sclient, one, "gpu/0/utilization", 3)

    # Each run has series for exactly the GPUs of its allocation, with those GPUs' readings.
    assert sorted(_system(sclient, one)["series"]) == ["gpu/0/memory_used", "gpu/0/utilization"]
    assert sorted(_system(sclient, two)["series"]) == [
        "gpu/1/memory_used",
        "gpu/1/utilization",
        "gpu/2/memory_used",
        "gpu/2/utilization",
    ]
    assert set(_values(sclient, one, "gpu/0/utilization")) == {11}
    assert set(_values(sclient, one, "gpu/0/memory_used")) == {1100}
    assert set(_values(sclient, two, "gpu/1/utilization")) == {22}
    assert set(_values(sclient, two, "gpu/2/memory_used")) == {3300}
    points = _system(sclient, two)["series"]["gpu/2/utilization"]
    assert [p["step"] for p in points] == list(range(len(points)))
    assert all(p["timeUtc"].endswith("Z") for p in points)

    # Sampled as it goes: what GPU 2 does now shows up in the run's later points.
    n1.set_gpu_usage({0: (11, 1100), 1: (22, 2200), 2: (95, 39000)})
    wait_until(
        lambda: _values(sclient, two, "gpu/2/utilization")[-1] == 95,
        "GPU 2's new reading in run two's series",
    )
    assert _values(sclient, two, "gpu/2/memory_used")[-1] == 39000

    # One nvidia-smi call per node per tick, not one per run: the two runs there share each call.
    asked, kept = n1.usage_queries(), len(_values(sclient, one, "gpu/0/utilization"))
    _wait_for_points(sclient, one, "gpu/0/utilization", kept + 6)
    asked_since = n1.usage_queries() - asked
    kept_since = len(_values(sclient, one, "gpu/0/utilization")) - kept
    assert asked_since <= kept_since + 2, (asked_since, kept_since)

    for run_id in (one, two):
        _release(n1, run_id)
        assert wait_for_status(sclient, run_id)["status"] == "Completed"
    # The series stay with the finished run.
    assert set(_values(sclient, one, "gpu/0/utilization")) == {11}


def test_nvidia_smi_is_asked_only_on_nodes_where_runs_hold_gpus(
    sclient: httpx.Client, bed: dict[str, testbed.Node], held: Held
) -> None:
    n1, n2 = bed["n1"], bed["n2"]
    nodes = {n["name"]: n for n in sclient.get("/api/v1/nodes").json()["nodes"]}
    assert nodes["n1"]["allocatedGpus"] == [] and nodes["n2"]["allocatedGpus"] == []
    cpu_run = _hold(sclient, held, "n1")["runId"]  # no GPU: never a reason to ask
    gpu_run = _hold(sclient, held, "n2", use_gpu=True)["runId"]
    # Once n2 was asked three more times, n1 (holding a CPU run only) was not asked once.
    on_n1, on_n2 = n1.usage_queries(), n2.usage_queries()
    wait_until(lambda: n2.usage_queries() >= on_n2 + 3, "three GPU samples on n2")
    assert n1.usage_queries() == on_n1
    assert _system(sclient, cpu_run)["series"] == {}

    _release(n2, gpu_run)
    assert wait_for_status(sclient, gpu_run)["status"] == "Completed"
    # Now no run holds a GPU on n2: once a GPU run on n1 was sampled three times, ticks after
    # n2's run ended have come and gone, and none asked n2.
    gpu_on_n1 = _hold(sclient, held, "n1", use_gpu=True)["runId"]
    wait_until(lambda: n1.usage_queries() > on_n1, "a GPU sample on n1")
    after = n2.usage_queries()
    start = n1.usage_queries()
    wait_until(lambda: n1.usage_queries() >= start + 3, "three more GPU samples on n1")
    assert n2.usage_queries() == after
    for node, run_id in ((n1, cpu_run), (n1, gpu_on_n1)):
        _release(node, run_id)
        assert wait_for_status(sclient, run_id)["status"] == "Completed"


def test_a_run_whose_gpu_sat_idle_gets_a_hint_and_a_busy_one_none(
    sclient: httpx.Client, bed: dict[str, testbed.Node], held: Held
) -> None:
    n2 = bed["n2"]
    n2.set_gpu_usage({0: (3, 500), 1: (87, 30000)})
    idle = _hold(sclient, held, "n2", use_gpu=True)["runId"]
    busy = _hold(sclient, held, "n2", use_gpu=True)["runId"]
    assert (_gpus(sclient, idle), _gpus(sclient, busy)) == ([0], [1])
    _wait_for_points(sclient, busy, "gpu/1/utilization", 3)
    _wait_for_points(sclient, idle, "gpu/0/utilization", 3)
    assert _system(sclient, idle)["idleHint"] == "GPU 0 was under 10% busy for 100% of the run"
    assert _system(sclient, busy)["idleHint"] is None
    for run_id in (idle, busy):
        _release(n2, run_id)
        assert wait_for_status(sclient, run_id)["status"] == "Completed"
    assert _system(sclient, idle)["idleHint"] == "GPU 0 was under 10% busy for 100% of the run"


def test_system_metrics_of_a_missing_run_is_404_and_bad_max_points_named(
    sclient: httpx.Client,
) -> None:
    response = sclient.get("/api/v1/runs/no_such_run/system-metrics")
    assert response.status_code == 404
    assert "no_such_run" in response.json()["error"]
    run = submit(sclient, "print('hi')", experiment="telemetry", compute_target="only-n1")
    response = sclient.get(f"/api/v1/runs/{run['runId']}/system-metrics?max_points=1")
    assert response.status_code == 400
    assert "max_points" in response.json()["error"]
    wait_for_status(sclient, run["runId"])
