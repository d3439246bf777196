"""GPU nodes over real SSH: each node a network namespace with its own sshd and dockerd (TESTBED.md).
The only stand-ins are nvidia-smi and the NVIDIA container hook (tests/testbed.py); the shared nodes
and server are fixtures in tests/conftest.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from tests import testbed
from tests.conftest import TOKEN, Server
from tests.helpers import cli_for, get_run, submit, wait_for_log, wait_for_status, wait_until

GPU_SCRIPT = (
    "import os, time\nprint('gpus', os.environ.get('CUDA_VISIBLE_DEVICES'), flush=True)\ntime.sleep({sleep})\n"
    "os.makedirs('outputs', exist_ok=True)\nopen('outputs/where.txt', 'w').write(os.uname().nodename)\n"
)


def test_registration_pins_the_host_key_and_probes_the_inventory(
    nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    n1 = nclient.get("/api/v1/nodes/n1").json()
    assert n1["state"] == "Ready"
    assert n1["bulkTransfer"] == "openssh"  # results come back through OpenSSH, with the pinned key
    assert n1["hostKey"] == " ".join(Path(f"{bed['n1'].host_key}.pub").read_text().split()[:2])
    facts = n1["inventory"]
    assert [g["index"] for g in facts["gpus"]] == [0, 1, 2, 3]
    assert facts["gpus"][0] == {
        "index": 0,
        "uuid": "GPU-n1-0000-0000-0000-000000000000",
        "name": "NVIDIA A100-SXM4-40GB",
        "memory_mib": 40960,
    }
    assert facts["cpus"] >= 1 and facts["memory_bytes"] > 0 and facts["docker_version"]
    # No nvidia runtime entry, yet Docker gives GPUs: the NVIDIA hook is on the node.
    assert facts["nvidia_runtime"] is False
    assert facts["gpu_support"] is True
    assert facts["nvidia_hook"] == str(bed["n1"].root / "bin" / "nvidia-container-runtime-hook")
    names = [n["name"] for n in nclient.get("/api/v1/nodes").json()["nodes"]]
    assert names == ["local", "n1", "n2"]
    again = nclient.post(
        "/api/v1/nodes", json={"name": "n1", "host": "10.77.0.11", "user": "root", "key_path": "/x"}
    )
    assert again.status_code == 422 and "exists already" in again.json()["error"]
    wrong = nclient.post(
        "/api/v1/nodes",
        json={
            "name": "n9",
            "host": "10.77.0.99",
            "user": "root",
            "key_path": str(bed["n1"].client_key),
        },
    )
    assert wrong.status_code == 422 and "Cannot reach 10.77.0.99:22" in wrong.json()["error"]


def test_a_gpu_run_lands_on_a_node_with_its_gpus_pinned_and_results_back(
    nclient: httpx.Client,
) -> None:
    run = submit(nclient, GPU_SCRIPT.format(sleep=0), compute_target="gpu-cluster", use_gpu=True)
    done = wait_for_status(nclient, run["runId"], timeout=60)
    assert done["status"] == "Completed", done["error"]
    node = done["properties"]["node"]
    assert node in ("n1", "n2")
    log = nclient.get(f"/api/v1/runs/{run['runId']}/logs").text
    assert f"gpus GPU-{node}-" in log and "," not in log.split("gpus ")[1].split()[0]
    assert nclient.get(f"/api/v1/runs/{run['runId']}/files/outputs/where.txt").status_code == 200
    assert done["properties"]["allocation"] == []  # freed at the end
    assert nclient.get(f"/api/v1/nodes/{node}").json()["allocatedGpus"] == []


def test_gpus_are_never_shared_and_a_run_waits_with_a_reason(nclient: httpx.Client) -> None:
    runs = [
        submit(nclient, GPU_SCRIPT.format(sleep=12), compute_target="gpu-cluster", use_gpu=True)
        for _ in range(6)
    ]
    for run in runs:
        wait_for_log(nclient, run["runId"], "gpus ", timeout=60)
    extra = submit(nclient, GPU_SCRIPT.format(sleep=0), compute_target="gpu-cluster", use_gpu=True)
    wait_until(
        lambda: get_run(nclient, extra["runId"])["properties"]["waitReason"] is not None,
        f"a wait reason: {get_run(nclient, extra['runId'])}",
    )
    waiting = get_run(nclient, extra["runId"])
    assert waiting["status"] == "Queued"
    assert waiting["properties"]["waitReason"] == "needs 1 GPU on one node; largest free is 0"
    assert waiting["properties"]["queuePosition"] == 1
    seen = []
    for run in runs:
        log = nclient.get(f"/api/v1/runs/{run['runId']}/logs").text
        seen.append(log.split("gpus ")[1].split()[0])
    assert len(set(seen)) == 6  # six runs, six different devices
    assert sorted(s.split("-")[1] for s in seen) == ["n1"] * 4 + ["n2"] * 2
    for run in [*runs, extra]:
        assert wait_for_status(nclient, run["runId"], timeout=90)["status"] == "Completed"
    assert all(n["allocatedGpus"] == [] for n in nclient.get("/api/v1/nodes").json()["nodes"])


def test_higher_priority_runs_first(nclient: httpx.Client) -> None:
    from tests.helpers import make_snapshot

    blockers = [
        submit(nclient, GPU_SCRIPT.format(sleep=12), compute_target="gpu-cluster", use_gpu=True)
        for _ in range(6)
    ]
    for run in blockers:
        wait_for_log(nclient, run["runId"], "gpus ", timeout=60)
    snap = make_snapshot({"train.py": GPU_SCRIPT.format(sleep=0)})
    spec = json.dumps(
        {"entry_script": "train.py", "compute_target": "gpu-cluster", "use_gpu": True}
    )
    low = nclient.post(
        "/api/v1/experiments/prio/runs",
        files={"estimator": (None, spec), "snapshot": ("s.tar.gz", snap)},
    ).json()
    high = nclient.post(
        "/api/v1/experiments/prio/runs",
        files={"estimator": (None, spec), "snapshot": ("s.tar.gz", snap), "priority": (None, "10")},
    ).json()
    assert get_run(nclient, high["runId"])["properties"]["queuePosition"] == 1
    assert get_run(nclient, low["runId"])["properties"]["queuePosition"] == 2
    done_high = wait_for_status(nclient, high["runId"], timeout=90)
    done_low = wait_for_status(nclient, low["runId"], timeout=90)

    # Claimed first: when GPUs free up, the high-priority run is placed before the older one.
    def placed(run: dict[str, Any]) -> str:
        return next(e["timeUtc"] for e in run["statusHistory"] if e["status"] == "Preparing")

    assert placed(done_high) <= placed(done_low)
    assert done_high["status"] == done_low["status"] == "Completed"
    for run in blockers:
        wait_for_status(nclient, run["runId"], timeout=60)


# A run that goes on until the test lets it finish (release()), so "still running" needs no timing.
GATE = "/tmp/trainhub-test-go"
GATED_SCRIPT = f"""
import os, time
print("started on", os.environ["TRAINHUB_NODE"], flush=True)
while not os.path.exists("{GATE}"):
    time.sleep(0.1)
os.makedirs("outputs", exist_ok=True)
open("outputs/done.txt", "w").write("done")
print("finished", flush=True)
"""


def release(bed: dict[str, testbed.Node], run_id: str) -> None:
    """Let a gated run finish: create the gate in every container of the run, on every node."""
    for name, ids in _containers_of(bed, run_id, tuple(bed)).items():
        for container in ids.split():
            socket = f"unix://{bed[name].docker_socket}"
            # A container that has already ended has nothing to let go of: the test's status checks
            # say what happened to its run.
            testbed.sh("docker", "-H", socket, "exec", container, "touch", GATE, check=False)


def _cpu_run_lands_on(client: httpx.Client, target: str) -> str:
    run = submit(client, "print('hi')", compute_target=target, experiment="placement")
    done = wait_for_status(client, run["runId"], timeout=60)
    assert done["status"] == "Completed", done["error"]
    return str(done["properties"]["node"])


def test_a_drained_node_finishes_its_running_runs_takes_no_new_ones_until_enabled(
    nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    nclient.post("/api/v1/targets", json={"name": "only-n2", "nodes": ["n2"]})
    # A CPU-only run goes to n2 by best fit (it leaves fewer GPUs idle than n1): only a drain of n2
    # can send one to n1.
    assert _cpu_run_lands_on(nclient, "gpu-cluster") == "n2"
    running = submit(nclient, GATED_SCRIPT, compute_target="only-n2", experiment="drain")
    wait_for_log(nclient, running["runId"], "started on n2", timeout=60)
    assert nclient.post("/api/v1/nodes/n2/drain").json()["state"] == "Draining"
    try:
        assert _cpu_run_lands_on(nclient, "gpu-cluster") == "n1"
        queued = submit(nclient, "print('hi')", compute_target="only-n2", experiment="drain")
        wait_until(
            lambda: get_run(nclient, queued["runId"])["properties"]["waitReason"] is not None,
            "the run for the drained node says why it waits",
        )
        waiting = get_run(nclient, queued["runId"])
        assert waiting["status"] == "Queued"
        assert waiting["properties"]["waitReason"] == (
            "no node of target 'only-n2' can take runs now (n2 Draining)"
        )
        # The run that was there before the drain goes on and finishes as usual.
        assert get_run(nclient, running["runId"])["status"] == "Running"
        release(bed, running["runId"])
        finished = wait_for_status(nclient, running["runId"], timeout=60)
        assert finished["status"] == "Completed", finished["error"]
        assert finished["properties"]["node"] == "n2"
        done_file = nclient.get(f"/api/v1/runs/{running['runId']}/files/outputs/done.txt")
        assert done_file.status_code == 200 and done_file.text == "done"
        assert nclient.get("/api/v1/nodes/n2").json()["state"] == "Draining"
        assert get_run(nclient, queued["runId"])["status"] == "Queued"
    finally:
        release(bed, running["runId"])  # harmless once it has finished
        enabled = nclient.post("/api/v1/nodes/n2/enable").json()
    assert enabled["state"] == "Ready"
    # Enabled: the waiting run starts there, and new runs are placed there again.
    after = wait_for_status(nclient, queued["runId"], timeout=60)
    assert after["status"] == "Completed" and after["properties"]["node"] == "n2"
    assert _cpu_run_lands_on(nclient, "gpu-cluster") == "n2"


def test_unknown_target_and_too_many_gpus_are_422(nclient: httpx.Client) -> None:
    from tests.helpers import make_snapshot, submit_raw

    snap = make_snapshot({"train.py": "print()"})
    unknown = submit_raw(nclient, {"entry_script": "train.py", "compute_target": "nope"}, snap)
    assert unknown.status_code == 422 and "Unknown compute target 'nope'" in unknown.json()["error"]
    local_gpu = submit_raw(nclient, {"entry_script": "train.py", "use_gpu": True}, snap)
    assert (
        local_gpu.status_code == 422
        and "largest node of target 'local' has 0" in local_gpu.json()["error"]
    )


MPI_WORLD = """
import json, os, time
from mpi4py import MPI

comm = MPI.COMM_WORLD
me = {"rank": comm.Get_rank(), "node": os.environ["TRAINHUB_NODE"],
      "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
print("rank", me["rank"], "of", comm.Get_size(), "on", me["node"], "gpus", me["gpus"], flush=True)
world = comm.gather(me, root=0)
time.sleep({sleep})
if comm.Get_rank() == 0:
    os.makedirs("outputs", exist_ok=True)
    json.dump(world, open("outputs/world.json", "w"))
"""


def _containers_of(
    bed: dict[str, testbed.Node], run_id: str, nodes: tuple[str, ...] = ("n1", "n2")
) -> dict[str, str]:
    found = {}
    for name in nodes:
        node = bed[name]
        found[name] = testbed.sh(
            "docker",
            "-H",
            f"unix://{node.docker_socket}",
            "ps",
            "-aq",
            "--filter",
            f"label=org.trainhub.run_id={run_id}",
        ).stdout.strip()
    return found


def _started(run: dict[str, Any]) -> str:
    return next(e["timeUtc"] for e in run["statusHistory"] if e["status"] == "Preparing")


def test_a_multi_node_mpi_run_spans_its_nodes_and_leaves_nothing_behind(
    nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    run = submit(
        nclient,
        MPI_WORLD.replace("{sleep}", "0"),
        compute_target="gpu-cluster",
        node_count=2,
        distributed_training={"type": "mpi", "process_count_per_node": 2},
        experiment="mpi",
    )
    done = wait_for_status(nclient, run["runId"], timeout=120)
    log = nclient.get(f"/api/v1/runs/{run['runId']}/logs").text
    assert done["status"] == "Completed", (done["error"], log)
    world = json.loads(nclient.get(f"/api/v1/runs/{run['runId']}/files/outputs/world.json").content)
    assert [w["rank"] for w in world] == [0, 1, 2, 3]
    head = done["properties"]["node"]
    assert world[0]["node"] == head
    assert sorted(w["node"] for w in world) == ["n1", "n1", "n2", "n2"]
    for rank in range(4):
        assert f"rank {rank} of 4 on n" in log
        # Each rank's own log, written on its node and brought back from there.
        own = nclient.get(f"/api/v1/runs/{run['runId']}/files/logs/mpi/1/rank.{rank}/stdout")
        assert own.status_code == 200 and own.text.startswith(f"rank {rank} of 4 on n")
    assert done["properties"]["allocation"] == []
    wait_until(
        lambda: _containers_of(bed, run["runId"]) == {"n1": "", "n2": ""},
        "the run's containers are gone from both nodes",
    )


def _hold_one_gpu_of_n2(client: httpx.Client) -> dict[str, Any]:
    """A long run holding one of n2's two GPUs (cancel it to free the GPU)."""
    client.post("/api/v1/targets", json={"name": "only-n2", "nodes": ["n2"]})
    blocker = submit(client, GPU_SCRIPT.format(sleep=120), compute_target="only-n2", use_gpu=True)
    wait_for_log(client, blocker["runId"], "gpus GPU-n2", timeout=60)
    return blocker


def test_a_multi_node_run_gets_all_its_gpus_at_once_or_waits(
    nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    blocker = _hold_one_gpu_of_n2(nclient)
    gang = submit(
        nclient,
        MPI_WORLD.replace("{sleep}", "0"),
        compute_target="gpu-cluster",
        node_count=2,
        use_gpu=True,
        distributed_training={"type": "mpi", "process_count_per_node": 2},
        experiment="gang",
    )
    wait_until(
        lambda: get_run(nclient, gang["runId"])["properties"]["waitReason"] is not None,
        "the gang run says why it waits",
    )
    waiting = get_run(nclient, gang["runId"])
    assert waiting["status"] == "Queued"
    assert (
        waiting["properties"]["waitReason"]
        == "needs 2 GPUs on each of 2 nodes of target 'gpu-cluster'; 1 node(s) have room"
    )
    # All or nothing: while it waits it holds no GPU, so a small run still gets n1's.
    assert nclient.get("/api/v1/nodes/n1").json()["allocatedGpus"] == []
    small = submit(nclient, GPU_SCRIPT.format(sleep=0), compute_target="gpu-cluster", use_gpu=True)
    assert wait_for_status(nclient, small["runId"], timeout=60)["status"] == "Completed"
    assert get_run(nclient, gang["runId"])["status"] == "Queued"
    nclient.post(f"/api/v1/runs/{blocker['runId']}/cancel")
    done = wait_for_status(nclient, gang["runId"], timeout=120)
    log = nclient.get(f"/api/v1/runs/{gang['runId']}/logs").text
    assert done["status"] == "Completed", (done["error"], log)
    world = json.loads(
        nclient.get(f"/api/v1/runs/{gang['runId']}/files/outputs/world.json").content
    )
    by_node: dict[str, set[str]] = {}
    for rank in world:  # every container sees its node's two GPUs, and no other
        by_node.setdefault(rank["node"], set()).add(rank["gpus"])
    assert set(by_node) == {"n1", "n2"}
    for node, seen in by_node.items():
        (gpus,) = seen
        assert len(gpus.split(",")) == 2 and all(
            g.startswith(f"GPU-{node}-") for g in gpus.split(",")
        )
    assert all(n["allocatedGpus"] == [] for n in nclient.get("/api/v1/nodes").json()["nodes"])
    wait_until(
        lambda: _containers_of(bed, gang["runId"]) == {"n1": "", "n2": ""},
        "the run's containers are gone from both nodes",
    )


def test_a_big_run_that_waited_past_the_bound_is_not_starved_by_small_ones(
    nclient: httpx.Client,
) -> None:
    blocker = _hold_one_gpu_of_n2(nclient)
    big = submit(
        nclient,
        MPI_WORLD.replace("{sleep}", "0"),
        compute_target="only-n2",
        use_gpu=True,
        distributed_backend="mpi",
        process_count_per_node=2,
        experiment="starve",
    )
    big_submitted = time.time()
    # Before the bound (10 s here), a small run takes the free GPU: the big one cannot use it yet.
    early = submit(nclient, GPU_SCRIPT.format(sleep=0), compute_target="only-n2", use_gpu=True)
    assert wait_for_status(nclient, early["runId"], timeout=60)["status"] == "Completed"
    assert get_run(nclient, big["runId"])["properties"]["waitReason"] == (
        "needs 2 GPUs on one node; largest free is 1"
    )
    wait_until(
        lambda: time.time() - big_submitted > 11,
        "the big run has waited past the bound",
        timeout=30,
    )
    late = submit(nclient, GPU_SCRIPT.format(sleep=0), compute_target="only-n2", use_gpu=True)
    wait_until(
        lambda: get_run(nclient, late["runId"])["properties"]["waitReason"] is not None,
        "the late small run says why it waits",
    )
    time.sleep(2)  # a GPU is free all along, and still the small run is not placed
    held = get_run(nclient, late["runId"])
    assert held["status"] == "Queued"
    assert held["properties"]["waitReason"] == (
        "the nodes of target 'only-n2' are reserved for a run that has waited longer"
    )
    nclient.post(f"/api/v1/runs/{blocker['runId']}/cancel")
    done_big = wait_for_status(nclient, big["runId"], timeout=120)
    done_late = wait_for_status(nclient, late["runId"], timeout=120)
    assert done_big["status"] == done_late["status"] == "Completed", done_big["error"]
    assert _started(done_big) < _started(done_late)


def _two_node_run(
    client: httpx.Client, sleep: int, per_node: int = 2, **parts: str
) -> tuple[str, str, str]:
    """A sleeping MPI run over n1 and n2, once every rank has said hello: (run id, head node, the
    other node). ``parts``: submit fields such as max_retries."""
    spec = {
        "use_gpu": False,
        "compute_target": "gpu-cluster",
        "node_count": 2,
        "distributed_training": {"type": "mpi", "process_count_per_node": per_node},
    }
    run_id = str(
        _submit(client, MPI_WORLD.replace("{sleep}", str(sleep)), spec=json.dumps(spec), **parts)[
            "runId"
        ]
    )
    size = 2 * per_node
    wait_until(
        lambda: all(
            f"rank {rank} of {size}" in client.get(f"/api/v1/runs/{run_id}/logs").text
            for rank in range(size)
        ),
        "every rank has said hello",
        timeout=90,
    )
    head = get_run(client, run_id)["properties"]["node"]
    return run_id, head, "n2" if head == "n1" else "n1"


def test_cancel_stops_every_container_of_a_two_node_run(
    nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    run_id, _, _ = _two_node_run(nclient, sleep=300)
    assert all(_containers_of(bed, run_id).values())  # one container on each node
    nclient.post(f"/api/v1/runs/{run_id}/cancel")
    done = wait_for_status(nclient, run_id, timeout=60)
    assert done["status"] == "Canceled" and done["properties"]["allocation"] == []
    wait_until(
        lambda: _containers_of(bed, run_id) == {"n1": "", "n2": ""},
        "the run's containers are gone from both nodes",
    )


def test_losing_one_node_of_two_node_runs_fails_them_or_queues_them_again(
    nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    nclient.post("/api/v1/targets", json={"name": "only-n2", "nodes": ["n2"]})
    failing, head, other = _two_node_run(nclient, sleep=300, per_node=1)
    # Best fit puts the head on n2 (fewer GPUs left over); n1 runs the other ranks and is lost.
    assert (head, other) == ("n2", "n1")
    retried, _, _ = _two_node_run(nclient, sleep=15, per_node=1, max_retries="1")
    bystander = submit(nclient, GPU_SCRIPT.format(sleep=8), compute_target="only-n2", use_gpu=True)
    wait_for_log(nclient, bystander["runId"], "gpus GPU-n2", timeout=60)
    n1 = bed["n1"]
    testbed.kill_node_daemons(n1)
    try:
        done = wait_for_status(nclient, failing, timeout=60)
        assert done["status"] == "Failed", done
        assert done["properties"]["reason"] == "node_lost"
        assert "Node n1, one of this run's nodes, was lost" in done["error"]["message"]
        assert done["properties"]["allocation"] == []
        # The retried run waits for two nodes again, holding nothing.
        wait_until(
            lambda: get_run(nclient, retried)["properties"]["retries"] == 1,
            "the run with a retry left is queued again",
            timeout=60,
        )
        waiting = get_run(nclient, retried)
        assert waiting["status"] == "Queued" and waiting["properties"]["allocation"] == []
        assert "node_lost" in waiting["statusHistory"][-1]["detail"]
        wait_until(
            lambda: (get_run(nclient, retried)["properties"]["waitReason"] or "").startswith(
                "needs a free slot on each of 2 nodes"
            ),
            "it says it waits for two nodes",
        )
        # The other node's runs are untouched; the lost runs' containers there are removed.
        finished = wait_for_status(nclient, bystander["runId"], timeout=60)
        assert finished["status"] == "Completed", finished["error"]
        wait_until(
            lambda: _containers_of(bed, failing, ("n2",)) == {"n2": ""},
            "the failed run's container on the node that is left is removed",
        )
    finally:
        testbed.start_node(n1.name, 1, n1.root, n1.client_key, n1.gpus)
        wait_until(
            lambda: nclient.get("/api/v1/nodes/n1").json()["state"] == "Ready",
            "n1 is back",
            timeout=60,
        )
    again = wait_for_status(nclient, retried, timeout=120)
    assert again["status"] == "Completed", again["error"]
    assert again["properties"]["retries"] == 1


def test_a_two_node_run_whose_node_drops_off_the_network_ends_with_node_lost(
    nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    """A partition or a power cut: nothing closes the connections, the node just stops answering."""
    run_id, head, other = _two_node_run(nclient, sleep=300, per_node=1)
    assert (head, other) == ("n2", "n1")
    link = "thvn1"  # n1's end of the cable, on the bridge's side
    testbed.sh("ip", "link", "set", link, "down")
    try:
        done = wait_for_status(nclient, run_id, timeout=120)
        assert done["status"] == "Failed", done
        assert done["properties"]["reason"] == "node_lost"
        assert done["properties"]["allocation"] == []
    finally:
        testbed.sh("ip", "link", "set", link, "master", testbed.BRIDGE, "up")
    wait_until(
        lambda: nclient.get("/api/v1/nodes/n1").json()["state"] == "Ready", "n1 is back", timeout=60
    )
    wait_until(
        lambda: _containers_of(bed, run_id) == {"n1": "", "n2": ""},
        "the run's containers are gone from both nodes once n1 is back",
        timeout=30,
    )


def test_a_changed_host_key_makes_the_node_untrusted_until_re_pinned(
    nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    n2 = bed["n2"]
    n2.host_key.unlink()
    Path(f"{n2.host_key}.pub").unlink()
    testbed.restart_sshd(n2)  # a new host key: what a man in the middle would look like
    wait_until(
        lambda: nclient.get("/api/v1/nodes/n2").json()["state"] == "Untrusted",
        "n2 is Untrusted",
        timeout=30,
    )
    shown = nclient.get("/api/v1/nodes/n2").json()
    assert (
        "host key does not match" in shown["error"] and "trainhub node trust n2" in shown["error"]
    )
    assert nclient.post("/api/v1/nodes/n2/trust").json()["state"] == "Ready"
    assert nclient.get("/api/v1/nodes/n2").json()["hostKey"] == " ".join(
        Path(f"{n2.host_key}.pub").read_text().split()[:2]
    )


def test_cli_node_verbs(cluster: Server, tmp_path: Path) -> None:
    cli = cli_for(cluster.url, TOKEN)

    listed = cli("node", "list")
    assert listed.returncode == 0 and "n1" in listed.stdout and "4/4 free" in listed.stdout
    shown = cli("node", "show", "n1")
    assert "GPU 3:" in shown.stdout and "NVIDIA A100-SXM4-40GB" in shown.stdout
    assert json.loads(cli("node", "list", "--json").stdout)[1]["name"] == "n1"
    assert "Draining" in cli("node", "drain", "n2").stdout
    assert "Ready" in cli("node", "enable", "n2").stdout
    assert "gpu-cluster: n1, n2" in cli("target", "list").stdout
    assert cli("target", "create", "only-n2", "--nodes", "n2").returncode == 0
    missing = cli("node", "show", "nope")
    assert missing.returncode == 1 and "No node named 'nope'" in missing.stderr


def test_a_remote_run_survives_a_server_kill(cluster: Server) -> None:
    client = cluster.client()
    client.post("/api/v1/targets", json={"name": "only-n2", "nodes": ["n2"]})
    script = (
        "import time\nfor i in range(10):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\n"
    )
    run = submit(client, script, compute_target="only-n2", experiment="remote-restart")
    wait_for_log(client, run["runId"], "tick 2", timeout=60)
    cluster.kill()
    time.sleep(1)
    cluster.start()
    client = cluster.client()
    done = wait_for_status(client, run["runId"], timeout=90)
    assert done["status"] == "Completed", done["error"]
    assert client.get(f"/api/v1/runs/{run['runId']}/logs").text.splitlines() == [
        f"tick {i}" for i in range(10)
    ]


def test_a_remote_run_survives_a_server_sigterm(cluster: Server) -> None:
    """A graceful stop (docker stop) leaves the node's container running; the next start
    re-attaches it over SSH."""
    client = cluster.client()
    client.post("/api/v1/targets", json={"name": "only-n2", "nodes": ["n2"]})
    script = (
        "import time\nfor i in range(12):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\n"
    )
    run = submit(client, script, compute_target="only-n2", experiment="remote-sigterm")
    wait_for_log(client, run["runId"], "tick 2", timeout=60)
    assert cluster.proc is not None
    cluster.proc.terminate()
    cluster.proc.wait(timeout=10)
    cluster.start()
    client = cluster.client()
    done = wait_for_status(client, run["runId"], timeout=90)
    assert done["status"] == "Completed", done["error"]
    assert client.get(f"/api/v1/runs/{run['runId']}/logs").text.splitlines() == [
        f"tick {i}" for i in range(12)
    ]


def test_a_cut_off_node_fails_its_run_and_is_tidied_when_it_returns(
    nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    nclient.post("/api/v1/targets", json={"name": "only-n2", "nodes": ["n2"]})
    run = submit(
        nclient,
        GPU_SCRIPT.format(sleep=60),
        compute_target="only-n2",
        use_gpu=True,
        experiment="cut",
    )
    wait_for_log(nclient, run["runId"], "gpus GPU-n2", timeout=60)
    n2 = bed["n2"]
    # Only SSH goes away: dockerd and the run's container live on (a network partition).
    for pid in testbed.namespace_pids(n2, "sshd"):
        os.kill(pid, 9)
    lost = wait_for_status(nclient, run["runId"], timeout=60)
    assert (lost["status"], lost["properties"]["reason"]) == ("Failed", "node_lost")

    def leftovers() -> str:
        return testbed.sh(
            "docker",
            "-H",
            f"unix://{n2.docker_socket}",
            "ps",
            "-aq",
            "--filter",
            f"label=org.trainhub.run_id={run['runId']}",
        ).stdout.strip()

    assert leftovers()  # still running on the node while it is cut off
    testbed.restart_sshd(n2)
    wait_until(
        lambda: nclient.get("/api/v1/nodes/n2").json()["state"] == "Ready", "n2 is back", timeout=40
    )
    wait_until(lambda: leftovers() == "", "the leftover container is removed", timeout=20)


def _submit(client: httpx.Client, script: str, **parts: str) -> dict[str, object]:
    from tests.helpers import make_snapshot

    spec = {"entry_script": "train.py", "use_gpu": True, **json.loads(parts.pop("spec", "{}"))}
    files = {
        "estimator": (None, json.dumps(spec)),
        "snapshot": ("s.tar.gz", make_snapshot({"train.py": script})),
    }
    files.update({k: (None, v) for k, v in parts.items()})
    response = client.post("/api/v1/experiments/loss/runs", files=files)
    assert response.status_code == 201, response.text
    result: dict[str, object] = response.json()
    return result


def test_node_loss_fails_its_runs_frees_gpus_retries_and_spares_other_nodes(
    nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    for name in ("n1", "n2"):
        nclient.post("/api/v1/targets", json={"name": f"only-{name}", "nodes": [name]})
    on_n1 = _submit(nclient, GPU_SCRIPT.format(sleep=20), spec='{"compute_target": "only-n1"}')
    fill_n2 = [
        _submit(nclient, GPU_SCRIPT.format(sleep=10), spec='{"compute_target": "only-n2"}')
        for _ in range(2)
    ]
    for run in (on_n1, *fill_n2):
        wait_for_log(nclient, str(run["runId"]), "gpus GPU-", timeout=60)
    # n2 is full, so this one lands on n1 too; it may be retried once.
    retried = _submit(
        nclient,
        GPU_SCRIPT.format(sleep=3),
        spec='{"compute_target": "gpu-cluster"}',
        max_retries="1",
    )
    wait_for_log(nclient, str(retried["runId"]), "gpus GPU-n1", timeout=60)
    started = time.monotonic()
    testbed.kill_node_daemons(bed["n1"])
    try:
        lost = wait_for_status(nclient, str(on_n1["runId"]), timeout=60)
        assert lost["status"] == "Failed"
        assert lost["properties"]["reason"] == "node_lost"
        assert "unreachable for more than 6 s" in lost["error"]["message"]
        assert time.monotonic() - started < 6 + 15  # grace + keepalive detection
        assert lost["properties"]["allocation"] == []
        n1 = nclient.get("/api/v1/nodes/n1").json()
        assert n1["state"] == "Unreachable" and n1["allocatedGpus"] == []
        for run in fill_n2:  # the other node's runs are untouched
            assert wait_for_status(nclient, str(run["runId"]), timeout=60)["status"] == "Completed"
        again = wait_for_status(nclient, str(retried["runId"]), timeout=90)
        assert again["status"] == "Completed", again["error"]
        assert again["properties"]["node"] == "n2" and again["properties"]["retries"] == 1
        assert [e["status"] for e in again["statusHistory"]].count("Queued") == 2
        assert "node_lost" in next(
            e["detail"] for e in again["statusHistory"][1:] if e["status"] == "Queued"
        )
    finally:  # the nodes are shared with the tests that come after
        n1 = bed["n1"]
        testbed.start_node(n1.name, 1, n1.root, n1.client_key, n1.gpus)
        wait_until(
            lambda: nclient.get("/api/v1/nodes/n1").json()["state"] == "Ready",
            "n1 is back",
            timeout=60,
        )


def test_a_node_back_within_the_grace_period_gets_its_runs_back(
    nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    nclient.post("/api/v1/targets", json={"name": "only-n2", "nodes": ["n2"]})
    run = submit(nclient, GATED_SCRIPT, compute_target="only-n2", experiment="grace")
    wait_for_log(nclient, run["runId"], "started on n2", timeout=60)
    n2 = bed["n2"]
    # SSH goes away (its sessions too); the run's container lives on, as in a short network outage.
    for pid in testbed.namespace_pids(n2, "sshd"):
        os.kill(pid, 9)
    wait_until(
        lambda: nclient.get("/api/v1/nodes/n2").json()["state"] == "Unreachable",
        "n2 is Unreachable",
    )
    testbed.restart_sshd(n2)  # back well within the grace period (6 s here)
    wait_until(
        lambda: nclient.get("/api/v1/nodes/n2").json()["state"] == "Ready", "n2 is back", timeout=30
    )
    release(bed, run["runId"])
    done = wait_for_status(nclient, run["runId"], timeout=60)
    assert done["status"] == "Completed", done["error"]
    assert done["properties"]["node"] == "n2" and done["properties"]["retries"] == 0
    assert done["properties"]["allocation"] == []
    # One attempt, its whole log once, and its outputs: the run was re-attached, not restarted.
    assert "Failed" not in [e["status"] for e in done["statusHistory"]]
    assert [e["status"] for e in done["statusHistory"]].count("Queued") == 1
    assert nclient.get(f"/api/v1/runs/{run['runId']}/logs").text.splitlines() == [
        "started on n2",
        "finished",
    ]
    done_file = nclient.get(f"/api/v1/runs/{run['runId']}/files/outputs/done.txt")
    assert done_file.status_code == 200 and done_file.text == "done"
