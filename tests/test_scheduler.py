"""The scheduler on its own: GPUs per device, gang, priority, no starvation, reasons."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.scheduler import workload
from trainhub.scheduler import Allocation, NodeCapacity, Placement, Plan, Request, explain, plan


def node(name: str, gpus: int, slots: int = 16, schedulable: bool = True) -> NodeCapacity:
    return NodeCapacity(
        name, list(range(gpus)), slots, schedulable, "Ready" if schedulable else "Draining"
    )


def req(
    run_id: str,
    gpus: int = 0,
    nodes: tuple[str, ...] = ("a", "b"),
    count: int = 1,
    priority: int = 0,
    at: float = 0,
) -> Request:
    return Request(run_id, "gpu-cluster", nodes, count, gpus, 1, priority, at)


def test_gpus_are_handed_out_per_device() -> None:
    result = plan(
        [req("r1", 2, at=1), req("r2", 1, at=2), req("r3", 1, at=3)],
        [node("a", 2), node("b", 2)],
        now=10,
    )
    placed = {a.run_id: [(p.node, p.gpus) for p in a.placements] for a in result.allocations}
    assert placed["r1"] in ([("a", (0, 1))], [("b", (0, 1))])
    devices = [(p.node, g) for a in result.allocations for p in a.placements for g in p.gpus]
    assert len(devices) == len(set(devices)) == 4


def test_waiting_reason_names_what_is_missing() -> None:
    result = plan([req("big", 4)], [node("a", 2), node("b", 1)], now=0)
    assert result.waiting == {"big": "needs 4 GPUs on one node; largest free is 2"}


def test_gang_gets_all_nodes_or_waits() -> None:
    result = plan([req("gang", 2, count=2)], [node("a", 2), node("b", 1)], now=0)
    assert result.allocations == []
    assert result.waiting == {
        "gang": "needs 2 GPUs on each of 2 nodes of target 'gpu-cluster'; 1 node(s) have room"
    }
    result = plan([req("gang", 1, count=2)], [node("a", 2), node("b", 1)], now=0)
    assert {p.node for p in result.allocations[0].placements} == {"a", "b"}


def test_priority_goes_before_age() -> None:
    result = plan(
        [req("old", 2, at=1), req("urgent", 2, at=5, priority=10)], [node("a", 2)], now=10
    )
    assert [a.run_id for a in result.allocations] == ["urgent"]
    assert "old" in result.waiting


def test_a_long_waiting_big_run_is_not_starved_by_small_ones() -> None:
    caps = [node("a", 4)]
    caps[0].free_gpus = [0, 1]  # two GPUs busy with an earlier run
    small = [req(f"s{i}", 1, nodes=("a",), at=100 + i) for i in range(3)]
    fresh = plan([req("big", 4, nodes=("a",), at=50), *small], caps, now=60, starve_after=600)
    assert {a.run_id for a in fresh.allocations} == {
        "s0",
        "s1",
    }  # not starving yet: small runs backfill
    starving = plan(
        [req("big", 4, nodes=("a",), at=50), *small], caps, now=50 + 601, starve_after=600
    )
    assert starving.allocations == []  # the node is held for the big run
    assert starving.reserved == {"big": ("a",)}
    assert "reserved for a run that has waited longer" in starving.waiting["s0"]


def test_nodes_that_cannot_take_runs_are_skipped_and_said() -> None:
    result = plan([req("r", 1)], [node("a", 2, schedulable=False), node("b", 0)], now=0)
    assert result.waiting["r"] == "needs 1 GPU on one node; largest free is 0"
    result = plan(
        [req("r", 1)], [node("a", 2, schedulable=False), node("b", 2, schedulable=False)], now=0
    )
    assert result.waiting["r"].startswith("no node of target 'gpu-cluster' can take runs now")


def test_cpu_runs_are_bounded_by_slots() -> None:
    result = plan(
        [req(f"c{i}", 0, nodes=("a",), at=i) for i in range(5)], [node("a", 0, slots=3)], now=0
    )
    assert len(result.allocations) == 3
    assert result.waiting["c4"] == "every node of target 'gpu-cluster' is busy (no free run slot)"


requests_strategy = st.lists(
    st.tuples(st.integers(0, 4), st.integers(1, 2), st.integers(0, 3), st.floats(0, 1000)),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(requests_strategy, st.lists(st.integers(0, 8), min_size=1, max_size=5), st.floats(0, 2000))
def test_no_gpu_is_ever_held_by_two_runs(
    shapes: list[tuple[int, int, int, float]], gpus: list[int], now: float
) -> None:
    caps = [node(f"n{i}", g) for i, g in enumerate(gpus)]
    names = tuple(c.name for c in caps)
    requests = [
        Request(f"r{i}", "t", names, count, g, 1, prio, at)
        for i, (g, count, prio, at) in enumerate(shapes)
    ]
    result = plan(requests, caps, now=now, starve_after=500)
    held = [(p.node, g) for a in result.allocations for p in a.placements for g in p.gpus]
    assert len(held) == len(set(held))
    for a in result.allocations:
        r = next(r for r in requests if r.run_id == a.run_id)
        assert (
            len(a.placements) == r.node_count
            and len({p.node for p in a.placements}) == r.node_count
        )
        assert all(len(p.gpus) == r.gpus_per_node for p in a.placements)
        for p in a.placements:
            assert set(p.gpus) <= set(range(gpus[int(p.node[1:])]))
    assert set(result.waiting) | {a.run_id for a in result.allocations} == {
        r.run_id for r in requests
    }


# The pass before it was made cheaper (issue 9), kept word for word as the reference: the scheduler
# must take the same decisions (allocations, reservations, wait reasons) for any input. The wording
# of a reason is `explain`'s, shared by both.
def reference_plan(
    requests: list[Request], capacities: list[NodeCapacity], *, now: float, starve_after: float
) -> Plan:
    result = Plan()
    caps = {
        c.name: NodeCapacity(c.name, sorted(c.free_gpus), c.free_slots, c.schedulable, c.state)
        for c in capacities
    }
    reserved: set[str] = set()
    by_nodes: dict[tuple[str, ...], list[NodeCapacity]] = {}
    failed: dict[tuple[tuple[str, ...], int, int, int], str] = {}
    for req in sorted(requests, key=lambda r: (-r.priority, r.queued_at)):
        shape = (req.nodes, req.node_count, req.gpus_per_node, req.slots_per_node)
        if shape in failed:
            result.waiting[req.run_id] = failed[shape]
            if now - req.queued_at > starve_after and reserved.isdisjoint(req.nodes):
                _reference_reserve(req, caps, reserved, result)
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
            _reference_reserve(req, caps, reserved, result)
    return result


def _reference_reserve(
    req: Request, caps: dict[str, NodeCapacity], reserved: set[str], result: Plan
) -> None:
    usable = [caps[n] for n in req.nodes if n in caps and caps[n].schedulable and n not in reserved]
    usable.sort(key=lambda c: (-len(c.free_gpus), -c.free_slots, c.name))
    chosen = tuple(c.name for c in usable[: req.node_count])
    if chosen:
        reserved.update(chosen)
        result.reserved[req.run_id] = chosen


def random_case(rng: random.Random) -> tuple[list[Request], list[NodeCapacity], float]:
    """A random cluster and queue: several targets over shared nodes, busy GPUs, nodes that cannot
    take runs, gangs, GPU and CPU runs, priorities and ages with ties, runs old enough to reserve."""
    names = [f"n{i}" for i in range(rng.randint(1, 8))]
    caps = []
    for name in names:
        gpus = rng.sample(range(8), rng.randint(0, 8))
        state = rng.choice(["Ready", "Ready", "Ready", "Draining", "Unreachable"])
        caps.append(NodeCapacity(name, gpus, rng.randint(-1, 6), state == "Ready", state))
    # Targets share nodes and may name a node that is gone.
    pool = [*names, "gone"]
    targets = [tuple(rng.sample(pool, rng.randint(0, len(pool)))) for _ in range(rng.randint(1, 3))]
    requests = []
    for i in range(rng.randint(0, 60)):
        t = rng.randrange(len(targets))
        gpu_run, per_node = rng.random() < 0.5, rng.randint(1, 4)
        requests.append(
            Request(
                f"r{i}",
                f"t{t}",
                # an equal tuple made apart, as each queued run gets its own from the store
                tuple(list(targets[t])) if rng.random() < 0.5 else targets[t],
                node_count=rng.choice([1, 1, 1, 2, 3]),
                gpus_per_node=per_node if gpu_run else 0,
                slots_per_node=0 if gpu_run else per_node,
                priority=rng.choice([0, 0, 1, 5]),
                queued_at=float(rng.randint(0, 20)),
            )
        )
    return requests, caps, rng.choice([0.0, 10.0, 20.0, 30.0])


def test_the_pass_decides_exactly_as_the_reference() -> None:
    starve_after = 9.5
    for seed in range(3000):
        requests, caps, now = random_case(random.Random(seed))
        before = [(c.name, list(c.free_gpus), c.free_slots) for c in caps]
        expected = reference_plan(requests, caps, now=now, starve_after=starve_after)
        assert plan(requests, caps, now=now, starve_after=starve_after) == expected, f"seed {seed}"
        assert [(c.name, c.free_gpus, c.free_slots) for c in caps] == before  # inputs untouched


def test_the_pass_decides_exactly_as_the_reference_on_the_benchmark_queue() -> None:
    requests, caps = workload(seed=3, runs=3000, nodes=40)
    expected = reference_plan(requests, caps, now=3600, starve_after=1800)
    assert expected.allocations and expected.waiting and expected.reserved  # a meaningful case
    assert plan(requests, caps, now=3600, starve_after=1800) == expected
