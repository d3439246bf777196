"""One scheduling pass with 10,000 queued runs over 100 nodes x 8 GPUs (synthetic inventory).

Usage: .venv/bin/python bench/scheduler.py [--reps 7]
Goal: under 50 ms per pass. The baseline printed beside it is the cost of merely sorting the queue
(the least any priority scheduler must do), measured in the same run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from trainhub.scheduler import NodeCapacity, Request, plan


def workload(seed: int) -> tuple[list[Request], list[NodeCapacity]]:
    rng = random.Random(seed)
    nodes = tuple(f"node{i:03d}" for i in range(100))
    caps = [NodeCapacity(n, list(range(8)), 32) for n in nodes]
    for cap in caps:  # half the cluster already busy
        busy = rng.randint(0, 8)
        del cap.free_gpus[:busy]
    requests = [
        Request(
            f"run{i}",
            "cluster",
            nodes,
            node_count=rng.choice([1, 1, 1, 2, 4]),
            gpus_per_node=rng.choice([0, 1, 1, 2, 4, 8]),
            priority=rng.choice([0, 0, 0, 1, 5]),
            queued_at=rng.uniform(0, 3600),
        )
        for i in range(10_000)
    ]
    return requests, caps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    passes, sorts = [], []
    for rep in range(args.reps):
        requests, caps = workload(rep)
        start = time.perf_counter()
        sorted(requests, key=lambda r: (-r.priority, r.queued_at))
        sorts.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = plan(requests, caps, now=3600, starve_after=1800)
        passes.append(time.perf_counter() - start)
    print(f"10,000 queued runs, 100 nodes x 8 GPUs; repetitions: {args.reps} (medians)")
    print(f"sorting the queue (baseline)   {statistics.median(sorts) * 1000:7.1f} ms")
    print(
        f"one scheduling pass            {statistics.median(passes) * 1000:7.1f} ms   (goal < 50 ms)"
    )
    print(
        f"last pass: {len(result.allocations)} placed, {len(result.waiting)} waiting, {len(result.reserved)} reservations"
    )


if __name__ == "__main__":
    main()
