"""Inside a PyTorch distributed run's containers (standard library only; shipped as
``trainhub/_torch.py``).

``launch``: on every node, check that the image's Python has torch, then become ``torchrun`` for this
node (static rendezvous on the first node's store, no restarts: a failing process fails the run).
``rank``: how every process starts under torchrun: ``AZ_BATCHAI_TASK_INDEX`` from torchrun's ``RANK``
(torchrun cannot give processes variables of their own), then the user's script as a child whose
output goes, a whole line at a time, to the container's output and to ``logs/torchrun/rank.<N>/stdout``
and ``stderr`` (as Open MPI lays out MPI runs' ranks). A process that fails (a non-zero exit, not a
signal from torchrun) appends its rank, time and last lines to :data:`FAILURES`: the server names the
first process that failed, on whichever node, when the run ends.
"""

from __future__ import annotations

import collections
import fcntl
import importlib.util
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import IO

RANK_LOGS = "logs/torchrun"
FAILURES = "/dev/shm/trainhub-failures.jsonl"  # the same file as tf_launch's: gang.py reads it
TAIL_LINES = 10
NO_TORCH = (
    "this run is launched with torchrun (PyTorch distributed): its environment needs torch, "
    "and `python -c 'import torch'` fails in its image. Add torch to pip_packages "
    "(for example pip_packages=['torch==2.13.0']) or use an image that has it"
)
_SIOCGIFADDR = 0x8915


def _say(text: str) -> None:
    print(f"trainhub: {text}", file=sys.stderr, flush=True)


def _interface_towards(host: str, port: int) -> str | None:
    """The name of this machine's interface that reaches ``host`` (IPv4), if it can be told."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, port))  # no packet is sent: the kernel only picks a route
            local = probe.getsockname()[0]
            for _, name in socket.if_nameindex():
                request = struct.pack("256s", name.encode()[:15])
                try:
                    answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
                except OSError:
                    continue
                if socket.inet_ntoa(answer[20:24]) == local:
                    return name
    except OSError:
        return None
    return None


def launch(python: str, script: str, args: list[str]) -> int:
    if importlib.util.find_spec("torch") is None:
        _say(NO_TORCH)
        return 1
    addr = os.environ["TRAINHUB_TORCH_MASTER_ADDR"]
    port = os.environ["TRAINHUB_TORCH_MASTER_PORT"]
    env = dict(os.environ)
    # Gloo and NCCL pick an interface from the host name by default, which on a node's network can
    # be one the other nodes cannot reach: the one that reaches the first node instead.
    interface = _interface_towards(addr, int(port))
    for name in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        if interface and name not in env:
            env[name] = interface
    argv = [
        python,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        env["TRAINHUB_TORCH_NNODES"],
        "--nproc-per-node",
        env["TRAINHUB_TORCH_NPROC_PER_NODE"],
        "--node-rank",
        env["TRAINHUB_TORCH_NODE_RANK"],
        "--master-addr",
        addr,
        "--master-port",
        port,
        "--max-restarts",
        "0",
        os.path.abspath(__file__),
        "rank",
        script,
        *args,
    ]
    os.execve(python, argv, env)
    return 127  # not reached


def _relay(
    source: IO[bytes], console: IO[bytes], path: str, tail: collections.deque[bytes]
) -> None:
    with open(path, "wb") as own:
        for line in iter(source.readline, b""):
            try:
                console.write(line)
                console.flush()
            except OSError:  # torchrun is gone: the script's output still goes to its file
                pass
            own.write(line)
            own.flush()
            tail.append(line)


def rank(script: str, args: list[str]) -> int:
    number = os.environ.get("RANK", "0")
    os.environ["AZ_BATCHAI_TASK_INDEX"] = number
    folder = os.path.join(RANK_LOGS, f"rank.{number}")
    os.makedirs(folder, exist_ok=True)
    child = subprocess.Popen(
        [sys.executable, "-u", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    def wait_for_child(_signum: int, _frame: object) -> None:
        """torchrun signals the whole process group: the script has the signal too, and this
        process relays what the script prints until it ends."""

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, wait_for_child)
    tail: collections.deque[bytes] = collections.deque(maxlen=TAIL_LINES)
    relays = [
        threading.Thread(
            target=_relay, args=(pipe, console, os.path.join(folder, name), tail), daemon=True
        )
        for pipe, console, name in (
            (child.stdout, sys.stdout.buffer, "stdout"),
            (child.stderr, sys.stderr.buffer, "stderr"),
        )
    ]
    for relay in relays:
        relay.start()
    code = child.wait()
    for relay in relays:
        relay.join()
    if code > 0:  # the script's own failure (a negative code is a signal: torchrun stopping it)
        record = {
            "time": time.time(),
            "rank": int(number),
            "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
            "code": code,
            "tail": b"".join(tail).decode("utf-8", "replace"),
        }
        try:  # a run without a container has a file of its own (the machine's /dev/shm is shared)
            with open(os.environ.get("TRAINHUB_TORCH_FAILURES", FAILURES), "a") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError:
            pass
    return code if code >= 0 else 128 - code


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "launch":
        return launch(argv[1], argv[2], argv[3:])
    if len(argv) >= 2 and argv[0] == "rank":
        return rank(argv[1], argv[2:])
    _say("usage: _torch.py launch PYTHON SCRIPT [ARGS...] | rank SCRIPT [ARGS...]")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
