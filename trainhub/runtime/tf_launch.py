"""Inside a TensorFlow parameter-server run's containers (standard library only; shipped as
``trainhub/_tf.py``).

``launch``: start this node's tasks (``TRAINHUB_TF_TASKS``, e.g. ``worker:0,ps:1``), each the user's
script with its own ``TF_CONFIG`` (the whole cluster, its own task, ``"environment": "cloud"``).
Each process's output goes, a whole line at a time, to the container's output with its task in
front (``[worker 0] ...``) and to ``logs/tensorflow/<type>.<index>/stdout`` and ``stderr``.

The node is done when its workers are: parameter servers serve until they are stopped
(``server.join()`` never returns), so they are then sent SIGTERM. A process that fails (a non-zero
exit or a signal, worker or parameter server) before that appends its task, time and last lines to
:data:`FAILURES`, and the node's other processes are stopped: the server stops the other nodes and
names the first process that failed, on whichever node. SIGTERM (cancel, time limit) stops them all.
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
from dataclasses import dataclass, field
from typing import IO

RANK_LOGS = "logs/tensorflow"
FAILURES = "/dev/shm/trainhub-failures.jsonl"  # the same file as torch_launch's: gang.py reads it
TAIL_LINES = 10
STOP_SECONDS = 10.0  # SIGTERM to SIGKILL, for the processes this launcher stops
POLL_SECONDS = 0.1
_console = threading.Lock()


def _say(text: str) -> None:
    print(f"trainhub: {text}", file=sys.stderr, flush=True)


@dataclass
class Task:
    kind: str  # worker | ps
    index: int
    child: subprocess.Popen[bytes]
    tail: collections.deque[bytes] = field(
        default_factory=lambda: collections.deque(maxlen=TAIL_LINES)
    )
    relays: list[threading.Thread] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.kind} {self.index}"


def _relay(source: IO[bytes], console: IO[bytes], prefix: bytes, path: str, task: Task) -> None:
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
            task.tail.append(line)


def _start(python: str, script: str, args: list[str], cluster: object, spec: str) -> Task:
    kind, _, index = spec.partition(":")
    config = {
        "cluster": cluster,
        "task": {"type": kind, "index": int(index)},
        "environment": "cloud",
    }
    env = {**os.environ, "TF_CONFIG": json.dumps(config)}
    child = subprocess.Popen(
        [python, "-u", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    task = Task(kind, int(index), child)
    folder = os.path.join(RANK_LOGS, f"{kind}.{index}")
    os.makedirs(folder, exist_ok=True)
    prefix = f"[{task.name}] ".encode()
    for pipe, console, name in (
        (child.stdout, sys.stdout.buffer, "stdout"),
        (child.stderr, sys.stderr.buffer, "stderr"),
    ):
        relay = threading.Thread(
            target=_relay,
            args=(pipe, console, prefix, os.path.join(folder, name), task),
            daemon=True,
        )
        relay.start()
        task.relays.append(relay)
    return task


def _stop(tasks: list[Task]) -> None:
    """SIGTERM to the processes still running, SIGKILL to those left after STOP_SECONDS."""
    running = [t for t in tasks if t.child.poll() is None]
    for task in running:
        task.child.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for task in running:
        try:
            task.child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            task.child.kill()
            task.child.wait()


def _record(task: Task, code: int) -> None:
    record = {
        "time": time.time(),
        "task": task.name,
        "code": code,
        "tail": b"".join(task.tail).decode("utf-8", "replace"),
    }
    try:
        with open(FAILURES, "a") as fh:
            fh.write(json.dumps(record) + "\n")
    except OSError:
        pass


def _exit_code(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def _watch(tasks: list[Task], stopped: threading.Event) -> int:
    """0 once this node's workers have all ended well; the first failure's code otherwise."""
    workers = [t for t in tasks if t.kind == "worker"]
    while not stopped.is_set():
        for task in tasks:
            code = task.child.poll()
            if code is not None and code != 0:
                for relay in task.relays:  # its last lines, for the record
                    relay.join(timeout=5)
                _say(f"{task.name} failed with exit code {_exit_code(code)}")
                _record(task, _exit_code(code))
                _stop(tasks)
                return _exit_code(code)
        if all(w.child.poll() == 0 for w in workers):
            _stop(tasks)  # the parameter servers: they serve until stopped
            return 0
        stopped.wait(POLL_SECONDS)
    _stop(tasks)
    return 128 + signal.SIGTERM


def launch(python: str, script: str, args: list[str]) -> int:
    cluster = json.loads(os.environ["TRAINHUB_TF_CLUSTER"])
    specs = [s for s in os.environ.get("TRAINHUB_TF_TASKS", "").split(",") if s]
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stopped.set())
    tasks = [_start(python, script, args, cluster, spec) for spec in specs]
    code = _watch(tasks, stopped)
    for task in tasks:
        for relay in task.relays:
            relay.join(timeout=5)
    return code


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "launch":
        return launch(argv[1], argv[2], argv[3:])
    _say("usage: _tf.py launch PYTHON SCRIPT [ARGS...]")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
