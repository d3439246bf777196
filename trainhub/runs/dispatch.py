"""Between the queue and the scheduler: what each queued run asks for and what each node has free
(a placed run is then claimed with ``store.lifecycle.claim``)."""

from __future__ import annotations

from typing import Any

from trainhub.nodes.pool import LOCAL, NodePool
from trainhub.scheduler import NodeCapacity, Request
from trainhub.spec import stored_processes_per_node
from trainhub.store import runs as q


def requests_for(
    runs: list[q.RunRow],
    targets: dict[str, list[str]],
    engineless: frozenset[str] = frozenset(),
) -> list[Request]:
    """What each queued run asks for. Runs of one target share one tuple of its nodes (the
    scheduler recognises a node list by identity, so it hashes each list once per pass). A
    container run is never placed on a node of ``engineless`` (no Docker engine there)."""
    shared: dict[tuple[str, bool, bool], tuple[str, ...]] = {}
    found = []
    for run in runs:
        spec = run.spec  # stored as validated: plain dict reads keep a pass over 10,000 runs cheap
        per_node = stored_processes_per_node(spec)
        node_count = int(spec.get("node_count", 1))
        use_gpu = bool(spec.get("use_gpu"))
        use_docker = bool(spec.get("use_docker", True))
        key = (run.target, node_count > 1, use_docker)
        nodes = shared.get(key)
        if nodes is None:
            nodes = tuple(targets.get(run.target, []))
            if node_count > 1:
                # The containers of a multi-node run reach each other at the nodes' SSH addresses.
                nodes = tuple(n for n in nodes if n != LOCAL)
            if use_docker and engineless:
                nodes = tuple(n for n in nodes if n not in engineless)
            shared[key] = nodes
        found.append(
            Request(
                run_id=run.id,
                target=run.target,
                nodes=nodes,
                node_count=node_count,
                # GPU runs are bounded by their GPUs (one per process), CPU-only runs by CPU slots.
                gpus_per_node=per_node if use_gpu else 0,
                slots_per_node=0 if use_gpu else per_node,
                priority=run.priority,
                queued_at=run.created_at,
            )
        )
    return found


def capacities(pool: NodePool, local_slots: int, held: list[dict[str, Any]]) -> list[NodeCapacity]:
    """Free GPUs (by device index) and run slots of every node, after what runs hold now."""
    used_gpus: dict[str, set[int]] = {}
    used_slots: dict[str, int] = {}
    for row in held:
        used_gpus.setdefault(row["node"], set()).update(row["gpus"])
        used_slots[row["node"]] = used_slots.get(row["node"], 0) + int(row["slots"])
    found = []
    for name in [LOCAL, *pool.remotes]:
        facts = pool.inventory(name)
        gpus = [
            g["index"]
            for g in facts.get("gpus", [])[: usable_gpus(pool, name)]
            if g["index"] not in used_gpus.get(name, set())
        ]
        slots = local_slots if name == LOCAL else int(facts.get("cpus") or 1)
        found.append(
            NodeCapacity(
                name,
                gpus,
                slots - used_slots.get(name, 0),
                pool.schedulable(name),
                pool.state(name),
            )
        )
    return found


def usable_gpus(pool: NodePool, name: str) -> int:
    """GPUs of a node that runs can be given: all of them, except on an SSH node whose Docker
    cannot hand GPUs to containers (no NVIDIA hook, no nvidia runtime). The server's own GPUs also
    serve runs without a container, which need no hook."""
    facts = pool.inventory(name)
    if name != LOCAL and not facts.get("gpu_support"):
        return 0
    return len(facts.get("gpus", []))
