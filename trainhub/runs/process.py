"""Runs without a container (``use_docker=False``): the script as a process on the server's machine,
in a virtual environment built from the same fields and cached the same way as images. A conda
environment is used in place, from its prefix on the server (``runs/conda.py``): its own Python
when it has one, else the server's Python with the prefix's packages and libraries visible.

The process runs in its own session with its output going straight to ``logs/driver_log.txt`` and its
exit code to a file, so it survives a server restart and is finished by the next server. Nothing it
writes leaves ``DATA/work/<run_id>``; ``./outputs`` and ``./logs`` are copied into run history (regular
files only, never links).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from trainhub.nodes.pool import LOCAL, NodePool
from trainhub.runs import environment as envs
from trainhub.runs import gang
from trainhub.runs.artifacts import (
    BUILD_LOG,
    DRIVER_LOG,
    SERVER_WRITTEN,
    free_bytes,
    prepare_run_dir,
)
from trainhub.runs.containers import OVERLAP, bytes_at, open_fresh
from trainhub.runs.driving import Attempt, Interruption
from trainhub.runs.preparing import (
    PrepareFailed,
    append_log,
    built_prefix,
    conda_request,
    environment_of,
)
from trainhub.runtime.incontainer import runtime_archive
from trainhub.runtime.process_launch import (
    TORCH_FAILURES,
    free_port,
    gpu_environment,
    launch_for,
    processes_of,
)
from trainhub.settings import Settings
from trainhub.spec import EstimatorSpec
from trainhub.store import Database, metrics
from trainhub.store import runs as q
from trainhub.store.lifecycle import EndReason

log = logging.getLogger("trainhub.process")
PASSED_THROUGH = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "CUDA_VISIBLE_DEVICES",
    "LD_LIBRARY_PATH",
)


@dataclass
class Started:
    attempt: Attempt
    pid: int
    ended: asyncio.Future[int | None] | None = None


class ProcessDriver:
    """The driver for ``use_docker=False``: the script as a process on the server's machine."""

    def __init__(self, settings: Settings, db: Database, ingest: Any, pool: NodePool) -> None:
        self.settings = settings
        self.db = db
        self.ingest = ingest  # RunControl.ingest: metrics lines into the store
        self.pool = pool  # the server's own GPUs, from its inventory
        self._locks: dict[str, asyncio.Lock] = {}
        self._variables: dict[str, dict[str, str]] = {}  # run id -> its conda prefix's variables
        self.children: dict[int, subprocess.Popen[bytes]] = {}

    # Preparing: the virtual environment -------------------------------------------------------
    async def python_for(self, run: q.RunRow, env: envs.Environment) -> tuple[str, dict[str, str]]:
        """The Python that runs the script, and the variables its process needs for the conda
        prefix (none without one); pip packages go into a venv over that Python."""
        python = shutil.which(self.settings.process_python) or self.settings.process_python
        log_path = self.settings.run_dir(run.id) / BUILD_LOG
        if not env.needs_build:
            return python, {}
        request = conda_request(env)
        prefix = await built_prefix(self.settings, request, log_path) if request else None
        if prefix is not None and prefix.has_python:
            python = str(prefix.python)
        version = await asyncio.to_thread(
            lambda: subprocess.run(
                [python, "--version"], capture_output=True, text=True
            ).stdout.strip()
        )
        variables: dict[str, str] = {}
        if prefix is not None:
            inherited = {k: os.environ[k] for k in ("PATH", "LD_LIBRARY_PATH") if k in os.environ}
            x_y = ".".join(version.removeprefix("Python ").split(".")[:2])
            variables = prefix.variables(x_y, inherited)
        if not (env.pip_lines or env.pip_requirements):
            return python, variables
        fingerprint = await asyncio.to_thread(envs.build_fingerprint, self.settings)
        key = env.key(f"process:{python}:{version}", fingerprint)
        venv = self.settings.venv_dir(key)
        async with self._locks.setdefault(key, asyncio.Lock()):
            if (venv / "ready").exists():
                append_log(log_path, f"Virtual environment {key} is present: reused, no build.\n")
                return str(venv / "bin" / "python"), variables
            append_log(log_path, f"Building virtual environment {key} with {python} ({version})\n")
            started = time.monotonic()
            ok = await asyncio.to_thread(self._build_venv, python, env, venv, log_path, variables)
            if not ok:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
                raise PrepareFailed(
                    EndReason.BUILD_FAILED, f"The environment build failed:\n{tail}"
                )
            append_log(log_path, f"Built in {time.monotonic() - started:.1f} s\n")
        return str(venv / "bin" / "python"), variables

    def _build_venv(
        self,
        python: str,
        env: envs.Environment,
        venv: Path,
        log_path: Path,
        variables: dict[str, str],
    ) -> bool:
        # venvs are not relocatable: built in place; the "ready" marker says it is complete.
        shutil.rmtree(venv, ignore_errors=True)
        venv.mkdir(parents=True)
        pip_env = {
            **{k: os.environ[k] for k in PASSED_THROUGH if k in os.environ},
            **variables,  # pip sees the conda packages as installed
            **envs.pip_environment(
                self.settings, self.settings.build_ca_bundle, self.settings.wheel_dir
            ),
        }
        requirements = venv / "trainhub-requirements.txt"
        lines = list(env.pip_lines) + ([env.pip_requirements] if env.pip_requirements else [])
        requirements.write_text("\n".join(lines) + "\n")
        steps = [
            [python, "-m", "venv", "--system-site-packages", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-r", str(requirements)],
        ]
        with log_path.open("a") as sink:
            for step in steps:
                sink.write("$ " + " ".join(step) + "\n")
                sink.flush()
                if (
                    subprocess.run(
                        step, stdout=sink, stderr=subprocess.STDOUT, env=pip_env
                    ).returncode
                    != 0
                ):
                    return False
        (venv / "ready").write_text("ok\n")
        return True

    # Starting ---------------------------------------------------------------------------------
    def start_process(
        self,
        run: q.RunRow,
        spec: EstimatorSpec,
        python: str,
        snapshot: Path,
        variables: dict[str, str],
        gpus: list[int],
    ) -> int:
        """The script (or torchrun, or mpirun over it) in its own session, with the GPUs ``gpus``
        (indices of the server's) it was given."""
        work = self.settings.work_dir(run.id)
        shutil.rmtree(work, ignore_errors=True)
        (work / "wd").mkdir(parents=True)
        with tarfile.open(snapshot, "r:gz") as tar:
            tar.extractall(work / "wd", filter="data")
        with tarfile.open(fileobj=io.BytesIO(runtime_archive(self.settings.azureml_compat))) as tar:
            tar.extractall(work / "sys", filter="data")
        run_dir = self.settings.run_dir(run.id)
        prepare_run_dir(run_dir)
        env = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
        env.update(variables)
        env.update(
            envs.environment_for(
                spec,
                run,
                lib_dir=str(work / "sys" / "trainhub" / "lib"),
                context_dir=str(work / "sys" / "trainhub" / "ctx"),
                inherited_pythonpath=variables.get("PYTHONPATH"),
            )
        )
        local_gpus = self.pool.inventory(LOCAL).get("gpus") or []
        by_index = {g["index"]: g["uuid"] for g in local_gpus}
        env.update(gpu_environment([by_index[i] for i in gpus if i in by_index], bool(local_gpus)))
        launch = launch_for(spec, python, spec.command_arguments(), work, len(gpus), free_port())
        env.update(launch.env)
        env["TRAINHUB_NODE"] = LOCAL  # as in a container on the node local
        env["TRAINHUB_EXIT_FILE"] = str(work / "exit_code")
        script = 'code=0; "$@" || code=$?; echo "$code" > "$TRAINHUB_EXIT_FILE"'
        command = ["/bin/sh", "-c", script, f"trainhub:{run.id}", *launch.argv]
        with (run_dir / DRIVER_LOG).open("ab") as log:
            proc = subprocess.Popen(
                command,
                cwd=work / "wd",
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.children[proc.pid] = proc
        return proc.pid

    # The driver interface ---------------------------------------------------------------------
    async def prepare(self, attempt: Attempt) -> None:
        run = attempt.run
        await asyncio.to_thread(prepare_run_dir, self.settings.run_dir(run.id))
        env = await asyncio.to_thread(environment_of, self.settings, run, attempt.spec)
        attempt.image, self._variables[run.id] = await self.python_for(run, env)

    async def start(self, attempt: Attempt) -> Started:
        run = attempt.run
        assert run.snapshot is not None and attempt.image is not None
        python = attempt.image
        snapshot = self.settings.snapshot_path(run.snapshot)
        variables = self._variables.pop(run.id, {})
        gpus = attempt.gpus.get(LOCAL, []) if attempt.spec.use_gpu else []
        pid = await asyncio.to_thread(
            self.start_process, run, attempt.spec, python, snapshot, variables, gpus
        )
        await self.db.write(lambda db: q.update_run(db, run.id, pid=pid, image=f"process:{python}"))
        return Started(attempt, pid)

    async def attach(self, attempt: Attempt, ref: str) -> Started:
        return Started(attempt, int(ref))

    def reference(self, handle: Started) -> str:
        return str(handle.pid)

    def watch(self, handle: Started) -> asyncio.Future[int | None]:
        if handle.ended is None:
            handle.ended = asyncio.ensure_future(self._ended(handle))
        return handle.ended

    async def _ended(self, handle: Started) -> int | None:
        run_id = handle.attempt.run_id
        while await asyncio.to_thread(self.alive, handle.pid, run_id):
            await asyncio.sleep(0.25)
        await asyncio.to_thread(self.forget, handle.pid)
        code = await asyncio.to_thread(self.exit_code, run_id)
        if code:
            await asyncio.to_thread(self._name_first_failure, run_id)
        return code

    def _name_first_failure(self, run_id: str) -> None:
        """A torchrun run's failing process, named in the driver log with its last lines as in a
        container (its node's torchrun stopped the others)."""
        records = self.settings.work_dir(run_id) / TORCH_FAILURES
        try:
            text = records.read_text(errors="replace")
        except OSError:
            return  # not a torchrun run, or no process failed (torchrun itself did)
        first = gang.first_failure({LOCAL: text})
        if first is not None:
            gang.note(self.settings.run_dir(run_id) / DRIVER_LOG, gang.failure_notes(first)[1])

    async def sync(self, handle: Started) -> None:
        run_id = handle.attempt.run_id
        await self.ingest(run_id, await asyncio.to_thread(self.collect_files, run_id, ("logs",)))

    async def stop(self, handle: Started, ended: asyncio.Future[int | None]) -> None:
        run_id = handle.attempt.run_id
        await asyncio.to_thread(
            self.stop_process, handle.pid, run_id, self.settings.cancel_grace_seconds
        )
        await asyncio.wait({ended}, timeout=5)

    async def interrupted(self, handle: Started) -> tuple[Interruption, str]:
        return Interruption.NONE, ""  # no engine: the process is the server machine's own

    async def disk_left(self, handle: Started) -> int | None:
        return await asyncio.to_thread(free_bytes, self.settings.work_dir(handle.attempt.run_id))

    async def lost_node(self, handle: Started) -> str | None:
        return None  # the server's own machine

    async def collect(self, handle: Started, lost: str | None) -> None:
        run_id = handle.attempt.run_id
        lines = await asyncio.to_thread(self.collect_files, run_id, ("outputs", "logs"))
        await self.ingest(run_id, lines)

    async def remove(self, handle: Started, lost: str | None) -> None:
        await asyncio.to_thread(shutil.rmtree, self.settings.work_dir(handle.attempt.run_id), True)

    async def abandon(self, attempt: Attempt) -> None:
        pid = attempt.run.pid
        if pid is None:
            fresh = await self.db.read(lambda db: q.get_run(db, attempt.run_id))
            pid = fresh.pid if fresh else None
        if pid is not None:
            await asyncio.to_thread(self.stop_process, pid, attempt.run_id, 0.0)
            await asyncio.to_thread(self.forget, pid)
        await asyncio.to_thread(shutil.rmtree, self.settings.work_dir(attempt.run_id), True)

    def survives(self, run: q.RunRow) -> bool:
        """After a server restart: the run's process lives on, or left its exit code."""
        return run.pid is not None and (
            self.alive(run.pid, run.id) or self.exit_code(run.id) is not None
        )

    # Running ----------------------------------------------------------------------------------
    def alive(self, pid: int, run_id: str) -> bool:
        child = self.children.get(pid)
        if child is not None:
            return child.poll() is None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return f"trainhub:{run_id}".encode() in cmdline

    def exit_code(self, run_id: str) -> int | None:
        try:
            return int((self.settings.work_dir(run_id) / "exit_code").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop_process(self, pid: int, run_id: str, grace: float) -> None:
        """SIGTERM to the whole process group and every other process of the run (torchrun's
        workers have sessions of their own), SIGKILL after ``grace`` seconds."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            for other in processes_of(run_id):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(other, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not self.alive(pid, run_id) and not processes_of(run_id):
                    return
                time.sleep(0.1)

    def forget(self, pid: int) -> None:
        child = self.children.pop(pid, None)
        if child is not None:
            child.wait()

    def collect_files(self, run_id: str, tops: tuple[str, ...]) -> list[str]:
        """Copy ``tops`` (outputs, logs) and uploaded files into run history; return context lines."""
        work = self.settings.work_dir(run_id)
        run_dir = self.settings.run_dir(run_id)
        for top in tops:
            _copy_tree(work / "wd" / top, run_dir / top, run_dir)
        ctx = work / "sys" / "trainhub" / "ctx"
        _copy_tree(ctx / "files", run_dir, run_dir)
        try:
            return metrics.complete_lines((ctx / "metrics.jsonl").read_bytes())
        except OSError:
            return []


def _copy_tree(src: Path, dest: Path, run_dir: Path) -> int:
    """Regular files only (links are never followed), never outside ``run_dir``, never over files the
    server writes itself; only files that changed (see :func:`_copy_changed`). Returns the bytes
    copied."""
    copied = 0
    if not src.is_dir() or src.is_symlink():
        return copied
    root = run_dir.resolve()
    skipped = {root / name for name in SERVER_WRITTEN}
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        base = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
        for name in filenames:
            source = base / name
            if source.is_symlink() or not source.is_file() or name.endswith(".part"):
                continue
            target = (dest / source.relative_to(src)).resolve()
            if not target.is_relative_to(root) or target in skipped:
                continue
            copied += _copy_changed(source, target)
    return copied


def _copy_changed(source: Path, target: Path) -> int:
    """``source`` over ``target`` unless it is unchanged (same size and time); a file that grew only
    from where ``target`` ends, appended in place (a TensorBoard reading it reads on)."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return 0  # gone meanwhile
    with os.fdopen(fd, "rb") as src:
        now = os.fstat(fd)
        try:
            have: os.stat_result | None = target.lstat()
        except OSError:
            have = None
        regular = have is not None and stat.S_ISREG(have.st_mode)
        if have is not None and regular:
            if have.st_size == now.st_size and have.st_mtime_ns == now.st_mtime_ns:
                return 0
        offset = 0
        if have is not None and regular and OVERLAP <= have.st_size < now.st_size:
            src.seek(have.st_size - OVERLAP)
            if src.read(OVERLAP) == bytes_at(target, have.st_size - OVERLAP, OVERLAP):
                offset = have.st_size
        out: IO[bytes]
        if offset:
            out = target.open("r+b")
            out.seek(offset)
            out.truncate()
        else:
            out = open_fresh(target)
        with out:
            src.seek(offset)
            copied = 0
            while chunk := src.read(1024 * 1024):
                out.write(chunk)
                copied += len(chunk)
    os.utime(target, ns=(now.st_atime_ns, now.st_mtime_ns))
    return copied
