"""GPU telemetry kept per run: what ``nvidia-smi`` said about each GPU a run held, sample by sample.

One row per (run, node, GPU, step) in ``gpu_samples`` (a table without rowid, clustered by run, so a
run's samples are read in one range of its primary key). ``step`` counts the samples of that GPU
for that run from 0. The run page reads them as the system metrics ``gpu/<gpu>/utilization`` and
``gpu/<gpu>/memory_used``, where ``<gpu>`` is the GPU's index on its node, or ``<node>:<index>``
for a run spanning several nodes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlite_utils

# A series longer than this is averaged into this many buckets when read (a run of days).
MAX_POINTS = 2000


@dataclass(frozen=True)
class Sample:
    """One reading of one GPU held by one run."""

    run_id: str
    node: str
    gpu: int
    at: float
    utilization: float | None  # percent
    memory_used: float | None  # MiB


def gpu_holders(db: sqlite_utils.Database) -> dict[str, dict[int, str]]:
    """node -> {GPU index: the run holding it}, for every node where runs hold GPUs now."""
    held: dict[str, dict[int, str]] = {}
    for run_id, node, gpus in db.execute(
        "select run_id, node, gpus from allocations where gpus not in ('', '[]')"
    ).fetchall():
        for index in _indexes(gpus):
            held.setdefault(str(node), {})[index] = str(run_id)
    return held


def add_samples(db: sqlite_utils.Database, samples: Iterable[Sample]) -> int:
    """Store ``samples`` of runs that still hold that GPU (a run that ended, or a GPU handed to
    another run, since the reading was taken keeps nothing of it). Returns how many were kept."""
    kept = 0
    holders = gpu_holders(db)
    for s in samples:
        if holders.get(s.node, {}).get(s.gpu) != s.run_id:
            continue
        step = db.execute(
            "select coalesce(max(step) + 1, 0) from gpu_samples "
            "where run_id = ? and node = ? and gpu = ?",
            [s.run_id, s.node, s.gpu],
        ).fetchone()[0]
        db.execute(
            "insert into gpu_samples (run_id, node, gpu, step, at, utilization, memory_used) "
            "values (?, ?, ?, ?, ?, ?, ?)",
            [s.run_id, s.node, s.gpu, step, s.at, s.utilization, s.memory_used],
        )
        kept += 1
    return kept


def _indexes(gpus_json: str) -> list[int]:
    value = json.loads(gpus_json or "[]")
    return [int(i) for i in value] if isinstance(value, list) else []


def gpus_of(db: sqlite_utils.Database, run_id: str) -> list[tuple[str, int]]:
    """(node, GPU index) of every GPU the run has samples of, in order."""
    rows = db.execute(
        "select distinct node, gpu from gpu_samples where run_id = ? order by node, gpu", [run_id]
    ).fetchall()
    return [(str(node), int(gpu)) for node, gpu in rows]


def label(gpus: list[tuple[str, int]], node: str, gpu: int) -> str:
    """The GPU's part of a metric name: its index, or ``node:index`` when the run spans nodes."""
    several_nodes = len({n for n, _ in gpus}) > 1
    return f"{node}:{gpu}" if several_nodes else str(gpu)


def series(
    db: sqlite_utils.Database, run_id: str, max_points: int = MAX_POINTS
) -> dict[str, list[dict[str, Any]]]:
    """The run's system metrics: name -> points ``{step, at, value}`` in step order. A GPU with more
    than ``max_points`` samples is read as ``max_points`` averages of consecutive samples (each
    with the step and time of its first sample)."""
    gpus = gpus_of(db, run_id)
    out: dict[str, list[dict[str, Any]]] = {}
    for node, gpu in gpus:
        count, last = db.execute(
            "select count(*), max(step) from gpu_samples where run_id = ? and node = ? and gpu = ?",
            [run_id, node, gpu],
        ).fetchone()
        width = max(1, -(-(int(last) + 1) // max_points)) if count else 1
        rows = db.execute(
            "select min(step), min(at), avg(utilization), avg(memory_used) from gpu_samples "
            "where run_id = ? and node = ? and gpu = ? group by step / ? order by step / ?",
            [run_id, node, gpu, width, width],
        ).fetchall()
        name = f"gpu/{label(gpus, node, gpu)}"
        out[f"{name}/utilization"] = [
            {"step": step, "at": at, "value": util} for step, at, util, _ in rows
        ]
        out[f"{name}/memory_used"] = [
            {"step": step, "at": at, "value": memory} for step, at, _, memory in rows
        ]
    return out


def idle_counts(db: sqlite_utils.Database, run_id: str, below: float) -> dict[str, tuple[int, int]]:
    """GPU label -> (samples under ``below`` percent busy, samples with a utilisation reading),
    counted by SQLite (a run of days has hundreds of thousands of samples)."""
    gpus = gpus_of(db, run_id)
    rows = db.execute(
        "select node, gpu, sum(utilization < ?), count(utilization) from gpu_samples "
        "where run_id = ? group by node, gpu order by node, gpu",
        [below, run_id],
    ).fetchall()
    return {label(gpus, str(n), int(g)): (int(idle or 0), int(total)) for n, g, idle, total in rows}
