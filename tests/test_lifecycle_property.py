"""A property of the lifecycle, against the real store: whatever the order of submits, claims, starts,
cancels, node losses and returns, ends, retries, server restarts and stray status changes, no run ever
takes an edge outside ``lifecycle.EDGES``, no allocation outlives a run's hold, and no GPU is given to
two runs at once.

The moves are made by the product's own code (``store.lifecycle``, the scheduler's ``plan`` over what
``runs.dispatch`` asks, ``RunControl`` and the cancel service); only the node pool is a small table of
two GPU nodes whose reachability the test flips.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from trainhub.accounts import User
from trainhub.runs import dispatch, service
from trainhub.runs.driving import RunControl
from trainhub.scheduler import plan
from trainhub.settings import Settings
from trainhub.spec import EstimatorSpec
from trainhub.store import Database, lifecycle
from trainhub.store import nodes as node_store
from trainhub.store import runs as q
from trainhub.store.lifecycle import ACTIVE, EDGES, EndReason, RunStatus

ADMIN = User(id=1, name="admin", role="admin")

T = TypeVar("T")
NODES = {"n1": 2, "n2": 2}  # name -> GPUs
LOCAL_SLOTS = 2


class Pool:
    """The node pool as the dispatcher sees it: GPU inventory and whether a node answers."""

    def __init__(self) -> None:
        self.remotes = list(NODES)
        self.up = dict.fromkeys(NODES, True)

    def inventory(self, name: str) -> dict[str, Any]:
        count = NODES.get(name, 0)
        gpus = [{"index": i, "uuid": f"GPU-{name}-{i}"} for i in range(count)]
        return {"gpus": gpus, "cpus": 2, "gpu_support": True}

    def schedulable(self, name: str) -> bool:
        return self.up.get(name, True)

    def state(self, name: str) -> str:
        return "Ready" if self.schedulable(name) else "Unreachable"


class CancelSignals:
    def __init__(self, control: RunControl) -> None:
        self.control = control

    def request_cancel(self, run_id: str) -> None:
        self.control.request_cancel(run_id)


class Lifecycle(RuleBasedStateMachine):
    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.db = Database(Path(self.dir.name) / "t.db")
        self.control = RunControl(Settings(data=Path(self.dir.name)), self.db)
        self.pool = Pool()
        self.loop = asyncio.new_event_loop()
        self.db.write_sync(
            lambda c: c.table("targets").insert(
                {"name": "gpus", "nodes": json.dumps(list(NODES)), "created_at": 0.0}
            )
        )

    def teardown(self) -> None:
        self.loop.close()
        self.db.close()
        self.dir.cleanup()

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    def get(self, run_id: str) -> q.RunRow:
        run = self.db.read_sync(lambda c: q.get_run(c, run_id))
        assert run is not None
        return run

    # What happens to runs ---------------------------------------------------------------------
    @rule(
        target=runs,
        gpu=st.booleans(),
        node_count=st.integers(1, 2),
        per_node=st.integers(1, 2),
        retries=st.integers(0, 2),
    )
    def submit(self, gpu: bool, node_count: int, per_node: int, retries: int) -> str:
        target = "gpus" if gpu or node_count > 1 else "local"
        spec = {
            "entry_script": "train.py",
            "use_gpu": gpu,
            "node_count": node_count,
            "process_count_per_node": per_node,
            "compute_target": target,
        }
        run = self.db.write_sync(
            lambda c: q.insert_run(
                c, experiment="e", spec=spec, snapshot="s", target=target, max_retries=retries
            )
        )
        return run.id

    @rule()
    def schedule(self) -> None:
        """One pass of the launcher's claim: plan over the queue, claim what was placed."""
        queued = self.db.read_sync(lambda c: q.runs_with_status(c, [RunStatus.QUEUED]))
        held = self.db.read_sync(node_store.allocations)
        targets = self.db.read_sync(node_store.list_targets)
        result = plan(
            dispatch.requests_for(queued, targets),
            dispatch.capacities(self.pool, LOCAL_SLOTS, held),  # type: ignore[arg-type]
            now=0.0,
            starve_after=600.0,
        )
        for allocation in result.allocations:
            self.db.write_sync(
                lambda c, a=allocation: lifecycle.claim(c, a.run_id, a.placements)  # type: ignore[misc]
            )

    @rule(run_id=runs, step=st.integers(1, 2))
    def start(self, run_id: str, step: int) -> None:
        """Image ready (Starting), then the script started (Running), as ``drive`` applies them."""
        self.run(self.control.move(run_id, RunStatus.STARTING, expect=[RunStatus.PREPARING]))
        if step == 2:
            self.run(self.control.move(run_id, RunStatus.RUNNING, expect=[RunStatus.STARTING]))

    @rule(run_id=runs)
    def cancel(self, run_id: str) -> None:
        try:
            self.run(service.cancel(self.db, CancelSignals(self.control), run_id, ADMIN))  # type: ignore[arg-type]
        except service.RunConflict:
            assert self.get(run_id).status.is_terminal()

    @rule(run_id=runs, exit_code=st.sampled_from([0, 0, 1, None]))
    def script_ends(self, run_id: str, exit_code: int | None) -> None:
        """The script's end as ``drive`` handles it: Finalizing, results, the end status."""
        run = self.get(run_id)
        if run.status not in (RunStatus.RUNNING, RunStatus.FINALIZING, RunStatus.CANCEL_REQUESTED):
            return
        stopped = None
        if not self.run(
            self.control.move(
                run_id, RunStatus.FINALIZING, expect=[RunStatus.RUNNING, RunStatus.FINALIZING]
            )
        ):
            stopped = EndReason.CANCELED
        spec = msgspec.convert(run.spec, EstimatorSpec)
        self.run(self.control.finish(run, spec, exit_code, stopped))

    @rule(node=st.sampled_from(list(NODES)))
    def node_lost(self, node: str) -> None:
        """A node goes away past its grace: each run on it is retried or fails with node_lost."""
        self.pool.up[node] = False
        held = self.db.read_sync(node_store.allocations)
        for run_id in sorted({row["run_id"] for row in held if row["node"] == node}):
            self.run(self.control.lost(run_id, f"node {node} lost", f"Node {node} was lost"))

    @rule(node=st.sampled_from(list(NODES)))
    def node_back(self, node: str) -> None:
        self.pool.up[node] = True

    @rule(containers_survive=st.booleans())
    def server_restart(self, containers_survive: bool) -> None:
        """What recovery does at start for each active run (containers found or not)."""
        self.control = RunControl(self.control.settings, self.db)
        for run in self.db.read_sync(lambda c: q.runs_with_status(c, ACTIVE)):
            before_script = run.status in (RunStatus.PREPARING, RunStatus.STARTING)
            if containers_survive and not before_script:
                continue  # re-attached: it goes on where it was
            if run.status is RunStatus.CANCEL_REQUESTED:
                self.run(self.control.canceled(run.id))
            elif before_script:
                self.run(self.control.requeue(run.id, "queued again after a server restart"))
            else:
                self.run(self.control.fail(run.id, EndReason.CONTAINER_GONE, "gone"))

    @rule(run_id=runs, to=st.sampled_from(list(RunStatus)))
    def stray_move(self, run_id: str, to: RunStatus) -> None:
        """A status change from anywhere, as a bug would ask for: applied only if it is an edge."""
        before = self.get(run_id).status
        try:
            moved = self.run(self.control.move(run_id, to))
        except lifecycle.EdgeRefused:
            moved = False
            assert (before, to) == (RunStatus.QUEUED, RunStatus.PREPARING)
        assert moved == (
            (before, to) in EDGES and (before, to) != (RunStatus.QUEUED, RunStatus.PREPARING)
        )

    @rule(run_id=consumes(runs))
    def forget(self, run_id: str) -> None:
        """Keeps the bundle small; the run stays in the store."""

    # What must always hold ---------------------------------------------------------------------
    @invariant()
    def every_status_change_is_an_edge_of_the_table(self) -> None:
        events = self.db.read_sync(
            lambda c: list(c.table("run_events").rows_where(order_by="run_id, id"))
        )
        last: dict[str, str] = {}
        for event in events:
            status = RunStatus(event["status"])
            previous = last.get(event["run_id"])
            if previous is None:
                assert status is RunStatus.QUEUED
            else:
                assert (RunStatus(previous), status) in EDGES, (previous, status)
            last[event["run_id"]] = event["status"]
        runs = {r.id: r.status for r in self.db.read_sync(lambda c: q.list_runs(c, limit=10_000))}
        assert {k: RunStatus(v) for k, v in last.items()} == runs

    @invariant()
    def only_claimed_unfinished_runs_hold_anything(self) -> None:
        held = self.db.read_sync(node_store.allocations)
        statuses = {
            r.id: r.status for r in self.db.read_sync(lambda c: q.list_runs(c, limit=10_000))
        }
        holders = {row["run_id"] for row in held}
        for run_id in holders:
            assert statuses[run_id] in ACTIVE, (run_id, statuses[run_id])
        for run_id, status in statuses.items():
            if status in ACTIVE:
                assert run_id in holders, (run_id, status)

    @invariant()
    def no_gpu_is_given_to_two_runs(self) -> None:
        held = self.db.read_sync(node_store.allocations)
        seen: dict[tuple[str, int], str] = {}
        slots: dict[str, int] = {}
        for row in held:
            for gpu in row["gpus"]:
                assert (row["node"], gpu) not in seen, (row, seen)
                seen[(row["node"], gpu)] = row["run_id"]
            slots[row["node"]] = slots.get(row["node"], 0) + int(row["slots"])
        assert slots.get("local", 0) <= LOCAL_SLOTS


Lifecycle.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_lifecycle_property = Lifecycle.TestCase
