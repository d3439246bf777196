"""How a run without a container (``use_docker=False``) is launched on the server's machine: the
command after the exit-code wrapper and the variables it adds, for one process, for ``torchrun``
(PyTorch ``Gloo()`` / ``Nccl()``) and for ``mpirun`` (``Mpi()``), always on this one machine.

The launchers are the containers' own (:mod:`trainhub.runtime.torch_launch`,
:mod:`trainhub.runtime.mpi_launch`, extracted with the runtime into the run's work folder), with the
same variables. What differs: the rendezvous port is a free one of this machine (other programs share
its network, so a per-run port could be taken), a torchrun process's failure is recorded in the run's
own folder, and the GPUs are given by ``CUDA_VISIBLE_DEVICES`` instead of a device request.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from trainhub.runtime.incontainer import MPI_LAUNCHER, TORCH_LAUNCHER
from trainhub.runtime.mpi import MpiLayout, head_environment
from trainhub.runtime.mpi_launch import OWN_ENVIRONMENT
from trainhub.runtime.torchrun import LOOPBACK, TorchLayout, node_environment
from trainhub.spec import EstimatorSpec, is_mpi, processes_per_node, torch_backend

TORCH_FAILURES = "torch-failures.jsonl"  # below the run's work folder: the failure records


@dataclass(frozen=True)
class ProcessLaunch:
    argv: list[str]  # what the wrapper runs: the script, or a launcher over it
    env: dict[str, str]  # added to the run's variables


def free_port() -> int:
    """A TCP port of the loopback that nothing listens on now (torchrun's store binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def gpu_environment(gpu_uuids: list[str], machine_has_gpus: bool) -> dict[str, str]:
    """The run's GPUs by UUID (``GPU-...``, as the CUDA runtime takes them: indices would follow
    CUDA's own device order, which need not be ``nvidia-smi``'s). A run that was given none sees
    none of the machine's, which other runs may hold."""
    if gpu_uuids:
        return {"CUDA_VISIBLE_DEVICES": ",".join(gpu_uuids)}
    return {"CUDA_VISIBLE_DEVICES": ""} if machine_has_gpus else {}


def launch_for(
    spec: EstimatorSpec,
    python: str,
    arguments: list[str],
    work: Path,
    gpus: int,
    port: int,
) -> ProcessLaunch:
    """The command and variables of a run in ``work`` (``sys/`` holds the runtime), with ``gpus``
    GPUs given to it and ``port`` free for a rendezvous."""
    script = [spec.entry_script, *arguments]
    backend = torch_backend(spec)
    if backend is not None:
        layout = TorchLayout(
            nodes=1,
            per_node=gpus or processes_per_node(spec),  # one process per GPU with use_gpu
            master_addr=LOOPBACK,
            port=port,
            backend=backend,
        )
        env = node_environment(layout, 0)
        env["TRAINHUB_TORCH_FAILURES"] = str(work / TORCH_FAILURES)
        return ProcessLaunch(
            [python, _runtime(work, TORCH_LAUNCHER), "launch", python, *script], env
        )
    if is_mpi(spec):
        mpi = MpiLayout((("localhost", processes_per_node(spec)),), port)
        env = {**head_environment(mpi), OWN_ENVIRONMENT: "1"}
        return ProcessLaunch([python, _runtime(work, MPI_LAUNCHER), "launch", python, *script], env)
    return ProcessLaunch([python, "-u", *script], {})


def _runtime(work: Path, in_container: str) -> str:
    """Where a file of the runtime (``/trainhub/lib/...`` in a container) is in the run's folder."""
    return str(work / "sys" / in_container.lstrip("/"))


def processes_of(run_id: str) -> list[int]:
    """Every process of this machine started for the run: those whose environment names it.
    torchrun starts its workers in sessions of their own, so the wrapper's process group does not
    hold them all; the environment does, even after a parent died and they were re-parented."""
    marker = f"\0TRAINHUB_RUN_ID={run_id}\0".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                environ = b"\0" + fh.read()
        except OSError:
            continue
        if marker in environ:
            found.append(int(entry.name))
    return found
