"""Whether a submitted run could ever run here: its compute target holds it (nodes, GPUs Docker can
hand out, CPU slots), and its conda part can be read (match specs, the environment file, channels).
A 422 naming the field now beats a run that waits for ever or fails its build later."""

from __future__ import annotations

import asyncio
import shutil

from trainhub.nodes.pool import DOCKER, NO_ENGINE
from trainhub.runs import conda, dispatch
from trainhub.runs.environment import read_dependency_files
from trainhub.runs.launcher import Launcher
from trainhub.settings import Settings
from trainhub.slurm import targets as slurm_targets
from trainhub.spec import (
    EstimatorSpec,
    SpecError,
    is_mpi,
    parameter_servers,
    processes_per_node,
)
from trainhub.store import Database
from trainhub.store import nodes as node_store
from trainhub.store import slurm as slurm_store


async def check_target(db: Database, launcher: Launcher, spec: EstimatorSpec) -> None:
    """The compute target exists and could ever hold the run (GPUs, runs without a container)."""
    targets = await db.read(node_store.list_targets)
    members = targets.get(spec.compute_target)
    slurm = await db.read(slurm_store.target_names)
    if spec.compute_target in slurm:  # Slurm decides where and when it runs
        slurm_targets.check_spec(spec, spec.compute_target)
        return
    if members is None:
        known = ", ".join(sorted({*targets, *slurm}))
        raise SpecError(
            "compute_target",
            f"Unknown compute target '{spec.compute_target}' (this server has: {known})",
        )
    if not spec.use_docker and members != [node_store.LOCAL]:
        raise SpecError(
            "use_docker",
            "use_docker=False runs on the server's own machine only: compute_target='local'",
        )
    if spec.use_docker and all(DOCKER not in launcher.pool.runtimes(n) for n in members):
        raise SpecError(
            "use_docker",
            f"Target '{spec.compute_target}' cannot run containers: {NO_ENGINE}",
        )
    if not spec.use_docker and is_mpi(spec) and shutil.which("mpirun") is None:
        raise SpecError(
            "distributed_backend" if spec.distributed_backend else "distributed_training",
            "MPI runs with use_docker=False start mpirun on the server's machine, and mpirun is "
            "not on its PATH: install Open MPI (e.g. apt-get install openmpi-bin)",
        )
    if spec.node_count > 1:
        # Multi-node runs reach each node at its SSH address: the server's own machine has none.
        remotes = [n for n in members if n != node_store.LOCAL]
        if len(remotes) < spec.node_count:
            raise SpecError(
                "node_count",
                f"node_count={spec.node_count} needs {spec.node_count} SSH nodes in compute target "
                f"'{spec.compute_target}'; it has {len(remotes)}",
            )
        members = remotes
    need = processes_per_node(spec)
    if spec.use_gpu:
        # A container gets GPUs only where Docker can hand them out (the NVIDIA hook or runtime).
        sizes = sorted((dispatch.usable_gpus(launcher.pool, n) for n in members), reverse=True)
        what, field = "GPU(s)", "use_gpu"
        if sizes and sizes[0] == 0 and any(launcher.pool.inventory(n).get("gpus") for n in members):
            raise SpecError(
                "use_gpu",
                f"The GPUs of target '{spec.compute_target}' cannot be given to containers: its "
                "nodes have neither the NVIDIA container toolkit's hook "
                "(nvidia-container-runtime-hook) nor an nvidia runtime in Docker",
            )
    else:
        # CPU-only runs take one run slot per process: CPUs on SSH nodes, the run limit locally.
        sizes = sorted(
            (
                launcher.settings.max_concurrent_runs
                if n == node_store.LOCAL
                else int(launcher.pool.inventory(n).get("cpus") or 1)
                for n in members
            ),
            reverse=True,
        )
        what = "CPU slots"
        field = (
            "distributed_training.process_count_per_node"
            if spec.distributed_training and spec.distributed_training.process_count_per_node
            else "process_count_per_node"
        )
        if parameter_servers(spec) is not None:  # its processes, spread over the nodes
            field = "distributed_training.worker_count"
    fitting = sizes[spec.node_count - 1] if len(sizes) >= spec.node_count else 0
    if fitting < need:
        nodes = "the largest node" if spec.node_count == 1 else f"node {spec.node_count} by size"
        raise SpecError(
            field,
            f"{need} process(es) per node need {need} {what} per node, and {nodes} of target "
            f"'{spec.compute_target}' has {fitting}",
        )


async def check_conda(settings: Settings, spec: EstimatorSpec, sha256: str) -> None:
    """The conda part is one the server can solve: each spec a match spec, the environment file
    YAML with channels and dependencies (and a ``pip:`` section of requirements), each channel a
    name, a URL or a folder. Whether the packages exist is the solver's to say, at ``Preparing``."""
    if not (spec.conda_packages or spec.conda_dependencies_file):
        return
    env_file = None
    if spec.conda_dependencies_file:
        name = spec.conda_dependencies_file.removeprefix("./")
        files = await asyncio.to_thread(
            read_dependency_files, settings.snapshot_path(sha256), [name]
        )
        if name not in files:
            raise SpecError(
                conda.FILE_FIELD,
                f"'{spec.conda_dependencies_file}' is not a file of at most 1 MiB in the snapshot",
            )
        env_file = files[name]
    conda.request_for(spec.conda_packages, env_file, settings.conda_channels)
