"""MPI runs on one node: ``mpirun -np N`` in the run's one container, with the real Open MPI and mpi4py
of the base image."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.conftest import TOKEN, Server
from tests.helpers import submit, wait_for_status

MPI_SCRIPT = """
import json, os, sys
from mpi4py import MPI
from trainhub import Run

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
print(f"rank {rank} of {size} says hello, args {sys.argv[1:]}", flush=True)
total = comm.allreduce(rank + 1, op=MPI.SUM)
seen = comm.gather({"rank": rank, "run": os.environ["TRAINHUB_RUN_ID"], "cwd": os.getcwd()}, root=0)
if rank == 0:
    os.makedirs("outputs", exist_ok=True)
    json.dump({"size": size, "total": total, "seen": seen}, open("outputs/world.json", "w"))
    Run.get_context().log("world_size", size)
"""


def test_a_single_node_mpi_run_starts_every_process(client: httpx.Client) -> None:
    run = submit(
        client,
        MPI_SCRIPT,
        distributed_training={"type": "mpi", "process_count_per_node": 3},
        script_params={"--lr": 0.5},
    )
    done = wait_for_status(client, run["runId"], timeout=90)
    log = client.get(f"/api/v1/runs/{run['runId']}/logs").text
    assert done["status"] == "Completed", (done["error"], log)
    for rank in range(3):
        assert f"rank {rank} of 3 says hello, args ['--lr', '0.5']" in log
    world = json.loads(client.get(f"/api/v1/runs/{run['runId']}/files/outputs/world.json").content)
    assert world["size"] == 3 and world["total"] == 6
    assert {s["run"] for s in world["seen"]} == {run["runId"]}
    assert {s["cwd"] for s in world["seen"]} == {"/trainhub/wd"}
    metrics = client.get(f"/api/v1/runs/{run['runId']}/metrics").json()
    assert metrics["metrics"]["world_size"] == 3
    for rank in range(3):  # and each process's output in its own file, as Open MPI lays them out
        own = client.get(f"/api/v1/runs/{run['runId']}/files/logs/mpi/1/rank.{rank}/stdout")
        assert own.status_code == 200
        assert own.text == f"rank {rank} of 3 says hello, args ['--lr', '0.5']\n"


def test_a_failing_rank_fails_the_run_with_its_error(client: httpx.Client) -> None:
    script = (
        "from mpi4py import MPI\nimport sys\n"
        "if MPI.COMM_WORLD.Get_rank() == 1:\n    sys.exit('rank 1 gives up')\n"
        "MPI.COMM_WORLD.Barrier()\n"
    )
    run = submit(client, script, distributed_backend="mpi", process_count_per_node=2)
    done = wait_for_status(client, run["runId"], timeout=90)
    assert done["status"] == "Failed"
    assert done["error"]["reason"] == "exit_code"
    assert "rank 1 gives up" in done["error"]["message"]


def test_cpu_processes_beyond_any_node_are_422(client: httpx.Client) -> None:
    from tests.helpers import make_snapshot, submit_raw

    spec = {"entry_script": "train.py", "distributed_backend": "mpi", "process_count_per_node": 64}
    response = submit_raw(client, spec, make_snapshot({"train.py": "print()"}))
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == "process_count_per_node"
    assert "64 process(es) per node need 64 CPU slots per node" in body["error"]


def test_the_sdks_mpi_estimator_runs_as_azure_ml_ran_it(server: Server, tmp_path: Path) -> None:
    from trainhub import Estimator, Experiment, Mpi, Workspace

    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "train.py").write_text(MPI_SCRIPT)
    ws = Workspace(server.url, token=TOKEN)
    est = Estimator(
        source_directory=str(tmp_path / "proj"),
        entry_script="train.py",
        script_params={"--lr": 0.5},
        distributed_training=Mpi(process_count_per_node=2),
    )
    run = Experiment(ws, "sdk-mpi").submit(est)
    run.wait_for_completion(raise_on_error=True)
    assert run.get_metrics()["world_size"] == 2
    run.download_file("outputs/world.json", str(tmp_path / "world.json"))
    assert json.loads((tmp_path / "world.json").read_text())["total"] == 3
