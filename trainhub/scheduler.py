"""The scheduler: queued runs -> allocations of GPUs (per device) and CPU slots on nodes.

A pure function, so it can be tested and benchmarked on its own. Order: priority, then age. A run with
several nodes gets all of them at once or waits (gang). A run that has waited past a bound reserves
the nodes it needs, so smaller runs behind it cannot starve it. Every waiting run gets a reason a
person can read ("needs 4 GPUs on one node; largest free is 2").
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class NodeCapacity:
    name: str
    free_gpus: list[int]
    free_slots: int
    schedulable: bool = True
    state: str = "Ready"


@dataclass(frozen=True)
class Request:
    run_id: str
    target: str
    nodes: tuple[str, ...]
    node_count: int = 1
    gpus_per_node: int = 0
    slots_per_node: int = 1
    priority: int = 0
    queued_at: float = 0.0


@dataclass(frozen=True)
class Placement:
    node: str
    gpus: tuple[int, ...]
    slots: int


@dataclass(frozen=True)
class Allocation:
    run_id: str
    placements: tuple[Placement, ...]


@dataclass
class Plan:
    allocations: list[Allocation] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)
    reserved: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _fits(cap: NodeCapacity, req: Request) -> bool:
    return (
        cap.schedulable
        and len(cap.free_gpus) >= req.gpus_per_node
        and cap.free_slots >= req.slots_per_node
    )


def plan(
    requests: list[Request],
    capacities: list[NodeCapacity],
    *,
    now: float,
    starve_after: float = 600.0,
) -> Plan:
    result = Plan()
    caps = {
        c.name: NodeCapacity(c.name, sorted(c.free_gpus), c.free_slots, c.schedulable, c.state)
        for c in capacities
    }
    reserved: set[str] = set()
    by_nodes: dict[tuple[str, ...], list[NodeCapacity]] = {}
    # Capacity only shrinks during a pass, so a shape that did not fit never fits later in the pass.
    failed: dict[tuple[tuple[str, ...], int, int, int], str] = {}
    for req in sorted(requests, key=lambda r: (-r.priority, r.queued_at)):
        shape = (req.nodes, req.node_count, req.gpus_per_node, req.slots_per_node)
        if shape in failed:
            result.waiting[req.run_id] = failed[shape]
            if now - req.queued_at > starve_after and reserved.isdisjoint(req.nodes):
                _reserve(req, caps, reserved, result)
            continue
        node_caps = by_nodes.get(req.nodes)
        if node_caps is None:
            node_caps = by_nodes[req.nodes] = [caps[n] for n in req.nodes if n in caps]
        need_gpus, need_slots = req.gpus_per_node, req.slots_per_node
        candidates = [
            c
            for c in node_caps
            if c.schedulable
            and len(c.free_gpus) >= need_gpus
            and c.free_slots >= need_slots
            and c.name not in reserved
        ]
        if len(candidates) >= req.node_count:
            # Best fit: the nodes with the least room left over, so big holes stay for big runs.
            def leftover(c: NodeCapacity, need: int = need_gpus) -> tuple[int, int, str]:
                return (len(c.free_gpus) - need, c.free_slots, c.name)

            if req.node_count == 1:
                chosen = [min(candidates, key=leftover)]
            else:
                chosen = sorted(candidates, key=leftover)[: req.node_count]
            placements = []
            for cap in chosen:
                gpus = tuple(cap.free_gpus[:need_gpus])
                del cap.free_gpus[:need_gpus]
                cap.free_slots -= need_slots
                placements.append(Placement(cap.name, gpus, need_slots))
            result.allocations.append(Allocation(req.run_id, tuple(placements)))
            continue
        reason = explain(req, caps, reserved)
        failed[shape] = reason
        result.waiting[req.run_id] = reason
        if now - req.queued_at > starve_after:
            _reserve(req, caps, reserved, result)
    return result


def _reserve(req: Request, caps: dict[str, NodeCapacity], reserved: set[str], result: Plan) -> None:
    """Hold the nodes a long-waiting run needs: nothing else is placed on them until it fits."""
    usable = [caps[n] for n in req.nodes if n in caps and caps[n].schedulable and n not in reserved]
    usable.sort(key=lambda c: (-len(c.free_gpus), -c.free_slots, c.name))
    chosen = tuple(c.name for c in usable[: req.node_count])
    if chosen:
        reserved.update(chosen)
        result.reserved[req.run_id] = chosen


def explain(req: Request, caps: dict[str, NodeCapacity], reserved: set[str] | None = None) -> str:
    nodes = [caps[n] for n in req.nodes if n in caps]
    ready = [c for c in nodes if c.schedulable]
    where = f"target '{req.target}'"
    if not ready:
        states = ", ".join(f"{c.name} {c.state}" for c in nodes) or "no nodes"
        return f"no node of {where} can take runs now ({states})"
    open_nodes = [c for c in ready if not reserved or c.name not in reserved]
    if not open_nodes:
        return f"the nodes of {where} are reserved for a run that has waited longer"
    count = "one node" if req.node_count == 1 else f"each of {req.node_count} nodes"
    if req.gpus_per_node:
        largest = max(len(c.free_gpus) for c in open_nodes)
        gpus = "GPU" if req.gpus_per_node == 1 else "GPUs"
        fitting = sum(1 for c in open_nodes if _fits(c, req))
        if req.node_count > 1 and largest >= req.gpus_per_node:
            return f"needs {req.gpus_per_node} {gpus} on {count} of {where}; {fitting} node(s) have room"
        return f"needs {req.gpus_per_node} {gpus} on {count}; largest free is {largest}"
    if req.node_count > 1:
        fitting = sum(1 for c in open_nodes if _fits(c, req))
        return f"needs a free slot on {count} of {where}; {fitting} node(s) have one"
    return f"every node of {where} is busy (no free run slot)"
