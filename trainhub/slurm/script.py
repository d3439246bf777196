"""What trainhub says to Slurm and how it reads the answers: the batch script of a run (from its
spec), the environment build command, and the states of ``squeue``/``sacct`` mapped onto run
statuses. Pure functions: unit-tested on their text, run for real by ``trainhub.slurm.service``."""

from __future__ import annotations

import hashlib
import math
import shlex
from dataclasses import dataclass
from enum import Enum

from trainhub.runtime.mpi import port_for
from trainhub.spec import EstimatorSpec, is_mpi, processes_per_node, torch_backend
from trainhub.store.slurm import SlurmTarget

TORCH_LAUNCHER = "trainhub/lib/trainhub/_torch.py"  # in the run folder's sys/ (the runtime)
JOB_PREFIX = "trainhub-"  # job names are JOB_PREFIX + run id
DRIVER_LOG = "driver_log.txt"  # in the run's folder on the cluster: the job's --output
EXIT_FILE = "exit_code"  # the entry script's exit code, written by the batch script
# squeue's fields, "|"-separated: job id, state, reason, job name, comment (the attempt).
SQUEUE_FORMAT = "%i|%T|%r|%j|%k"


class Phase(Enum):
    """Where a job stands, as trainhub reads it."""

    PENDING = "pending"  # waiting in Slurm's queue: the run is Queued, with Slurm's reason
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # the script failed (its exit code says how)
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    NODE_FAIL = "node_fail"  # a node of the job was lost
    GONE = "gone"  # Slurm no longer knows the job and left no exit code


PHASES = {
    "PENDING": Phase.PENDING,
    "CONFIGURING": Phase.PENDING,
    "REQUEUED": Phase.PENDING,
    "REQUEUE_HOLD": Phase.PENDING,
    "REQUEUE_FED": Phase.PENDING,
    "RESV_DEL_HOLD": Phase.PENDING,
    "RUNNING": Phase.RUNNING,
    "COMPLETING": Phase.RUNNING,
    "SUSPENDED": Phase.RUNNING,
    "STOPPED": Phase.RUNNING,
    "SIGNALING": Phase.RUNNING,
    "STAGE_OUT": Phase.RUNNING,
    "RESIZING": Phase.RUNNING,
    "COMPLETED": Phase.COMPLETED,
    "FAILED": Phase.FAILED,
    "OUT_OF_MEMORY": Phase.FAILED,
    "BOOT_FAIL": Phase.NODE_FAIL,
    "NODE_FAIL": Phase.NODE_FAIL,
    "DEADLINE": Phase.TIMEOUT,
    "TIMEOUT": Phase.TIMEOUT,
    "PREEMPTED": Phase.CANCELLED,
    "CANCELLED": Phase.CANCELLED,
    "REVOKED": Phase.CANCELLED,
    "SPECIAL_EXIT": Phase.FAILED,
}


@dataclass(frozen=True)
class JobState:
    job_id: str
    phase: Phase
    state: str  # Slurm's own word (PENDING, NODE_FAIL...)
    reason: str | None  # Slurm's reason while pending ("Resources", "Priority"...)
    comment: str = ""  # the job's --comment: which attempt of its run it is (squeue only)


def phase_of(state: str) -> Phase:
    """``CANCELLED by 0`` (sacct) and ``CANCELLED+`` are CANCELLED; an unknown word counts as
    running, so trainhub keeps watching rather than ending a run on a state it cannot read."""
    word = state.split()[0].rstrip("+") if state.strip() else ""
    return PHASES.get(word, Phase.RUNNING)


def parse_squeue(text: str) -> dict[str, JobState]:
    """``squeue -h -o SQUEUE_FORMAT`` output -> job id -> state."""
    found = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0]:
            continue
        job_id, state, reason = parts[0], parts[1], parts[2]
        comment = parts[4] if len(parts) > 4 else ""
        found[job_id] = JobState(
            job_id, phase_of(state), state, None if reason in ("None", "") else reason, comment
        )
    return found


def parse_sacct(text: str) -> dict[str, JobState]:
    """``sacct -n -X -P -o JobID,State`` output -> job id -> state (for jobs squeue forgot)."""
    found = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2 and parts[0]:
            found[parts[0]] = JobState(parts[0], phase_of(parts[1]), parts[1], None)
    return found


def attempt_comment(run_id: str, attempt: int) -> str:
    """The ``--comment`` of a run's job: a job found under the run's name with another comment
    belongs to an earlier attempt (one retried after a lost node) and is never adopted."""
    return f"{JOB_PREFIX}{run_id}-attempt-{attempt}"


def adoptable(states: dict[str, JobState], run_id: str, attempt: int) -> str | None:
    """The job a server killed between ``sbatch`` and recording its id left behind for this
    attempt of the run (the newest if there were several), if any."""
    mine = [j for j in states.values() if j.comment == attempt_comment(run_id, attempt)]
    return (
        max(mine, key=lambda j: int(j.job_id) if j.job_id.isdigit() else 0).job_id if mine else None
    )


def wait_reason(state: JobState) -> str:
    """The wait reason a pending run shows: Slurm's own words, said to be Slurm's."""
    return f"Slurm job {state.job_id} pending: {state.reason or 'no reason given'}"


def env_key(python: str, packages: tuple[str, ...], requirements: str | None = None) -> str:
    """A virtual environment's folder name: the same packages (in any order) and the same
    requirements file's text share one build."""
    extra = ["-r", requirements] if requirements else []  # pip-only keys stay as they were
    text = "\n".join([python, *sorted(packages), *extra])
    return "venv-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def env_build_command(
    env_dir: str,
    packages: tuple[str, ...],
    pip_env: dict[str, str],
    requirements_path: str | None = None,
) -> str:
    """Build the virtual environment once (under a lock, into a temporary folder renamed when
    complete, so a failed or concurrent build never leaves a half environment in use).
    ``requirements_path`` is the spec's pip requirements file, copied to the cluster."""
    q = shlex.quote
    exports = "".join(f"export {k}={q(v)}; " for k, v in sorted(pip_env.items()))
    arguments = [*(["-r", requirements_path] if requirements_path else []), *packages]
    build = (
        f"if [ -x {q(env_dir)}/bin/python ]; then echo 'environment present: reused, no build'; "
        f"else rm -rf {q(env_dir)}.tmp && python3 -m venv {q(env_dir)}.tmp && "
        f"{q(env_dir)}.tmp/bin/pip install {' '.join(q(p) for p in arguments)} && "
        f"mv {q(env_dir)}.tmp {q(env_dir)} && echo 'environment built'; fi"
    )
    return (
        f"mkdir -p {q(env_dir.rsplit('/', 1)[0])} && {exports}"
        f"flock {q(env_dir)}.lock sh -c {q(build)} 2>&1"
    )


def time_limit(seconds: int) -> str:
    """``--time`` as minutes:seconds (Slurm counts in minutes and checks about twice a minute)."""
    minutes, rest = divmod(max(1, seconds), 60)
    return f"{minutes}:{rest:02d}" if minutes < 10_000 else str(math.ceil(seconds / 60))


def batch_script(
    run_id: str,
    spec: EstimatorSpec,
    target: SlurmTarget,
    run_folder: str,
    python: str,
    variables: dict[str, str],
    attempt: int = 0,
    path_dirs: tuple[str, ...] = (),
) -> str:
    """The run's batch job: its size from the spec, its output into the run folder, the entry
    script started by ``srun`` (``mpirun`` in the allocation for MPI), the exit code kept beside
    it for when Slurm has forgotten the job."""
    q = shlex.quote
    per_node = processes_per_node(spec)
    options = [
        f"--job-name={JOB_PREFIX}{run_id}",
        f"--comment={attempt_comment(run_id, attempt)}",
        f"--output={run_folder}/{DRIVER_LOG}",
        f"--chdir={run_folder}/wd",
        f"--partition={target.partition}",
        f"--nodes={spec.node_count}",
        f"--ntasks-per-node={per_node}",
        # trainhub's own retries (max_retries) decide what a lost node means, as on SSH nodes.
        "--no-requeue",
    ]
    if target.account:
        options.append(f"--account={target.account}")
    if target.qos:
        options.append(f"--qos={target.qos}")
    if spec.use_gpu:
        options.append(f"--gpus-per-node={per_node}")
    if spec.max_run_duration_seconds:
        options.append(f"--time={time_limit(spec.max_run_duration_seconds)}")
    command = " ".join(q(a) for a in [python, spec.entry_script, *spec.command_arguments()])
    if is_mpi(spec):
        # Open MPI reads the allocation itself and starts its ranks through Slurm.
        launch = f"mpirun -np {spec.node_count * per_node} {command}"
        root = (
            'if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 '
            "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi\n"
        )
    elif torch_backend(spec):
        launch, root = torchrun_launch(run_id, spec, run_folder, python, attempt), ""
    else:
        launch = f"srun --kill-on-bad-exit=1 {command}"
        root = ""
    lines = ["#!/bin/bash", *(f"#SBATCH {q(o)}" for o in options)]
    lines += [f"export {k}={q(v)}" for k, v in sorted(variables.items())]
    if path_dirs:  # a conda prefix's programs first
        lines.append(f'export PATH={":".join(q(d) for d in path_dirs)}:"$PATH"')
    lines += [
        f"rm -f {q(run_folder)}/{EXIT_FILE}",
        root.rstrip("\n"),
        "code=0",
        f"{launch} || code=$?",
        f'echo "$code" > {q(run_folder)}/{EXIT_FILE}',
        'exit "$code"',
    ]
    return "\n".join(line for line in lines if line) + "\n"


def torchrun_launch(
    run_id: str, spec: EstimatorSpec, run_folder: str, python: str, attempt: int
) -> str:
    """PyTorch distributed: one ``torchrun`` per node (``srun``, one task per node with the node's
    CPUs) through trainhub's own launcher (the runtime's ``_torch.py``: per-rank logs,
    ``AZ_BATCHAI_TASK_INDEX``, the interface that reaches the first node), static rendezvous on
    the allocation's first host (the loopback on one node) at a port spread by run id and
    attempt; the node rank is Slurm's node index."""
    q = shlex.quote
    per_node = processes_per_node(spec)
    port = port_for(run_id, attempt)
    first = (
        "127.0.0.1"
        if spec.node_count == 1
        else '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
    )
    launcher = f"{run_folder}/sys/{TORCH_LAUNCHER}"
    node = " ".join(
        [
            'TRAINHUB_TORCH_NODE_RANK="$SLURM_NODEID" exec',
            *(q(a) for a in [python, launcher, "launch", python, spec.entry_script]),
            *(q(a) for a in spec.command_arguments()),
        ]
    )
    return (
        f"export TRAINHUB_TORCH_MASTER_ADDR={first} TRAINHUB_TORCH_MASTER_PORT={port} "
        f"TRAINHUB_DIST_BACKEND={torch_backend(spec)} TRAINHUB_TORCH_NNODES={spec.node_count} "
        f"TRAINHUB_TORCH_NPROC_PER_NODE={per_node} "
        f"TRAINHUB_TORCH_FAILURES={q(run_folder)}/torch-failures.jsonl\n"
        'export AZ_BATCHAI_PYTORCH_INIT_METHOD="tcp://$TRAINHUB_TORCH_MASTER_ADDR:'
        f'{port}" AZ_BATCH_MASTER_NODE="$TRAINHUB_TORCH_MASTER_ADDR:{port}" '
        'AZ_BATCHAI_MPI_MASTER_NODE="$TRAINHUB_TORCH_MASTER_ADDR"\n'
        f"srun --kill-on-bad-exit=1 --nodes={spec.node_count} --ntasks={spec.node_count} "
        f"--ntasks-per-node=1 --cpus-per-task={per_node} bash -c {q(node)}"
    )
