"""The node pool: one SSH connection per remote node, kept open (keepalive, reconnect with backoff),
its Docker socket forwarded over that connection and driven by the same code as ``local``.

Host keys are pinned when a node is added; a later mismatch marks the node ``Untrusted`` and nothing
runs there until an admin re-pins it. States: Ready, Unreachable, Draining, Disabled, Untrusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import asyncssh
from docker.errors import DockerException

from trainhub.nodes import inventory as inv
from trainhub.runtime.docker import DockerEngine
from trainhub.settings import Settings
from trainhub.store import Database
from trainhub.store import nodes as node_store

log = logging.getLogger("trainhub.nodes")
LOCAL = node_store.LOCAL
# Unanswered engine checks in a row before a node counts as Unreachable.
ENGINE_MISSES = 2
# How long one inventory command over SSH may take when a node connects.
PROBE_SECONDS = 30
# The runtimes a node offers (``NodePool.runtimes``).
DOCKER = "docker"
PROCESS = "process"
NO_ENGINE = (
    "the server's machine has no Docker engine: start one (`systemctl start docker`, or `dockerd`) "
    "and it is picked up within seconds, or run without containers (use_docker=False)"
)


class NodeState(StrEnum):
    READY = "Ready"
    UNREACHABLE = "Unreachable"
    DRAINING = "Draining"
    DISABLED = "Disabled"
    UNTRUSTED = "Untrusted"


class NodeError(Exception):
    """Adding or reaching a node failed; the message says why."""


class NodeUnavailable(NodeError):
    pass


class _Remote:
    def __init__(self, row: node_store.NodeRow) -> None:
        self.row = row
        self.conn: asyncssh.SSHClientConnection | None = None
        self.listener: Any = None
        self.engine: DockerEngine | None = None
        self.state = NodeState.UNREACHABLE
        self.task: asyncio.Task[None] | None = None
        self.unreachable_since: float | None = time.monotonic()
        self.ready = asyncio.Event()
        # Bulk transfers (results out of containers) go through the system's OpenSSH client when
        # there is one: asyncssh's pure-Python transport tops out near 150 MB/s.
        self.bulk_proc: subprocess.Popen[bytes] | None = None
        self.bulk_engine: DockerEngine | None = None


class NodePool:
    def __init__(self, settings: Settings, db: Database, local_engine: DockerEngine | None) -> None:
        self.settings = settings
        self.db = db
        # None: the server's machine has no Docker engine (yet): ``local`` takes only runs without
        # a container, and the engine checks look for one every few seconds.
        self.local_engine = local_engine
        self.local_inventory: dict[str, Any] = {}
        self.local_state = NodeState.READY
        self.local_unreachable_since: float | None = None
        self.local_ready = asyncio.Event()
        self.local_ready.set()
        self._local_task: asyncio.Task[None] | None = None
        self.remotes: dict[str, _Remote] = {}
        self._socket_dir = Path(tempfile.mkdtemp(prefix="trainhub-sock-"))
        # Called with a node's name each time it becomes Ready (the launcher tidies up there).
        self.on_ready: Callable[[str], Awaitable[None]] | None = None

    # Lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.local_inventory = await asyncio.to_thread(self._probe_local)
        self.local_inventory["disk_free_bytes"] = await self.disk_free(LOCAL)
        self._local_task = asyncio.create_task(self._watch_local(), name="node-local")
        for row in await self.db.read(node_store.list_nodes):
            self._watch(row)

    async def stop(self) -> None:
        tasks = [r.task for r in self.remotes.values() if r.task]
        tasks += [self._local_task] if self._local_task else []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for remote in self.remotes.values():
            self._close(remote)
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def _watch(self, row: node_store.NodeRow) -> None:
        remote = _Remote(row)
        self.remotes[row.name] = remote
        if not row.enabled:
            remote.state = NodeState.DISABLED
            return
        if row.state == NodeState.UNTRUSTED:
            remote.state = NodeState.UNTRUSTED
            return
        remote.task = asyncio.create_task(self._maintain(remote), name=f"node-{row.name}")

    # Queries --------------------------------------------------------------------------------
    def engine(self, name: str) -> DockerEngine:
        if name == LOCAL:
            if self.local_engine is None:
                raise NodeUnavailable(NO_ENGINE)
            return self.local_engine
        remote = self.remotes.get(name)
        if (
            remote is None
            or remote.engine is None
            or remote.state not in (NodeState.READY, NodeState.DRAINING)
        ):
            raise NodeUnavailable(f"node {name} is not reachable now")
        return remote.engine

    def state(self, name: str) -> str:
        if name == LOCAL:
            return self.local_state
        remote = self.remotes.get(name)
        if remote is None:
            return "Removed"
        if remote.state == NodeState.READY and remote.row.draining:
            return NodeState.DRAINING
        return remote.state

    def connected(self, name: str) -> bool:
        """Whether the server reaches the node itself (its SSH connection is up), whatever its
        engine does."""
        if name == LOCAL:
            return True
        remote = self.remotes.get(name)
        return remote is not None and remote.conn is not None and not remote.conn.is_closed()

    def runtimes(self, name: str) -> list[str]:
        """How a node runs scripts: ``docker`` (containers on its engine) and, on the server's
        own machine, ``process`` (``use_docker=False``)."""
        if name != LOCAL:
            return [DOCKER]
        return [DOCKER, PROCESS] if self.local_engine is not None else [PROCESS]

    def schedulable(self, name: str) -> bool:
        return self.state(name) == NodeState.READY

    def inventory(self, name: str) -> dict[str, Any]:
        if name == LOCAL:
            return self.local_inventory
        remote = self.remotes.get(name)
        return remote.row.inventory if remote else {}

    def address(self, name: str) -> str:
        """Where the node is reached (its SSH host): the containers of a multi-node run meet there."""
        remote = self.remotes.get(name)
        if remote is None:
            raise NodeUnavailable(f"node {name} has no SSH address")
        return remote.row.host

    def unreachable_for(self, name: str) -> float:
        if name == LOCAL:
            since = self.local_unreachable_since
            return 0.0 if since is None else time.monotonic() - since
        remote = self.remotes.get(name)
        if remote is None or remote.unreachable_since is None:
            return 0.0
        return time.monotonic() - remote.unreachable_since

    async def wait_ready(self, name: str, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        remote = self.remotes.get(name)
        while name != LOCAL and remote is None:  # being reconnected (enabled, trusted) or removed
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.2)
            remote = self.remotes.get(name)
        timeout = max(0.0, deadline - loop.time())
        ready = self.local_ready if remote is None else remote.ready
        try:
            await asyncio.wait_for(ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # Admin ----------------------------------------------------------------------------------
    async def add(
        self,
        name: str,
        host: str,
        port: int,
        user: str,
        key_path: str,
        docker_socket: str,
        *,
        key_shown: str | None = None,
    ) -> node_store.NodeRow:
        """Register a node; errors name its key as ``key_shown`` when given (a key sent with the
        request: its file on the server would mean nothing to the user)."""
        if name == LOCAL or not name.replace("-", "").replace("_", "").isalnum():
            raise NodeError(
                f"'{name}' cannot be a node name (letters, digits, '-', '_'; not 'local')"
            )
        if await self.db.read(lambda db: node_store.get_node(db, name)) is not None:
            raise NodeError(f"A node named '{name}' exists already")
        if not Path(key_path).is_file():
            raise NodeError(f"No private key at {key_path} (on the server)")
        host_key = await self.fetch_host_key(host, port)
        row = node_store.NodeRow(
            name,
            host,
            port,
            user,
            key_path,
            docker_socket,
            host_key,
            NodeState.UNREACHABLE,
            True,
            False,
            {},
            None,
            time.time(),
            None,
        )
        remote = _Remote(row)
        try:
            await self._connect(remote)
        except asyncssh.PermissionDenied:
            self._close(remote)
            raise NodeError(
                f"{user}@{host}:{port} refused the key {key_shown or key_path}"
            ) from None
        except (OSError, asyncssh.Error, DockerException) as exc:
            self._close(remote)
            raise NodeError(f"Cannot use {user}@{host}:{port}: {exc}") from None
        await self.db.write(
            lambda db: node_store.add_node(
                db,
                name=name,
                host=host,
                port=port,
                user=user,
                key_path=key_path,
                docker_socket=docker_socket,
                host_key=host_key,
                state=NodeState.READY,
                inventory=remote.row.inventory,
                error=None,
            )
        )
        self._close(remote)
        stored = await self.db.read(lambda db: node_store.get_node(db, name))
        assert stored is not None
        self._watch(stored)
        await self.wait_ready(name, 30)
        return stored

    async def fetch_host_key(self, host: str, port: int) -> str:
        try:
            key = await asyncio.wait_for(asyncssh.get_server_host_key(host, port), 15)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise NodeError(f"Cannot reach {host}:{port} over SSH: {exc}") from None
        if key is None:
            raise NodeError(f"{host}:{port} offered no host key")
        return key.export_public_key().decode().strip()

    async def trust(self, name: str) -> node_store.NodeRow:
        """Re-pin a node's current host key (after an admin checked it) and reconnect."""
        row = await self._row(name)
        host_key = await self.fetch_host_key(row.host, row.port)
        await self.db.write(
            lambda db: node_store.update_node(
                db, name, host_key=host_key, state=NodeState.UNREACHABLE, error=None
            )
        )
        await self._restart(name)
        return await self._row(name)

    async def set_flags(self, name: str, **flags: Any) -> node_store.NodeRow:
        before = await self._row(name)
        await self.db.write(lambda db: node_store.update_node(db, name, **flags))
        row = await self._row(name)
        remote = self.remotes.get(name)
        if remote is not None and row.enabled == before.enabled:
            # Draining or not: the connection, and the runs it carries, stay as they are.
            remote.row = dataclasses.replace(remote.row, draining=row.draining)
            return row
        await self._restart(name)
        return await self._row(name)

    async def remove(self, name: str) -> None:
        await self._row(name)
        await self._unwatch(name)
        await self.db.write(lambda db: node_store.remove_node(db, name))

    async def _row(self, name: str) -> node_store.NodeRow:
        row = await self.db.read(lambda db: node_store.get_node(db, name))
        if row is None:
            raise NodeError(f"No node named '{name}'")
        return row

    async def _unwatch(self, name: str) -> None:
        """Stop maintaining the node's connection and close it."""
        remote = self.remotes.pop(name, None)
        if remote is None:
            return
        if remote.task:
            remote.task.cancel()
            await asyncio.gather(remote.task, return_exceptions=True)
        self._close(remote)

    async def _restart(self, name: str) -> None:
        await self._unwatch(name)
        row = await self._row(name)
        self._watch(row)
        if row.enabled and row.state != NodeState.UNTRUSTED:
            await self.wait_ready(name, 15)

    # The connection -------------------------------------------------------------------------
    async def _maintain(self, remote: _Remote) -> None:
        backoff = 1.0
        name = remote.row.name
        while True:
            try:
                await self._connect(remote)
            except asyncssh.HostKeyNotVerifiable as exc:
                remote.state = NodeState.UNTRUSTED
                message = f"host key does not match the pinned one ({exc}); re-pin with `trainhub node trust {name}`"
                log.error("node %s: %s", name, message)
                await self._set_state(name, NodeState.UNTRUSTED, message)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - refused, timed out, the engine not up yet...
                # (docker's client raises DockerException, not OSError, when the forwarded engine
                # does not answer its first request: sshd back before dockerd after a reboot)
                self._close(remote)
                why = str(exc) or type(exc).__name__
                if isinstance(exc, DockerException):
                    why = f"SSH answers but the Docker engine does not (yet): {why}"
                await self._mark_unreachable(remote, why)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            why = "the SSH connection closed"
            try:
                await self._start_bulk(remote)
                await self._became_ready(remote)
                await self._check_engine(remote)
            except Exception as exc:  # noqa: BLE001 - whatever broke, the node reconnects
                why = f"{type(exc).__name__}: {exc}"
                log.warning("node %s: %s; reconnecting", name, why)
            self._close(remote)
            await self._mark_unreachable(remote, why)

    async def _became_ready(self, remote: _Remote) -> None:
        name = remote.row.name
        remote.row.inventory["disk_free_bytes"] = await self.disk_free(name)
        remote.state = NodeState.READY
        remote.unreachable_since = None
        remote.ready.set()
        await self.db.write(
            lambda db: node_store.update_node(
                db,
                name,
                state=NodeState.READY,
                error=None,
                inventory=remote.row.inventory,
                last_seen_at=time.time(),
            )
        )
        log.info("node %s is Ready", name)
        await self._tidy(name)

    async def _tidy(self, name: str) -> None:
        if self.on_ready is not None:
            try:
                await self.on_ready(name)
            except Exception:
                log.exception("tidying node %s after it came back failed", name)

    async def _check_engine(self, remote: _Remote) -> None:
        """Until the SSH connection closes: ask the node's Docker engine whether it answers every
        few seconds (Unreachable while it does not, Ready again when it does) and how much disk
        it has left."""
        assert remote.conn is not None and remote.engine is not None
        conn, engine = remote.conn, remote.engine
        closed = asyncio.ensure_future(conn.wait_closed())
        misses = 0  # in a row: one unanswered ping is not yet an engine down
        try:
            while not closed.done():
                misses = 0 if await engine_answers(engine) else misses + 1
                if misses == 0:
                    remote.row.inventory["disk_free_bytes"] = await self.disk_free(remote.row.name)
                    if remote.state == NodeState.UNREACHABLE:
                        await self._became_ready(remote)
                elif misses >= ENGINE_MISSES:
                    await self.engine_down(remote.row.name)
                await asyncio.wait({closed}, timeout=self.settings.engine_check_seconds)
        finally:
            closed.cancel()

    async def disk_free(self, name: str) -> int | None:
        """Free bytes where the node's engine keeps images and containers, asked now (None: the
        node cannot say)."""
        root = self.inventory(name).get("docker_root") or "/var/lib/docker"
        if name == LOCAL:
            try:
                return (await asyncio.to_thread(shutil.disk_usage, root)).free
            except OSError:  # the server in a container of its own: the engine's disk is not here
                return None
        remote = self.remotes.get(name)
        if remote is None or remote.conn is None:
            return None
        try:
            df = await asyncio.wait_for(remote.conn.run(inv.df_command(root), check=False), 10)
        except (OSError, asyncssh.Error, TimeoutError):
            return None
        return inv.parse_df(str(df.stdout))

    async def engine_down(self, name: str) -> None:
        """A run saw the node's engine not answer for a while: the node is Unreachable now (the
        engine checks make it Ready again once the engine answers), so nothing is placed there."""
        why = "its Docker engine does not answer"
        if name == LOCAL:
            # Without an engine at all, local stays Ready for runs without a container.
            if self.local_state == NodeState.READY and self.local_engine is not None:
                log.warning("node local is Unreachable: %s", why)
                self.local_state = NodeState.UNREACHABLE
                self.local_unreachable_since = time.monotonic()
                self.local_ready.clear()
            return
        remote = self.remotes.get(name)
        if remote is not None and remote.state == NodeState.READY:
            await self._mark_unreachable(remote, why)

    async def _watch_local(self) -> None:
        """The server's own engine: Unreachable while it does not answer (stopped, restarting),
        Ready again (and tidied) when it does. Without an engine, ``local`` stays Ready for runs
        without a container, and an engine that appears later is taken up here."""
        misses = 0
        while True:
            if self.local_engine is None:
                await self._adopt_local_engine()
            else:
                misses = 0 if await engine_answers(self.local_engine) else misses + 1
                if misses == 0:
                    self.local_inventory["disk_free_bytes"] = await self.disk_free(LOCAL)
                if misses >= ENGINE_MISSES:
                    await self.engine_down(LOCAL)
                elif misses == 0 and self.local_state == NodeState.UNREACHABLE:
                    log.info("node local is Ready: its Docker engine answers again")
                    self.local_state = NodeState.READY
                    self.local_unreachable_since = None
                    self.local_ready.set()
                    await self._tidy(LOCAL)
            await asyncio.sleep(self.settings.engine_check_seconds)

    async def _adopt_local_engine(self) -> None:
        """A Docker engine answers now where there was none: ``local`` runs containers too."""
        engine = await asyncio.to_thread(connect_local_engine)
        if engine is None:
            return
        self.local_engine = engine
        try:
            facts = await asyncio.to_thread(self._probe_local)
        except DockerException as exc:  # gone again meanwhile: the next check tries once more
            self.local_engine = None
            engine.close()
            log.warning("the Docker engine that appeared does not answer: %s", exc)
            return
        self.local_inventory.update(facts)
        log.info("node local: a Docker engine answers; it runs containers from now on")
        await self._tidy(LOCAL)

    async def _set_state(self, name: str, state: NodeState, error: str | None) -> None:
        await self.db.write(lambda db: node_store.update_node(db, name, state=state, error=error))

    async def _mark_unreachable(self, remote: _Remote, why: str) -> None:
        if remote.unreachable_since is None:
            remote.unreachable_since = time.monotonic()
        remote.ready.clear()
        if remote.state != NodeState.UNREACHABLE:
            log.warning("node %s is Unreachable: %s", remote.row.name, why)
        remote.state = NodeState.UNREACHABLE
        name = remote.row.name
        with contextlib.suppress(Exception):
            await self.db.write(
                lambda db: node_store.update_node(db, name, state=NodeState.UNREACHABLE, error=why)
            )

    async def _connect(self, remote: _Remote) -> None:
        row = remote.row
        pinned = asyncssh.import_public_key(row.host_key)
        conn = await asyncio.wait_for(
            asyncssh.connect(
                row.host,
                port=row.port,
                username=row.user,
                client_keys=[row.key_path],
                known_hosts=([pinned], [], []),
                keepalive_interval=self.settings.ssh_keepalive_seconds,
                keepalive_count_max=3,
                agent_path=None,
                # Bigger channel windows and packets: artifacts stream back at several times the
                # throughput of the defaults.
                window=16 * 1024 * 1024,
                max_pktsize=128 * 1024,
            ),
            timeout=20,
        )
        socket_path = str(self._socket_dir / f"{row.name}.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)
        remote.conn = conn  # closed by the caller if what follows fails
        remote.listener = await conn.forward_local_path(socket_path, row.docker_socket)
        remote.engine = engine = await asyncio.to_thread(DockerEngine, f"unix://{socket_path}")
        facts = await self._probe_remote(conn, engine)
        remote.row = dataclasses.replace(remote.row, inventory=facts)

    async def _probe_remote(
        self, conn: asyncssh.SSHClientConnection, engine: DockerEngine
    ) -> dict[str, Any]:

        async def run(command: str) -> asyncssh.SSHCompletedProcess:
            try:
                return await asyncio.wait_for(conn.run(command, check=False), PROBE_SECONDS)
            except TimeoutError:
                raise TimeoutError(
                    f"`{command.split()[0]}` over SSH did not finish within {PROBE_SECONDS} s "
                    "(does the login shell's startup file wait on something?)"
                ) from None

        smi = await run(inv.NVIDIA_SMI)
        cpus = await run("nproc")
        meminfo = await run("cat /proc/meminfo")
        hook = await run(inv.FIND_HOOK)
        info = await asyncio.to_thread(engine.client.info)
        version = await asyncio.to_thread(engine.client.version)
        return {
            "gpus": inv.parse_gpus(str(smi.stdout)) if smi.exit_status == 0 else [],
            "cpus": int(str(cpus.stdout).strip() or 0) if cpus.exit_status == 0 else None,
            "memory_bytes": inv.parse_meminfo(str(meminfo.stdout)),
            **inv.docker_facts(
                info, version, inv.parse_hook(str(hook.stdout)) if hook.exit_status == 0 else None
            ),
        }

    def _probe_local(self) -> dict[str, Any]:
        gpus: list[dict[str, Any]] = []
        if shutil.which("nvidia-smi"):
            proc = subprocess.run(inv.NVIDIA_SMI.split(), capture_output=True, text=True)
            if proc.returncode == 0:
                gpus = inv.parse_gpus(proc.stdout)
        try:
            memory = inv.parse_meminfo(Path("/proc/meminfo").read_text())
        except OSError:
            memory = None
        facts: dict[str, Any] = {}
        if self.local_engine is not None:
            facts = inv.docker_facts(
                self.local_engine.client.info(),
                self.local_engine.client.version(),
                inv.find_local_hook(),
            )
        return {"gpus": gpus, "cpus": os.cpu_count(), "memory_bytes": memory, **facts}

    async def _start_bulk(self, remote: _Remote) -> None:
        """A second forward of the Docker socket through ``ssh -L`` with the pinned host key."""
        ssh = shutil.which("ssh")
        if ssh is None:
            return
        row = remote.row
        known_hosts = self._socket_dir / f"{row.name}.known_hosts"
        host = row.host if row.port == 22 else f"[{row.host}]:{row.port}"
        known_hosts.write_text(f"{host} {row.host_key}\n")
        socket_path = self._socket_dir / f"{row.name}.bulk.sock"
        socket_path.unlink(missing_ok=True)
        command = bulk_forward_command(ssh, row, known_hosts, socket_path)
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(50):
            if socket_path.exists() or proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        if proc.poll() is not None or not socket_path.exists():
            proc.kill()
            log.warning(
                "node %s: no OpenSSH forward for bulk copies; using the asyncssh one", row.name
            )
            return
        remote.bulk_proc = proc
        remote.bulk_engine = await asyncio.to_thread(DockerEngine, f"unix://{socket_path}")

    def bulk_engine(self, name: str) -> DockerEngine:
        """The engine to copy large results through (the OpenSSH forward when it is up)."""
        remote = self.remotes.get(name)
        if remote is not None and remote.bulk_engine is not None and remote.bulk_proc is not None:
            if remote.bulk_proc.poll() is None:
                return remote.bulk_engine
        return self.engine(name)

    def _close(self, remote: _Remote) -> None:
        if remote.bulk_proc is not None:
            remote.bulk_proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                remote.bulk_proc.wait(5)
            remote.bulk_proc = None
        if remote.bulk_engine is not None:
            remote.bulk_engine.close()
            remote.bulk_engine = None
        if remote.listener is not None:
            remote.listener.close()
        if remote.engine is not None:
            remote.engine.close()
        if remote.conn is not None:
            remote.conn.close()
        remote.conn = remote.listener = remote.engine = None

    def describe(self, row: node_store.NodeRow) -> dict[str, Any]:
        remote = self.remotes.get(row.name)
        bulk = (
            remote is not None and remote.bulk_proc is not None and remote.bulk_proc.poll() is None
        )
        live = remote.row.inventory if remote is not None else {}
        return {
            **row.public(),
            # What the server sees now (free disk is refreshed with every engine check).
            "inventory": {**row.inventory, **live},
            "state": self.state(row.name),
            "runtimes": self.runtimes(row.name),
            "bulkTransfer": "openssh" if bulk else "asyncssh",
        }

    def local_description(self) -> dict[str, Any]:
        return {
            "name": LOCAL,
            "host": None,
            "state": self.local_state,
            "runtimes": self.runtimes(LOCAL),
            "inventory": self.local_inventory,
        }


async def engine_answers(engine: DockerEngine) -> bool:
    return await asyncio.to_thread(engine.answers)


def connect_local_engine() -> DockerEngine | None:
    """The server's own Docker engine (``DOCKER_HOST`` or the default socket), or None when none
    answers."""
    try:
        engine = DockerEngine()
    except DockerException:
        return None
    try:
        engine.client.ping()
    except DockerException:
        engine.close()
        return None
    return engine


def bulk_forward_command(
    ssh: str, row: node_store.NodeRow, known_hosts: Path, socket_path: Path
) -> list[str]:
    """OpenSSH's command line forwarding ``row``'s Docker socket to ``socket_path``, pinned key only."""
    return [
        ssh,
        "-N",
        "-T",
        "-i",
        row.key_path,
        "-p",
        str(row.port),
        "-o",
        "BatchMode=yes",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ServerAliveInterval=5",
        "-L",
        f"{socket_path}:{row.docker_socket}",
        "--",  # the end of the options: the destination is never read as one
        f"{row.user}@{row.host}",
    ]
