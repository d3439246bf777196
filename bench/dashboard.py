"""The dashboard at lab scale: server time of its pages on a database of 100,000 runs, 1,000,000
metric points and a 200 MB driver log, through a logged-in browser session.

A real server makes the database (its migrations) and one real run (a real spec and run folder);
then, with the server stopped, the rest is written straight into SQLite in the schema the
migrations made, and the server is started again on it. Each figure is the wall time of one request
on loopback (keep-alive), median and p95 of ``--reps`` requests after a warm-up, printed beside the
goal. The log viewer is measured on the 200 MB log and on a small one: its cost must not depend on
the log's size.

Usage: .venv/bin/python bench/dashboard.py [--reps 200] [--runs 100000] [--points 1000000]
       [--log-mb 200] [--keep DIR] [--explain]
(--keep DIR keeps the data; run again with the same DIR to measure the same data again.)
Needs a running Docker engine and the base image (./scripts/test sets both up).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from _server import one_file_snapshot, running_server  # bench/ is this script's folder

GOAL_MEDIAN_MS = 50.0
GOAL_P95_MS = 150.0
PASSWORD = "a-bench-password"
LOGIN = "bench-admin"
USERS = [LOGIN, *(f"member{i:02d}" for i in range(1, 12))]
EXPERIMENTS = [f"exp-{i:02d}" for i in range(1, 20)]
COMPARE_EXPERIMENT = "compare"
COMPARE_RUNS = 50
COMPARE_STEPS = 2_000  # per metric, two metrics per compared run
BIG_RUN_METRICS = ("loss", "accuracy", "lr", "grad_norm")
BIG_RUN_STEPS = 5_000
RARE_TAG_SHARE = 0.001  # a tag on one run in a thousand: its filter reads the most rows
SMALL_LOG = 1024 * 1024  # bytes: 200 times smaller, still more than a screen and a range step
STATUSES = [("Completed", 0.80), ("Failed", 0.12), ("Canceled", 0.08)]
TAG_VALUES = {"team": ["vision", "nlp", "speech", "rl"], "stage": ["sweep", "final", "debug"]}


def bulk_runs(
    conn: sqlite3.Connection, spec: dict[str, Any], count: int, seed: int = 7
) -> dict[str, Any]:
    """``count`` ended runs over several experiments and users, with tags and a status history;
    the last ``COMPARE_RUNS`` are one experiment (to compare). Returns what the bench looks at."""
    rng = random.Random(seed)
    now = time.time()
    start = now - count * 30
    columns = [r[1] for r in conn.execute("pragma table_info(runs)")]
    numbers: dict[str, int] = {
        name: int(
            conn.execute(
                "select coalesce(max(number), 0) from runs where experiment = ?", [name]
            ).fetchone()[0]
        )
        for name in [*EXPERIMENTS, COMPARE_EXPERIMENT]
    }
    conn.executemany(
        "insert or ignore into experiments (name, created_at) values (?, ?)",
        [(name, start) for name in numbers],
    )
    statuses = [s for s, _ in STATUSES]
    weights = [w for _, w in STATUSES]
    runs: list[dict[str, Any]] = []
    events: list[tuple[str, str, float, str | None]] = []
    for i in range(count):
        compare = i >= count - COMPARE_RUNS
        experiment = COMPARE_EXPERIMENT if compare else rng.choice(EXPERIMENTS)
        numbers[experiment] += 1
        created = start + i * 30
        status = "Completed" if compare else rng.choices(statuses, weights)[0]
        run_id = f"{experiment}_{int(created)}_{i:08x}"
        run_spec = dict(spec)
        run_spec["script_params"] = {
            "--lr": round(rng.choice([0.1, 0.03, 0.01, 0.003]), 4),
            "--batch-size": rng.choice([32, 64, 128]),
            "--epochs": 10,
        }
        tags = {k: rng.choice(v) for k, v in TAG_VALUES.items() if rng.random() < 0.7}
        if rng.random() < RARE_TAG_SHARE:
            tags["paper"] = "yes"
        ended = created + 5 + rng.random() * 600
        runs.append(
            {
                "id": run_id,
                "experiment": experiment,
                "number": numbers[experiment],
                "status": status,
                "target": "local",
                "node": "local",
                "spec": json.dumps(run_spec),
                "snapshot": None,
                "exit_code": 0 if status == "Completed" else 1,
                "reason": {"Completed": None, "Failed": "exit_code", "Canceled": "canceled"}[
                    status
                ],
                "error": None if status != "Failed" else "The script exited with code 1",
                "created_at": created,
                "started_at": created + 2,
                "ended_at": ended,
                "tags": json.dumps(tags),
                "context_lines": 0,
                "snapshot_uploaded": 1,
                "priority": 0,
                "max_retries": 0,
                "retries": 0,
                "user": rng.choice(USERS),
            }
        )
        for at, step in ((created, "Queued"), (created + 1, "Starting"), (created + 2, "Running")):
            events.append((run_id, step, at, None))
        events.append((run_id, status, ended, None))
    keys = [k for k in runs[0] if k in columns]
    conn.executemany(
        f"insert into runs ({', '.join(keys)}) values ({', '.join('?' for _ in keys)})",
        [tuple(r[k] for k in keys) for r in runs],
    )
    conn.executemany(
        "insert into run_events (run_id, status, at, detail) values (?, ?, ?, ?)", events
    )
    completed = [r for r in runs[:-COMPARE_RUNS] if r["status"] == "Completed"]
    return {
        "big": completed[-1],
        "small": completed[-2],
        "compared": runs[-COMPARE_RUNS:],
        "spread": [r["id"] for r in completed[:-2]],
        "filter_user": USERS[3],
    }


def metric_rows(
    run_id: str, names: tuple[str, ...], steps: int, at: float, rng: random.Random
) -> Iterator[tuple[str, str, str, int, str, str, float]]:
    for name in names:
        level = rng.random() + 0.5
        for step in range(steps):
            value = level / (1 + step / 50) + rng.random() * 0.01
            yield (run_id, name, "scalar", step, json.dumps(round(value, 6)), "", at + step)


def bulk_metrics(conn: sqlite3.Connection, picked: dict[str, Any], total: int) -> int:
    """``total`` scalar points: two curves per compared run, four long ones on the big run, and
    the rest as short curves spread over other runs."""
    rng = random.Random(11)
    sql = (
        "insert into metrics (run_id, name, kind, step, value, description, at) "
        "values (?, ?, ?, ?, ?, ?, ?)"
    )
    written = 0
    batches: list[Iterator[tuple[str, str, str, int, str, str, float]]] = []
    for run in picked["compared"]:
        batches.append(metric_rows(run["id"], ("loss", "accuracy"), COMPARE_STEPS, 0.0, rng))
        written += 2 * COMPARE_STEPS
    batches.append(metric_rows(picked["big"]["id"], BIG_RUN_METRICS, BIG_RUN_STEPS, 0.0, rng))
    written += len(BIG_RUN_METRICS) * BIG_RUN_STEPS
    per_run = 100  # two curves of 50 steps
    for run_id in picked["spread"][: max(0, (total - written) // per_run)]:
        batches.append(metric_rows(run_id, ("loss", "accuracy"), per_run // 2, 0.0, rng))
        written += per_run
    for batch in batches:
        conn.executemany(sql, batch)
    return written


def write_log(path: Path, target: int) -> int:
    """A driver log of about ``target`` bytes, of numbered training lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = 0
    written = 0
    with path.open("wb") as out:
        while written < target:
            block = "".join(
                f"epoch {n // 1000} step {n} loss={1 / (1 + n / 5000):.6f} lr=0.001 "
                f"throughput=1234.5 samples/s\n"
                for n in range(line, line + min(10_000, 1 + target // 80))
            ).encode()
            out.write(block)
            written += len(block)
            line += min(10_000, 1 + target // 80)
    return written


@dataclass
class Figure:
    name: str
    median_ms: float
    p95_ms: float
    note: str = ""

    def line(self) -> str:
        ok = self.median_ms < GOAL_MEDIAN_MS and self.p95_ms < GOAL_P95_MS
        return (
            f"{self.name:<44} median {self.median_ms:7.1f} ms   p95 {self.p95_ms:7.1f} ms   "
            f"(goal < {GOAL_MEDIAN_MS:.0f} / < {GOAL_P95_MS:.0f} ms) "
            f"{'ok' if ok else 'MISSED'}{'  ' + self.note if self.note else ''}"
        )


def measure(name: str, request: Callable[[], httpx.Response], reps: int, note: str = "") -> Figure:
    for _ in range(5):  # warm-up: templates compiled, pages of the database cached
        request().raise_for_status()
    times: list[float] = []
    for _ in range(reps):
        begin = time.perf_counter()
        response = request()
        times.append((time.perf_counter() - begin) * 1000)
        response.raise_for_status()
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * len(times))) - 1)]
    return Figure(name, statistics.median(times), p95, note)


def log_in(base_url: str, name: str, password: str) -> httpx.Client:
    """A session like a browser's: through the login form, with the CSRF token."""
    client = httpx.Client(base_url=base_url, timeout=120)
    page = client.get("/login").text
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page)
    if token is None:
        raise SystemExit("the login page carries no CSRF token")
    response = client.post(
        "/login",
        data={"name": name, "password": password, "_csrf_token": token.group(1), "next": "/"},
    )
    if response.status_code != 303:
        raise SystemExit(f"logging in failed: {response.status_code} {response.text[:300]}")
    client.headers["x-csrftoken"] = token.group(1)
    return client


def prepare(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The first start (migrations, a real run, the users), then the bulk data, server stopped."""
    with running_server(data) as api:
        for name in USERS:
            role = "admin" if name == LOGIN else "member"
            api.post(
                "/api/v1/users", json={"name": name, "password": PASSWORD, "role": role}
            ).raise_for_status()
        response = api.post(
            "/api/v1/experiments/bench/runs",
            files={
                "estimator": (
                    None,
                    json.dumps({"entry_script": "train.py", "script_params": {"--lr": 0.01}}),
                ),
                "snapshot": (
                    "s.tar.gz",
                    one_file_snapshot("train.py", "print('hello')\n"),
                    "application/gzip",
                ),
            },
        )
        response.raise_for_status()
        real_id = response.json()["runId"]
        deadline = time.monotonic() + 120
        while api.get(f"/api/v1/runs/{real_id}").json()["status"] not in (
            "Completed",
            "Failed",
            "Canceled",
        ):
            if time.monotonic() > deadline:
                raise SystemExit(f"the real run {real_id} did not end")
            time.sleep(0.2)
    db_path = data / "data" / "trainhub.db"
    conn = sqlite3.connect(db_path)
    try:
        spec = json.loads(
            conn.execute("select spec from runs where id = ?", [real_id]).fetchone()[0]
        )
        began = time.perf_counter()
        with conn:
            picked = bulk_runs(conn, spec, args.runs)
            points = bulk_metrics(conn, picked, args.points)
        conn.execute("analyze")
        print(
            f"database: {args.runs:,} runs, {points:,} metric points in "
            f"{time.perf_counter() - began:.0f} s ({db_path.stat().st_size / 1e6:.0f} MB)"
        )
    finally:
        conn.close()
    runs_dir = data / "data" / "runs"
    real_dir = runs_dir / real_id
    for key in ("big", "small"):
        shutil.copytree(real_dir, runs_dir / picked[key]["id"], dirs_exist_ok=True)
    big = write_log(
        runs_dir / picked["big"]["id"] / "logs" / "driver_log.txt", args.log_mb * 1024 * 1024
    )
    small = write_log(runs_dir / picked["small"]["id"] / "logs" / "driver_log.txt", SMALL_LOG)
    picked["big_log"], picked["small_log"] = big, small
    print(f"driver logs: {big / 1e6:.0f} MB and {small / 1e3:.0f} kB")
    return picked


def explain(db_path: Path) -> None:
    """Where the first page of the runs table spends its time: each query function the page
    calls, timed here on the same database, with the plan of every statement it ran."""
    import sqlite_utils

    from trainhub.store import views as store_views

    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    db = sqlite_utils.Database(conn)
    first = store_views.page_of_runs(db, store_views.RunFilter(), limit=50)
    ids = [r.id for r in first.runs]
    steps: dict[str, Callable[[], object]] = {
        "page_of_runs": lambda: store_views.page_of_runs(db, store_views.RunFilter(), limit=50),
        "allocations_of": lambda: store_views.allocations_of(db, ids),
        "metric_names": lambda: store_views.metric_names(db, ids),
        "metric_columns (loss)": lambda: store_views.metric_columns(db, ids, {"loss"}),
    }
    print("the first page's queries, in process:")
    for name, step in steps.items():
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        step()
        conn.set_trace_callback(None)
        times = []
        for _ in range(5):
            begin = time.perf_counter()
            step()
            times.append((time.perf_counter() - begin) * 1000)
        print(f"  {name:<24} median {statistics.median(times):7.1f} ms")
        for sql in statements:
            plan = conn.execute("explain query plan " + sql).fetchall()
            print(f"    {sql[:90]}{'...' if len(sql) > 90 else ''}")
            print(f"      plan: {' | '.join(str(row[-1]) for row in plan)}")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--log-mb", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="build the data here and keep it")
    parser.add_argument(
        "--explain", action="store_true", help="time the first page's queries, with their plans"
    )
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="trainhub-bench-dashboard-"))
    try:
        saved = folder / "picked.json"
        if saved.exists():  # a --keep folder made before: measure again on the same data
            picked = json.loads(saved.read_text())
        else:
            picked = prepare(folder, args)
            saved.write_text(json.dumps(picked))
        if args.explain:
            explain(folder / "data" / "trainhub.db")
        with running_server(folder) as api:
            figures = run_figures(str(api.base_url), picked, args.reps)
        print(f"requests per figure: {args.reps} after 5 warm-up, wall time on loopback")
        for figure in figures:
            print(figure.line())
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def run_figures(base_url: str, picked: dict[str, Any], reps: int) -> list[Figure]:
    page = log_in(base_url, LOGIN, PASSWORD)
    htmx = {"HX-Request": "true"}
    big, small = picked["big"]["id"], picked["small"]["id"]
    big_size, small_size = picked["big_log"], picked["small_log"]
    filtered = urlencode({"user": picked["filter_user"], "status": "Failed"})
    compared = ",".join(r["id"] for r in picked["compared"])
    figures = [
        measure("runs page, first page", lambda: page.get("/runs"), reps),
        measure("runs page, filtered (user + status)", lambda: page.get(f"/runs?{filtered}"), reps),
        measure("runs page, filtered (tag)", lambda: page.get("/runs?tag=team%3Dvision"), reps),
        measure("runs page, filtered (rare tag)", lambda: page.get("/runs?tag=paper"), reps),
        measure(
            "runs page, 2 metric columns (loss, accuracy)",
            lambda: page.get("/runs?metric=loss:last&metric=accuracy:max"),
            reps,
        ),
        measure(
            "runs page, older page (keyset)",
            lambda: page.get("/runs?before=50000"),
            reps,
        ),
        measure("run page (4 metrics x 5,000 steps)", lambda: page.get(f"/runs/{big}"), reps),
        measure(
            "run page's charts (4 metrics)",
            lambda: page.get(f"/runs/{big}/charts", headers=htmx),
            reps,
        ),
        measure(
            f"one chart's points ({BIG_RUN_STEPS:,} steps)",
            lambda: page.get(f"/runs/{big}/metrics/loss.json"),
            reps,
        ),
        measure(
            "log viewer first screen, 200 MB log",
            lambda: page.get(f"/runs/{big}/log", headers=htmx),
            reps,
        ),
        measure(
            "log viewer byte-range step, 200 MB log",
            lambda: page.get(f"/runs/{big}/log/range", params={"before": big_size // 2}),
            reps,
        ),
        measure(
            "log viewer first screen, small log",
            lambda: page.get(f"/runs/{small}/log", headers=htmx),
            reps,
        ),
        measure(
            "log viewer byte-range step, small log",
            lambda: page.get(f"/runs/{small}/log/range", params={"before": small_size // 2}),
            reps,
        ),
        measure("experiments list", lambda: page.get("/experiments"), reps),
        measure(
            f"experiment compare of {COMPARE_RUNS} runs",
            lambda: page.get(
                f"/experiments/{COMPARE_EXPERIMENT}/compare", params={"runs": compared}
            ),
            reps,
        ),
        measure(
            f"its loss curves overlaid ({COMPARE_RUNS} runs x {COMPARE_STEPS:,} points)",
            lambda: page.get(
                f"/experiments/{COMPARE_EXPERIMENT}/compare/metrics",
                params={"runs": compared, "metric": "loss"},
            ),
            reps,
        ),
    ]
    page.close()
    return figures


if __name__ == "__main__":
    main()
