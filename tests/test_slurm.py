"""Runs on a real Slurm cluster (tests/slurm_bed.py: munged, slurmctld and slurmd in a namespace
whose sshd is the login node): Slurm schedules, trainhub does the rest.

Run under ``flock /tmp/trainhub-testbed.lock`` (the cluster sits on the test bed's bridge)."""

from __future__ import annotations

import sqlite3
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conda_channel import PLACEHOLDER, Package, make_channel
from tests.conftest import TOKEN, Server, start_server
from tests.helpers import (
    add_user,
    cli_for,
    get_run,
    history,
    login,
    make_snapshot,
    submit,
    submit_raw,
    wait_for_log,
    wait_for_status,
    wait_until,
)
from tests.slurm_bed import PARTITION, SlurmBed
from tests.test_environments import make_wheel
from tests.torch_env import TORCH, torch_settings

pytestmark = pytest.mark.slow

TRAIN = textwrap.dedent(
    """
    import os, sys
    from trainhub import Run
    run = Run.get_context()
    run.log("acc", 0.75)
    print("job", os.environ.get("SLURM_JOB_ID"), "args", sys.argv[1:], flush=True)
    os.makedirs("outputs", exist_ok=True)
    open("outputs/model.txt", "w").write("slurm weights")
    os.makedirs("logs", exist_ok=True)
    open("logs/extra.txt", "w").write("a log of the script's own")
    """
)
FILL = {"distributed_backend": "mpi", "process_count_per_node": 2}  # both CPUs of the node
SLEEP = "import time\nprint('busy', flush=True)\ntime.sleep({})\nprint('woke', flush=True)\n"


def target_body(bed: SlurmBed, name: str = "hpc") -> dict[str, object]:
    return {
        "name": name,
        "kind": "slurm",
        "host": bed.address,
        "user": "root",
        "key_path": str(bed.client_key),
        "partition": PARTITION,
        "work_dir": str(bed.work_dir),
    }


def slurm_server(tmp_path_factory: pytest.TempPathFactory, bed: SlurmBed, **extra: str) -> Server:
    """A server whose pip builds use a package index on the cluster's shared storage (the login
    node's namespace reaches no other)."""
    index = bed.work_dir / "index" / "thlocal"
    if not index.exists():
        index.mkdir(parents=True)
        wheel = make_wheel(index, "thlocal", "1.0", "from the cluster's index")
        (index / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')
    return start_server(
        tmp_path_factory,
        "slurm-data",
        pip_index_url=f"file://{index.parent}",
        wheel_dir=torch_settings()["wheel_dir"],  # the host's folder: the cluster shares its files
        slurm_poll_seconds="0.3",
        sync_interval_seconds="0.5",
        ssh_keepalive_seconds="1",
        **extra,
    )


@pytest.fixture(scope="module")
def slurm_srv(tmp_path_factory: pytest.TempPathFactory, slurm: SlurmBed) -> Iterator[Server]:
    srv = slurm_server(tmp_path_factory, slurm)
    response = srv.client().post("/api/v1/targets", json=target_body(slurm))
    assert response.status_code == 201, response.text
    yield srv
    srv.cleanup()


@pytest.fixture
def sclient(slurm_srv: Server, slurm: SlurmBed) -> Iterator[httpx.Client]:
    slurm.wait_idle()
    yield slurm_srv.client()
    # A failed test's jobs must not hold the node for the next one (a passing test leaves none).
    slurm.slurm("scancel", "--user=root", check=False)


@pytest.fixture
def browser(slurm_srv: Server) -> httpx.Client:
    add_user(slurm_srv.client(), "slurm-viewer")
    return login(slurm_srv.url, "slurm-viewer")


def test_a_slurm_target_is_registered_with_its_host_key_pinned(
    sclient: httpx.Client, slurm: SlurmBed
) -> None:
    targets = {t["name"]: t for t in sclient.get("/api/v1/targets").json()["targets"]}
    hpc = targets["hpc"]
    assert (hpc["kind"], hpc["partition"], hpc["host"]) == ("slurm", PARTITION, slurm.address)
    assert hpc["hostKey"].split()[1] == slurm.host_key.with_suffix(".pub").read_text().split()[1]
    assert "key_path" not in hpc and "keyPath" not in hpc
    bad = sclient.post("/api/v1/targets", json={**target_body(slurm, "x"), "partition": "gpu"})
    assert bad.status_code == 422 and "partition" in bad.text, bad.text
    missing = target_body(slurm, "y")
    del missing["partition"]
    response = sclient.post("/api/v1/targets", json=missing)
    assert response.status_code == 422 and "partition" in response.text
    group = sclient.post("/api/v1/targets", json={"name": "hpc", "nodes": ["local"]})
    assert group.status_code == 422 and group.json()["field"] == "name", group.text
    both = submit_raw_status(sclient, conda_packages=["numpy"], pip_packages=["six"])
    assert both.status_code == 422 and both.json()["field"] == "pip_packages", both.text
    image = submit_raw_status(sclient, custom_docker_image="python:3.11")
    assert image.status_code == 422 and image.json()["field"] == "custom_docker_image", image.text


def submit_raw_status(client: httpx.Client, **estimator: object) -> httpx.Response:
    spec = {"entry_script": "train.py", "compute_target": "hpc", **estimator}
    return submit_raw(client, spec, make_snapshot({"train.py": "print(1)\n"}))


def test_a_login_node_showing_another_host_key_is_refused(
    sclient: httpx.Client, slurm: SlurmBed
) -> None:
    assert sclient.post("/api/v1/targets", json=target_body(slurm, "hpc-pin")).status_code == 201
    slurm.swap_host_key()
    try:
        run = submit(sclient, "print('never')\n", compute_target="hpc-pin")
        done = wait_for_status(sclient, run["runId"], timeout=30)
    finally:
        slurm.swap_host_key()
    assert done["status"] == "Failed"
    assert "cannot reach the login node" in done["error"]["message"], done["error"]
    assert "not trusted" in done["error"]["message"], done["error"]
    assert sclient.delete("/api/v1/targets/hpc-pin").status_code == 200


def test_a_run_completes_on_slurm_with_its_outputs_logs_and_metrics(
    sclient: httpx.Client, slurm: SlurmBed
) -> None:
    run = submit(sclient, TRAIN, compute_target="hpc", script_params={"--lr": 0.1})
    done = wait_for_status(sclient, run["runId"], timeout=90)
    assert done["status"] == "Completed", done["error"]
    assert history(done)[0] == "Queued" and history(done)[-3:] == [
        "Running",
        "Finalizing",
        "Completed",
    ]
    log = sclient.get(f"/api/v1/runs/{run['runId']}/logs").text
    assert "args ['--lr', '0.1']" in log and "job None" not in log, log
    files = f"/api/v1/runs/{run['runId']}/files"
    assert sclient.get(f"{files}/outputs/model.txt").text == "slurm weights"
    assert sclient.get(f"{files}/logs/extra.txt").text == "a log of the script's own"
    assert sclient.get(f"/api/v1/runs/{run['runId']}/metrics").json()["metrics"] == {"acc": 0.75}
    # The job was sized and named from the spec.
    job = (slurm.work_dir / "runs" / run["runId"] / "job.sh").read_text()
    assert f"--job-name=trainhub-{run['runId']}" in job and "--ntasks-per-node=1" in job


def test_a_run_waits_pending_with_slurms_reason_and_cancel_ends_both_kinds(
    sclient: httpx.Client, slurm: SlurmBed, browser: httpx.Client
) -> None:
    # Two processes fill the node's two CPUs; the next run waits in Slurm's queue.
    big = submit(sclient, SLEEP.format(120), compute_target="hpc", **FILL)
    wait_for_status(sclient, big["runId"], "Running", timeout=60)
    small = submit(sclient, SLEEP.format(1), compute_target="hpc")
    wait_until(
        lambda: (get_run(sclient, small["runId"])["properties"]["waitReason"] or "").endswith(
            "Resources"
        ),
        "the small run waits for Slurm's resources",
        timeout=30,
    )
    # Slurm's reason stays: trainhub's own scheduler leaves runs of Slurm targets alone.
    for _ in range(12):
        waiting = get_run(sclient, small["runId"])
        assert waiting["status"] == "Queued"
        assert "pending: Resources" in waiting["properties"]["waitReason"], waiting["properties"]
        time.sleep(0.25)
    # The queue page shows it beside trainhub's own waiting runs, with Slurm's reason.
    page = browser.get("/queue")
    assert page.status_code == 200, page.text
    row = page.text.split(f'id="queued-{small["runId"]}"')[1].split("</tr>")[0]
    assert "queued in Slurm as job" in row and "pending: Resources" in row, row
    # Cancel the running one: scancel ends its job, the waiting one starts and completes.
    wait_for_log(sclient, big["runId"], "busy")
    assert sclient.post(f"/api/v1/runs/{big['runId']}/cancel").status_code in (200, 202)
    assert wait_for_status(sclient, big["runId"], timeout=60)["status"] == "Canceled"
    done = wait_for_status(sclient, small["runId"], timeout=60)
    assert done["status"] == "Completed", done["error"]
    # Canceling a run that waits in Slurm's queue removes its job there.
    blocker = submit(sclient, SLEEP.format(120), compute_target="hpc", **FILL)
    wait_for_status(sclient, blocker["runId"], "Running", timeout=60)
    queued = submit(sclient, SLEEP.format(1), compute_target="hpc")
    wait_until(
        lambda: bool(get_run(sclient, queued["runId"])["properties"]["waitReason"]),
        "the queued run waits in Slurm",
        timeout=30,
    )
    for run in (queued, blocker):
        assert sclient.post(f"/api/v1/runs/{run['runId']}/cancel").status_code in (200, 202)
    for run in (queued, blocker):
        assert wait_for_status(sclient, run["runId"], timeout=60)["status"] == "Canceled"
    wait_until(lambda: not slurm.slurm("squeue", "-h").strip(), "no job left in Slurm", 30)


def test_a_failing_script_fails_with_its_exit_code_and_log_tail(sclient: httpx.Client) -> None:
    run = submit(
        sclient, "print('about to fail', flush=True)\nraise SystemExit(3)\n", compute_target="hpc"
    )
    done = wait_for_status(sclient, run["runId"], timeout=60)
    assert done["status"] == "Failed"
    assert done["properties"]["exitCode"] == 3
    assert "exited with code 3" in done["error"]["message"]
    assert "about to fail" in done["error"]["message"]


def test_an_mpi_run_has_two_ranks_in_its_allocation(sclient: httpx.Client) -> None:
    script = (
        "import os\nprint('rank', os.environ['OMPI_COMM_WORLD_RANK'], 'of', "
        "os.environ['OMPI_COMM_WORLD_SIZE'], flush=True)\n"
    )
    run = submit(
        sclient, script, compute_target="hpc", distributed_backend="mpi", process_count_per_node=2
    )
    done = wait_for_status(sclient, run["runId"], timeout=90)
    assert done["status"] == "Completed", done["error"]
    log = sclient.get(f"/api/v1/runs/{run['runId']}/logs").text
    assert "rank 0 of 2" in log and "rank 1 of 2" in log, log


TINYTOOL = Package(
    "tinytool",
    files={"bin/tinytool": f"#!/bin/sh\necho tinytool installed in {PLACEHOLDER}\n"},
    executables=("bin/tinytool",),
)
ALLREDUCE = """
import os
import torch
import torch.distributed as dist
dist.init_process_group(
    os.environ["TRAINHUB_DIST_BACKEND"],
    init_method=os.environ["AZ_BATCHAI_PYTORCH_INIT_METHOD"],
    rank=int(os.environ["AZ_BATCHAI_TASK_INDEX"]),
    world_size=int(os.environ["WORLD_SIZE"]),
)
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
print(f"rank {dist.get_rank()} of {dist.get_world_size()}: allreduce {total.item():g}", flush=True)
dist.destroy_process_group()
"""


def test_a_gloo_run_starts_torchrun_with_two_processes_in_its_allocation(
    sclient: httpx.Client,
) -> None:
    run = submit(
        sclient,
        ALLREDUCE,
        compute_target="hpc",
        pip_packages=[TORCH],
        distributed_backend="gloo",
        process_count_per_node=2,
    )
    done = wait_for_status(sclient, run["runId"], timeout=400)
    assert done["status"] == "Completed", done["error"]
    log = sclient.get(f"/api/v1/runs/{run['runId']}/logs").text
    assert "rank 0 of 2: allreduce 3" in log and "rank 1 of 2: allreduce 3" in log, log
    rank1 = sclient.get(f"/api/v1/runs/{run['runId']}/files/logs/torchrun/rank.1/stdout").text
    assert "rank 1 of 2" in rank1, rank1


def test_a_pip_environment_is_built_once_and_reused(sclient: httpx.Client) -> None:
    script = "import thlocal, sys\nprint('thlocal', thlocal.VALUE, sys.prefix, flush=True)\n"
    first = wait_for_status(
        sclient,
        submit(sclient, script, compute_target="hpc", pip_packages=["thlocal==1.0"])["runId"],
        timeout=240,
    )
    second = wait_for_status(
        sclient,
        submit(sclient, script, compute_target="hpc", pip_packages=["thlocal==1.0"])["runId"],
        timeout=120,
    )
    assert first["status"] == second["status"] == "Completed", (first["error"], second["error"])
    builds = [
        sclient.get(f"/api/v1/runs/{r['runId']}/files/logs/build_log.txt").text
        for r in (first, second)
    ]
    assert "Successfully installed thlocal-1.0" in builds[0] and "environment built" in builds[0]
    assert "reused, no build" in builds[1] and "Successfully installed" not in builds[1]
    logs = [sclient.get(f"/api/v1/runs/{r['runId']}/logs").text for r in (first, second)]
    prefixes = {line.split()[-1] for log in logs for line in log.splitlines() if "thlocal " in line}
    assert len(prefixes) == 1 and "/envs/venv-" in prefixes.pop(), logs


def test_a_requirements_file_from_the_snapshot_is_installed_into_its_own_venv(
    sclient: httpx.Client,
) -> None:
    script = "import thlocal, sys\nprint('req', thlocal.VALUE, sys.prefix, flush=True)\n"
    run = submit(
        sclient,
        script,
        compute_target="hpc",
        extra_files={"reqs/slurm.txt": "thlocal==1.0\n"},
        pip_requirements_file="reqs/slurm.txt",
    )
    done = wait_for_status(sclient, run["runId"], timeout=240)
    assert done["status"] == "Completed", done["error"]
    build = sclient.get(f"/api/v1/runs/{run['runId']}/files/logs/build_log.txt").text
    assert "Successfully installed thlocal-1.0" in build, build
    log = sclient.get(f"/api/v1/runs/{run['runId']}/logs").text
    assert "req from the cluster's index" in log and "/envs/venv-" in log, log


def test_a_conda_environment_is_built_on_the_cluster_once_and_its_tools_run(
    sclient: httpx.Client, slurm: SlurmBed
) -> None:
    channel = slurm.work_dir / "channel"  # a file:// channel: the login node shares these files
    if not channel.exists():
        make_channel(channel, [TINYTOOL])
    env_file = f"channels: [{channel}]\ndependencies: [tinytool]\n"
    script = (
        "import os, subprocess\nprint(subprocess.run(['tinytool'], capture_output=True, "
        "text=True).stdout.strip(), '|', os.environ['CONDA_PREFIX'], flush=True)\n"
    )
    done = []
    for _ in range(2):
        run = submit(
            sclient,
            script,
            compute_target="hpc",
            extra_files={"env.yml": env_file},
            conda_dependencies_file="env.yml",
        )
        done.append(wait_for_status(sclient, run["runId"], timeout=240))
    assert [d["status"] for d in done] == ["Completed"] * 2, [d["error"] for d in done]
    builds = [sclient.get(f"/api/v1/runs/{d['runId']}/files/logs/build_log.txt").text for d in done]
    assert "built" in builds[0] and "reused, no solve" in builds[1], builds
    log = sclient.get(f"/api/v1/runs/{done[0]['runId']}/logs").text
    line = next(line for line in log.splitlines() if "tinytool installed in" in line)
    baked, prefix = line.removeprefix("tinytool installed in ").split(" | ")
    assert baked == prefix and prefix.startswith(f"{slurm.work_dir}/envs/conda-"), line


def test_a_time_limit_ends_the_job_as_timeout(sclient: httpx.Client) -> None:
    run = submit(sclient, SLEEP.format(300), compute_target="hpc", max_run_duration_seconds=5)
    done = wait_for_status(sclient, run["runId"], timeout=150)
    assert (done["status"], done["properties"]["reason"]) == ("Failed", "timeout")
    assert "max_run_duration_seconds" in done["error"]["message"], done["error"]


def test_a_lost_slurmd_fails_the_run_as_node_lost(sclient: httpx.Client, slurm: SlurmBed) -> None:
    run = submit(sclient, SLEEP.format(300), compute_target="hpc")
    wait_for_log(sclient, run["runId"], "busy", timeout=60)
    slurm.kill_slurmd()
    try:
        done = wait_for_status(sclient, run["runId"], timeout=120)
    finally:
        slurm.start_slurmd()
        slurm.resume_node()
    assert (done["status"], done["properties"]["reason"]) == ("Failed", "node_lost")
    assert "NODE_FAIL" in done["error"]["message"], done["error"]


def test_a_killed_server_reattaches_its_slurm_run_by_job_id(
    tmp_path_factory: pytest.TempPathFactory, slurm: SlurmBed
) -> None:
    slurm.wait_idle()
    # A short grace for lost nodes: a Slurm run taken for an SSH node's run would fail at once.
    srv = slurm_server(tmp_path_factory, slurm, node_lost_grace_seconds="1")
    try:
        client = srv.client()
        assert client.post("/api/v1/targets", json=target_body(slurm, "hpc2")).status_code == 201
        script = (
            "import os\nos.makedirs('logs')\nopen('logs/progress.txt', 'w').write('epoch 1')\n"
            + SLEEP.format(8)
            + "os.makedirs('outputs')\n"
            + "open('outputs/after.txt', 'w').write('made after the restart')\n"
        )
        run = submit(client, script, compute_target="hpc2")
        wait_for_log(client, run["runId"], "busy", timeout=60)
        progress = f"/api/v1/runs/{run['runId']}/files/logs/progress.txt"
        wait_until(lambda: client.get(progress).text == "epoch 1", "./logs while it runs", 10)
        assert get_run(client, run["runId"])["status"] == "Running"
        srv.kill()
        srv.start()
        client = srv.client()
        done = wait_for_status(client, run["runId"], timeout=90)
        assert done["status"] == "Completed", done["error"]
        log = client.get(f"/api/v1/runs/{run['runId']}/logs").text
        assert log.count("busy") == 1 and "woke" in log, log  # one job, followed again
        assert (
            client.get(f"/api/v1/runs/{run['runId']}/files/outputs/after.txt").text
            == "made after the restart"
        )
    finally:
        srv.cleanup()


def test_a_server_killed_before_recording_its_job_id_adopts_the_job_instead_of_resubmitting(
    slurm_srv: Server, slurm: SlurmBed
) -> None:
    slurm.wait_idle()
    client = slurm_srv.client()
    run = submit(client, SLEEP.format(4), compute_target="hpc")
    wait_for_log(client, run["runId"], "busy", timeout=60)
    slurm_srv.kill()
    # What a kill between sbatch and the id's write leaves: a job in Slurm the server knows nothing of.
    with sqlite3.connect(slurm_srv.data / "trainhub.db") as conn:
        conn.execute("delete from slurm_jobs where run_id = ?", [run["runId"]])
    slurm_srv.start()
    client = slurm_srv.client()
    done = wait_for_status(client, run["runId"], timeout=90)
    assert done["status"] == "Completed", done["error"]
    log = client.get(f"/api/v1/runs/{run['runId']}/logs").text
    assert log.count("busy") == 1 and log.count("woke") == 1, log
    jobs = slurm.slurm(
        "squeue", "-h", "--states=all", f"--name=trainhub-{run['runId']}", "-o", "%i"
    )
    assert len(jobs.split()) == 1, jobs
    build = client.get(f"/api/v1/runs/{run['runId']}/files/logs/build_log.txt").text
    assert "followed, not submitted again" in build, build


def test_the_cli_creates_and_lists_a_slurm_target(slurm_srv: Server, slurm: SlurmBed) -> None:
    cli = cli_for(slurm_srv.url, TOKEN)
    made = cli(
        "target",
        "create",
        "hpc-cli",
        "--kind",
        "slurm",
        "--host",
        slurm.address,
        "--user",
        "root",
        "--key",
        str(slurm.client_key),
        "--partition",
        PARTITION,
        "--work-dir",
        str(slurm.work_dir),
    )
    assert made.returncode == 0, made.stderr
    assert "Slurm partition debug" in made.stdout and "ssh-ed25519" in made.stdout
    listed = cli("target", "list")
    assert "hpc-cli: Slurm partition debug via " + slurm.address in listed.stdout
    assert cli("target", "remove", "hpc-cli").returncode == 0


def test_the_sdk_attaches_a_slurm_cluster_and_runs_an_estimator_there(
    slurm_srv: Server, slurm: SlurmBed, tmp_path: Path
) -> None:
    from azureml.core import Experiment, Workspace
    from azureml.core.compute import ComputeTarget, SlurmCompute
    from azureml.train.estimator import Estimator

    slurm.wait_idle()
    ws = Workspace(slurm_srv.url, token=TOKEN)
    config = SlurmCompute.attach_configuration(
        address=slurm.address,
        username="root",
        key_path=str(slurm.client_key),
        partition=PARTITION,
        work_dir=str(slurm.work_dir),
    )
    compute = ComputeTarget.attach(ws, "hpc-sdk", config)
    (tmp_path / "t.py").write_text("print('estimator on slurm', flush=True)\n")
    run = Experiment(ws, "sdk-slurm").submit(
        Estimator(str(tmp_path), entry_script="t.py", compute_target=compute)
    )
    run.wait_for_completion()
    assert run.get_status() == "Completed"
    assert "estimator on slurm" in slurm_srv.client().get(f"/api/v1/runs/{run.id}/logs").text
    compute.detach()
    names = [t["name"] for t in slurm_srv.client().get("/api/v1/targets").json()["targets"]]
    assert "hpc-sdk" not in names
