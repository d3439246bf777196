"""One scheduling pass with 10,000 queued runs over 100 nodes x 8 GPUs (synthetic inventory), beside
sorting the same queue by the scheduler's own order key, measured in the same run; then how the pass
grows with the runs and the nodes.

Usage: .venv/bin/python bench/scheduler.py [--reps 21]
Goals: a pass costs at most 4x sorting the queue, and under 50 ms. Sorting is the least any priority
scheduler must do. Both are timed as CPU time of this process (`time.process_time`), interleaved, so
a busy machine's other work moves the ratio little even when it moves the absolute figures.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time

from trainhub.scheduler import NodeCapacity, Plan, Request, plan, queue_key

NOW, STARVE_AFTER = 3600.0, 1800.0  # half of the queue has waited long enough to reserve nodes


def workload(
    seed: int, runs: int = 10_000, nodes: int = 100
) -> tuple[list[Request], list[NodeCapacity]]:
    """One target of `nodes` nodes x 8 GPUs and 32 slots, about half of the GPUs busy, and `runs`
    queued runs: mostly single-node, some gangs of 2 and 4, 0-8 GPUs, a few priorities."""
    rng = random.Random(seed)
    names = tuple(f"node{i:04d}" for i in range(nodes))
    caps = [NodeCapacity(n, list(range(8)), 32) for n in names]
    for cap in caps:
        del cap.free_gpus[: rng.randint(0, 8)]
    requests = [
        Request(
            f"run{i}",
            "cluster",
            names,
            node_count=rng.choice([1, 1, 1, 2, 4]),
            gpus_per_node=rng.choice([0, 1, 1, 2, 4, 8]),
            priority=rng.choice([0, 0, 0, 1, 5]),
            queued_at=rng.uniform(0, NOW),
        )
        for i in range(runs)
    ]
    return requests, caps


def timed_sort(requests: list[Request]) -> float:
    gc.collect()
    start = time.process_time()
    sorted(requests, key=queue_key)
    return time.process_time() - start


def timed_pass(requests: list[Request], caps: list[NodeCapacity]) -> tuple[float, Plan]:
    gc.collect()
    start = time.process_time()
    result = plan(requests, caps, now=NOW, starve_after=STARVE_AFTER)
    return time.process_time() - start, result


def measure(reps: int, runs: int, nodes: int) -> tuple[float, float, Plan]:
    """Medians of the sort and of the pass, interleaved, over `reps` queues (one seed each)."""
    sorts, passes = [], []
    for rep in range(reps):
        requests, caps = workload(rep, runs, nodes)
        sorts.append(timed_sort(requests))
        took, result = timed_pass(requests, caps)
        passes.append(took)
    return statistics.median(sorts), statistics.median(passes), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=21)
    args = parser.parse_args()

    sort, one_pass, result = measure(args.reps, 10_000, 100)
    print(f"10,000 queued runs, 100 nodes x 8 GPUs; repetitions: {args.reps} (medians)")
    print(f"sorting the queue (baseline)   {sort * 1000:7.1f} ms")
    print(
        f"one scheduling pass            {one_pass * 1000:7.1f} ms   ratio {one_pass / sort:.1f}x"
        " (goal <= 4x; < 50 ms)"
    )
    print(
        f"last pass: {len(result.allocations)} placed, {len(result.waiting)} waiting,"
        f" {len(result.reserved)} reservations"
    )

    reps = max(3, args.reps // 3)
    print(f"\nhow a pass grows (repetitions: {reps}, medians)")
    print("   runs  nodes    sort ms    pass ms   ratio   placed")
    for runs, nodes in [(1_000, 100), (10_000, 100), (50_000, 100), (10_000, 10), (10_000, 1000)]:
        sort, one_pass, result = measure(reps, runs, nodes)
        print(
            f"{runs:7,} {nodes:6,} {sort * 1000:10.1f} {one_pass * 1000:10.1f}"
            f" {one_pass / sort:6.1f}x {len(result.allocations):8,}"
        )


if __name__ == "__main__":
    main()
