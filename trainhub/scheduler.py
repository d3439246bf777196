"""The scheduler: queued runs -> allocations of GPUs (per device) and CPU slots on nodes.

A pure function, so it can be tested and benchmarked on its own. Order: priority, then age. A run with
several nodes gets all of them at once or waits (gang). A run that has waited past a bound reserves
the nodes it needs, so smaller runs behind it cannot starve it. Every waiting run gets a reason a
person can read ("needs 4 GPUs on one node; largest free is 2").

Cost of a pass: one sort of the queue; a few dictionary look-ups per run; for each run placed, a
binary search in its nodes' free capacity (see `_NodeList`); for each shape of request that does not
fit, one look at every node of its target to say why. It grows with the queue about as the sort
does, and with the nodes mostly through the runs they make room for.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field
from itertools import islice
from typing import NamedTuple


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


class Placement(NamedTuple):
    node: str
    gpus: tuple[int, ...]
    slots: int


class Allocation(NamedTuple):
    run_id: str
    placements: tuple[Placement, ...]


@dataclass
class Plan:
    allocations: list[Allocation] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)
    reserved: dict[str, tuple[str, ...]] = field(default_factory=dict)


def queue_key(req: Request) -> tuple[int, float]:
    """The order of the queue: higher priority first, then older first."""
    return (-req.priority, req.queued_at)


# A node's free capacity as a sort key: best fit (least room left over) comes first.
_FreeKey = tuple[int, int, str]


def _free_key(cap: NodeCapacity) -> _FreeKey:
    return (len(cap.free_gpus), cap.free_slots, cap.name)


class _NodeList:
    """One distinct list of nodes that requests name (usually a target), and what it has free.

    `free` holds the open nodes (schedulable, not reserved) as (free GPUs, free slots, name) in
    ascending order, so the best fit for a request is a binary search to its GPU need and a short walk
    forward. `failed` remembers, per (node count, GPUs, slots), why such a request could not be
    placed: capacity only shrinks and reservations only grow during a pass, so it never fits later.
    """

    __slots__ = ("nodes", "free", "failed", "touches_reserved")

    def __init__(self, nodes: tuple[str, ...], free: list[_FreeKey]) -> None:
        self.nodes = nodes
        self.free = free
        self.failed: dict[tuple[int, int, int], str] = {}
        self.touches_reserved = False  # reservations only grow, so once True it stays True

    def best_fit(self, count: int, gpus: int, slots: int) -> list[str] | None:
        """The `count` open nodes with the least room left over that have `gpus` and `slots` free."""
        free = self.free
        chosen = []
        # From the first key with the GPUs, in best-fit order; the slots may still be short.
        for _, free_slots, name in islice(free, bisect_left(free, (gpus, slots)), None):
            if free_slots >= slots:
                chosen.append(name)
                if len(chosen) >= count:
                    return chosen
        return None


class _Pass:
    """The state of one pass: a private copy of the capacities, the node lists seen, reservations."""

    def __init__(self, capacities: list[NodeCapacity]) -> None:
        self.caps = {
            c.name: NodeCapacity(c.name, sorted(c.free_gpus), c.free_slots, c.schedulable, c.state)
            for c in capacities
        }
        self.reserved: set[str] = set()
        self._lists: dict[tuple[str, ...], _NodeList] = {}
        # The same tuple object is usually shared by many requests: find it by identity, which is
        # safe while the requests hold it, and hash its contents only the first time it is seen.
        self.lists_by_id: dict[int, _NodeList] = {}
        self._lists_with: dict[str, list[list[_FreeKey]]] = {}  # node -> `free` lists holding it

    def node_list(self, nodes: tuple[str, ...]) -> _NodeList:
        found = self.lists_by_id.get(id(nodes))
        if found is None:
            found = self._lists.get(nodes)
            if found is None:
                found = self._lists[nodes] = self._new_list(nodes)
            self.lists_by_id[id(nodes)] = found
        return found

    def _new_list(self, nodes: tuple[str, ...]) -> _NodeList:
        free = []
        for name in nodes:
            cap = self.caps.get(name)
            if cap is not None and cap.schedulable and name not in self.reserved:
                free.append(_free_key(cap))
                self._lists_with.setdefault(name, []).append(free)
        free.sort()
        found = _NodeList(nodes, free)
        found.touches_reserved = not self.reserved.isdisjoint(nodes)
        return found

    def take(self, chosen: list[str], req: Request) -> tuple[Placement, ...]:
        """Take a request's GPUs and slots on the chosen nodes, and move their keys to match."""
        gpus, slots = req.gpus_per_node, req.slots_per_node
        placements = []
        for name in chosen:
            cap = self.caps[name]
            before = (len(cap.free_gpus), cap.free_slots, name)
            taken = tuple(cap.free_gpus[:gpus])
            del cap.free_gpus[:gpus]
            cap.free_slots -= slots
            after = (len(cap.free_gpus), cap.free_slots, name)
            for free in self._lists_with[name]:
                i = bisect_left(free, before)
                if i == 0 or free[i - 1] <= after:  # still in order where it was (often so)
                    free[i] = after
                else:
                    del free[i]
                    insort(free, after)
            placements.append(Placement(name, taken, slots))
        return tuple(placements)

    def reserve(self, req: Request, result: Plan) -> None:
        """Hold the nodes a long-waiting run needs: nothing else is placed on them until it fits."""
        caps, reserved = self.caps, self.reserved
        usable = [
            caps[n] for n in req.nodes if n in caps and caps[n].schedulable and n not in reserved
        ]
        usable.sort(key=lambda c: (-len(c.free_gpus), -c.free_slots, c.name))
        chosen = tuple(c.name for c in usable[: req.node_count])
        if not chosen:
            return
        reserved.update(chosen)
        result.reserved[req.run_id] = chosen
        for name in chosen:
            key = _free_key(caps[name])
            for free in self._lists_with.pop(name, ()):
                del free[bisect_left(free, key)]
        for node_list in self._lists.values():
            if not node_list.touches_reserved and not reserved.isdisjoint(node_list.nodes):
                node_list.touches_reserved = True


def plan(
    requests: list[Request],
    capacities: list[NodeCapacity],
    *,
    now: float,
    starve_after: float = 600.0,
) -> Plan:
    result = Plan()
    state = _Pass(capacities)
    waiting, lists_by_id = result.waiting, state.lists_by_id  # read once per run below
    for req in sorted(requests, key=queue_key):
        node_list = lists_by_id.get(id(req.nodes)) or state.node_list(req.nodes)
        shape = (req.node_count, req.gpus_per_node, req.slots_per_node)
        reason = node_list.failed.get(shape)
        if reason is not None:
            waiting[req.run_id] = reason
            if not node_list.touches_reserved and now - req.queued_at > starve_after:
                state.reserve(req, result)
            continue
        chosen = node_list.best_fit(*shape)
        if chosen is not None:
            result.allocations.append(Allocation(req.run_id, state.take(chosen, req)))
            continue
        reason = node_list.failed[shape] = explain(req, state.caps, state.reserved)
        waiting[req.run_id] = reason
        if now - req.queued_at > starve_after:
            state.reserve(req, result)  # the first of its shape reserves even next to a reservation
    return result


def _fits(cap: NodeCapacity, req: Request) -> bool:
    return (
        cap.schedulable
        and len(cap.free_gpus) >= req.gpus_per_node
        and cap.free_slots >= req.slots_per_node
    )


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
