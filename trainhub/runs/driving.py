"""Driving one attempt of a run, whatever runs it: one flow, one small interface per way of running.

A driver (containers on Docker engines, plain processes; later torchrun, Slurm) knows how to prepare,
start, re-attach, watch, sync, stop, collect and remove. ``drive`` owns the order and the statuses:

    Preparing -> Starting -> Running -> Finalizing -> Completed | Failed | Canceled

Every status change goes through ``RunControl``, which applies it with ``store.lifecycle`` (the one
table of edges), so a driver never decides a status by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, TypeVar

import msgspec

from trainhub.context import CHILD_FILES
from trainhub.models import in_run
from trainhub.prometheus import LOG_SYNC, OUTPUT_COPY
from trainhub.runs import retention
from trainhub.runs.artifacts import (
    DRIVER_LOG,
    adopt_child_files,
    drop_partial,
    human_size,
    is_disk_full,
    says_disk_full,
)
from trainhub.runs.containers import log_tail
from trainhub.runs.preparing import PrepareFailed
from trainhub.settings import Settings
from trainhub.spec import EstimatorSpec
from trainhub.store import Database, interactive, lifecycle, metrics
from trainhub.store import nodes as node_store
from trainhub.store import runs as q
from trainhub.store.lifecycle import EndReason, RunStatus

log = logging.getLogger("trainhub.driving")


class Interruption(Enum):
    """What a killed or vanished script means."""

    NONE = "none"  # the script ended (or the error is trainhub's): the usual end
    CUT_OFF = "cut_off"  # only the connection to it dropped: watch it again
    ENGINE_STOPPED = "engine_stopped"  # its engine stopped or restarted and took it along


class Canceled(Exception):
    """A cancel came in while the run was being started; the driver has removed what it made."""


@dataclass
class Attempt:
    """One attempt of a run, as claimed: the run, its spec, and what it holds on which nodes."""

    run: q.RunRow
    spec: EstimatorSpec
    node: str  # the head node (where the script or rank 0 runs)
    gpus: dict[str, list[int]]  # node -> GPU indices held there, the head first
    cancel: asyncio.Event = field(default_factory=asyncio.Event)  # set when a cancel comes in
    image: str | None = None  # the head node's
    # Each node's image (equal environments may have other ids on nodes with other base images).
    node_images: dict[str, str] = field(default_factory=dict)

    @property
    def workers(self) -> list[str]:
        """The other nodes of a multi-node run, in the order they were allocated."""
        return [n for n in self.gpus if n != self.node]

    @property
    def run_id(self) -> str:
        return self.run.id


async def load_attempt(control: RunControl, run_id: str, default_node: str) -> Attempt | None:
    """The run and what it holds, read once per attempt."""
    run, held = await control.db.read(
        lambda conn: (q.get_run(conn, run_id), node_store.allocation_of(conn, run_id))
    )
    if run is None:
        return None
    node = run.node or default_node
    gpus = {row["node"]: list(row["gpus"]) for row in held}
    gpus = {node: gpus.pop(node, []), **gpus}  # the head first
    spec = msgspec.convert(run.spec, EstimatorSpec)
    return Attempt(run, spec, node, gpus, control.cancel_event(run_id))


H = TypeVar("H")
# Below this a node's disk counts as full when a script fails for want of space.
NODE_DISK_LOW = 256 * 1024 * 1024
# Exit codes of a script stopped from outside (SIGKILL, SIGTERM) or gone without one.
KILLED = frozenset({None, 128 + 9, 128 + 15})


class Driver(Protocol[H]):
    """One way of running a run's script. ``H`` is the driver's handle on a started attempt."""

    async def prepare(self, attempt: Attempt) -> None:
        """Image or environment ready on every node of the attempt (raises ``PrepareFailed``)."""

    async def start(self, attempt: Attempt) -> H:
        """Start the script (raises ``Canceled`` when a cancel came in meanwhile)."""

    async def attach(self, attempt: Attempt, ref: str) -> H:
        """A handle on an attempt started before (a server restart, a node back): ``ref`` is what
        ``reference`` said of it (a container id, a process id)."""

    def reference(self, handle: H) -> str: ...

    def watch(self, handle: H) -> asyncio.Future[int | None]:
        """Resolves with the script's exit code (None: it vanished without one) once it has ended
        and its output is in the driver log."""

    async def sync(self, handle: H) -> None:
        """``./logs`` and metrics into run history while it runs."""

    async def stop(self, handle: H, ended: asyncio.Future[int | None]) -> None:
        """SIGTERM, then SIGKILL after the grace period; returns once ``ended`` resolved or gave up."""

    async def interrupted(self, handle: H) -> tuple[Interruption, str]:
        """After a killed or vanished script: whether the machine did it (with a sentence)."""

    async def disk_left(self, handle: H) -> int | None:
        """Free bytes of the disk the script writes to (None: unknown)."""

    async def lost_node(self, handle: H) -> str | None:
        """After a failing end: the node of the attempt that no longer answers, if any."""

    async def collect(self, handle: H, lost: str | None) -> None:
        """The final copy of ``./outputs``, ``./logs`` and metrics (never from ``lost``)."""

    async def remove(self, handle: H, lost: str | None) -> None:
        """Containers, processes and scratch of the attempt gone (``lost``'s when it is back)."""

    async def abandon(self, attempt: Attempt) -> None:
        """After an error in trainhub: remove whatever of the attempt exists, as far as reachable."""


class RunControl:
    """Status changes of driven runs (through ``store.lifecycle``), cancel signals and wake-ups:
    what the launcher, the drivers and recovery share."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.woken = asyncio.Event()
        self._cancel: dict[str, asyncio.Event] = {}
        self._models: dict[str, list[in_run.Request]] = {}  # register_model calls of the script

    def wake(self) -> None:
        self.woken.set()

    def cancel_event(self, run_id: str) -> asyncio.Event:
        return self._cancel.setdefault(run_id, asyncio.Event())

    def request_cancel(self, run_id: str) -> None:
        self.cancel_event(run_id).set()

    def forget(self, run_id: str) -> None:
        self._cancel.pop(run_id, None)
        self._models.pop(run_id, None)

    async def move(
        self,
        run_id: str,
        to: RunStatus,
        *,
        expect: list[RunStatus] | None = None,
        detail: str | None = None,
        **fields: Any,
    ) -> bool:
        return await self.db.write(
            lambda db: lifecycle.move(db, run_id, to, expect=expect, detail=detail, **fields)
        )

    async def fail(self, run_id: str, reason: EndReason, message: str) -> None:
        await self.db.write(lambda db: lifecycle.fail(db, run_id, reason, message))

    async def canceled(self, run_id: str) -> None:
        await self.db.write(lambda db: lifecycle.cancel(db, run_id))

    async def requeue(self, run_id: str, why: str, **fields: Any) -> bool:
        done = await self.db.write(lambda db: lifecycle.requeue(db, run_id, why, **fields))
        if done:
            self.wake()
        return done

    async def ingest(self, run_id: str, lines: list[str]) -> None:
        if lines:
            await self.db.write(lambda db: metrics.ingest(db, run_id, lines, len(lines)))
            self._models[run_id] = in_run.requests_in(lines)  # ``lines`` is the whole file
        run_dir = self.settings.run_dir(run_id)
        if (run_dir / CHILD_FILES).is_dir():  # files of child runs the script made
            children = await self.db.read(lambda db: interactive.descendants(db, run_id))
            await asyncio.to_thread(adopt_child_files, run_dir, self.settings.runs_dir, children)

    async def register_models(self, run_id: str) -> None:
        """The models the script asked for, now that its outputs are stored."""
        requests = self._models.pop(run_id, [])
        if requests:
            await in_run.register_requested(self.settings, self.db, run_id, requests)

    async def lost(
        self, run_id: str, why: str, message: str, reason: EndReason = EndReason.NODE_LOST
    ) -> bool:
        """A node of the run (or its engine) is gone: queued again when the run allows retries
        (True), otherwise Failed with ``reason`` (its allocation is freed with either)."""
        run = await self.db.read(lambda db: q.get_run(db, run_id))
        if run is not None and run.status is RunStatus.CANCEL_REQUESTED:
            await self.canceled(run_id)  # it was being canceled anyway
            return False
        if (
            run is not None
            and run.retries < run.max_retries
            and run.status is not RunStatus.CANCEL_REQUESTED
            and await self.requeue(
                run_id, f"queued again: {why} ({reason})", retries=run.retries + 1
            )
        ):
            log.warning("run %s: %s; queued again (retry %d)", run_id, why, run.retries + 1)
            return True
        await self.fail(run_id, reason, message)
        return False

    async def finish(
        self,
        run: q.RunRow,
        spec: EstimatorSpec,
        exit_code: int | None,
        stopped_for: EndReason | None,
        node_disk_free: int | None = None,
    ) -> None:
        """The end status: Canceled, Failed (timeout, exit code, the node's disk full) or
        Completed."""
        await self.db.write(lambda db: q.update_run(db, run.id, exit_code=exit_code))
        await retention.measure(self.settings, self.db, run.id)  # its outputs are back: disk use
        if stopped_for is EndReason.CANCELED or self.cancel_event(run.id).is_set():
            await self.canceled(run.id)
        elif stopped_for is EndReason.TIMEOUT:
            await self.fail(
                run.id,
                EndReason.TIMEOUT,
                f"The run exceeded max_run_duration_seconds ({spec.max_run_duration_seconds} s) "
                "and was stopped",
            )
        elif exit_code == 0:
            if not await self.move(run.id, RunStatus.COMPLETED, expect=[RunStatus.FINALIZING]):
                await self.canceled(run.id)  # a cancel came in meanwhile (or it has ended)
        elif exit_code is None:
            await self.fail(
                run.id,
                EndReason.PROCESS_GONE,
                "The run's process ended without an exit code (killed from outside?)",
            )
        else:
            tail = log_tail(self.settings.run_dir(run.id) / DRIVER_LOG)
            if node_disk_free is not None:  # the node's disk filled up under the script
                await self.fail(
                    run.id,
                    EndReason.NODE_DISK_FULL,
                    f"The node's disk is full ({human_size(node_disk_free)} free): the script "
                    f"failed with code {exit_code}.\n{tail}".rstrip(),
                )
                return
            await self.fail(
                run.id,
                EndReason.EXIT_CODE,
                f"The script exited with code {exit_code}.\n{tail}".rstrip(),
            )


async def _abandon(driver: Driver[Any], attempt: Attempt) -> None:
    """Remove what a canceled attempt made before it started; what cannot be reached now goes
    when its node is back (recovery)."""
    try:
        await driver.abandon(attempt)
    except Exception:  # noqa: BLE001 - the cancel goes through whatever the engine says
        log.warning("run %s: removing what it made before it started failed", attempt.run_id)


async def drive(
    control: RunControl, driver: Driver[Any], attempt: Attempt, attach: str | None = None
) -> None:
    """One attempt from its claim (or from ``attach``: re-attached) to its end."""
    run_id = attempt.run_id
    cancel = control.cancel_event(run_id)
    if attach is not None:
        handle = await driver.attach(attempt, attach)
    else:
        try:
            await driver.prepare(attempt)
        except PrepareFailed as exc:
            reason = EndReason.NODE_DISK_FULL if says_disk_full(exc.message) else exc.reason
            await control.fail(run_id, reason, exc.message)
            return
        if cancel.is_set() or not await control.move(
            run_id, RunStatus.STARTING, expect=[RunStatus.PREPARING]
        ):
            await _abandon(driver, attempt)  # what prepare made (a run's data volumes)
            await control.canceled(run_id)
            return
        try:
            handle = await driver.start(attempt)
        except Canceled:
            await _abandon(driver, attempt)
            await control.canceled(run_id)
            return
        await control.move(run_id, RunStatus.RUNNING, expect=[RunStatus.STARTING])
    stopped_for: EndReason | None = None
    exit_code: int | None = None
    crash: Exception | None = None
    while True:
        ended = driver.watch(handle)
        stopped_for = await _until_end(control, driver, attempt, handle, ended)
        try:
            exit_code, crash = await ended, None
        except Exception as exc:  # noqa: BLE001 - the engine broke the wait: is it still there?
            exit_code, crash = None, exc
        if stopped_for is not None or (crash is None and exit_code not in KILLED):
            break
        verdict, why = await driver.interrupted(handle)
        if verdict is Interruption.CUT_OFF:
            log.info("run %s: its connection dropped and the script runs on: re-attaching", run_id)
            handle = await driver.attach(attempt, driver.reference(handle))
            continue
        if verdict is Interruption.ENGINE_STOPPED:  # the machine stopped it, not the script
            with contextlib.suppress(Exception):  # a node still away tidies up when it is back
                await driver.remove(handle, None)
            await control.lost(run_id, why, why, EndReason.ENGINE_RESTARTED)
            return
        break
    if crash is not None:
        raise crash  # the launcher's error path
    if stopped_for is None and not await control.move(
        run_id, RunStatus.FINALIZING, expect=[RunStatus.RUNNING, RunStatus.FINALIZING]
    ):
        stopped_for = EndReason.CANCELED
    lost = None
    if stopped_for is None and exit_code != 0:
        lost = await driver.lost_node(handle)
    try:
        with OUTPUT_COPY.time():
            await driver.collect(handle, lost)
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        full = await asyncio.to_thread(
            drop_partial, control.settings.run_dir(run_id), "outputs", exc
        )
        log.warning("run %s: %s", run_id, full)
        await control.fail(run_id, EndReason.DISK_FULL, str(full))
        await driver.remove(handle, lost)
        return
    if lost is None:
        await control.register_models(run_id)
        disk = None
        if stopped_for is None and exit_code not in (0, None):
            disk = await _node_disk_full(driver, handle)
        await control.finish(attempt.run, attempt.spec, exit_code, stopped_for, disk)
    await driver.remove(handle, lost)
    if lost is not None:  # only now: a retry may be placed on the same nodes at once
        retried = await control.lost(
            run_id,
            f"node {lost} was lost while the run used it",
            f"Node {lost}, one of this run's nodes, was lost while the run used it "
            f"(the script's launcher exited with code {exit_code})",
        )
        if not retried:
            await control.db.write(lambda db: q.update_run(db, run_id, exit_code=exit_code))


async def _node_disk_full(driver: Driver[Any], handle: Any) -> int | None:
    """After a failed script: the free bytes of its node's disk when that is nearly full (its
    output may not even have reached the log then); None otherwise (a full /dev/shm, say, is the
    script's own business)."""
    free = await driver.disk_left(handle)
    return free if free is not None and free < NODE_DISK_LOW else None


async def _until_end(
    control: RunControl,
    driver: Driver[Any],
    attempt: Attempt,
    handle: Any,
    ended: asyncio.Future[int | None],
) -> EndReason | None:
    """Wait for the script's end, syncing every few seconds; stop it on cancel or timeout (the
    reason is returned)."""
    cancel = control.cancel_event(attempt.run_id)
    started = attempt.run.started_at
    if started is None:
        fresh = await control.db.read(lambda db: q.get_run(db, attempt.run_id))
        started = (fresh.started_at if fresh else None) or time.time()
    limit = attempt.spec.max_run_duration_seconds
    deadline = started + limit if limit else None
    canceled: asyncio.Future[Any] = asyncio.ensure_future(cancel.wait())
    interval = control.settings.sync_interval_seconds
    next_sync = time.monotonic() + interval
    syncing: asyncio.Future[None] | None = None  # a sync never holds up noticing the end
    try:
        while not ended.done():
            wait = next_sync - time.monotonic()
            if deadline is not None:
                wait = min(wait, deadline - time.time())
            await asyncio.wait(
                {ended, canceled}, timeout=max(wait, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
            if ended.done():
                break
            if cancel.is_set() or (deadline is not None and time.time() >= deadline):
                await driver.stop(handle, ended)
                return EndReason.CANCELED if cancel.is_set() else EndReason.TIMEOUT
            if time.monotonic() >= next_sync:
                if syncing is None or syncing.done():
                    syncing = asyncio.ensure_future(_sync(driver, handle, attempt.run_id))
                next_sync = time.monotonic() + interval
    finally:
        canceled.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await canceled
        if syncing is not None:  # the final copy follows: let a sync under way finish first
            with contextlib.suppress(asyncio.CancelledError):
                await syncing
    return None


async def _sync(driver: Driver[Any], handle: Any, run_id: str) -> None:
    try:
        with LOG_SYNC.time():
            await driver.sync(handle)
    except Exception as exc:  # noqa: BLE001 - a failed sync is retried next time
        log.warning("syncing %s failed: %s", run_id, exc)
