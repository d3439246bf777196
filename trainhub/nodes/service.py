"""Node rules, as plain async functions the API calls: register a node (its address checked, its host
key pinned; its private key a file on the server or sent with the request), trust, drain, enable,
disable, remove (refused while runs use it), compute targets (removed only when no run waits for or
runs on one), and what a node is doing now.

A node's ``user`` and ``host`` reach OpenSSH's command line as ``user@host``: both are checked here
before anything connects, so neither can be read by ``ssh`` as an option.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from trainhub.nodes import keys
from trainhub.nodes.pool import LOCAL, NodeError, NodePool
from trainhub.spec import SpecError
from trainhub.store import Database
from trainhub.store import nodes as node_store
from trainhub.store import runs as q
from trainhub.store.lifecycle import ACTIVE, TERMINAL, RunStatus

Wake = Callable[[], None]

# What an admin can do to a node, as the flags each action sets (``trust`` re-pins the host key).
FLAGS: dict[str, dict[str, int]] = {
    "drain": {"draining": 1},
    "enable": {"draining": 0, "enabled": 1},
    "disable": {"enabled": 0},
}
ACTIONS = (*FLAGS, "trust")

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# POSIX portable user names (useradd's rule): no leading '-', at most 32 characters.
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")


class NodeNotFound(LookupError):
    pass


class NodeBusy(Exception):
    """The node (or compute target) has runs on it: the change is refused."""


class TargetNotFound(LookupError):
    pass


class LocalNodeFixed(Exception):
    """The node ``local`` is the server itself."""


class UnknownAction(LookupError):
    pass


# Input --------------------------------------------------------------------------------------------
def check_name(name: str) -> None:
    if name == LOCAL or not _NAME.fullmatch(name):
        raise SpecError(
            "name", f"'{name}' cannot be a node name (letters, digits, '-', '_'; not 'local')"
        )


def check_host(host: str) -> None:
    """A DNS name, an IPv4 address or an IPv6 literal (never something ``ssh`` reads as an option)."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise SpecError(
            "host",
            f"host {host!r} is not a DNS name, an IPv4 address or an IPv6 address "
            "(letters, digits, '-' and '.'; no leading '-')",
        )


def check_user(user: str) -> None:
    if not _USER.fullmatch(user):
        raise SpecError(
            "user",
            f"user {user!r} is not a user name (at most 32 of letters, digits, '_', '.', '-'; "
            "no leading '-')",
        )


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise SpecError("port", f"port {port} is not a TCP port (1-65535)")


def check_docker_socket(path: str) -> None:
    if not path.startswith("/") or any(c.isspace() or not c.isprintable() for c in path):
        raise SpecError(
            "docker_socket",
            f"docker_socket {path!r} must be an absolute path on the node, without spaces",
        )


# Nodes --------------------------------------------------------------------------------------------
async def add(
    pool: NodePool,
    wake: Wake,
    *,
    name: str,
    host: str,
    port: int,
    user: str,
    key_path: str | None,
    docker_socket: str,
    private_key: str | None = None,
) -> dict[str, Any]:
    """Register a node: check its address, connect, pin its host key, probe its inventory. Its
    private key is ``key_path`` (a file on the server) or ``private_key`` (the key's text, kept by
    :mod:`trainhub.nodes.keys` and deleted again if the node cannot be added)."""
    check_name(name)
    check_host(host)
    check_user(user)
    check_port(port)
    check_docker_socket(docker_socket)
    if (key_path is None) == (private_key is None):
        raise SpecError(
            "key_path",
            "A node needs one SSH private key: key_path (a file on the server's machine) or "
            "private_key (the key's text)",
        )
    stored = (
        None if private_key is None else keys.store(pool.settings.node_keys_dir, name, private_key)
    )
    added = False
    try:
        if stored is None:
            assert key_path is not None
            await pool.add(name, host, port, user, key_path, docker_socket)
        else:
            await pool.add(
                name, host, port, user, str(stored), docker_socket, key_shown="sent as private_key"
            )
        added = True
    except NodeError as exc:
        raise SpecError("node", str(exc)) from None
    finally:
        if stored is not None and not added:
            stored.unlink(missing_ok=True)
    wake()
    return await describe(pool, name)


async def act(pool: NodePool, wake: Wake, name: str, action: str) -> dict[str, Any]:
    """``drain`` (no new runs; running ones finish), ``enable``, ``disable`` or ``trust``."""
    if name == LOCAL:
        raise LocalNodeFixed("The node 'local' is the server itself: it cannot be changed")
    if action not in ACTIONS:
        raise UnknownAction(f"Unknown node action '{action}' (drain, enable, disable, trust)")
    try:
        if action == "trust":
            await pool.trust(name)
        else:
            await pool.set_flags(name, **FLAGS[action])
    except NodeError as exc:
        raise NodeNotFound(str(exc)) from None
    wake()
    return await describe(pool, name)


async def remove(pool: NodePool, name: str) -> None:
    """Forget a node; refused while runs use it (drain it and wait, or cancel them)."""
    if name == LOCAL:
        raise LocalNodeFixed("The node 'local' is the server itself: it cannot be removed")
    using = await runs_on(pool.db, name)
    if using:
        raise NodeBusy(
            f"Node {name} has {len(using)} active run(s); drain it and wait, or cancel them"
        )
    row = await pool.db.read(lambda db: node_store.get_node(db, name))
    try:
        await pool.remove(name)
    except NodeError as exc:
        raise NodeNotFound(str(exc)) from None
    if row is not None:
        keys.forget(pool.settings.node_keys_dir, row.key_path)


async def runs_on(db: Database, name: str) -> list[str]:
    """Runs that use the node: placed there (first node) or holding part of it (any node)."""

    def read(conn: Any) -> list[str]:
        placed = {r.id for r in q.runs_with_status(conn, ACTIVE) if r.node == name}
        holding = {r["run_id"] for r in node_store.allocations(conn) if r["node"] == name}
        return sorted(placed | holding)

    return await db.read(read)


async def describe(pool: NodePool, name: str) -> dict[str, Any]:
    """A node as the API shows it: its row and state, the GPUs allocated there and its runs."""
    held = await pool.db.read(node_store.allocations)
    out: dict[str, Any]
    if name == LOCAL:
        out = pool.local_description()
    else:
        row = await pool.db.read(lambda db: node_store.get_node(db, name))
        if row is None:
            raise NodeNotFound(f"No node named '{name}'")
        out = pool.describe(row)
    out["allocatedGpus"] = sorted({g for r in held if r["node"] == name for g in r["gpus"]})
    out["runs"] = sorted({r["run_id"] for r in held if r["node"] == name})
    return out


async def describe_all(pool: NodePool) -> list[dict[str, Any]]:
    rows = await pool.db.read(node_store.list_nodes)
    return [await describe(pool, LOCAL)] + [await describe(pool, r.name) for r in rows]


# Compute targets ------------------------------------------------------------------------------------
async def set_target(db: Database, wake: Wake, name: str, nodes: list[str]) -> dict[str, Any]:
    """Create or change a compute target: a named group of known nodes."""
    if name == LOCAL:
        raise SpecError("name", "The target 'local' exists already and is the node 'local'")
    if not nodes:
        raise SpecError("nodes", "A compute target needs at least one node")
    known = {r.name for r in await db.read(node_store.list_nodes)} | {LOCAL}
    unknown = [n for n in nodes if n not in known]
    if unknown:
        raise SpecError("nodes", f"Unknown node(s): {', '.join(unknown)}")
    await db.write(lambda conn: node_store.set_target(conn, name, nodes))
    wake()
    return {"name": name, "nodes": nodes}


async def remove_target(db: Database, name: str) -> None:
    """Forget a compute target (its nodes stay); refused while runs wait for it or run on it."""
    if name == LOCAL:
        raise LocalNodeFixed("The target 'local' is the server itself: it cannot be removed")
    unended = set(RunStatus) - TERMINAL

    def check_and_remove(conn: Any) -> list[str] | None:
        if node_store.target_nodes(conn, name) is None:
            return None
        using = sorted(r.id for r in q.runs_with_status(conn, unended) if r.target == name)
        if not using:
            node_store.remove_target(conn, name)
        return using

    using = await db.write(check_and_remove)
    if using is None:
        raise TargetNotFound(f"No compute target named '{name}'")
    if using:
        raise NodeBusy(
            f"Compute target {name} has {len(using)} queued or active run(s) "
            f"({', '.join(using[:3])}{', ...' if len(using) > 3 else ''}); cancel them or wait "
            "for them to end"
        )


async def targets(db: Database) -> list[dict[str, Any]]:
    found = await db.read(node_store.list_targets)
    return [{"name": k, "nodes": v} for k, v in found.items()]
