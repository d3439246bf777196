"""TensorFlow runs on the local node, as Azure ML's ``TensorFlow`` estimator ran them: parameter servers
(``ParameterServer(...)``: workers and servers in the run's one container, each with its ``TF_CONFIG``)
and Horovod-style ``Mpi()`` (the MPI path). The script is a plain-Python stand-in (tests/tf_env.py)
that checks its ``TF_CONFIG`` and reaches every parameter server over TCP."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import httpx
import pytest

from tests.conftest import TOKEN, Server
from tests.helpers import submit, wait_for_log, wait_for_status, wait_until
from tests.test_sdk import write_project
from tests.tf_env import PS_SCRIPT
from trainhub.runtime.tf_config import layout_for, node_environment
from trainhub.spec import SpecError, parse_estimator

BASE = "trainhub/base:cpu"  # the framework's image: TensorFlow itself is not needed by the stand-in


def _file(client: httpx.Client, run_id: str, path: str) -> str:
    found = client.get(f"/api/v1/runs/{run_id}/files/{path}")
    assert found.status_code == 200, (path, found.text)
    return found.text


def _log(client: httpx.Client, run_id: str) -> str:
    return client.get(f"/api/v1/runs/{run_id}/logs").text


def _containers_of(run_id: str) -> list[str]:
    engine = docker.from_env()
    try:
        found = engine.api.containers(all=True, filters={"label": f"org.trainhub.run_id={run_id}"})
        return [str(c["Id"]) for c in found]
    finally:
        engine.close()


def test_tasks_are_dealt_round_robin_workers_first_on_distinct_ports() -> None:
    layout = layout_for("run-1", 0, 3, 2, ["10.0.0.1", "10.0.0.2"])
    cluster = layout.cluster()
    hosts = {kind: [a.rsplit(":", 1)[0] for a in cluster[kind]] for kind in cluster}
    assert hosts == {
        "worker": ["10.0.0.1", "10.0.0.2", "10.0.0.1"],
        "ps": ["10.0.0.2", "10.0.0.1"],
    }
    assert node_environment(layout, 0)["TRAINHUB_TF_TASKS"] == "worker:0,worker:2,ps:1"
    assert node_environment(layout, 1)["TRAINHUB_TF_TASKS"] == "worker:1,ps:0"
    ports = set(layout.ports) | set(layout_for("run-1", 1, 3, 2, ["a", "b"]).ports)
    assert len(ports) == 10  # every task of both attempts has a port of its own


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"worker_count": 0}, "distributed_training.worker_count", "must be at least 1"),
        (
            {"parameter_server_count": 0},
            "distributed_training.parameter_server_count",
            "must be at least 1",
        ),
        (
            {"worker_count": 1, "node_count": 2},
            "distributed_training.worker_count",
            "every node of a parameter-server run runs at least one worker",
        ),
        (
            {"process_count_per_node": 2},
            "distributed_training.process_count_per_node",
            "does not apply to parameter servers",
        ),
    ],
)
def test_bad_parameter_server_counts_name_the_field(
    spec: dict[str, int], field: str, message: str
) -> None:
    node_count = spec.pop("node_count", 1)
    raw = {"entry_script": "t.py", "node_count": node_count}
    raw["distributed_training"] = {"type": "ps", **spec}
    with pytest.raises(SpecError) as caught:
        parse_estimator(json.dumps(raw))
    assert caught.value.field == field and message in caught.value.message


def test_the_older_tensorflow_spelling_is_sent_as_parameter_servers(tmp_path: Path) -> None:
    from azureml.train.dnn import TensorFlow

    spec = TensorFlow(
        str(tmp_path),
        entry_script="t.py",
        worker_count=2,
        parameter_server_count=1,
        distributed_backend="ps",
    ).to_spec()
    assert spec["distributed_training"] == {
        "type": "ps",
        "worker_count": 2,
        "parameter_server_count": 1,
    }
    assert "distributed_backend" not in spec and spec["framework"] == "TensorFlow"


@pytest.mark.docker
def test_two_workers_and_a_parameter_server_reach_each_other_with_their_tf_config(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    from azureml.train.dnn import ParameterServer, TensorFlow
    from trainhub import Experiment, Workspace

    write_project(tmp_path / "proj", {"train.py": PS_SCRIPT})
    estimator = TensorFlow(
        source_directory=str(tmp_path / "proj"),
        entry_script="train.py",
        distributed_training=ParameterServer(worker_count=2, parameter_server_count=1),
        custom_docker_image=BASE,
    )
    run = Experiment(Workspace(server.url, token=TOKEN), "tf-local").submit(estimator)
    done = wait_for_status(client, run.id, timeout=120)
    log = _log(client, run.id)
    assert done["status"] == "Completed", (done["error"], log)
    seen = [json.loads(_file(client, run.id, f"outputs/worker-{i}.json")) for i in range(2)]
    cluster = seen[0]["tf_config"]["cluster"]
    assert [a.rsplit(":", 1)[0] for a in cluster["worker"] + cluster["ps"]] == ["localhost"] * 3
    for index, worker in enumerate(seen):
        assert worker["tf_config"] == {
            "cluster": cluster,
            "task": {"type": "worker", "index": index},
            "environment": "cloud",
        }
        assert worker["answers"] == {cluster["ps"][0]: "ps 0"}
    # Each process's output: in the run's log with its task in front, and in a file of its own.
    for kind, index in (("worker", 0), ("worker", 1), ("ps", 0)):
        line = f"{kind} {index} at {cluster[kind][index]} on local: TF_CONFIG "
        assert f"[{kind} {index}] {line}" in log
        own = _file(client, run.id, f"logs/tensorflow/{kind}.{index}/stdout")
        assert own.startswith(line)
        assert json.loads(own.splitlines()[0].split("TF_CONFIG ", 1)[1])["task"] == {
            "type": kind,
            "index": index,
        }


@pytest.mark.docker
def test_a_failing_worker_fails_the_run_and_stops_the_others(client: httpx.Client) -> None:
    run = submit(
        client,
        PS_SCRIPT,
        distributed_training={"type": "ps", "worker_count": 2, "parameter_server_count": 1},
        script_params={"--fail-worker": 1},
    )
    done = wait_for_status(client, run["runId"], timeout=90)  # worker 0 would wait 600 s
    assert done["status"] == "Failed", _log(client, run["runId"])
    assert done["error"]["reason"] == "exit_code"
    message = done["error"]["message"]
    assert "worker 1 (node local) failed first, with exit code 1" in message
    assert "worker 1 gives up" in message
    own = _file(client, run["runId"], "logs/tensorflow/worker.0/stdout")
    assert own.endswith("worker 0 waits\nworker 0 stopped by SIGTERM\n"), own


@pytest.mark.docker
def test_cancel_stops_the_workers_and_the_parameter_server(client: httpx.Client) -> None:
    run = submit(
        client,
        PS_SCRIPT,
        distributed_training={"type": "ps", "worker_count": 2, "parameter_server_count": 1},
        script_params={"--hold": ""},
    )
    run_id = run["runId"]
    wait_for_log(client, run_id, "[worker 1] worker 1 waits", timeout=60)
    wait_for_log(client, run_id, "[worker 0] worker 0 waits")
    assert client.post(f"/api/v1/runs/{run_id}/cancel").status_code == 200
    done = wait_for_status(client, run_id, timeout=60)
    assert done["status"] == "Canceled", done
    assert "failed first" not in _log(client, run_id)
    for index in range(2):  # the launcher passed SIGTERM on
        own = _file(client, run_id, f"logs/tensorflow/worker.{index}/stdout")
        assert own.endswith(f"worker {index} waits\nworker {index} stopped by SIGTERM\n"), own
    wait_until(lambda: not _containers_of(run_id), "the run's container is gone")


@pytest.mark.docker
def test_a_tensorflow_mpi_estimator_runs_through_mpirun(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    from azureml.train.dnn import Mpi, TensorFlow
    from trainhub import Experiment, Workspace

    script = (
        "import os\nfrom mpi4py import MPI\n"
        "comm = MPI.COMM_WORLD\n"
        "total = comm.allreduce(comm.Get_rank() + 1)\n"
        "assert 'TF_CONFIG' not in os.environ\n"
        "print(f'horovod-style rank {comm.Get_rank()} of {comm.Get_size()}: {total}', flush=True)\n"
    )
    write_project(tmp_path / "proj", {"train.py": script})
    estimator = TensorFlow(
        source_directory=str(tmp_path / "proj"),
        entry_script="train.py",
        distributed_training=Mpi(process_count_per_node=2),
        custom_docker_image=BASE,
    )
    assert estimator.to_spec()["distributed_training"] == {
        "type": "mpi",
        "process_count_per_node": 2,
    }
    run = Experiment(Workspace(server.url, token=TOKEN), "tf-mpi").submit(estimator)
    done = wait_for_status(client, run.id, timeout=90)
    log = _log(client, run.id)
    assert done["status"] == "Completed", (done["error"], log)
    for rank in range(2):
        assert f"horovod-style rank {rank} of 2: 3" in log
