"""A server on a machine without a Docker engine (``DOCKER_HOST`` pointing at nothing), as on a GPU
box where Docker is not allowed: it starts, ``local`` takes runs without a container (one process,
torchrun, mpirun), its GPUs (the stand-in ``nvidia-smi`` of TESTBED.md) are handed out per device,
and a container run is refused with a sentence saying what to do."""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from tests.conftest import TOKEN, Server, start_server
from tests.helpers import (
    add_user,
    login,
    make_snapshot,
    submit,
    submit_raw,
    wait_for_log,
    wait_for_status,
    wait_until,
)
from tests.html import parse
from tests.test_sdk import write_project
from tests.testbed import FAKE_NVIDIA_SMI
from tests.torch_env import ALLREDUCE, TORCH, WHEELS, torch_settings
from trainhub.runtime.mpi_launch import OWN_ENVIRONMENT
from trainhub.runtime.process_launch import ProcessLaunch, gpu_environment, launch_for
from trainhub.spec import EstimatorSpec

# Where the server looks for an engine: nothing, until the last test links the real one there.
ENGINE_LATER = "engine-later.sock"
GPUS = [f"GPU-{i}a1b2c3d-0000-4000-8000-00000000000{i}" for i in range(2)]


@pytest.fixture(scope="module")
def engineless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module: no engine, two stand-in GPUs, the torch wheel folder."""
    root = tmp_path_factory.mktemp("no-engine")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI)
    smi.chmod(0o755)
    (bin_dir / "gpus.csv").write_text(
        "".join(f"{i}, {uuid_}, NVIDIA H200, 143771\n" for i, uuid_ in enumerate(GPUS))
    )
    (bin_dir / "usage.csv").write_text("0, 0, 0\n1, 0, 0\n")
    (root / "no-index").mkdir()
    settings = {
        **torch_settings(),
        "pip_index_url": f"file://{root / 'no-index'}",
        "engine_check_seconds": "1",
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", f"unix://{root / ENGINE_LATER}")
        patch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
        srv = start_server(tmp_path_factory, "no-engine-data", **settings)
    yield srv
    srv.cleanup()


@pytest.fixture
def eclient(engineless: Server) -> httpx.Client:
    return engineless.client()


def _file(client: httpx.Client, run_id: str, path: str) -> str:
    found = client.get(f"/api/v1/runs/{run_id}/files/{path}")
    assert found.status_code == 200, (path, found.text)
    return found.text


def test_the_server_starts_and_says_local_runs_processes_only(
    engineless: Server, eclient: httpx.Client
) -> None:
    health = httpx.get(f"{engineless.url}/healthz").json()
    assert health["details"]["nodes"]["local"]["state"] == "Ready"
    assert health["details"]["nodes"]["local"]["runtimes"] == ["process"]
    local = eclient.get("/api/v1/nodes").json()["nodes"][0]
    assert local["name"] == "local" and local["runtimes"] == ["process"]
    assert [g["uuid"] for g in local["inventory"]["gpus"]] == GPUS
    add_user(eclient, "viewer")
    page = parse(login(engineless.url, "viewer").get("/nodes/local"))
    assert page.find("node-runtimes").text.startswith("process (runs with use_docker=False only)")
    assert page.find("node-docker").text == "no engine"
    assert page.find("runtimes-local").text == "process"


def test_a_container_run_is_refused_with_what_to_do(eclient: httpx.Client) -> None:
    response = submit_raw(eclient, {"entry_script": "train.py"}, make_snapshot({"train.py": ""}))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "use_docker"
    assert body["error"] == (
        "Target 'local' cannot run containers: the server's machine has no Docker engine: start "
        "one (`systemctl start docker`, or `dockerd`) and it is picked up within seconds, or run "
        "without containers (use_docker=False)"
    )


def test_a_run_without_a_container_completes(eclient: httpx.Client) -> None:
    script = (
        "import os\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/x.txt','w').write('ok')\n"
    )
    run = submit(eclient, script, use_docker=False)
    done = wait_for_status(eclient, run["runId"], timeout=60)
    assert done["status"] == "Completed", done["error"]
    assert _file(eclient, run["runId"], "outputs/x.txt") == "ok"


GPU_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    meet = Path(sys.argv[1])
    me, other = sys.argv[2], sys.argv[3]
    os.makedirs("outputs", exist_ok=True)
    open("outputs/cuda.txt", "w").write(os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
    (meet / me).touch()
    deadline = time.monotonic() + 60
    while not (meet / other).exists():  # both runs hold their GPU at the same time
        assert time.monotonic() < deadline, "the other run never started"
        time.sleep(0.1)
    """
)


def test_two_gpu_process_runs_get_one_gpu_each_by_uuid(
    eclient: httpx.Client, tmp_path: Path
) -> None:
    meet = tmp_path / "meet"
    meet.mkdir()
    runs = [
        submit(
            eclient,
            GPU_SCRIPT,
            use_docker=False,
            use_gpu=True,
            arguments=[str(meet), me, other],
        )
        for me, other in (("a", "b"), ("b", "a"))
    ]
    seen = []
    for run in runs:
        done = wait_for_status(eclient, run["runId"], timeout=60)
        assert done["status"] == "Completed", done["error"]
        seen.append(_file(eclient, run["runId"], "outputs/cuda.txt"))
    assert sorted(seen) == GPUS  # one GPU each, never the same one
    plain = submit(
        eclient,
        "import os\nos.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/cuda.txt','w').write(repr(os.environ.get('CUDA_VISIBLE_DEVICES')))\n",
        use_docker=False,
    )
    assert wait_for_status(eclient, plain["runId"], timeout=60)["status"] == "Completed"
    assert _file(eclient, plain["runId"], "outputs/cuda.txt") == "''"  # no GPU asked: none seen


def test_launch_plans_without_a_container_reuse_the_containers_launchers() -> None:
    def spec(**fields: object) -> EstimatorSpec:
        return msgspec.convert(
            {"entry_script": "t.py", "use_docker": False, **fields}, EstimatorSpec
        )

    work = Path("/data/work/r1")
    plain = launch_for(spec(), "/py", ["--lr", "1"], work, 0, 5000)
    assert plain == ProcessLaunch(["/py", "-u", "t.py", "--lr", "1"], {})
    gloo = {"distributed_training": {"type": "gloo", "process_count_per_node": 3}}
    torch = launch_for(spec(**gloo), "/py", [], work, 0, 5000)
    assert torch.argv == [
        "/py",
        f"{work}/sys/trainhub/lib/trainhub/_torch.py",
        "launch",
        "/py",
        "t.py",
    ]
    assert torch.env["TRAINHUB_TORCH_NPROC_PER_NODE"] == "3"
    assert torch.env["AZ_BATCHAI_PYTORCH_INIT_METHOD"] == "tcp://127.0.0.1:5000"
    assert torch.env["TRAINHUB_TORCH_FAILURES"] == f"{work}/torch-failures.jsonl"
    on_gpus = launch_for(spec(use_gpu=True, **gloo), "/py", [], work, 2, 5000)
    assert on_gpus.env["TRAINHUB_TORCH_NPROC_PER_NODE"] == "2"  # one process per GPU held
    mpi = launch_for(
        spec(distributed_backend="mpi", process_count_per_node=2), "/py", [], work, 0, 1
    )
    assert mpi.argv[1:3] == [f"{work}/sys/trainhub/lib/trainhub/_mpi.py", "launch"]
    assert mpi.env["TRAINHUB_MPI_NP"] == "2" and mpi.env[OWN_ENVIRONMENT] == "1"
    assert gpu_environment(GPUS, True) == {"CUDA_VISIBLE_DEVICES": ",".join(GPUS)}
    assert gpu_environment([], True) == {"CUDA_VISIBLE_DEVICES": ""}
    assert gpu_environment([], False) == {}


def test_a_multi_node_run_without_a_container_is_refused(eclient: httpx.Client) -> None:
    spec = {
        "entry_script": "train.py",
        "use_docker": False,
        "node_count": 2,
        "distributed_training": {"type": "gloo"},
    }
    response = submit_raw(eclient, spec, make_snapshot({"train.py": ""}))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "node_count"
    assert "node_count must be 1" in response.json()["error"]


@pytest.mark.slow  # the venv with torch is built once per server (about 40 s)
def test_a_gloo_pytorch_estimator_runs_as_two_torchrun_processes(
    engineless: Server, eclient: httpx.Client, tmp_path: Path
) -> None:
    from trainhub import Experiment, Gloo, PyTorch, Workspace

    assert WHEELS.is_dir()
    write_project(tmp_path / "proj", {"train.py": ALLREDUCE})
    estimator = PyTorch(
        source_directory=str(tmp_path / "proj"),
        entry_script="train.py",
        use_docker=False,
        process_count_per_node=2,
        distributed_training=Gloo(),
        pip_packages=[TORCH],
    )
    run = Experiment(Workspace(engineless.url, token=TOKEN), "no-engine").submit(estimator)
    done = wait_for_status(eclient, run.id, timeout=600)
    log = eclient.get(f"/api/v1/runs/{run.id}/logs").text
    assert done["status"] == "Completed", (done["error"], log)
    assert json.loads(_file(eclient, run.id, "outputs/world.json")) == {"sum": 3, "size": 2}
    envs = [json.loads(_file(eclient, run.id, f"outputs/env-{rank}.json")) for rank in range(2)]
    for rank, env in enumerate(envs):
        assert env["RANK"] == env["AZ_BATCHAI_TASK_INDEX"] == str(rank)
        assert env["WORLD_SIZE"] == env["LOCAL_WORLD_SIZE"] == "2"
        assert env["MASTER_ADDR"] == "127.0.0.1"
        assert env["TRAINHUB_DIST_BACKEND"] == "gloo"
        assert f"rank {rank} of 2: allreduce 3\n" in log
        assert _file(eclient, run.id, f"logs/torchrun/rank.{rank}/stdout").startswith("rank ")


@pytest.mark.slow
def test_a_failing_torchrun_process_is_named_with_its_last_lines(eclient: httpx.Client) -> None:
    script = (
        "import os, sys, time\nif os.environ['RANK'] == '1':\n"
        "    print('rank 1 gives up', flush=True)\n    sys.exit(3)\ntime.sleep(60)\n"
    )
    run = submit(
        eclient,
        script,
        use_docker=False,
        distributed_training={"type": "gloo", "process_count_per_node": 2},
        pip_packages=[TORCH],
        framework="PyTorch",
    )
    done = wait_for_status(eclient, run["runId"], timeout=600)
    assert done["status"] == "Failed"
    message = done["error"]["message"]
    assert "process 1 (node local, local rank 1) failed first, with exit code 3" in message, message
    assert "rank 1 gives up" in message


@pytest.mark.slow
def test_cancel_stops_every_torchrun_process_even_one_ignoring_sigterm(
    engineless: Server, eclient: httpx.Client, tmp_path: Path
) -> None:
    """torchrun starts its workers in sessions of their own: cancel still ends every one, even
    workers that ignore SIGTERM (torchrun itself is killed after the grace period, before it kills
    them)."""
    marker = uuid.uuid4().hex
    script = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"print('{marker}', flush=True)\ntime.sleep(600)\n"
    )
    run = submit(
        eclient,
        script,
        use_docker=False,
        distributed_training={"type": "gloo", "process_count_per_node": 2},
        pip_packages=[TORCH],
        framework="PyTorch",
    )
    wait_for_status(eclient, run["runId"], "Running", timeout=600)

    def processes() -> list[str]:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if run["runId"].encode() in (entry / "environ").read_bytes():
                    found.append(entry.name)
            except OSError:
                continue
        return found

    wait_for_log(eclient, run["runId"], marker, timeout=120)
    assert len(processes()) >= 4  # the wrapper, torchrun, two workers (and their relays)
    assert eclient.post(f"/api/v1/runs/{run['runId']}/cancel").status_code in (200, 202)
    assert wait_for_status(eclient, run["runId"], timeout=60)["status"] == "Canceled"
    wait_until(lambda: not processes(), "every process of the run ended", timeout=15)


def test_an_mpi_run_without_a_container_runs_mpirun_with_two_ranks(
    eclient: httpx.Client,
) -> None:
    script = textwrap.dedent(
        """
        import os
        rank = os.environ["OMPI_COMM_WORLD_RANK"]
        size = os.environ["OMPI_COMM_WORLD_SIZE"]
        os.makedirs("outputs", exist_ok=True)
        open(f"outputs/rank-{rank}.txt", "w").write(f"{size}:{os.environ['TRAINHUB_RUN_ID']}")
        """
    )
    run = submit(
        eclient,
        script,
        use_docker=False,
        distributed_training={"type": "mpi", "process_count_per_node": 2},
    )
    done = wait_for_status(eclient, run["runId"], timeout=60)
    assert done["status"] == "Completed", done["error"]
    for rank in range(2):
        assert _file(eclient, run["runId"], f"outputs/rank-{rank}.txt") == f"2:{run['runId']}"


@pytest.mark.docker  # last in this module: from here on the server has an engine
def test_an_engine_that_appears_later_is_taken_up_without_a_restart(
    engineless: Server, eclient: httpx.Client, docker_ready: None
) -> None:
    socket = Path(engineless.env["DOCKER_HOST"].removeprefix("unix://"))
    assert socket.name == ENGINE_LATER and not socket.exists()
    socket.symlink_to("/var/run/docker.sock")

    def runtimes() -> list[str]:
        found: list[str] = httpx.get(f"{engineless.url}/healthz").json()["details"]["nodes"][
            "local"
        ]["runtimes"]
        return found

    wait_until(lambda: runtimes() == ["docker", "process"], "local runs containers", timeout=20)
    run = submit(eclient, "print('in a container')\n")
    done = wait_for_status(eclient, run["runId"], timeout=120)
    assert done["status"] == "Completed", done["error"]
    assert "in a container" in eclient.get(f"/api/v1/runs/{run['runId']}/logs").text
