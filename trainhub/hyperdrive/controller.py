"""The sweep controller: a background task of the server that drives every open sweep.

Each tick (and whenever a sweep is submitted, changed or canceled) it takes each open sweep one
step, with all of its state read from SQLite, so that a server killed at any point resumes where
it was: the children that exist are the sweep's (``sweep_children``), the next one is
``next_index``, and a child is inserted in one transaction with its values.

One step of a running sweep:

1. the policy: when the children have logged more primary metric values than at the last look,
   :func:`trainhub.hyperdrive.policies.evaluate` judges the running children; each one it stops
   ends ``Canceled`` with the policy's sentence and numbers in its error;
2. ``max_duration_minutes`` (from the sweep's submission): its open children are stopped and no
   more are started;
3. new children, while fewer than the concurrency in force are queued or running, until
   ``max_total_runs`` (as it is now: it can be changed) or an exhausted grid.

The parent's status follows its children (as Azure ML's HyperDrive run does): ``Running`` while
the sweep goes on; once no more children will start and every child has ended, ``Failed`` when
every child failed, else ``Completed`` (children stopped by the policy or by the duration limit
are the sweep working as asked); ``Canceled`` when the parent was canceled (every child with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from typing import Any

import msgspec

from trainhub.datasets import registry as datasets
from trainhub.hyperdrive import policies
from trainhub.hyperdrive.samplers import Trial, sample
from trainhub.hyperdrive.spec import SweepSpec, child_estimator
from trainhub.runs.launcher import Launcher
from trainhub.store import Database, lifecycle
from trainhub.store import runs as q
from trainhub.store import sweeps as store
from trainhub.store.lifecycle import RunStatus

log = logging.getLogger("trainhub.sweeps")
TICK_SECONDS = 0.5


class SweepController:
    """Owned by the app's lifespan: ``start`` / ``stop``; ``wake`` after a change to a sweep."""

    def __init__(self, db: Database, launcher: Launcher) -> None:
        self.db = db
        self.launcher = launcher
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._specs: dict[str, SweepSpec] = {}
        self._seen: dict[str, int] = {}  # primary metric values counted at the last evaluation

    async def start(self) -> None:
        self.launcher.on_run_end = self.wake  # a child that ends frees its place at once
        self._task = asyncio.create_task(self._loop(), name="trainhub-sweeps")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        self._woken.set()

    async def _loop(self) -> None:
        while True:
            self._woken.clear()
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - the next tick tries again
                log.exception("a sweep controller pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), TICK_SECONDS)

    async def tick(self) -> None:
        for sweep in await self.db.read(store.open_sweeps):
            await self.advance(sweep)

    def spec(self, sweep: store.SweepRow) -> SweepSpec:
        if sweep.id not in self._specs:
            self._specs[sweep.id] = msgspec.convert(sweep.spec, SweepSpec)
        return self._specs[sweep.id]

    async def advance(self, sweep: store.SweepRow) -> None:
        spec = self.spec(sweep)
        parent = await self.db.read(lambda db: q.get_run(db, sweep.id))
        if parent is None:
            return
        kids = await self.db.read(lambda db: store.children(db, sweep.id))
        if sweep.state == store.CANCELING:
            if all(child.finished for child in kids):
                await self._end(sweep, RunStatus.CANCELED)
            return
        if sweep.state in (store.RUNNING, store.ENDING):
            await self._apply_policy(sweep, spec, kids)
            if time.time() - sweep.created_at >= spec.max_duration_minutes * 60:
                await self._stop_for_duration(sweep, spec, kids)
            elif sweep.state == store.RUNNING:
                await self._fill(sweep, spec, parent, kids)
            kids = await self.db.read(lambda db: store.children(db, sweep.id))
            fresh = await self.db.read(lambda db: store.get_sweep(db, parent.id))
            sweep = fresh or sweep
        if sweep.state == store.ENDING and all(child.finished for child in kids):
            failed = kids and all(child.status is RunStatus.FAILED for child in kids)
            await self._end(sweep, RunStatus.FAILED if failed else RunStatus.COMPLETED, len(kids))

    async def _apply_policy(
        self, sweep: store.SweepRow, spec: SweepSpec, kids: list[store.ChildRow]
    ) -> None:
        if spec.policy is None or spec.policy.type == "no_termination" or not kids:
            return
        ids = [child.run_id for child in kids]
        name = spec.primary_metric_name
        count = await self.db.read(lambda db: store.primary_counts(db, ids, name))
        if count == self._seen.get(sweep.id):
            return
        series = await self.db.read(lambda db: store.primary_series(db, ids, name))
        finished = {c.run_id for c in kids if c.finished or c.stop is not None}
        for stop in policies.evaluate(spec.policy, spec.maximize, series, finished):
            numbers = {"policy": stop.policy, "interval": stop.interval, **stop.numbers}
            message = f"Stopped by the {stop.policy} policy: {stop.reason}"
            await self._stop_child(stop.child, numbers, message)
            log.info("sweep %s: %s %s", sweep.id, stop.child, message)
        self._seen[sweep.id] = count

    async def _stop_for_duration(
        self, sweep: store.SweepRow, spec: SweepSpec, kids: list[store.ChildRow]
    ) -> None:
        minutes = spec.max_duration_minutes
        await self.db.write(
            lambda db: store.set_state(db, sweep.id, store.ENDING, "max_duration_minutes")
        )
        message = f"The sweep reached its max_duration_minutes ({minutes})"
        for child in kids:
            if not child.finished and child.stop is None:
                stop = {"policy": "max_duration_minutes", "max_duration_minutes": minutes}
                await self._stop_child(child.run_id, stop, message)

    async def _stop_child(self, run_id: str, stop: dict[str, Any], message: str) -> None:
        if await self.db.write(lambda db: store.stop_child(db, run_id, stop, message)):
            self.launcher.request_cancel(run_id)

    async def _fill(
        self, sweep: store.SweepRow, spec: SweepSpec, parent: q.RunRow, kids: list[store.ChildRow]
    ) -> None:
        """Start children until the concurrency in force, max_total_runs or the grid's end."""
        open_children = sum(not child.finished for child in kids)
        index = sweep.next_index
        started = False
        while open_children < sweep.max_concurrent_runs:
            if index >= sweep.max_total_runs:
                await self._no_more(sweep, "max_total_runs")
                break
            bayesian = spec.hyperparameter_sampling.type == "bayesian"
            history = await self._history(spec, kids) if bayesian else []
            values = await asyncio.to_thread(sample, spec, index, history)
            if values is None:
                await self._no_more(sweep, "grid_exhausted")
                break
            child = child_estimator(spec, values)
            child_spec = msgspec.to_builtins(child)
            row = await self.db.write(
                functools.partial(
                    store.insert_child,
                    parent=parent,
                    index=index,
                    hyperparameters=values,
                    spec=child_spec,
                )
            )
            if row is None:
                break
            await datasets.record_inputs(self.db, row.id, list(child.references().values()))
            started = True
            open_children += 1
            index += 1
        if started:
            self.launcher.wake()

    async def _no_more(self, sweep: store.SweepRow, why: str) -> None:
        await self.db.write(lambda db: store.set_state(db, sweep.id, store.ENDING, why))

    async def _history(self, spec: SweepSpec, kids: list[store.ChildRow]) -> list[Trial]:
        """The finished children and those of the sweeps it resumes from, with their best
        primary metric: what the Bayesian sampler learns from."""
        earlier = await self.db.read(lambda db: store.sweep_children_of(db, spec.resume_from))
        done = [child for child in [*earlier, *kids] if child.finished]
        ids = [child.run_id for child in done]
        best = await self.db.read(
            lambda db: store.best_values(db, ids, spec.primary_metric_name, spec.maximize)
        )
        return [Trial(c.index, c.hyperparameters, best.get(c.run_id)) for c in done]

    async def _end(self, sweep: store.SweepRow, to: RunStatus, children: int = 0) -> None:
        def end(db: Any) -> None:
            now = store.get_sweep(db, sweep.id)
            if now is None or now.state != sweep.state:  # canceled meanwhile: the next tick
                return
            if to is RunStatus.FAILED:
                error = json.dumps(
                    {
                        "code": "UserError",
                        "reason": "children_failed",
                        "message": f"Every one of the sweep's {children} children failed",
                    }
                )
                lifecycle.move(db, sweep.id, to, detail="every child failed", error=error)
            else:
                lifecycle.move(db, sweep.id, to, detail=sweep.end_reason or to.value.lower())
            store.set_state(db, sweep.id, store.DONE)

        await self.db.write(end)
        self._specs.pop(sweep.id, None)
        self._seen.pop(sweep.id, None)
        log.info("sweep %s: %s", sweep.id, to.value)
