"""Inside a TensorFlow parameter-server run's containers (standard library only; shipped as
``trainhub/_tf.py``).

``launch``: start this node's tasks (``TRAINHUB_TF_TASKS``, e.g. ``worker:0,ps:1``), each through
``task`` with its own ``TF_CONFIG`` (the whole cluster, its own task, ``"environment": "cloud"``), and
end when this node's workers have all ended well. The node's parameter servers keep serving (as
``server.join()`` does, until stopped): other nodes' workers may still need them, and they are
stopped with the run's containers once every node's workers are done. A process that fails (a
non-zero exit or a signal, worker or parameter server) while the node's workers run stops the node's
other processes and ends the launcher with its code: the server stops the other nodes and names the
first process that failed, on whichever node. SIGTERM (cancel, time limit) stops them all.

``task``: how every process starts: the user's script as a child whose output goes, a whole line at
a time, to the container's output with its task in front (``[worker 0] ...``) and to
``logs/tensorflow/<type>.<index>/stdout`` and ``stderr``. A script that fails, unless stopped with
SIGTERM, appends its task, time and last lines to :data:`FAILURES`.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO

RANK_LOGS = "logs/tensorflow"
FAILURES = "/dev/shm/trainhub-failures.jsonl"  # the same file as torch_launch's: gang.py reads it
TAIL_LINES = 10
STOP_SECONDS = 10.0  # SIGTERM to SIGKILL, for the processes this launcher stops
POLL_SECONDS = 0.1
_console = threading.Lock()


def _say(text: str) -> None:
    print(f"trainhub: {text}", file=sys.stderr, flush=True)


def _exit_code(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to the processes still running, SIGKILL to those left after STOP_SECONDS."""
    running = [c for c in children if c.poll() is None]
    for child in running:
        child.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for child in running:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def launch(python: str, script: str, args: list[str]) -> int:
    cluster = json.loads(os.environ["TRAINHUB_TF_CLUSTER"])
    specs = [s for s in os.environ.get("TRAINHUB_TF_TASKS", "").split(",") if s]
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stopped.set())
    tasks: dict[str, subprocess.Popen[bytes]] = {}
    for spec in specs:
        kind, _, index = spec.partition(":")
        config = {"cluster": cluster, "task": {"type": kind, "index": int(index)}}
        env = {**os.environ, "TF_CONFIG": json.dumps({**config, "environment": "cloud"})}
        me = os.path.abspath(__file__)
        argv = [python, me, "task", kind, index, python, script, *args]
        tasks[f"{kind} {index}"] = subprocess.Popen(argv, env=env)
    workers = [child for name, child in tasks.items() if name.startswith("worker ")]
    while not stopped.is_set():
        for name, child in tasks.items():
            code = child.poll()
            if code:
                _say(f"{name} failed with exit code {_exit_code(code)}")
                _stop(list(tasks.values()))
                return _exit_code(code)
        if all(w.poll() == 0 for w in workers):
            return 0  # the parameter servers serve on, for the other nodes' workers
        stopped.wait(POLL_SECONDS)
    _stop(list(tasks.values()))
    return 128 + signal.SIGTERM


def _relay(
    source: IO[bytes], console: IO[bytes], prefix: bytes, path: str, tail: collections.deque[bytes]
) -> None:
    with open(path, "wb") as own:
        for line in iter(source.readline, b""):
            with _console:
                try:
                    console.write(prefix + line)
                    console.flush()
                except OSError:  # the container's output is gone: the files still get it
                    pass
            own.write(line)
            own.flush()
            tail.append(line)


def task(kind: str, index: str, python: str, script: str, args: list[str]) -> int:
    folder = os.path.join(RANK_LOGS, f"{kind}.{index}")
    os.makedirs(folder, exist_ok=True)
    child = subprocess.Popen(
        [python, "-u", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stopped = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        stopped.set()
        child.terminate()

    signal.signal(signal.SIGTERM, stop)
    tail: collections.deque[bytes] = collections.deque(maxlen=TAIL_LINES)
    prefix = f"[{kind} {index}] ".encode()
    relays = [
        threading.Thread(
            target=_relay,
            args=(pipe, console, prefix, os.path.join(folder, name), tail),
            daemon=True,
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
        relay.join(timeout=5)
    if code != 0 and not stopped.is_set():
        record = {
            "time": time.time(),
            "task": f"{kind} {index}",
            "code": _exit_code(code),
            "tail": b"".join(tail).decode("utf-8", "replace"),
        }
        try:
            with open(FAILURES, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError:
            pass
    return _exit_code(code)


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "launch":
        return launch(argv[1], argv[2], argv[3:])
    if len(argv) >= 5 and argv[0] == "task":
        return task(argv[1], argv[2], argv[3], argv[4], argv[5:])
    _say("usage: _tf.py launch PYTHON SCRIPT [ARGS...] | task TYPE INDEX PYTHON SCRIPT [ARGS...]")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
