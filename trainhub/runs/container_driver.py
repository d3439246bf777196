"""The container driver: a run's script in a container on each of its nodes' Docker engines.

One container per node (a multi-node MPI run: the head runs ``mpirun`` over SSH into the others; a
PyTorch distributed run: ``torchrun`` in each; a TensorFlow parameter-server run: the node's tasks in
each; those two watched as one by ``runs/gang.py``), labelled with the run id and this server's
instance id, so a restarted server finds them. Local and remote nodes are the same code: a remote
engine is its Docker socket forwarded over SSH.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from trainhub.nodes.pool import LOCAL, NodePool, NodeUnavailable, engine_answers
from trainhub.runs import containers, datarefs, gang
from trainhub.runs.artifacts import DRIVER_LOG, prepare_run_dir
from trainhub.runs.driving import Attempt, Canceled, Interruption
from trainhub.runs.preparing import ImagePreparer
from trainhub.runtime.docker import DockerEngine
from trainhub.runtime.incontainer import EXIT_FILE, command_for
from trainhub.runtime.mpi import MpiLayout, port_for, ssh_material, worker_command
from trainhub.runtime.mpi import head_environment as mpi_env
from trainhub.runtime.tf_config import LOCALHOST, layout_for
from trainhub.runtime.tf_config import node_environment as tf_env
from trainhub.runtime.torchrun import LOOPBACK, TorchLayout, node_environment
from trainhub.settings import Settings
from trainhub.spec import (
    EstimatorSpec,
    is_mpi,
    parameter_servers,
    processes_per_node,
    torch_backend,
)
from trainhub.store import Database
from trainhub.store import runs as q

log = logging.getLogger("trainhub.containers")
ENGINE_CHECK_SECONDS = 2.0
EXIT_CHECK_SECONDS = 10.0  # how often a running script's exit file is read (a lost exit line)
COLLISIONS_SHOWN = 20  # files named in the driver log when nodes wrote the same paths


def _is_gang(spec: EstimatorSpec) -> bool:
    """A container per node, each with its own launcher, watched as one (``runs/gang.py``)."""
    return torch_backend(spec) is not None or parameter_servers(spec) is not None


async def _answers(pool: NodePool, node: str) -> bool:
    try:
        engine = pool.engine(node)
    except NodeUnavailable:
        return False
    return await engine_answers(engine)


@dataclass
class Started:
    """A started (or re-attached) attempt: the head container and the futures that watch it."""

    attempt: Attempt
    engine: DockerEngine
    container_id: str
    ended: asyncio.Future[int | None] | None = None
    present: list[str | None] = field(default_factory=lambda: [None])  # o(utputs), l(ogs), c(tx)
    script_done: asyncio.Future[int] | None = None
    exited: asyncio.Future[int] | None = None
    # A PyTorch or parameter-server run's other containers (node -> container id; None: to be
    # found again)
    workers: dict[str, str] | None = None
    stopping: bool = False  # canceled or past its time limit: the stop is trainhub's doing
    exit_check: float = field(default_factory=lambda: time.monotonic() + EXIT_CHECK_SECONDS)


class ContainerDriver:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        pool: NodePool,
        instance: str,
        ingest: Any,
    ) -> None:
        self.settings = settings
        self.db = db
        self.pool = pool
        self.instance = instance
        self.ingest = ingest  # RunControl.ingest: metrics lines into the store
        self._preparers: dict[str, ImagePreparer] = {}
        self.data = datarefs.DataStager(settings, db, pool, instance)

    def preparer_for(self, node: str) -> ImagePreparer:
        """One preparer per node (its build locks live there); its engine follows reconnections."""
        engine = self.pool.engine(node)
        preparer = self._preparers.get(node)
        if preparer is None:
            preparer = self._preparers[node] = ImagePreparer(self.settings, self.db, engine, node)
        preparer.engine = engine
        return preparer

    # Preparing and starting -------------------------------------------------------------------
    async def prepare(self, attempt: Attempt) -> None:
        """The image on every node of the run, then its data (datastore references) there: the
        data's helper containers use the run's image."""
        await asyncio.to_thread(prepare_run_dir, self.settings.run_dir(attempt.run_id))
        run, spec = attempt.run, attempt.spec
        nodes = [attempt.node, *attempt.workers]
        images = await asyncio.gather(  # the image on every node of the run, side by side
            *(self.preparer_for(n).image_for(run, spec) for n in nodes)
        )
        attempt.image = images[0]
        attempt.node_images = dict(zip(nodes, images, strict=True))
        await self.db.write(lambda db: q.update_run(db, run.id, image=attempt.image))
        if spec.references():
            if run.retries:  # an earlier attempt's containers may still hold its volumes
                await self._remove(run.id, nodes)
            await self.data.prepare(attempt, dict(zip(nodes, images, strict=True)))

    async def start(self, attempt: Attempt) -> Started:
        run, spec, node, workers = attempt.run, attempt.spec, attempt.node, attempt.workers
        assert attempt.image is not None
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
            await self._remove(run.id, [node, *workers])
        arguments = spec.command_arguments(datarefs.paths(spec))
        try:
            if torch_backend(spec) is not None:
                return await self._start_torch(attempt, arguments)
            if parameter_servers(spec) is not None:
                return await self._start_tf(attempt, arguments)
            for worker in workers:
                assert material is not None and layout is not None
                await self._start_container(
                    attempt, worker, worker_command(layout.port), material.worker, {}
                )
            launcher = "mpi" if layout is not None else None
            container_id = await self._start_container(
                attempt,
                node,
                command_for(spec.entry_script, arguments, launcher=launcher),
                material.head if material else None,
                mpi_env(layout) if layout else {},
            )
        except BaseException:
            await self._remove(run.id, [node, *workers])
            raise
        finally:
            self.data.forget(run.id)
        return Started(attempt, self.pool.engine(node), container_id)

    async def _start_torch(self, attempt: Attempt, arguments: list[str]) -> Started:
        """``torchrun`` in a container on every node of the run, the first node's first; over
        several nodes on the nodes' network, meeting at the first node's registered address."""
        run, spec, nodes = attempt.run, attempt.spec, [attempt.node, *attempt.workers]
        backend = torch_backend(spec)
        assert backend is not None
        per_node = len(attempt.gpus.get(attempt.node, [])) if spec.use_gpu else 0
        layout = TorchLayout(
            nodes=len(nodes),
            per_node=per_node or processes_per_node(spec),
            master_addr=self.pool.address(attempt.node) if attempt.workers else LOOPBACK,
            port=port_for(run.id, run.retries),
            backend=backend,
        )
        command = command_for(spec.entry_script, arguments, launcher="torch")
        envs = [node_environment(layout, rank) for rank in range(len(nodes))]
        return await self._start_gang(attempt, command, envs)

    async def _start_tf(self, attempt: Attempt, arguments: list[str]) -> Started:
        """A TensorFlow parameter-server run: in a container on every node, the first node's first,
        that node's workers and parameter servers (``runtime/tf_config.py`` places them), each with
        its ``TF_CONFIG``; over several nodes on the nodes' network, at their registered addresses."""
        run, spec, nodes = attempt.run, attempt.spec, [attempt.node, *attempt.workers]
        counts = parameter_servers(spec)
        assert counts is not None
        hosts = [self.pool.address(n) for n in nodes] if attempt.workers else [LOCALHOST]
        layout = layout_for(run.id, run.retries, *counts, hosts)
        command = command_for(spec.entry_script, arguments, launcher="tf")
        envs = [tf_env(layout, rank) for rank in range(len(nodes))]
        return await self._start_gang(attempt, command, envs)

    async def _start_gang(
        self, attempt: Attempt, command: list[str], envs: list[dict[str, str]]
    ) -> Started:
        """``command`` in a container on every node of the run, node rank order, each with its
        node's variables; over several nodes on the nodes' network."""
        ids = []
        for node, env in zip([attempt.node, *attempt.workers], envs, strict=True):
            ids.append(
                await self._start_container(
                    attempt, node, command, None, env, host_network=bool(attempt.workers)
                )
            )
        workers = dict(zip(attempt.workers, ids[1:], strict=True))
        return Started(attempt, self.pool.engine(attempt.node), ids[0], workers=workers)

    async def _start_container(
        self,
        attempt: Attempt,
        node: str,
        command: list[str],
        ssh: bytes | None,
        extra_env: dict[str, str],
        *,
        host_network: bool = False,
    ) -> str:
        """One container of the run on ``node``: created with the node's GPUs and the run's data
        mounted, the runtime and the snapshot copied in (and the run's SSH keys for multi-node
        MPI), then started. Multi-node MPI and torchrun containers use the node's network."""
        run, spec = attempt.run, attempt.spec
        image = attempt.node_images.get(node, attempt.image)
        assert run.snapshot is not None and image is not None
        engine = self.pool.engine(node)
        snapshot = self.settings.snapshot_path(run.snapshot)
        image_env = await asyncio.to_thread(engine.image_env, image)
        gpu_uuids = self._gpu_uuids(node, attempt.gpus.get(node, []))
        extra = {**datarefs.environment(spec), **extra_env}
        environment = containers.run_environment(spec, run, node, image_env, gpu_uuids, extra)
        mounts = self.data.mounts(run.id, node)
        gpu_support = bool(self.pool.inventory(node).get("gpu_support"))
        container_id = await asyncio.to_thread(
            lambda: engine.create_run_container(
                run_id=run.id,
                instance=self.instance,
                image=image,
                command=command,
                environment=environment,
                shm_size=spec.shm_size,
                gpu_uuids=gpu_uuids if gpu_support else [],
                host_network=host_network or ssh is not None,
                mounts=mounts,
            )
        )
        if node == attempt.node:
            await self.db.write(lambda db: q.update_run(db, run.id, container_id=container_id))
        await asyncio.to_thread(
            containers.copy_in, engine, container_id, snapshot, self.settings.azureml_compat
        )
        if ssh is not None:
            await asyncio.to_thread(engine.put_archive, container_id, "/", ssh)
        if attempt.cancel.is_set():
            raise Canceled
        await asyncio.to_thread(engine.start, container_id)
        return container_id

    def _gpu_uuids(self, node: str, indices: list[int]) -> list[str]:
        by_index = {g["index"]: g["uuid"] for g in self.pool.inventory(node).get("gpus", [])}
        return [by_index[i] for i in indices if i in by_index]

    # Re-attaching ---------------------------------------------------------------------------
    async def attach(self, attempt: Attempt, ref: str) -> Started:
        return Started(attempt, self.pool.engine(attempt.node), ref)

    def reference(self, handle: Started) -> str:
        return handle.container_id

    # Running ----------------------------------------------------------------------------------
    def watch(self, handle: Started) -> asyncio.Future[int | None]:
        """The exit code as the in-container wrapper reports it (the script is done, the container
        stays up until its results are copied), or the container's own once it has stopped; for a
        PyTorch or parameter-server run, every node's (``gang.watch``)."""
        if handle.ended is None:
            head = self._watch_head(handle)
            together = _is_gang(handle.attempt.spec)
            handle.ended = (
                asyncio.ensure_future(self._watch_gang(handle, head)) if together else head
            )
        return handle.ended

    async def _members(self, handle: Started) -> list[gang.Member]:
        attempt = handle.attempt
        if handle.workers is None:  # re-attached: find the other nodes' containers again
            handle.workers = await gang.find(
                self.pool, self.instance, attempt.run_id, attempt.workers
            )
        members = [gang.Member(attempt.node, 0, handle.engine, handle.container_id)]
        for rank, node in enumerate(attempt.workers, start=1):
            if node in handle.workers:
                engine = self.pool.engine(node)
                members.append(gang.Member(node, rank, engine, handle.workers[node]))
        return members

    async def _watch_gang(self, handle: Started, head: asyncio.Future[int | None]) -> int | None:
        members = await self._members(handle)
        grace = (self.settings.cancel_grace_seconds, self.settings.node_lost_grace_seconds)
        run_dir = self.settings.run_dir(handle.attempt.run_id)
        return await gang.watch(members, head, self.pool, grace, run_dir, lambda: handle.stopping)

    def _watch_head(self, handle: Started) -> asyncio.Future[int | None]:
        run_dir = self.settings.run_dir(handle.attempt.run_id)
        prepare_run_dir(run_dir)
        loop = asyncio.get_running_loop()
        script_done: asyncio.Future[int] = loop.create_future()

        def on_exit(code: int, present: str | None) -> None:
            def settle() -> None:
                if not script_done.done():
                    handle.present[0] = present
                    script_done.set_result(code)

            with contextlib.suppress(RuntimeError):  # the loop closed: the server is stopping
                loop.call_soon_threadsafe(settle)

        log_done = containers.in_thread(
            containers.copy_log, handle.engine, handle.container_id, run_dir / DRIVER_LOG, on_exit
        )
        exited = containers.in_thread(handle.engine.wait, handle.container_id)
        handle.script_done, handle.exited = script_done, exited

        async def ended() -> int | None:
            await asyncio.wait({script_done, exited}, return_when=asyncio.FIRST_COMPLETED)
            if script_done.done():
                return script_done.result()
            try:  # the container has stopped: its log stream ends by itself
                await asyncio.wait_for(asyncio.shield(log_done), timeout=15)
            except (TimeoutError, Exception):
                log.warning("log stream of run %s did not end cleanly", handle.attempt.run_id)
            return exited.result()

        return asyncio.ensure_future(ended())

    async def sync(self, handle: Started) -> None:
        done = handle.script_done
        # Its exit line may be lost (a full disk): the file says it too. Read now and then only:
        # each read is a process started in the container, which a busy script feels.
        if done is not None and not done.done() and time.monotonic() >= handle.exit_check:
            handle.exit_check = time.monotonic() + EXIT_CHECK_SECONDS
            text = await asyncio.to_thread(
                handle.engine.read_small_file, handle.container_id, EXIT_FILE
            )
            if text and ":" in text and not done.done():
                code, present = text.strip().split(":", 1)
                handle.present[0] = present
                done.set_result(int(code))
                return
        run_dir = self.settings.run_dir(handle.attempt.run_id)
        await asyncio.to_thread(
            containers.collect, handle.engine, handle.container_id, run_dir, ("logs",)
        )
        await self._sync_context(handle)

    async def _sync_context(self, handle: Started) -> None:
        """Metrics, tags and uploaded files from ``Run.get_context()`` in the container (one copy
        of its context folder)."""
        run_dir = self.settings.run_dir(handle.attempt.run_id)
        lines = await asyncio.to_thread(
            containers.copy_context, handle.engine, handle.container_id, run_dir
        )
        await self.ingest(handle.attempt.run_id, lines)

    async def stop(self, handle: Started, ended: asyncio.Future[int | None]) -> None:
        """SIGTERM to the script (on every node for a PyTorch or parameter-server run); SIGKILL to
        the containers if it has not ended after the grace."""
        handle.stopping = True
        members = [gang.Member(handle.attempt.node, 0, handle.engine, handle.container_id)]
        if _is_gang(handle.attempt.spec):
            members = await self._members(handle)
        await gang.stop(members, {ended}, self.settings.cancel_grace_seconds)

    async def interrupted(self, handle: Started) -> tuple[Interruption, str]:
        """A stopping engine closes its API before it stops its containers, a killed one drops the
        streams, and so does a dropped SSH connection: either way the node's engine does not
        answer for a moment. Once it answers again, a container still running was only cut off
        (re-attach); one that is not was stopped with its engine."""
        node, run_id = handle.attempt.node, handle.attempt.run_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ENGINE_CHECK_SECONDS
        while await _answers(self.pool, node):
            if loop.time() >= deadline:
                return Interruption.NONE, ""
            await asyncio.sleep(0.2)
        log.warning("run %s: the Docker engine of node %s does not answer", run_id, node)
        grace = loop.time() + self.settings.node_lost_grace_seconds
        while not await _answers(self.pool, node):
            if not self.pool.connected(node):  # the node is gone: recovery's node-loss path
                return Interruption.NONE, ""
            if loop.time() >= grace:  # reached, but its engine stays down: place nothing there
                await self.pool.engine_down(node)
                break
            await asyncio.sleep(0.5)
        else:
            try:
                engine = self.pool.engine(node)
                status = await asyncio.to_thread(engine.container_status, handle.container_id)
            except Exception:  # noqa: BLE001 - away again: recovery's node-loss path takes it
                return Interruption.NONE, ""
            if status == "running":
                return Interruption.CUT_OFF, ""
        return Interruption.ENGINE_STOPPED, (
            f"The Docker engine of node {node} stopped or restarted while the run was running, "
            "and its container was stopped with it"
        )

    async def disk_left(self, handle: Started) -> int | None:
        return await self.pool.disk_free(handle.attempt.node)

    async def lost_node(self, handle: Started) -> str | None:
        """Its MPI daemons or torchrun on a node that went down: the run is lost with that node."""
        workers = handle.attempt.workers
        if not workers:
            return None
        return await containers.first_unreachable(self.pool, self.instance, workers)

    async def collect(self, handle: Started, lost: str | None) -> None:
        """Copy out what exists (all three when the wrapper could not say), side by side."""
        attempt = handle.attempt
        run_dir = self.settings.run_dir(attempt.run_id)
        present = handle.present[0] if handle.present[0] is not None else "olc"
        copies: list[Any] = []
        bulk = self.pool.bulk_engine(attempt.node)
        seen: set[str] = set()  # the first node's files: they win over the other nodes'
        for flag, top in (("o", "outputs"), ("l", "logs")):
            if flag in present:
                copies.append(
                    asyncio.to_thread(
                        containers.collect, bulk, handle.container_id, run_dir, (top,), seen
                    )
                )
        if "c" in present:
            copies.append(self._sync_context(handle))
        copies.append(self.data.upload_back(attempt, handle.container_id))
        await asyncio.gather(*copies)
        reachable = [w for w in attempt.workers if w != lost]
        if reachable:  # the other nodes' processes wrote their outputs and logs there
            await self._collect_workers(handle, reachable, seen)

    async def _collect_workers(self, handle: Started, nodes: list[str], seen: set[str]) -> None:
        """The other nodes' ``./outputs`` and ``./logs``, in node rank order: where two nodes wrote
        the same file, the lowest node rank's copy is kept and the driver log says so."""
        attempt = handle.attempt
        run_dir = self.settings.run_dir(attempt.run_id)
        taken = dict.fromkeys(seen, attempt.node)
        collisions = await containers.collect_ranked(
            self.pool, self.instance, attempt.run_id, nodes, run_dir, taken
        )
        if not collisions:
            return
        ranks = {node: rank for rank, node in enumerate([attempt.node, *attempt.workers])}
        shown = [
            f"  {path}: kept from {kept} (node rank {ranks[kept]}), not from {other} "
            f"(node rank {ranks[other]})"
            for path, kept, other in collisions[:COLLISIONS_SHOWN]
        ]
        if len(collisions) > COLLISIONS_SHOWN:
            shown.append(f"  ... and {len(collisions) - COLLISIONS_SHOWN} more")
        header = (
            f"trainhub: {len(collisions)} file(s) were written on more than one node; "
            "the lowest node rank's copy is kept:"
        )
        await asyncio.to_thread(gang.note, run_dir / DRIVER_LOG, [header, *shown])

    async def remove(self, handle: Started, lost: str | None) -> None:
        """A lost node's leftovers go when it is back (recovery's ``node_ready``)."""
        attempt = handle.attempt
        await asyncio.to_thread(handle.engine.remove, handle.container_id)
        reachable = [w for w in attempt.workers if w != lost]
        await self._remove(attempt.run_id, reachable)
        if attempt.spec.references():
            await self.data.remove(attempt.run_id, [attempt.node, *reachable])

    async def abandon(self, attempt: Attempt) -> None:
        reachable = [
            n
            for n in [attempt.node, *attempt.workers]
            if n == LOCAL or self.pool.state(n) in ("Ready", "Draining")
        ]
        with contextlib.suppress(NodeUnavailable):
            await self._remove(attempt.run_id, reachable)
        if attempt.spec.references():
            await self.data.remove(attempt.run_id, reachable)

    async def _remove(self, run_id: str, nodes: list[str]) -> None:
        await containers.remove_run_containers(self.pool, self.instance, run_id, nodes)
