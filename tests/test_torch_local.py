"""PyTorch distributed runs on the local node: ``torchrun`` in the run's one container with the real
torch (a CPU wheel, tests/torch_env.py), as Azure ML's ``PyTorch`` estimator and
``PyTorchConfiguration`` ran them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TOKEN, Server, start_server
from tests.helpers import get_run, submit, wait_for_status
from tests.test_sdk import write_project
from tests.torch_env import ALLREDUCE, TORCH, torch_settings

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def torch_server(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Server]:
    srv = start_server(tmp_path_factory, "torch-local-data", **torch_settings())
    yield srv
    srv.cleanup()


@pytest.fixture
def tclient(torch_server: Server) -> httpx.Client:
    return torch_server.client()


def _log(client: httpx.Client, run_id: str) -> str:
    return client.get(f"/api/v1/runs/{run_id}/logs").text


def _file(client: httpx.Client, run_id: str, path: str) -> str:
    found = client.get(f"/api/v1/runs/{run_id}/files/{path}")
    assert found.status_code == 200, (path, found.text)
    return found.text


@pytest.mark.slow  # the torch environment's image is built once per engine, and kept
def test_a_gloo_pytorch_estimator_runs_three_processes_on_one_node(
    torch_server: Server, tclient: httpx.Client, tmp_path: Path
) -> None:
    from trainhub import Experiment, Gloo, PyTorch, Workspace

    write_project(tmp_path / "proj", {"train.py": ALLREDUCE})
    estimator = PyTorch(
        source_directory=str(tmp_path / "proj"),
        entry_script="train.py",
        process_count_per_node=3,
        distributed_training=Gloo(),
        pip_packages=[TORCH],
    )
    run = Experiment(Workspace(torch_server.url, token=TOKEN), "torch-local").submit(estimator)
    done = wait_for_status(tclient, run.id, timeout=600)
    log = _log(tclient, run.id)
    assert done["status"] == "Completed", (done["error"], log)
    world = json.loads(_file(tclient, run.id, "outputs/world.json"))
    assert world == {"sum": 6, "size": 3}
    envs = [json.loads(_file(tclient, run.id, f"outputs/env-{rank}.json")) for rank in range(3)]
    port = envs[0]["MASTER_PORT"]
    for rank, env in enumerate(envs):
        assert env == {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "3",
            "LOCAL_WORLD_SIZE": "3",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "AZ_BATCHAI_PYTORCH_INIT_METHOD": f"tcp://127.0.0.1:{port}",
            "AZ_BATCHAI_TASK_INDEX": str(rank),
            "AZ_BATCH_MASTER_NODE": f"127.0.0.1:{port}",
            "AZ_BATCHAI_MPI_MASTER_NODE": "127.0.0.1",
            "TRAINHUB_DIST_BACKEND": "gloo",
            "TRAINHUB_NODE": "local",
        }
        # Every process's output in the driver log, and in a file of its own.
        assert f"rank {rank} of 3: allreduce 6\n" in log
        own = _file(tclient, run.id, f"logs/torchrun/rank.{rank}/stdout")
        assert own == f"rank {rank} of 3: allreduce 6\n"
    assert _file(tclient, run.id, "outputs/node.txt") == "local"
    assert done["runDefinition"]["communicator"] == "Gloo"


@pytest.mark.slow
def test_a_pytorch_configuration_of_script_run_config_runs_its_processes(
    torch_server: Server, tclient: httpx.Client, tmp_path: Path
) -> None:
    from trainhub import Environment, Experiment, ScriptRunConfig, Workspace
    from trainhub.sdk.environment import CondaDependencies
    from trainhub.sdk.script_run_config import PyTorchConfiguration

    write_project(tmp_path / "proj", {"train.py": ALLREDUCE})
    env = Environment("torch-cpu")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=[TORCH])
    src = ScriptRunConfig(
        source_directory=str(tmp_path / "proj"),
        script="train.py",
        environment=env,
        distributed_job_config=PyTorchConfiguration(communication_backend="Gloo", process_count=2),
    )
    run = Experiment(Workspace(torch_server.url, token=TOKEN), "torch-src").submit(src)
    run.wait_for_completion(raise_on_error=True)
    assert json.loads(_file(tclient, run.id, "outputs/world.json")) == {"sum": 3, "size": 2}
    for rank in range(2):
        env = json.loads(_file(tclient, run.id, f"outputs/env-{rank}.json"))
        assert env["AZ_BATCHAI_TASK_INDEX"] == env["RANK"] == str(rank)


# Rank 1 gives up; the others would wait forever: torchrun ends them, and the run says who failed.
FAILING = """
import os, sys, time
rank = int(os.environ["RANK"])
print(f"rank {rank} started", flush=True)
if rank == 1:
    time.sleep(1)
    print("rank 1 is about to give up", flush=True)
    sys.exit("rank 1 gives up")
while True:
    time.sleep(0.1)
"""


@pytest.mark.slow
def test_a_failing_process_fails_the_run_with_its_message(tclient: httpx.Client) -> None:
    run = submit(
        tclient,
        FAILING,
        distributed_training={"type": "gloo"},
        process_count_per_node=3,
        pip_packages=[TORCH],
        experiment="torch-failing",
    )
    done = wait_for_status(tclient, run["runId"], timeout=600)
    assert done["status"] == "Failed", done
    assert done["error"]["reason"] == "exit_code"
    message = done["error"]["message"]
    assert "process 1 (node local, local rank 1) failed first, with exit code 1" in message
    assert "rank 1 is about to give up" in message and "rank 1 gives up" in message
    assert _file(tclient, run["runId"], "logs/torchrun/rank.1/stderr") == "rank 1 gives up\n"


def test_a_run_whose_image_lacks_torch_fails_saying_the_environment_needs_torch(
    tclient: httpx.Client,
) -> None:
    run = submit(tclient, "print('never')", distributed_backend="nccl", experiment="torch-missing")
    done = wait_for_status(tclient, run["runId"], timeout=120)
    assert done["status"] == "Failed", done
    assert "its environment needs torch" in done["error"]["message"]
    assert "pip_packages=['torch==2.13.0']" in done["error"]["message"]
    assert "never" not in _log(tclient, run["runId"])
    assert get_run(tclient, run["runId"])["properties"]["allocation"] == []
