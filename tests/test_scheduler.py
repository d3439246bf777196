"""The scheduler on its own: GPUs per device, gang, priority, no starvation, reasons."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trainhub.scheduler import NodeCapacity, Request, plan


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
    assert (
        "needs 2 GPUs on each of 2 nodes" in result.waiting["gang"]
        or "largest free is" in result.waiting["gang"]
    )
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
