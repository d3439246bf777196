"""Inside an MPI run's containers (standard library only; shipped as ``trainhub/_mpi.py``).

``launch``: on the first node, wait until the other nodes' containers accept SSH, then become
``mpirun`` over them (a per-run key, their host keys pinned in a per-run known_hosts file).
``rank``: how every rank starts, on any node: the container's own environment (which an SSH session
does not carry: saved by the worker at its start, or read from PID 1) plus what Open MPI set for the rank, then the user's script
(through ``python -m mpi4py`` where mpi4py is installed, so that one failing rank ends the job).
"""

from __future__ import annotations

import os
import socket
import sys
import time

SSH_DIR = "/trainhub/ssh"
ENVIRON_FILE = "/trainhub/environ"
RANK_LOGS = "logs/mpi"
WAIT_SECONDS = 180.0  # a loaded node may take long to start a container
MPI_PREFIXES = ("OMPI_", "PMIX_", "OPAL_", "ORTE_")
OWN_ENVIRONMENT = "TRAINHUB_MPI_OWN_ENVIRONMENT"


def _say(text: str) -> None:
    print(f"trainhub: {text}", file=sys.stderr, flush=True)


def _wait_for(hosts: list[str], port: int) -> bool:
    deadline = time.monotonic() + WAIT_SECONDS
    waiting = list(hosts)
    while waiting:
        host = waiting[0]
        try:
            with socket.create_connection((host, port), timeout=2):
                waiting.pop(0)
                continue
        except OSError:
            if time.monotonic() > deadline:
                _say(
                    f"the container on {host} did not accept SSH on port {port} within "
                    f"{WAIT_SECONDS:.0f} s (its sshd's log: {RANK_LOGS}/sshd-<node>.txt)"
                )
                return False
            time.sleep(0.1)
    return True


def launch(python: str, script: str, args: list[str]) -> int:
    total = os.environ["TRAINHUB_MPI_NP"]
    hosts = [h for h in os.environ.get("TRAINHUB_MPI_HOSTS", "").split(",") if h]
    network = os.environ.get("TRAINHUB_MPI_NETWORK", "")
    argv = [
        "mpirun",
        "--allow-run-as-root",
        "--bind-to",
        "none",
        "-np",
        total,
        "--wdir",
        os.getcwd(),
        # Each rank's output also goes to its own files, on its node: logs/mpi/1/rank.N/stdout|stderr.
        "--output-filename",
        os.path.join(os.getcwd(), RANK_LOGS),
        # Containers may not ptrace each other: shared memory without single-copy.
        "--mca",
        "btl_vader_single_copy_mechanism",
        "none",
    ]
    if len(hosts) > 1:
        port = int(os.environ["TRAINHUB_MPI_PORT"])
        if not _wait_for([h.rsplit(":", 1)[0] for h in hosts[1:]], port):
            return 1
        ssh_args = (
            f"-p {port} -i {SSH_DIR}/id -o UserKnownHostsFile={SSH_DIR}/known_hosts "
            "-o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR "
            # A node that vanishes (power, network) ends the job within 30 s instead of hanging it.
            "-o ServerAliveInterval=10 -o ServerAliveCountMax=3"
        )
        argv += [
            "--host",
            ",".join(hosts),
            "--mca",
            "plm_rsh_agent",
            "ssh",
            "--mca",
            "plm_rsh_args",
            ssh_args,
        ]
    else:
        argv += ["--oversubscribe"]
    if network:
        argv += ["--mca", "btl_tcp_if_include", network, "--mca", "oob_tcp_if_include", network]
    argv += [python, "-u", os.path.abspath(__file__), "rank", script, *args]
    try:
        os.execvp("mpirun", argv)
    except FileNotFoundError:
        _say(
            "mpirun is not on the PATH: MPI runs need Open MPI in the image (trainhub's base "
            "images have it), or on the server's machine for runs with use_docker=False"
        )
        return 127


# Each rank writes whole lines (so ranks' lines never mix mid-line in the log) and, with mpi4py
# there, runs as ``python -m mpi4py``: a rank that dies of an exception or sys.exit() aborts the
# whole job instead of leaving the others waiting for it forever.
_RANK_BOOT = """
import importlib.util, os, runpy, sys
for stream in (sys.stdout, sys.stderr):
    stream.reconfigure(line_buffering=True, write_through=False)
script = sys.argv[1]
sys.path[0] = os.path.dirname(os.path.abspath(script))
if importlib.util.find_spec("mpi4py"):
    sys.argv = ["mpi4py", *sys.argv[1:]]
    runpy.run_module("mpi4py", run_name="__main__", alter_sys=True)
else:
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
"""


def rank(script: str, args: list[str]) -> int:
    env = dict(os.environ)
    container: list[bytes] = []
    # Without a container (use_docker=False) the ranks inherit mpirun's environment as it is:
    # PID 1 is the machine's init there, not the wrapper.
    sources = () if env.get(OWN_ENVIRONMENT) == "1" else (ENVIRON_FILE, "/proc/1/environ")
    for source in sources:  # a worker node's, else the wrapper's
        try:
            with open(source, "rb") as fh:
                container = fh.read().split(b"\0")
            break
        except OSError:
            continue
    for item in container:
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep and not key.startswith(MPI_PREFIXES):
            env[key] = value
    os.execve(sys.executable, [sys.executable, "-c", _RANK_BOOT, script, *args], env)
    return 127  # not reached


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "launch":
        return launch(argv[1], argv[2], argv[3:])
    if len(argv) >= 2 and argv[0] == "rank":
        return rank(argv[1], argv[2:])
    _say("usage: _mpi.py launch PYTHON SCRIPT [ARGS...] | rank SCRIPT [ARGS...]")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
