"""The launcher: drives each run through Preparing -> Starting -> Running -> Finalizing -> end.

Load, act, apply: a run is claimed with a short write (``Queued`` -> ``Preparing``), Docker work is done
with no transaction open, and every later status is applied only if the run is still where the
launcher left it (a cancel may have come in meanwhile). Containers are labelled with the run id and
this server's instance id, so a restarted server finds and re-attaches the runs it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import msgspec

from trainhub.nodes.pool import LOCAL, NodePool, NodeUnavailable
from trainhub.runs import containers, dispatch
from trainhub.runs.artifacts import (
    prepare_run_dir,
)
from trainhub.runs.preparing import ImagePreparer, PrepareFailed
from trainhub.runs.process import ProcessRuntime
from trainhub.runs.status import ACTIVE, DRIVER_LOG, EndReason, RunStatus
from trainhub.runtime.docker import DockerEngine, RunContainer
from trainhub.runtime.incontainer import (
    command_for,
)
from trainhub.runtime.mpi import MpiLayout, port_for, ssh_material, worker_command
from trainhub.runtime.mpi import head_environment as mpi_env
from trainhub.scheduler import Allocation, plan
from trainhub.settings import Settings
from trainhub.spec import EstimatorSpec, is_mpi, processes_per_node
from trainhub.store import Database, metrics
from trainhub.store import nodes as node_store
from trainhub.store import runs as q

log = logging.getLogger("trainhub.launcher")


class _Canceled(Exception):
    """A cancel came in while the run's containers were being started."""


class Launcher:
    def __init__(self, settings: Settings, db: Database, pool: NodePool, instance: str) -> None:
        self.settings = settings
        self.db = db
        self.pool = pool
        self.engine = pool.local_engine
        self.instance = instance
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self.preparer = ImagePreparer(settings, db, pool.local_engine)
        self._preparers: dict[str, ImagePreparer] = {LOCAL: self.preparer}
        self.processes = ProcessRuntime(settings, db)
        pool.on_ready = self._node_ready

    def preparer_for(self, node: str) -> ImagePreparer:
        """One preparer per node (its build locks live there); its engine follows reconnections."""
        engine = self.pool.engine(node)
        preparer = self._preparers.get(node)
        if preparer is None:
            preparer = self._preparers[node] = ImagePreparer(self.settings, self.db, engine, node)
        preparer.engine = engine
        return preparer

    # Lifecycle of the launcher itself ------------------------------------------------------
    async def start(self) -> None:
        await self._recover()
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="trainhub-dispatcher")

    async def stop(self) -> None:
        """Stop supervising. Containers keep running: the next start re-attaches them."""
        tasks = [t for t in [self._dispatcher, *self._tasks.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    def request_cancel(self, run_id: str) -> None:
        self.cancel_event(run_id).set()

    def cancel_event(self, run_id: str) -> asyncio.Event:
        return self._cancel.setdefault(run_id, asyncio.Event())

    # Claiming queued runs ------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._claim()
            except Exception:
                log.exception("claiming queued runs failed")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=2.0)
            except TimeoutError:
                pass

    async def _claim(self) -> None:
        queued = await self.db.read(lambda db: q.runs_with_status(db, [RunStatus.QUEUED]))
        if not queued:
            return
        held = await self.db.read(node_store.allocations)
        targets = await self.db.read(node_store.list_targets)
        requests = [dispatch.request_for(run, targets) for run in queued]
        result = plan(
            requests,
            dispatch.capacities(self.pool, self.settings.max_concurrent_runs, held),
            now=time.time(),
            starve_after=self.settings.starvation_seconds,
        )
        for allocation in result.allocations:
            if await self._claim_one(allocation):
                self.spawn(allocation.run_id, None)
        changed = {
            run.id: result.waiting[run.id]
            for run in queued
            if run.id in result.waiting and run.wait_reason != result.waiting[run.id]
        }
        if changed:
            await self.db.write(lambda db: dispatch.set_wait_reasons(db, changed))

    async def _claim_one(self, allocation: Allocation) -> bool:
        return await self.db.write(lambda db: dispatch.claim_run(db, allocation))

    def spawn(self, run_id: str, container: RunContainer | None) -> None:
        self._track(
            run_id, asyncio.create_task(self._drive(run_id, container), name=f"run-{run_id}")
        )

    def _track(self, run_id: str, task: asyncio.Task[None]) -> None:
        self._tasks[run_id] = task

        def done(_: asyncio.Task[None]) -> None:
            if self._tasks.get(run_id) is task:  # not a later attempt of the same run (a retry)
                del self._tasks[run_id]
                self._cancel.pop(run_id, None)
            self._wake.set()

        task.add_done_callback(done)

    # Restart -------------------------------------------------------------------------------
    async def _recover(self) -> None:
        active = await self.db.read(lambda db: q.runs_with_status(db, ACTIVE))
        containers = await asyncio.to_thread(self.engine.find_run_containers, self.instance)
        for run in active:
            if not run.spec.get("use_docker", True):
                await self.processes.recover(self, run)
                continue
            if run.node not in (None, LOCAL):
                await self._recover_remote(run)
                continue
            container = containers.get(run.id)
            canceling = run.status is RunStatus.CANCEL_REQUESTED
            if container is not None and container.status != "created":
                log.info("re-attaching run %s (container %s)", run.id, container.id[:12])
                if run.status in (RunStatus.PREPARING, RunStatus.STARTING):
                    await self.apply(run.id, RunStatus.RUNNING, container_id=container.id)
                if canceling:
                    self.request_cancel(run.id)
                self.spawn(run.id, container)
                continue
            if container is not None:
                await asyncio.to_thread(self.engine.remove, container.id)
            if canceling:
                await self.apply(run.id, RunStatus.CANCELED, reason=EndReason.CANCELED.value)
            elif run.status in (RunStatus.PREPARING, RunStatus.STARTING):
                # The script never started: start over from the queue.
                await self.apply(
                    run.id, RunStatus.QUEUED, detail="queued again after a server restart"
                )
            else:
                await self.end_failed(
                    run.id,
                    EndReason.CONTAINER_GONE,
                    "The run's container is gone (it was removed while the server was down); "
                    "its outputs could not be collected",
                )
        known = {run.id for run in active}
        for run_id, container in containers.items():
            if run_id not in known:
                await asyncio.to_thread(self.engine.remove, container.id)

    async def _recover_remote(self, run: q.RunRow) -> None:
        """A run on a remote node: re-attach once its node is back (within the grace period)."""
        assert run.node is not None
        if run.status in (RunStatus.PREPARING, RunStatus.STARTING):
            await self.apply(run.id, RunStatus.QUEUED, detail="queued again after a server restart")
            return
        if run.status is RunStatus.CANCEL_REQUESTED:
            self.request_cancel(run.id)
        self._track(run.id, asyncio.create_task(self._node_trouble(run.id, run.node)))

    # One run -------------------------------------------------------------------------------
    async def _drive(self, run_id: str, container: RunContainer | None) -> None:
        container_id = container.id if container else None
        try:
            run, held = await self.db.read(
                lambda db: (q.get_run(db, run_id), node_store.allocation_of(db, run_id))
            )
            assert run is not None
            spec = msgspec.convert(run.spec, EstimatorSpec)
            if not spec.use_docker:
                await self.processes.drive(self, run, spec)
                return
            # What the run holds, node by node (the head first): GPU indices.
            gpus = {row["node"]: list(row["gpus"]) for row in held}
            workers = [n for n in gpus if n != (run.node or LOCAL)]
            if container_id is None:
                container_id = await self._prepare_and_start(run, spec, gpus, workers)
                if container_id is None:
                    return
            await self._supervise(run, spec, container_id, workers)
        except asyncio.CancelledError:
            raise  # server shutdown: the container runs on and is re-attached at the next start
        except Exception as exc:
            node = await self._node_of(run_id)
            if (
                node != LOCAL
                and not self.pool.schedulable(node)
                and self.pool.state(node) != "Draining"
            ):
                await self._node_trouble(run_id, node)
                return
            workers = await self._worker_nodes(run_id, node)
            gone = [w for w in workers if self.pool.state(w) not in ("Ready", "Draining")]
            try:
                if container_id:
                    with contextlib.suppress(NodeUnavailable):
                        await asyncio.to_thread(self.pool.engine(node).remove, container_id)
            finally:
                await self._remove_containers(run_id, [w for w in workers if w not in gone])
            if gone:  # another node of a multi-node run went away while it started or ran
                await self._lost(
                    run_id,
                    f"node {gone[0]} was lost while the run used it",
                    f"Node {gone[0]}, one of this run's nodes, was lost while the run used it",
                )
                return
            log.exception("run %s failed inside trainhub", run_id)
            await self.end_failed(
                run_id, EndReason.LAUNCH_ERROR, f"trainhub could not run this: {exc}"
            )

    async def _node_ready(self, node: str) -> None:
        """A node is (back) up: remove containers of ours whose run no longer belongs there (it failed
        with node_lost or was queued again while the node was away), and look for queued work."""
        engine = self.pool.engine(node)
        found = await asyncio.to_thread(engine.find_run_containers, self.instance)
        active = await self.db.read(lambda db: q.runs_with_status(db, ACTIVE))
        held = await self.db.read(node_store.allocations)
        here = {run.id for run in active if run.node == node}
        here |= {row["run_id"] for row in held if row["node"] == node}  # multi-node runs
        for run_id, container in found.items():
            if run_id not in here:
                log.info("node %s: removing the leftover container of run %s", node, run_id)
                await asyncio.to_thread(engine.remove, container.id)
        self._wake.set()

    async def _node_of(self, run_id: str) -> str:
        run = await self.db.read(lambda db: q.get_run(db, run_id))
        return (run.node if run else None) or LOCAL

    async def _node_trouble(self, run_id: str, node: str) -> None:
        """The node of a run went away: wait for it within the grace period, then re-attach the run;
        otherwise the run fails with node_lost (its allocation is freed with that)."""
        grace = self.settings.node_lost_grace_seconds - self.pool.unreachable_for(node)
        log.warning(
            "run %s: node %s is %s; waiting up to %.0f s",
            run_id,
            node,
            self.pool.state(node),
            grace,
        )
        if await self.pool.wait_ready(node, max(grace, 0.0)):
            engine = self.pool.engine(node)
            found = await asyncio.to_thread(engine.find_run_containers, self.instance)
            container = found.get(run_id)
            if container is not None:
                log.info("run %s: node %s is back; re-attaching", run_id, node)
                run = await self.db.read(lambda db: q.get_run(db, run_id))
                assert run is not None
                spec = msgspec.convert(run.spec, EstimatorSpec)
                await self._supervise(
                    run, spec, container.id, await self._worker_nodes(run_id, node)
                )
                return
            await self.end_failed(
                run_id,
                EndReason.CONTAINER_GONE,
                f"Node {node} came back, but the run's container is gone",
            )
            return
        grace_s = f"{self.settings.node_lost_grace_seconds:.0f} s"
        # A multi-node run's containers on its other nodes go with it (retried or failed).
        await self._remove_containers(run_id, await self._worker_nodes(run_id, node))
        await self._lost(
            run_id,
            f"node {node} unreachable for more than {grace_s}",
            f"Node {node} has been unreachable for more than {grace_s}",
        )

    async def _lost(self, run_id: str, why: str, message: str) -> bool:
        """A node of the run is gone: queued again when the run allows retries (True), otherwise
        Failed with node_lost (its allocation is freed with either)."""
        run = await self.db.read(lambda db: q.get_run(db, run_id))
        if (
            run is not None
            and run.retries < run.max_retries
            and run.status is not RunStatus.CANCEL_REQUESTED
        ):
            retried = await self.apply(
                run_id,
                RunStatus.QUEUED,
                detail=f"queued again: {why} (node_lost)",
                retries=run.retries + 1,
                node=None,
                container_id=None,
                started_at=None,
            )
            if retried:
                log.warning("run %s: %s; queued again (retry %d)", run_id, why, run.retries + 1)
                self._wake.set()
                return True
        await self.end_failed(run_id, EndReason.NODE_LOST, message)
        return False

    def _gpu_uuids(self, node: str, indices: list[int]) -> list[str]:
        by_index = {g["index"]: g["uuid"] for g in self.pool.inventory(node).get("gpus", [])}
        return [by_index[i] for i in indices if i in by_index]

    async def conda_available(self, image: str) -> bool | None:
        return await self.preparer.conda_available(image)

    async def _prepare_and_start(
        self, run: q.RunRow, spec: EstimatorSpec, gpus: dict[str, list[int]], workers: list[str]
    ) -> str | None:
        node = run.node or LOCAL
        run_dir = self.settings.run_dir(run.id)
        await asyncio.to_thread(prepare_run_dir, run_dir)
        try:  # the image on every node of the run, side by side
            images = await asyncio.gather(
                *(self.preparer_for(n).image_for(run, spec) for n in [node, *workers])
            )
        except PrepareFailed as exc:
            await self.end_failed(run.id, exc.reason, exc.message)
            return None
        image = images[0]
        await self.db.write(lambda db: q.update_run(db, run.id, image=image))
        if self.cancel_event(run.id).is_set():
            await self.end_canceled(run.id)
            return None
        if not await self.apply(run.id, RunStatus.STARTING, expect=[RunStatus.PREPARING]):
            await self.end_canceled(run.id)
            return None
        layout = None
        if is_mpi(spec):
            per_node = processes_per_node(spec)
            # The head is "localhost" to its own mpirun (its registered address may be a NAT or DNS
            # name no interface of it has); the others are reached at their registered addresses.
            hosts = [("localhost", per_node)] + [(self.pool.address(w), per_node) for w in workers]
            layout = MpiLayout(
                tuple(hosts), port_for(run.id, run.retries), self.settings.mpi_network
            )
        material = await asyncio.to_thread(ssh_material, layout) if workers and layout else None
        if workers or run.retries:  # an earlier attempt may have left containers on these nodes
            await self._remove_containers(run.id, [node, *workers])
        try:
            for worker in workers:
                assert material is not None and layout is not None
                await self._start_container(
                    run,
                    spec,
                    worker,
                    gpus.get(worker, []),
                    image,
                    worker_command(layout.port),
                    material.worker,
                    {},
                )
            command = command_for(spec.entry_script, spec.arguments(), mpi=layout is not None)
            extra = mpi_env(layout) if layout else {}
            container_id = await self._start_container(
                run,
                spec,
                node,
                gpus.get(node, []),
                image,
                command,
                material.head if material else None,
                extra,
            )
        except _Canceled:
            await self._remove_containers(run.id, [node, *workers])
            await self.end_canceled(run.id)
            return None
        except Exception:
            await self._remove_containers(run.id, [node, *workers])
            raise
        await self.apply(run.id, RunStatus.RUNNING, expect=[RunStatus.STARTING])
        return container_id

    async def _start_container(
        self,
        run: q.RunRow,
        spec: EstimatorSpec,
        node: str,
        gpu_indices: list[int],
        image: str,
        command: list[str],
        ssh: bytes | None,
        extra_env: dict[str, str],
    ) -> str:
        """One container of the run on ``node``: created with the node's GPUs, the runtime and the
        snapshot copied in (and the run's SSH keys for multi-node MPI), then started."""
        engine = self.pool.engine(node)
        assert run.snapshot is not None
        snapshot = self.settings.snapshot_path(run.snapshot)
        image_env = await asyncio.to_thread(engine.image_env, image)
        gpu_uuids = self._gpu_uuids(node, gpu_indices)
        environment = containers.run_environment(spec, run, node, image_env, gpu_uuids, extra_env)
        nvidia = bool(self.pool.inventory(node).get("nvidia_runtime"))
        container_id = await asyncio.to_thread(
            lambda: engine.create_run_container(
                run_id=run.id,
                instance=self.instance,
                image=image,
                command=command,
                environment=environment,
                shm_size=spec.shm_size,
                gpu_uuids=gpu_uuids if nvidia else [],
                host_network=ssh is not None,
            )
        )
        if node == (run.node or LOCAL):
            await self.db.write(lambda db: q.update_run(db, run.id, container_id=container_id))
        await asyncio.to_thread(
            containers.copy_in, engine, container_id, snapshot, self.settings.azureml_compat
        )
        if ssh is not None:
            await asyncio.to_thread(engine.put_archive, container_id, "/", ssh)
        if self.cancel_event(run.id).is_set():
            await asyncio.to_thread(engine.remove, container_id)
            raise _Canceled
        await asyncio.to_thread(engine.start, container_id)
        return container_id

    async def _worker_nodes(self, run_id: str, head: str) -> list[str]:
        """The other nodes of a multi-node run, in the order they were allocated."""
        held = await self.db.read(lambda db: node_store.allocation_of(db, run_id))
        return [row["node"] for row in held if row["node"] != head]

    async def _remove_containers(self, run_id: str, nodes: list[str]) -> None:
        await containers.remove_run_containers(self.pool, self.instance, run_id, nodes)

    async def _supervise(
        self, run: q.RunRow, spec: EstimatorSpec, container_id: str, workers: list[str]
    ) -> None:
        """Follow the run's container (on the head node; ``workers``: a multi-node run's other
        nodes) to its end: logs, syncs, cancel and timeout, results, the end status."""
        engine = self.pool.engine(run.node or LOCAL)
        run_dir = self.settings.run_dir(run.id)
        await asyncio.to_thread(prepare_run_dir, run_dir)
        loop = asyncio.get_running_loop()
        script_done: asyncio.Future[int] = loop.create_future()
        found: list[str | None] = [None]  # what the wrapper saw: o(utputs), l(ogs), c(ontext)

        def on_exit(code: int, present: str | None) -> None:
            def settle() -> None:
                if not script_done.done():
                    found[0] = present
                    script_done.set_result(code)

            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:  # the loop closed: the server is shutting down
                pass

        log_done = containers.in_thread(
            containers.copy_log, engine, container_id, run_dir / DRIVER_LOG, on_exit
        )
        syncer = asyncio.create_task(self._sync_loop(engine, run.id, container_id, run_dir))
        exited = containers.in_thread(engine.wait, container_id)
        cancel = self.cancel_event(run.id)
        started = run.started_at or time.time()
        if run.started_at is None:
            fresh = await self.db.read(lambda db: q.get_run(db, run.id))
            started = (fresh.started_at if fresh else None) or started
        limit = spec.max_run_duration_seconds
        deadline = started + limit if limit else None
        stopped_for: EndReason | None = None
        canceled: asyncio.Future[Any] = asyncio.ensure_future(cancel.wait())
        try:
            timeout = None if deadline is None else max(0.0, deadline - time.time())
            waiters: set[asyncio.Future[Any]] = {exited, canceled, script_done}
            done, _ = await asyncio.wait(
                waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if exited not in done and script_done not in done:
                stopped_for = EndReason.CANCELED if cancel.is_set() else EndReason.TIMEOUT
                await self._stop(engine, container_id, exited, script_done)
        finally:
            canceled.cancel()
        if script_done.done():
            exit_code: int | None = script_done.result()
        else:
            exit_code = await exited
            try:  # the container has stopped: its log stream ends by itself
                await asyncio.wait_for(asyncio.shield(log_done), timeout=15)
            except (TimeoutError, Exception):
                log.warning("log stream of run %s did not end cleanly", run.id)
        syncer.cancel()
        await asyncio.gather(syncer, return_exceptions=True)
        if stopped_for is None and not await self.apply(
            run.id, RunStatus.FINALIZING, expect=[RunStatus.RUNNING, RunStatus.FINALIZING]
        ):
            stopped_for = EndReason.CANCELED
        lost = None
        if workers and stopped_for is None and exit_code != 0:
            # Its MPI daemons on a node that went down: the run is lost with that node.
            lost = await containers.first_unreachable(self.pool, self.instance, workers)
        # Copy out what exists (all three when the wrapper could not say), side by side.
        present = found[0] if found[0] is not None else "olc"
        copies: list[Any] = []
        bulk = self.pool.bulk_engine(run.node or LOCAL)
        for flag, top in (("o", "outputs"), ("l", "logs")):
            if flag in present:
                copies.append(
                    asyncio.to_thread(containers.collect, bulk, container_id, run_dir, (top,))
                )
        if "c" in present:
            copies.append(self._sync_context(engine, run.id, container_id, run_dir))
        reachable = [w for w in workers if w != lost]  # a lost node's leftovers go when it is back
        if reachable:  # the other nodes' ranks wrote their logs there
            copies.append(
                containers.collect_from(
                    self.pool, self.instance, run.id, reachable, run_dir, ("logs",)
                )
            )
        await asyncio.gather(*copies)
        if lost is None:
            await self.finish(run, spec, exit_code, stopped_for)
        await asyncio.to_thread(engine.remove, container_id)
        await self._remove_containers(run.id, reachable)
        if lost is not None:  # only now: a retry may be placed on the same nodes at once
            retried = await self._lost(
                run.id,
                f"node {lost} was lost while the run used it",
                f"Node {lost}, one of this run's nodes, was lost while the run used it "
                f"(mpirun exited with code {exit_code})",
            )
            if not retried:
                await self.db.write(lambda db: q.update_run(db, run.id, exit_code=exit_code))

    async def _stop(
        self,
        engine: DockerEngine,
        container_id: str,
        exited: asyncio.Future[int],
        script_done: asyncio.Future[int],
    ) -> None:
        """SIGTERM to the script; SIGKILL to the container if it has not ended after the grace."""
        await asyncio.to_thread(engine.signal, container_id, "SIGTERM")
        ended: set[asyncio.Future[Any]] = {exited, script_done}
        done, _ = await asyncio.wait(
            ended, timeout=self.settings.cancel_grace_seconds, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            await asyncio.to_thread(engine.signal, container_id, "SIGKILL")
            await asyncio.wait(ended, timeout=30, return_when=asyncio.FIRST_COMPLETED)

    async def finish(
        self,
        run: q.RunRow,
        spec: EstimatorSpec,
        exit_code: int | None,
        stopped_for: EndReason | None,
    ) -> None:
        """The end status: Canceled, Failed (timeout, exit code) or Completed."""
        await self.db.write(lambda db: q.update_run(db, run.id, exit_code=exit_code))
        if stopped_for is EndReason.CANCELED or self.cancel_event(run.id).is_set():
            await self.end_canceled(run.id)
        elif stopped_for is EndReason.TIMEOUT:
            await self.end_failed(
                run.id,
                EndReason.TIMEOUT,
                f"The run exceeded max_run_duration_seconds ({spec.max_run_duration_seconds} s) "
                "and was stopped",
            )
        elif exit_code == 0:
            await self.apply(run.id, RunStatus.COMPLETED)
        elif exit_code is None:
            await self.end_failed(
                run.id,
                EndReason.PROCESS_GONE,
                "The run's process ended without an exit code (killed from outside?)",
            )
        else:
            tail = containers.log_tail(self.settings.run_dir(run.id) / DRIVER_LOG)
            await self.end_failed(
                run.id,
                EndReason.EXIT_CODE,
                f"The script exited with code {exit_code}.\n{tail}".rstrip(),
            )

    async def ingest(self, run_id: str, lines: list[str]) -> None:
        if lines:
            await self.db.write(lambda db: metrics.ingest(db, run_id, lines, len(lines)))

    async def _sync_loop(
        self, engine: DockerEngine, run_id: str, container_id: str, run_dir: Path
    ) -> None:
        while True:
            await asyncio.sleep(self.settings.sync_interval_seconds)
            try:
                await asyncio.to_thread(
                    containers.collect, engine, container_id, run_dir, ("logs",)
                )
                await self._sync_context(engine, run_id, container_id, run_dir)
            except Exception as exc:  # noqa: BLE001 - a failed sync is retried next time
                log.warning("syncing %s failed: %s", run_id, exc)

    async def _sync_context(
        self, engine: DockerEngine, run_id: str, container_id: str, run_dir: Path
    ) -> None:
        """Metrics, tags and uploaded files from ``Run.get_context()`` in the container (one copy
        of its context folder)."""
        lines = await asyncio.to_thread(containers.copy_context, engine, container_id, run_dir)
        await self.ingest(run_id, lines)

    # Status changes ------------------------------------------------------------------------
    async def apply(
        self,
        run_id: str,
        to: RunStatus,
        *,
        expect: list[RunStatus] | None = None,
        detail: str | None = None,
        **fields: Any,
    ) -> bool:
        return await self.db.write(
            lambda db: q.transition(db, run_id, to, expect=expect, detail=detail, **fields)
        )

    async def end_failed(self, run_id: str, reason: EndReason, message: str) -> None:
        error = msgspec.json.encode(
            {
                "code": "UserError" if reason in _USER_REASONS else "SystemError",
                "reason": reason.value,
                "message": message,
            }
        ).decode()
        await self.apply(
            run_id, RunStatus.FAILED, detail=reason.value, reason=reason.value, error=error
        )

    async def end_canceled(self, run_id: str) -> None:
        await self.apply(
            run_id, RunStatus.CANCELED, detail="canceled", reason=EndReason.CANCELED.value
        )


_USER_REASONS = {
    EndReason.EXIT_CODE,
    EndReason.TIMEOUT,
    EndReason.IMAGE_MISSING,
    EndReason.BUILD_FAILED,
}
