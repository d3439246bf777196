"""The launcher: claims queued runs for the scheduler's placements and keeps one task per driven run.

Load, act, apply: a run is claimed with a short write (``Queued`` -> ``Preparing``, holding what the
scheduler gave it), then driven by its driver (``runs/driving.py``) with no transaction open.
Restarts, lost nodes and errors inside trainhub are ``runs/recovery.py``'s.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from trainhub.nodes.pool import LOCAL, NodePool
from trainhub.prometheus import SCHEDULING_PASS
from trainhub.runs import dispatch, recovery
from trainhub.runs.artifacts import GB, free_bytes, human_size
from trainhub.runs.container_driver import ContainerDriver
from trainhub.runs.driving import Attempt, Driver, RunControl, drive, load_attempt
from trainhub.runs.process import ProcessDriver
from trainhub.runtime.docker import DockerEngine
from trainhub.scheduler import Allocation, plan
from trainhub.settings import Settings
from trainhub.slurm.service import SlurmRuns
from trainhub.store import Database, lifecycle
from trainhub.store import nodes as node_store
from trainhub.store import runs as q
from trainhub.store import slurm as slurm_store
from trainhub.store.lifecycle import ACTIVE, RunStatus

log = logging.getLogger("trainhub.launcher")


class Launcher:
    def __init__(self, settings: Settings, db: Database, pool: NodePool, instance: str) -> None:
        self.settings = settings
        self.pool = pool
        self.instance = instance
        self.control = RunControl(settings, db)
        self.containers = ContainerDriver(settings, db, pool, instance, self.control.ingest)
        self.processes = ProcessDriver(settings, db, self.control.ingest, pool)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._dispatcher: asyncio.Task[None] | None = None
        self._faults: set[asyncio.Task[None]] = set()
        # Called when a run's task ends: the sweep controller starts the next child at once.
        self.on_run_end: Callable[[], None] | None = None
        pool.on_ready = lambda node: recovery.node_ready(self, node)
        self.slurm = SlurmRuns(self)  # runs of Slurm targets: Slurm schedules them

    @property
    def engine(self) -> DockerEngine | None:
        """The server's own Docker engine (None: the machine has none, yet)."""
        return self.pool.local_engine

    # Lifecycle of the launcher itself ------------------------------------------------------
    async def start(self) -> None:
        await recovery.recover(self)
        await self.slurm.start()
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="trainhub-dispatcher")

    async def stop(self) -> None:
        """Stop supervising. Containers keep running: the next start re-attaches them."""
        await self.slurm.stop()
        tasks = [t for t in [self._dispatcher, *self._tasks.values(), *self._faults] if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def wake(self) -> None:
        self.control.wake()

    def request_cancel(self, run_id: str) -> None:
        self.control.request_cancel(run_id)

    # Claiming queued runs ------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        woken = self.control.woken
        suspects: set[str] = set()
        next_watch = time.monotonic() + self.settings.watchdog_seconds
        while True:
            woken.clear()
            try:
                with SCHEDULING_PASS.time():
                    await self._claim()
            except Exception:
                log.exception("claiming queued runs failed")
            if time.monotonic() >= next_watch:
                try:
                    suspects = await recovery.watchdog(self, suspects)
                except Exception:
                    log.exception("the watchdog pass failed")
                next_watch = time.monotonic() + self.settings.watchdog_seconds
            try:
                await asyncio.wait_for(woken.wait(), timeout=2.0)
            except TimeoutError:
                pass

    async def _claim(self) -> None:
        db = self.control.db
        queued = await db.read(lambda conn: q.runs_with_status(conn, [RunStatus.QUEUED]))
        if queued:  # runs of Slurm targets wait in Slurm's queue, not here
            slurm = await db.read(slurm_store.target_names)
            queued = [run for run in queued if run.target not in slurm]
        if not queued:
            return
        floor = self.settings.min_free_gb * GB
        free = await asyncio.to_thread(free_bytes, self.settings.data)
        if free < floor:  # nothing starts until there is room for its results
            why = (
                f"the server's data disk has {human_size(free)} free, needs "
                f"{human_size(floor)} (TRAINHUB_MIN_FREE_GB)"
            )
            changed = {run.id: why for run in queued if run.wait_reason != why}
            if changed:
                await db.write(lambda conn: q.set_wait_reasons(conn, changed))
            return
        held = await db.read(node_store.allocations)
        targets = await db.read(node_store.list_targets)
        engineless = frozenset() if self.pool.local_engine else frozenset({LOCAL})
        requests = dispatch.requests_for(queued, targets, engineless)
        result = plan(
            requests,
            dispatch.capacities(self.pool, self.settings.max_concurrent_runs, held),
            now=time.time(),
            starve_after=self.settings.starvation_seconds,
        )
        for allocation in result.allocations:
            if await db.write(functools.partial(_claim_allocation, allocation)):
                self.spawn(allocation.run_id)
        changed = {
            run.id: result.waiting[run.id]
            for run in queued
            if run.id in result.waiting and run.wait_reason != result.waiting[run.id]
        }
        if changed:
            await db.write(lambda conn: q.set_wait_reasons(conn, changed))

    # Tasks, one per driven run -------------------------------------------------------------
    def spawn(self, run_id: str, attach: str | None = None) -> None:
        """Drive a claimed run, or (``attach``: its container or process) one that runs already."""
        self.track(run_id, self.drive(run_id, attach))

    async def health(self) -> dict[str, list[str]]:
        """Runs in a driven status that no task drives, and runs holding capacity they should
        not: both empty unless something went wrong (the watchdog ends the first kind)."""
        db = self.control.db
        active = await db.read(lambda conn: recovery.driven(q.runs_with_status(conn, ACTIVE)))
        return {
            "runsWithoutTask": sorted(run.id for run in active if not self.driving(run.id)),
            "allocationsOfEndedRuns": await db.read(node_store.allocations_of_ended_runs),
        }

    def driving(self, run_id: str) -> bool:
        """Whether a task of this server drives (or waits for the node of) the run."""
        return run_id in self._tasks

    def track(self, run_id: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._guard(run_id, work), name=f"run-{run_id}")
        self._tasks[run_id] = task

        def done(_: asyncio.Task[None]) -> None:
            if self._tasks.get(run_id) is task:  # not a later attempt of the same run (a retry)
                del self._tasks[run_id]
                self.control.forget(run_id)
            self.control.wake()
            if self.on_run_end is not None:
                self.on_run_end()

        task.add_done_callback(done)

    async def _guard(self, run_id: str, work: Coroutine[Any, Any, None]) -> None:
        """No exception leaves a run's task without ending the run."""
        try:
            await work
        except asyncio.CancelledError:
            raise  # server shutdown: the container runs on and is re-attached at the next start
        except Exception as exc:
            try:
                await recovery.internal_error(self, run_id, exc)
            except Exception:  # the database too: the watchdog ends the run later
                log.exception("run %s: could not end it after an error", run_id)

    async def _drop_when_running(self, run_id: str) -> None:
        """Fault injection for tests: the run's task is canceled behind its back once it runs."""
        driven = (RunStatus.PREPARING, RunStatus.STARTING)
        run = None
        while run is None or run.status in driven:
            await asyncio.sleep(0.2)
            run = await self.control.db.read(lambda db: q.get_run(db, run_id))
            if run is None:
                return
        task = self._tasks.get(run_id)
        if task is not None and run.status is RunStatus.RUNNING:
            log.warning("fault injection: dropping the task of run %s", run_id)
            task.cancel()

    async def attempt(self, run_id: str) -> Attempt | None:
        return await load_attempt(self.control, run_id, LOCAL)

    def driver_for(self, attempt: Attempt) -> Driver[Any]:
        return self.containers if attempt.spec.use_docker else self.processes

    async def drive(self, run_id: str, attach: str | None) -> None:
        attempt = await self.attempt(run_id)
        if attempt is None:
            return
        if self.settings.fault("drop-task") and attach is None:
            self._faults.add(asyncio.create_task(self._drop_when_running(run_id)))
        try:
            await drive(self.control, self.driver_for(attempt), attempt, attach)
        except asyncio.CancelledError:
            raise  # server shutdown: the container runs on and is re-attached at the next start
        except Exception as exc:
            await recovery.after_error(self, attempt, exc)


def _claim_allocation(allocation: Allocation, conn: Any) -> bool:
    return lifecycle.claim(conn, allocation.run_id, allocation.placements)
