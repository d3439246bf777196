"""The batch script of a Slurm run and the reading of Slurm's answers, as text (the GPU options
cannot run on the test cluster, which has no GPUs: they are checked here)."""

from __future__ import annotations

import subprocess

import msgspec

from trainhub.slurm import script
from trainhub.slurm.script import Phase
from trainhub.spec import EstimatorSpec
from trainhub.store.slurm import SlurmTarget

TARGET = SlurmTarget(
    name="hpc",
    host="login.example",
    port=22,
    user="alice",
    key_path="/keys/alice",
    host_key="ssh-ed25519 AAAA",
    partition="gpu",
    account="lab42",
    qos="normal",
    work_dir="/shared/trainhub",
    created_at=0.0,
)


def spec(**fields: object) -> EstimatorSpec:
    return msgspec.convert({"entry_script": "train.py", **fields}, EstimatorSpec)


def options(text: str) -> list[str]:
    return [
        line.removeprefix("#SBATCH ") for line in text.splitlines() if line.startswith("#SBATCH")
    ]


def test_a_gpu_run_asks_for_its_nodes_tasks_gpus_and_time() -> None:
    text = script.batch_script(
        "run_1",
        spec(
            node_count=2,
            process_count_per_node=2,
            distributed_backend="mpi",
            use_gpu=True,
            max_run_duration_seconds=90,
            script_params={"--lr": "0.1"},
        ),
        TARGET,
        "/shared/trainhub/runs/run_1",
        "/shared/trainhub/envs/venv-x/bin/python",
        {"TRAINHUB_RUN_ID": "run_1", "QUOTED": "a b'c"},
    )
    assert options(text) == [
        "--job-name=trainhub-run_1",
        "--comment=trainhub-run_1-attempt-0",
        "--output=/shared/trainhub/runs/run_1/driver_log.txt",
        "--chdir=/shared/trainhub/runs/run_1/wd",
        "--partition=gpu",
        "--nodes=2",
        "--ntasks-per-node=2",
        "--no-requeue",
        "--account=lab42",
        "--qos=normal",
        "--gpus-per-node=2",
        "--time=1:30",
    ]
    assert (
        "mpirun -np 4 /shared/trainhub/envs/venv-x/bin/python train.py --lr 0.1 || code=$?" in text
    )
    assert "export QUOTED='a b'\"'\"'c'" in text
    # The script is valid shell.
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_a_cpu_run_starts_its_script_with_srun_and_asks_no_gpus() -> None:
    text = script.batch_script("r", spec(), TARGET, "/w/runs/r", "python3", {})
    assert not any(o.startswith(("--gpus", "--time")) for o in options(text))
    assert "srun --kill-on-bad-exit=1 python3 train.py || code=$?" in text
    assert text.rstrip().endswith('exit "$code"')


def test_slurms_states_map_onto_run_phases() -> None:
    assert script.phase_of("PENDING") is Phase.PENDING
    assert script.phase_of("RUNNING") is Phase.RUNNING
    assert script.phase_of("COMPLETING") is Phase.RUNNING
    assert script.phase_of("COMPLETED") is Phase.COMPLETED
    assert script.phase_of("CANCELLED by 0") is Phase.CANCELLED
    assert script.phase_of("TIMEOUT") is Phase.TIMEOUT
    assert script.phase_of("NODE_FAIL") is Phase.NODE_FAIL
    assert script.phase_of("OUT_OF_MEMORY") is Phase.FAILED
    assert script.phase_of("SOMETHING_NEW") is Phase.RUNNING  # keep watching, never end it
    found = script.parse_squeue("12|PENDING|Resources|trainhub-a\n13|RUNNING|None|trainhub-b\n")
    assert found["12"].reason == "Resources" and found["13"].reason is None
    assert script.wait_reason(found["12"]) == "Slurm job 12 pending: Resources"
    assert script.parse_sacct("14|FAILED\n15|CANCELLED by 0\n")["15"].phase is Phase.CANCELLED


def test_an_environment_is_keyed_by_its_packages_in_any_order() -> None:
    assert script.env_key("python3", ("a", "b==1")) == script.env_key("python3", ("b==1", "a"))
    assert script.env_key("python3", ("a",)) != script.env_key("python3", ("a", "b"))
    command = script.env_build_command("/w/envs/venv-1", ("torch==2.1", "x>1"), {"PIP_X": "1"})
    assert "flock /w/envs/venv-1.lock" in command and "'x>1'" in command
    assert "export PIP_X=1;" in command


def test_only_a_job_of_the_same_attempt_is_adopted_after_a_restart() -> None:
    text = script.batch_script("r1", spec(), TARGET, "/shared/trainhub/runs/r1", "python3", {}, 2)
    assert "--comment=trainhub-r1-attempt-2" in options(text)
    listed = script.parse_squeue(
        "41|NODE_FAIL|None|trainhub-r1|trainhub-r1-attempt-1\n"
        "57|PENDING|Priority|trainhub-r1|trainhub-r1-attempt-2\n"
    )
    assert script.adoptable(listed, "r1", 2) == "57"
    assert script.adoptable(listed, "r1", 3) is None  # the retry after 57 is lost: a new job


def test_a_requirements_file_is_installed_and_keyed_by_its_text() -> None:
    plain = script.env_key("python3", ("thlocal==1.0",))
    assert script.env_key("python3", ("thlocal==1.0",), "six\n") != plain
    assert script.env_key("python3", ("thlocal==1.0",), "six\n") == script.env_key(
        "python3", ("thlocal==1.0",), "six\n"
    )
    command = script.env_build_command("/w/envs/venv-1", (), {}, "/w/runs/r/requirements.txt")
    assert "pip install -r /w/runs/r/requirements.txt" in command


def test_a_torchrun_run_starts_one_torchrun_per_node_rendezvousing_on_the_first_host() -> None:
    two = script.batch_script(
        "r1",
        spec(node_count=2, process_count_per_node=4, distributed_backend="gloo"),
        TARGET,
        "/w/runs/r1",
        "/w/envs/venv-1/bin/python",
        {},
    )
    assert "--ntasks-per-node=4" in options(two)  # the allocation holds every process's CPU
    assert (
        'TRAINHUB_TORCH_MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
        in two
    )
    launch = next(line for line in two.splitlines() if line.startswith("srun "))
    assert launch.startswith(
        "srun --kill-on-bad-exit=1 --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=4 bash -c "
    )
    inner = subprocess.run(  # what bash hands the per-node command, quoting undone
        ["bash", "-c", f"printf '%s\\n' {launch.split(' bash -c ', 1)[1]}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert inner.split()[1:6] == [
        "exec",
        "/w/envs/venv-1/bin/python",
        "/w/runs/r1/sys/trainhub/lib/trainhub/_torch.py",
        "launch",
        "/w/envs/venv-1/bin/python",
    ]
    assert 'TRAINHUB_TORCH_NODE_RANK="$SLURM_NODEID"' in inner
    assert "TRAINHUB_TORCH_NNODES=2 TRAINHUB_TORCH_NPROC_PER_NODE=4" in two
    assert "TRAINHUB_DIST_BACKEND=gloo" in two and "AZ_BATCHAI_PYTORCH_INIT_METHOD" in two
    one = script.batch_script(
        "r1",
        spec(process_count_per_node=2, distributed_backend="nccl"),
        TARGET,
        "/w/runs/r1",
        "python3",
        {},
    )
    assert "TRAINHUB_TORCH_MASTER_ADDR=127.0.0.1" in one and "mpirun" not in one
