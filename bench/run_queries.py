"""Run queries at lab scale: ``GET /api/v1/runs`` (what ``experiment.get_runs()`` and
``Run.list()`` page through) with each filter, on a database of 100,000 runs.

The runs are those of bench/dashboard.py (experiments, users, tags, a rare tag), and besides:
sweep-like trees (in each block of 100 runs, the first is a parent of the next 30), interactive
runs (one in 20), properties on one run in 50 (``dataset``, ``commit``) and a rare one on one in
1,000 (``paper``). The baseline is the listing as it was before these filters (children
included, no filter), measured in the same run. Each figure is the wall time of one request of
100 runs (the SDK's page) on loopback, median and p95 of ``--reps`` requests after a warm-up.

Usage: .venv/bin/python bench/run_queries.py [--reps 200] [--runs 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _server import running_server  # bench/ is this script's folder
from dashboard import Figure, bulk_runs, measure

BLOCK = 100  # runs per sweep-like block: the first is the parent of the next CHILDREN
CHILDREN = 30
INTERACTIVE_EVERY = 20
PROPERTY_EVERY = 50
RARE_PROPERTY_EVERY = 1000
SPEC = {"entry_script": "train.py", "compute_target": "local"}


def prepare(data: Path, count: int) -> dict[str, Any]:
    """A server's first start (its migrations), then the runs written straight into SQLite."""
    with running_server(data) as api:
        api.get("/healthz").raise_for_status()
    conn = sqlite3.connect(data / "data" / "trainhub.db")
    try:
        began = time.perf_counter()
        with conn:
            bulk_runs(conn, SPEC, count)
            # The API answers a run's error as the JSON the launcher stores, not bare text.
            conn.execute("update runs set error = json_object('message', error) where error != ''")
            ids = [r[0] for r in conn.execute("select id from runs order by seq")]
            trees, kinds, props = [], [], []
            for i, run_id in enumerate(ids):
                if 0 < i % BLOCK <= CHILDREN:
                    trees.append((ids[i - i % BLOCK], run_id))
                if i % INTERACTIVE_EVERY == 7:
                    kinds.append(("interactive", run_id))
                if i % PROPERTY_EVERY == 3:
                    value = {"dataset": f"mnist:v{i % 3}", "commit": f"{i:08x}"}
                    if i % RARE_PROPERTY_EVERY == 3:
                        value["paper"] = "yes"
                    props.append((json.dumps(value), run_id))
            conn.executemany("update runs set parent_id = ? where id = ?", trees)
            conn.executemany("update runs set kind = ? where id = ?", kinds)
            conn.executemany("update runs set properties = ? where id = ?", props)
        conn.execute("analyze")
        print(
            f"database: {count:,} runs ({len(trees):,} children, {len(kinds):,} interactive, "
            f"{len(props):,} with properties) in {time.perf_counter() - began:.0f} s"
        )
        parent = ids[(len(ids) // BLOCK - 1) * BLOCK]  # the parent of a late block
        return {"parent": parent, "experiment": "exp-03"}
    finally:
        conn.close()


def figures(api: httpx.Client, picked: dict[str, Any], reps: int) -> list[Figure]:
    def listing(**params: str) -> Any:
        return lambda: api.get("/api/v1/runs", params={"limit": "100", **params})

    cases: list[tuple[str, dict[str, str]]] = [
        ("baseline: every run (children too)", {"include_children": "true"}),
        ("top-level runs (the default now)", {}),
        ("one experiment, top level", {"experiment": picked["experiment"]}),
        ("tag team=vision", {"tag": "team=vision"}),
        ("rare tag (paper)", {"tag": "paper"}),
        ("property key (dataset, 1 run in 50)", {"property": "dataset"}),
        ("property dataset=mnist:v1", {"property": "dataset=mnist:v1"}),
        ("rare property (paper, 1 in 1,000)", {"property": "paper"}),
        ("property no run has", {"property": "nobody"}),
        ("experiment + property", {"experiment": picked["experiment"], "property": "dataset"}),
        ("kind=interactive", {"kind": "interactive"}),
        ("kind=script, children too", {"kind": "script", "include_children": "true"}),
        ("children of one parent", {"parent": picked["parent"]}),
        (
            "status Failed + tag + property",
            {"status": "Failed", "tag": "team", "property": "dataset"},
        ),
    ]
    return [measure(name, listing(**params), reps) for name, params in cases]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="build the data here and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="trainhub-bench-queries-"))
    try:
        saved = folder / "picked.json"
        if saved.exists():
            picked = json.loads(saved.read_text())
        else:
            picked = prepare(folder, args.runs)
            saved.write_text(json.dumps(picked))
        with running_server(folder) as api:
            found = figures(api, picked, args.reps)
        print(f"requests per figure: {args.reps} after 5 warm-up, 100 runs a page, on loopback")
        for figure in found:
            print(figure.line())
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
