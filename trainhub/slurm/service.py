"""Runs on Slurm clusters: submission as batch jobs, tracking by one status poll per cluster, cancel,
collection, and re-attaching by job id after a restart.

Slurm does the scheduling: trainhub's own scheduler never places these runs (the launcher leaves the
queued runs of Slurm targets alone). Each run has one task, tracked by the launcher like every driven
run, which follows its job through the poll's answers:

    Queued -> Preparing (snapshot to the run folder, environment, sbatch)
           -> Queued while Slurm keeps the job PENDING (Slurm's reason is the wait reason)
           -> Running -> Finalizing (outputs, logs, metrics copied back) -> Completed | Failed | Canceled

The run holds a placement on its cluster (no GPUs, no slots: Slurm counts those) from each claim,
so every edge is one of ``store.lifecycle``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from trainhub.runs import environment as envs
from trainhub.runs.artifacts import BUILD_LOG, DRIVER_LOG, prepare_run_dir
from trainhub.runs.preparing import append_log, environment_of
from trainhub.runtime.incontainer import runtime_archive
from trainhub.slurm import conda as slurm_conda
from trainhub.slurm import script
from trainhub.slurm.conda import ClusterPrefix
from trainhub.slurm.login import Login, LoginError
from trainhub.slurm.script import JobState, Phase
from trainhub.spec import EstimatorSpec
from trainhub.store import lifecycle
from trainhub.store import runs as q
from trainhub.store import slurm as store
from trainhub.store.lifecycle import EndReason, RunStatus
from trainhub.store.slurm import SlurmTarget

if TYPE_CHECKING:
    from trainhub.runs.launcher import Launcher

log = logging.getLogger("trainhub.slurm")
RESTARTED = "queued again after a server restart (its job was never submitted)"


@dataclass(frozen=True)
class Place:
    """What a Slurm run holds on its cluster in trainhub's books: a place, no GPUs, no slots."""

    node: str
    gpus: tuple[int, ...] = ()
    slots: int = 0


class SubmitFailed(Exception):
    def __init__(self, reason: EndReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Tracked:
    """A job the poll follows, and the run task waiting on its news."""

    run_id: str
    job_id: str
    news: asyncio.Event = field(default_factory=asyncio.Event)
    state: JobState | None = None


class SlurmRuns:
    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher
        self.settings = launcher.settings
        self.control = launcher.control
        self.db = launcher.control.db
        self._logins: dict[str, Login] = {}
        self._tracked: dict[str, dict[str, Tracked]] = {}  # target -> job id -> tracked
        self._loop: asyncio.Task[None] | None = None

    # Lifecycle of the service --------------------------------------------------------------
    async def start(self) -> None:
        await self.recover()
        self._loop = asyncio.create_task(self._main_loop(), name="trainhub-slurm")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        for login in self._logins.values():
            login.close()

    def login(self, target: SlurmTarget) -> Login:
        found = self._logins.get(target.name)
        if found is None or found.target != target:
            if found is not None:
                found.close()
            found = Login(target, self.settings.ssh_keepalive_seconds)
            self._logins[target.name] = found
        return found

    async def recover(self) -> None:
        """At start: follow every submitted job again by its id; a run caught before its job was
        submitted goes back to the queue."""
        names = await self.db.read(store.target_names)
        if not names:
            return

        def read(conn: Any) -> list[tuple[q.RunRow, str | None]]:
            runs = q.runs_with_status(conn, [*lifecycle.ACTIVE, RunStatus.QUEUED])
            return [(r, store.job_of(conn, r.id)) for r in runs if r.target in names]

        for run, job_id in await self.db.read(read):
            if job_id is not None:
                log.info("re-attaching run %s to Slurm job %s", run.id, job_id)
                self._spawn(run.id, run.target, job_id)
            elif run.status is RunStatus.CANCEL_REQUESTED:
                await self.control.canceled(run.id)
            elif run.status is not RunStatus.QUEUED:
                await self.control.requeue(run.id, RESTARTED)

    # Claiming queued runs and polling ------------------------------------------------------
    async def _main_loop(self) -> None:
        while True:
            try:
                await self._claim()
                await self.poll()
            except Exception:
                log.exception("the Slurm pass failed")
            await asyncio.sleep(self.settings.slurm_poll_seconds)

    async def _claim(self) -> None:
        names = await self.db.read(store.target_names)
        if not names:
            return

        def read(conn: Any) -> list[q.RunRow]:
            queued = q.runs_with_status(conn, [RunStatus.QUEUED])
            return [r for r in queued if r.target in names and store.job_of(conn, r.id) is None]

        for run in await self.db.read(read):
            if self.launcher.driving(run.id):
                continue
            places = [Place(run.target)]
            if await self.db.write(functools.partial(_claim, run.id, places)):
                self._spawn(run.id, run.target, None)

    async def poll(self) -> None:
        """One ``squeue`` per cluster for all its tracked jobs (``sacct`` only for those squeue
        has forgotten); each run task is told its job's state."""
        for name, jobs in list(self._tracked.items()):
            if not jobs:
                continue
            target = await self.db.read(functools.partial(_target, name))
            if target is None:
                continue
            try:
                states = await self.states(target, list(jobs))
            except LoginError as exc:
                log.warning("polling Slurm target %s failed: %s", name, exc)
                continue
            for job_id, tracked in list(jobs.items()):
                state = states.get(job_id) or JobState(job_id, Phase.GONE, "UNKNOWN", None)
                if tracked.state != state:
                    tracked.state = state
                    tracked.news.set()

    async def states(self, target: SlurmTarget, job_ids: list[str]) -> dict[str, JobState]:
        return await job_states(self.login(target), job_ids)

    # One run ---------------------------------------------------------------------------------
    def _spawn(self, run_id: str, target: str, job_id: str | None) -> None:
        self.launcher.track(run_id, self._drive(run_id, target, job_id))

    def _track(self, target: str, run_id: str, job_id: str) -> Tracked:
        tracked = Tracked(run_id, job_id)
        self._tracked.setdefault(target, {})[job_id] = tracked
        return tracked

    async def _drive(self, run_id: str, target_name: str, job_id: str | None) -> None:
        target = await self.db.read(lambda conn: store.get_target(conn, target_name))
        run = await self.db.read(lambda conn: q.get_run(conn, run_id))
        if target is None or run is None:
            return
        spec = msgspec.convert(run.spec, EstimatorSpec)
        if job_id is None:
            try:
                job_id = await self.submit(run, spec, target)
            except SubmitFailed as exc:
                await self.control.fail(run_id, exc.reason, exc.message)
                return
            if job_id is None:  # canceled before it was submitted
                await self.control.canceled(run_id)
                return
        tracked = self._track(target_name, run_id, job_id)
        try:
            await self._follow(run, spec, target, tracked)
        finally:
            self._tracked.get(target_name, {}).pop(job_id, None)

    async def submit(self, run: q.RunRow, spec: EstimatorSpec, target: SlurmTarget) -> str | None:
        """Snapshot and runtime into the run folder, the environment built (once per content),
        the batch job submitted; its id is recorded before anything else happens."""
        login = self.login(target)
        folder = run_folder(target, run.id)
        run_dir = self.settings.run_dir(run.id)
        await asyncio.to_thread(prepare_run_dir, run_dir)
        assert run.snapshot is not None
        env = await asyncio.to_thread(environment_of, self.settings, run, spec)
        try:
            adopted = await self._left_behind(login, run)
            if adopted is not None:
                await self.db.write(
                    lambda conn: store.record_job(conn, run.id, target.name, adopted)
                )
                append_log(
                    run_dir / BUILD_LOG,
                    f"Slurm job {adopted} was already submitted for this run: followed, not "
                    "submitted again\n",
                )
                log.info("run %s: adopted Slurm job %s on %s", run.id, adopted, target.name)
                return adopted
            await login.run(f"mkdir -p {folder}/wd {folder}/sys")
            snapshot = await asyncio.to_thread(self.settings.snapshot_path(run.snapshot).read_bytes)
            runtime = runtime_archive(self.settings.azureml_compat)
            await login.put({f"{folder}/snapshot.tar.gz": snapshot, f"{folder}/sys.tar": runtime})
            await login.run(
                f"cd {folder} && tar -xzf snapshot.tar.gz -C wd && tar -xf sys.tar -C sys "
                "&& rm -f snapshot.tar.gz sys.tar"
            )
            python = "python3"
            conda_prefix = await self._conda(login, target, env, folder, run_dir)
            if conda_prefix is not None and conda_prefix.has_python:
                python = f"{conda_prefix.path}/bin/python"
            if env.pip_packages or env.pip_requirements:
                key = script.env_key(python, env.pip_packages, env.pip_requirements)
                env_dir = f"{target.work_dir}/envs/{key}"
                # The wheel folder is offered as it is named: on shared storage the cluster sees it.
                pip_env = envs.pip_environment(self.settings, None, self.settings.wheel_dir)
                requirements = None
                if env.pip_requirements:
                    requirements = f"{folder}/requirements.txt"
                    await login.put({requirements: env.pip_requirements.encode()})
                append_log(run_dir / BUILD_LOG, f"Environment {key} on {target.host}\n")
                status, out = await login.run(
                    script.env_build_command(env_dir, env.pip_packages, pip_env, requirements),
                    check=False,
                )
                append_log(run_dir / BUILD_LOG, out)
                if status != 0:
                    raise SubmitFailed(
                        EndReason.BUILD_FAILED, f"The environment build failed:\n{out[-3000:]}"
                    )
                python = f"{env_dir}/bin/python"
            variables = envs.environment_for(
                spec,
                run,
                lib_dir=f"{folder}/sys/trainhub/lib",
                context_dir=f"{folder}/sys/trainhub/ctx",
            )
            if conda_prefix is not None:
                variables["CONDA_PREFIX"] = conda_prefix.path
            text = script.batch_script(
                run.id,
                spec,
                target,
                folder,
                python,
                variables,
                attempt=run.retries,
                path_dirs=(f"{conda_prefix.path}/bin",) if conda_prefix else (),
            )
            await login.put({f"{folder}/job.sh": text.encode()})
            if self.control.cancel_event(run.id).is_set():
                return None
            _, out = await login.run(f"sbatch --parsable {folder}/job.sh")
        except LoginError as exc:
            raise SubmitFailed(
                EndReason.INTERNAL_ERROR, f"Submitting to Slurm failed: {exc}"
            ) from None
        job_id = out.strip().splitlines()[-1].split(";")[0]
        await self.db.write(lambda conn: store.record_job(conn, run.id, target.name, job_id))
        append_log(run_dir / BUILD_LOG, f"Submitted to Slurm target {target.name}: job {job_id}\n")
        log.info("run %s: Slurm job %s on %s", run.id, job_id, target.name)
        return job_id

    async def _conda(
        self, login: Login, target: SlurmTarget, env: envs.Environment, folder: str, run_dir: Path
    ) -> ClusterPrefix | None:
        """The run's conda prefix, built on the cluster where it is used (once per content)."""
        request = env.conda
        if request is None:
            return None
        if request.pip:
            raise SubmitFailed(
                EndReason.BUILD_FAILED,
                "conda_dependencies_file: a 'pip:' section is not supported on Slurm targets yet",
            )
        append_log(run_dir / BUILD_LOG, f"Conda environment {request.key} on {target.host}\n")
        try:
            prefix, out = await slurm_conda.ensure_prefix(
                login, f"{target.work_dir}/envs", request, f"{folder}/conda-job.json"
            )
        except (slurm_conda.CondaBuildFailed, subprocess.CalledProcessError, StopIteration) as exc:
            message = (
                str(exc)
                if isinstance(exc, slurm_conda.CondaBuildFailed)
                else (f"py-rattler's wheel for the cluster could not be had: {exc}")
            )
            append_log(run_dir / BUILD_LOG, message + "\n")
            raise SubmitFailed(EndReason.BUILD_FAILED, message[-3000:]) from None
        append_log(run_dir / BUILD_LOG, out)
        return prefix

    async def _left_behind(self, login: Login, run: q.RunRow) -> str | None:
        """A job of this attempt already in Slurm (all states): the server was killed between
        ``sbatch`` and recording the id, and submitting again would run the script twice."""
        _, out = await login.run(
            f"squeue -h --states=all -u {login.target.user} --name={script.JOB_PREFIX}{run.id} "
            f"-o '{script.SQUEUE_FORMAT}'"
        )
        return script.adoptable(script.parse_squeue(out), run.id, run.retries)

    async def _follow(
        self, run: q.RunRow, spec: EstimatorSpec, target: SlurmTarget, tracked: Tracked
    ) -> None:
        cancel = self.control.cancel_event(run.id)
        canceled_at: float | None = None
        next_sync = 0.0
        while True:
            waiter = asyncio.ensure_future(tracked.news.wait())
            stop = asyncio.ensure_future(cancel.wait())
            await asyncio.wait(
                {waiter, stop},
                timeout=self.settings.slurm_poll_seconds * 2,
                return_when="FIRST_COMPLETED",
            )
            waiter.cancel()
            stop.cancel()
            tracked.news.clear()
            fresh = await self.db.read(lambda conn: q.get_run(conn, run.id))
            if fresh is None:
                return
            if fresh.status.is_terminal() or cancel.is_set():  # canceled while queued, or a cancel
                if canceled_at is None or time.monotonic() - canceled_at > 10:
                    await self.login(target).run(f"scancel {tracked.job_id}", check=False)
                    canceled_at = time.monotonic()
                if fresh.status.is_terminal():
                    await self._forget(run.id)
                    return
            state = tracked.state
            if state is None:
                continue
            if state.phase is Phase.PENDING:
                await self._pending(fresh, state)
            elif state.phase is Phase.RUNNING:
                await self._to(fresh, RunStatus.RUNNING, f"Slurm job {state.job_id} running")
                if time.monotonic() >= next_sync:
                    next_sync = time.monotonic() + self.settings.sync_interval_seconds
                    with contextlib.suppress(LoginError, OSError):
                        await self.sync(run.id, target)
            else:
                await self._end(fresh, spec, target, state, cancel.is_set())
                return

    async def _pending(self, run: q.RunRow, state: JobState) -> None:
        why = script.wait_reason(state)
        if run.status is RunStatus.QUEUED:
            if run.wait_reason != why:
                await self.db.write(lambda conn: q.set_wait_reasons(conn, {run.id: why}))
        elif run.status in (RunStatus.PREPARING, RunStatus.RUNNING):  # submitted, or requeued
            await self.control.move(
                run.id,
                RunStatus.QUEUED,
                expect=[run.status],
                detail=f"waiting in Slurm as job {state.job_id}",
                wait_reason=why,
            )

    async def _to(self, run: q.RunRow, to: RunStatus, detail: str) -> None:
        """To Running or Finalizing along the table's edges, from wherever the run is."""
        status = run.status
        if status is RunStatus.QUEUED:
            place = Place(run.target)
            if not await self.db.write(lambda conn: lifecycle.claim(conn, run.id, [place])):
                return
            status = RunStatus.PREPARING
        if status is RunStatus.PREPARING:
            await self.control.move(run.id, RunStatus.RUNNING, expect=[status], detail=detail)
            status = RunStatus.RUNNING
        if to is RunStatus.FINALIZING and status is RunStatus.RUNNING:
            await self.control.move(run.id, RunStatus.FINALIZING, expect=[status])

    async def sync(self, run_id: str, target: SlurmTarget) -> None:
        """The driver log's new bytes, ``./logs`` and the metrics so far (the whole file each
        time: the ingest keeps what it has)."""
        await self._tail(run_id, target)
        await self._copy(run_id, target, ("logs",))

    async def _tail(self, run_id: str, target: SlurmTarget) -> None:
        # Every byte of the local driver log came from the job's output: its size is the offset.
        local = self.settings.run_dir(run_id) / DRIVER_LOG
        offset = local.stat().st_size if local.exists() else 0
        remote = f"{run_folder(target, run_id)}/{script.DRIVER_LOG}"
        data = await self.login(target).read_from(remote, offset)
        if data:
            with local.open("ab") as fh:
                fh.write(data)

    async def _copy(self, run_id: str, target: SlurmTarget, tops: tuple[str, ...]) -> None:
        """``tops`` of the script's folder and its context files into run history, through the
        copy of runs without a container (a local mirror of the run folder's parts)."""
        login = self.login(target)
        folder = run_folder(target, run_id)
        work = self.settings.work_dir(run_id)
        for part in [*(f"wd/{top}" for top in tops), "sys/trainhub/ctx"]:
            await login.fetch_tree(f"{folder}/{part}", work / part)
        lines = await asyncio.to_thread(self.launcher.processes.collect_files, run_id, tops)
        await self.control.ingest(run_id, lines)

    async def _end(
        self,
        run: q.RunRow,
        spec: EstimatorSpec,
        target: SlurmTarget,
        state: JobState,
        canceled: bool,
    ) -> None:
        await self._to(run, RunStatus.FINALIZING, f"Slurm job {state.job_id} {state.state}")
        login = self.login(target)
        folder = run_folder(target, run.id)
        try:
            await self.collect(run.id, target)
            _, raw = await login.run(f"cat {folder}/{script.EXIT_FILE} 2>/dev/null", check=False)
        except (LoginError, OSError) as exc:
            log.warning("run %s: collecting from %s failed: %s", run.id, target.name, exc)
            raw = ""
        code = int(raw.strip()) if raw.strip().lstrip("-").isdigit() else None
        phase = state.phase
        if phase is Phase.GONE and code is not None:
            phase = Phase.COMPLETED if code == 0 else Phase.FAILED
        await self.control.register_models(run.id)
        if phase is Phase.NODE_FAIL:
            await self._forget(run.id)
            await self.control.lost(
                run.id,
                f"Slurm reported {state.state} for job {state.job_id}",
                f"A node of Slurm job {state.job_id} failed ({state.state}) while the run used it",
            )
        elif phase is Phase.TIMEOUT:
            await self.control.finish(run, spec, code, EndReason.TIMEOUT)
        elif phase is Phase.CANCELLED:
            if not canceled:
                log.info(
                    "run %s: Slurm job %s was cancelled outside trainhub", run.id, state.job_id
                )
            await self.control.canceled(run.id)
        elif phase is Phase.GONE:
            await self.control.fail(
                run.id,
                EndReason.PROCESS_GONE,
                f"Slurm no longer knows job {state.job_id} and it left no exit code",
            )
        else:
            if phase is Phase.FAILED and code in (None, 0):
                code = 1  # Slurm says it failed: never Completed
            await self.control.finish(run, spec, code if phase is Phase.FAILED else 0, None)

    async def collect(self, run_id: str, target: SlurmTarget) -> None:
        """The final copy: the driver log's end, ``./outputs``, ``./logs`` and metrics."""
        try:
            await self._tail(run_id, target)
            await self._copy(run_id, target, ("outputs", "logs"))
        finally:
            await asyncio.to_thread(shutil.rmtree, self.settings.work_dir(run_id), True)

    async def _forget(self, run_id: str) -> None:
        await self.db.write(lambda conn: store.forget_job(conn, run_id))


async def job_states(login: Login, job_ids: list[str]) -> dict[str, JobState]:
    """The state of each job Slurm still knows: one ``squeue`` for all of the user's jobs, and
    ``sacct`` (where the cluster keeps accounting) only for those squeue has forgotten."""
    _, out = await login.run(
        f"squeue -h --states=all -u {login.target.user} -o '{script.SQUEUE_FORMAT}'"
    )
    found = script.parse_squeue(out)
    missing = [j for j in job_ids if j not in found]
    if missing:
        status, out = await login.run(
            f"sacct -n -X -P -o JobID,State -j {','.join(missing)}", check=False
        )
        if status == 0:
            found.update(script.parse_sacct(out))
    return {j: found[j] for j in job_ids if j in found}


def _claim(run_id: str, places: list[Place], conn: Any) -> bool:
    return lifecycle.claim(conn, run_id, places)


def _target(name: str, conn: Any) -> SlurmTarget | None:
    return store.get_target(conn, name)


def run_folder(target: SlurmTarget, run_id: str) -> str:
    return f"{target.work_dir}/runs/{run_id}"
