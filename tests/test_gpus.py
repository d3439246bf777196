"""GPUs proven on the engine: the test nodes' dockerd calls a stand-in ``nvidia-container-runtime-hook``
(tests/testbed.py) for every GPU device request, and the hook records the devices the engine asked
for. Real server, real node engines over real SSH; the nodes have no ``nvidia`` runtime entry, as on
a host with the NVIDIA container toolkit that was never configured as a Docker runtime."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import testbed
from tests.conftest import TOKEN, Server, start_server
from tests.helpers import (
    TERMINAL,
    cli_for,
    get_run,
    make_snapshot,
    submit,
    submit_raw,
    wait_for_log,
    wait_for_status,
)

# Writes what it was given into ./outputs, says so, and holds its GPUs until the test releases it.
HOLD = """
import os, time
cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
os.makedirs("outputs", exist_ok=True)
with open("outputs/cuda_visible_devices.txt", "w") as fh:
    fh.write(str(cuda))
print("cuda", cuda, flush=True)
while not os.path.exists("/tmp/release"):
    time.sleep(0.1)
"""


# Two processes, so two GPUs, in the run's one container.
TWO_PER_NODE = {"type": "mpi", "process_count_per_node": 2}


def _target(client: httpx.Client, node: str) -> str:
    """A compute target of one node (made once per server)."""
    name = f"only-{node}"
    client.post("/api/v1/targets", json={"name": name, "nodes": [node]})
    return name


Held = list[tuple[httpx.Client, str]]


@pytest.fixture
def held() -> Iterator[Held]:
    """The runs a test holds: any still going when it ends (a failed assertion) are canceled, so
    the next test finds the GPUs free."""
    runs: Held = []
    yield runs
    for client, run_id in runs:
        if get_run(client, run_id)["status"] not in TERMINAL:
            client.post(f"/api/v1/runs/{run_id}/cancel")
            wait_for_status(client, run_id)


def _hold(client: httpx.Client, held: Held, target: str, **estimator: Any) -> dict[str, Any]:
    """A submitted HOLD run, once it runs and has printed what it was given."""
    run = submit(client, HOLD, compute_target=target, experiment="gpus", **estimator)
    held.append((client, run["runId"]))
    wait_for_log(client, run["runId"], "cuda ", timeout=60)
    return wait_for_status(client, run["runId"], "Running")


def _container(node: testbed.Node, run_id: str) -> str:
    """The full id of the run's one container on ``node``."""
    found = testbed.sh(
        "docker",
        "-H",
        f"unix://{node.docker_socket}",
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        f"label=org.trainhub.run_id={run_id}",
    ).stdout.split()
    assert len(found) == 1, found
    return found[0]


def _inspect(node: testbed.Node, container: str, template: str) -> str:
    return testbed.sh(
        "docker", "-H", f"unix://{node.docker_socket}", "inspect", "-f", template, container
    ).stdout.strip()


def _engine_gave(node: testbed.Node, container: str) -> str:
    """The devices the engine asked the NVIDIA hook for, for ``container``."""
    records = node.hook_records()
    assert container in records, f"the engine never called the NVIDIA hook for {container}"
    return records[container]


def _release(node: testbed.Node, container: str) -> None:
    testbed.sh(
        "docker", "-H", f"unix://{node.docker_socket}", "exec", container, "touch", "/tmp/release"
    )


def _uuids(client: httpx.Client, node: str, indices: list[int]) -> list[str]:
    """The UUIDs of ``node``'s GPUs ``indices``, as the node's inventory in the API names them."""
    by_index = {
        g["index"]: g["uuid"]
        for g in client.get(f"/api/v1/nodes/{node}").json()["inventory"]["gpus"]
    }
    return [by_index[i] for i in indices]


def _listing(client: httpx.Client) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in client.get("/api/v1/nodes").json()["nodes"]}


def test_the_engine_gets_exactly_the_allocated_gpus_while_the_run_holds_them(
    nclient: httpx.Client, bed: dict[str, testbed.Node], held: Held
) -> None:
    n1 = bed["n1"]
    run = _hold(
        nclient, held, _target(nclient, "n1"), use_gpu=True, distributed_training=TWO_PER_NODE
    )
    run_id = run["runId"]
    (held,) = run["properties"]["allocation"]
    assert held["node"] == "n1" and len(held["gpus"]) == 2
    listed = _listing(nclient)["n1"]
    assert listed["allocatedGpus"] == sorted(held["gpus"]) and listed["runs"] == [run_id]
    uuids = _uuids(nclient, "n1", held["gpus"])

    container = _container(n1, run_id)
    # What the engine handed to the NVIDIA hook: exactly the allocated devices...
    engine_gave = _engine_gave(n1, container)
    assert sorted(engine_gave.split(",")) == sorted(uuids)
    # ...in the order the container numbers them.
    seen = nclient.get(f"/api/v1/runs/{run_id}/logs").text.split("cuda ")[1].split()[0]
    assert seen == engine_gave
    # The GPU default image, not the CPU one.
    assert run["runDefinition"]["image"] == testbed.GPU_IMAGE
    assert _inspect(n1, container, "{{.Config.Image}}") == testbed.GPU_IMAGE

    _release(n1, container)
    done = wait_for_status(nclient, run_id)
    assert done["status"] == "Completed", done["error"]
    written = nclient.get(f"/api/v1/runs/{run_id}/files/outputs/cuda_visible_devices.txt")
    assert written.text == engine_gave
    assert done["properties"]["allocation"] == []
    listed = _listing(nclient)["n1"]
    assert listed["allocatedGpus"] == [] and listed["runs"] == []


def test_concurrent_gpu_runs_never_get_the_same_device(
    nclient: httpx.Client, bed: dict[str, testbed.Node], held: Held
) -> None:
    # Three runs of two GPUs fill n1 (4) and n2 (2) at once.
    runs = [
        _hold(nclient, held, "gpu-cluster", use_gpu=True, distributed_training=TWO_PER_NODE)
        for _ in range(3)
    ]
    listing = _listing(nclient)
    assert listing["n1"]["allocatedGpus"] == [0, 1, 2, 3]
    assert listing["n2"]["allocatedGpus"] == [0, 1]
    given: list[str] = []
    containers = {}
    for run in runs:
        (held,) = get_run(nclient, run["runId"])["properties"]["allocation"]
        node = bed[held["node"]]
        containers[run["runId"]] = (node, _container(node, run["runId"]))
        engine_gave = _engine_gave(node, containers[run["runId"]][1])
        assert sorted(engine_gave.split(",")) == sorted(_uuids(nclient, node.name, held["gpus"]))
        log = nclient.get(f"/api/v1/runs/{run['runId']}/logs").text
        assert log.split("cuda ")[1].split()[0] == engine_gave
        given.extend(engine_gave.split(","))
    every_gpu = [g["uuid"] for name in ("n1", "n2") for g in listing[name]["inventory"]["gpus"]]
    assert sorted(given) == sorted(every_gpu)  # six devices, each given once

    for node, container in containers.values():
        _release(node, container)
    for run in runs:
        assert wait_for_status(nclient, run["runId"])["status"] == "Completed"
    assert all(n["allocatedGpus"] == [] for n in _listing(nclient).values())


def test_a_cpu_run_on_a_gpu_node_gets_the_cpu_image_and_no_device(
    nclient: httpx.Client, bed: dict[str, testbed.Node], held: Held
) -> None:
    n1 = bed["n1"]
    run = _hold(nclient, held, _target(nclient, "n1"))
    container = _container(n1, run["runId"])
    assert run["runDefinition"]["image"] == testbed.BASE_IMAGE
    assert _inspect(n1, container, "{{.Config.Image}}") == testbed.BASE_IMAGE
    assert _inspect(n1, container, "{{json .HostConfig.DeviceRequests}}") == "null"
    assert container not in n1.hook_records()
    assert "cuda None" in nclient.get(f"/api/v1/runs/{run['runId']}/logs").text
    _release(n1, container)
    assert wait_for_status(nclient, run["runId"])["status"] == "Completed"


def test_node_show_says_docker_gives_gpus_through_the_hook(
    cluster: Server, bed: dict[str, testbed.Node]
) -> None:
    shown = cli_for(cluster.url, TOKEN)("node", "show", "n1")
    hook = bed["n1"].root / "bin" / "nvidia-container-runtime-hook"
    assert f"(GPU support: yes, hook {hook})" in shown.stdout, shown


@pytest.fixture(scope="module")
def hookless(
    tmp_path_factory: pytest.TempPathFactory, bed: dict[str, testbed.Node]
) -> Iterator[tuple[Server, testbed.Node]]:
    """Node n3: two GPUs, but neither the NVIDIA hook nor an ``nvidia`` runtime (the toolkit is not
    installed), on a server of its own."""
    n1 = bed["n1"]
    node = testbed.start_node(
        "n3", 3, n1.root.parent / "n3", n1.client_key, gpus=2, nvidia_hook=False
    )
    srv = start_server(tmp_path_factory, "hookless-data")
    try:
        testbed.add_to(srv.client(), node, "n3")
        yield srv, node
    finally:
        srv.cleanup()
        testbed.stop_node(node.name, node.root)


def test_a_gpu_run_is_refused_where_docker_cannot_hand_out_gpus(
    hookless: tuple[Server, testbed.Node], held: Held
) -> None:
    server, n3 = hookless
    client = server.client()
    facts = client.get("/api/v1/nodes/n3").json()["inventory"]
    assert len(facts["gpus"]) == 2
    assert (facts["gpu_support"], facts["nvidia_hook"], facts["nvidia_runtime"]) == (
        False,
        None,
        False,
    )
    shown = cli_for(server.url, TOKEN)("node", "show", "n3")
    assert "(GPU support: no)" in shown.stdout, shown
    # nvidia-smi sees its GPUs, but Docker could not hand them to a container: a GPU run there is
    # refused at submit with the reason, rather than run without its GPUs.
    response = submit_raw(
        client,
        {"entry_script": "train.py", "use_gpu": True, "compute_target": _target(client, "n3")},
        make_snapshot({"train.py": HOLD}),
        "gpus",
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "use_gpu"
    assert "neither the NVIDIA container toolkit's hook" in response.json()["error"]
    # CPU runs still use the node.
    run = _hold(client, held, _target(client, "n3"))
    container = _container(n3, run["runId"])
    assert _inspect(n3, container, "{{json .HostConfig.DeviceRequests}}") == "null"
    _release(n3, container)
    done = wait_for_status(client, run["runId"])
    assert done["status"] == "Completed", done["error"]
