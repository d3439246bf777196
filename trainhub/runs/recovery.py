"""When things go wrong around a run: a server restart, a node that goes away or comes back, an error
inside trainhub while driving it. Each path ends the run, queues it again, or re-attaches it."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from trainhub.nodes.pool import LOCAL, NO_ENGINE, NodeUnavailable, engine_answers
from trainhub.runs.artifacts import is_disk_full, says_disk_full
from trainhub.runs.driving import Attempt
from trainhub.runtime.docker import LABEL_INSTANCE, LABEL_KIND
from trainhub.store import nodes as node_store
from trainhub.store import runs as q
from trainhub.store import slurm as slurm_store
from trainhub.store.lifecycle import ACTIVE, EndReason, RunStatus
from trainhub.store.runs import RunKind

if TYPE_CHECKING:
    from trainhub.runs.launcher import Launcher

log = logging.getLogger("trainhub.recovery")
RESTARTED = "queued again after a server restart"


def driven(runs: list[q.RunRow]) -> list[q.RunRow]:
    """The runs a task drives: submitted scripts. An interactive run has no container or process
    to find or lose; its client ends it (or the interactive watchdog does)."""
    return [run for run in runs if run.kind == RunKind.SCRIPT]


async def recover(launcher: Launcher) -> None:
    """At start: re-attach the runs whose container or process lives on, queue again those whose
    script never started, end the rest; remove containers of ours that belong to no active run."""
    control = launcher.control
    active = await control.db.read(lambda db: driven(q.runs_with_status(db, ACTIVE)))
    slurm = await control.db.read(slurm_store.target_names)
    active = [run for run in active if run.target not in slurm]  # trainhub.slurm re-attaches them
    engine = launcher.engine
    found = {}
    if engine is not None:  # no engine on the server's machine: no containers of ours there
        found = await asyncio.to_thread(engine.find_run_containers, launcher.instance)
    for run in active:
        canceling = run.status is RunStatus.CANCEL_REQUESTED
        before_script = run.status in (RunStatus.PREPARING, RunStatus.STARTING)
        if not run.spec.get("use_docker", True):
            ref = str(run.pid) if launcher.processes.survives(run) else None
            lost_message = (
                "The run's process is gone (it ended while the server was down, "
                "without an exit code)"
            )
            lost_reason = EndReason.PROCESS_GONE
        elif run.node not in (None, LOCAL):
            await _recover_remote(launcher, run)
            continue
        else:
            container = found.get(run.id)
            ref = container.id if container is not None and container.status != "created" else None
            if container is not None and ref is None and engine is not None:
                await asyncio.to_thread(engine.remove, container.id)
            lost_message = (
                "The run's container is gone (it was removed while the server was down); "
                "its outputs could not be collected"
                if engine is not None
                else f"The run's container cannot be found: {NO_ENGINE}"
            )
            lost_reason = EndReason.CONTAINER_GONE
        if ref is not None:
            log.info("re-attaching run %s (%s)", run.id, ref[:12])
            if before_script:
                await control.move(run.id, RunStatus.RUNNING)
            if canceling:
                control.request_cancel(run.id)
            launcher.spawn(run.id, ref)
        elif canceling:
            await control.canceled(run.id)
        elif before_script:  # the script never started: start over from the queue
            await control.requeue(run.id, RESTARTED)
        else:
            await control.fail(run.id, lost_reason, lost_message)
    known = {run.id for run in active}
    for run_id, container in found.items():
        if run_id not in known and engine is not None:
            await asyncio.to_thread(engine.remove, container.id)


async def _recover_remote(launcher: Launcher, run: q.RunRow) -> None:
    """A run on a remote node: re-attach once its node is back (within the grace period)."""
    assert run.node is not None
    if run.status in (RunStatus.PREPARING, RunStatus.STARTING):
        await launcher.control.requeue(run.id, RESTARTED)
        return
    if run.status is RunStatus.CANCEL_REQUESTED:
        launcher.control.request_cancel(run.id)
    launcher.track(run.id, node_trouble(launcher, run.id, run.node))


async def node_ready(launcher: Launcher, node: str) -> None:
    """A node is (back) up: remove containers of ours whose run no longer belongs there (it failed
    with node_lost or was queued again while the node was away), and look for queued work."""
    db = launcher.control.db
    engine = launcher.pool.engine(node)
    found = await asyncio.to_thread(engine.find_run_containers, launcher.instance)
    active = await db.read(lambda conn: q.runs_with_status(conn, ACTIVE))
    held = await db.read(node_store.allocations)
    here = {run.id for run in active if run.node == node}
    here |= {row["run_id"] for row in held if row["node"] == node}  # multi-node runs
    for run_id, container in found.items():
        if run_id not in here:
            log.info("node %s: removing the leftover container of run %s", node, run_id)
            await asyncio.to_thread(engine.remove, container.id)
    # The data volumes of runs that ended while the node was away (or the server was down).
    ours = [f"{LABEL_INSTANCE}={launcher.instance}", f"{LABEL_KIND}=run-data"]
    volumes = await asyncio.to_thread(engine.volume_runs, ours)
    for volume, run_id in volumes.items():
        if run_id not in here:
            log.info("node %s: removing the leftover data volume of run %s", node, run_id)
            await asyncio.to_thread(engine.remove_volume, volume)
    launcher.control.wake()


async def node_trouble(launcher: Launcher, run_id: str, node: str) -> None:
    """The node of a run went away: wait for it within the grace period, then re-attach the run;
    otherwise the run fails with node_lost (or is queued again; its allocation is freed with it)."""
    pool, control = launcher.pool, launcher.control
    grace = control.settings.node_lost_grace_seconds - pool.unreachable_for(node)
    log.warning(
        "run %s: node %s is %s; waiting up to %.0f s", run_id, node, pool.state(node), grace
    )
    if await pool.wait_ready(node, max(grace, 0.0)):
        found = await asyncio.to_thread(pool.engine(node).find_run_containers, launcher.instance)
        container = found.get(run_id)
        if container is not None:
            log.info("run %s: node %s is back; re-attaching", run_id, node)
            await launcher.drive(run_id, container.id)
            return
        attempt = await launcher.attempt(run_id)
        if attempt is not None:  # a multi-node run's containers on its other nodes go with it
            await launcher.containers.abandon(attempt)
        await control.fail(
            run_id,
            EndReason.CONTAINER_GONE,
            f"The run's container on node {node} is gone (removed while the node was away)",
        )
        return
    grace_s = f"{control.settings.node_lost_grace_seconds:.0f} s"
    attempt = await launcher.attempt(run_id)
    if attempt is not None:  # a multi-node run's containers on its other nodes go with it
        await launcher.containers.abandon(attempt)
    await control.lost(
        run_id,
        f"node {node} unreachable for more than {grace_s}",
        f"Node {node} has been unreachable for more than {grace_s}",
    )


async def after_error(launcher: Launcher, attempt: Attempt, exc: Exception) -> None:
    """An exception escaped a run's driving: its node went away (wait for it), another node of a
    multi-node run did (lost), or trainhub failed (the run fails with the sentence)."""
    pool, run_id = launcher.pool, attempt.run_id
    fresh = await launcher.control.db.read(lambda db: q.get_run(db, run_id))
    node = (fresh.node if fresh else None) or attempt.node
    if node != LOCAL and not pool.schedulable(node) and pool.state(node) != "Draining":
        await node_trouble(launcher, run_id, node)
        return
    if await _engine_down(launcher, node):  # reached, but its engine stopped under the run
        await pool.engine_down(node)
        await launcher.driver_for(attempt).abandon(attempt)
        why = f"The Docker engine of node {node} stopped or restarted while the run was starting"
        await launcher.control.lost(run_id, why, why, EndReason.ENGINE_RESTARTED)
        return
    gone = [w for w in attempt.workers if pool.state(w) not in ("Ready", "Draining")]
    try:
        await launcher.driver_for(attempt).abandon(attempt)
    except NodeUnavailable:
        pass
    if gone:  # another node of a multi-node run went away while it started or ran
        await launcher.control.lost(
            run_id,
            f"node {gone[0]} was lost while the run used it",
            f"Node {gone[0]}, one of this run's nodes, was lost while the run used it",
        )
        return
    await internal_error(launcher, run_id, exc)


async def _engine_down(launcher: Launcher, node: str) -> bool:
    pool = launcher.pool
    if not pool.connected(node):
        return False
    try:
        engine = pool.engine(node)
    except NodeUnavailable:
        return True  # the node is reached but marked Unreachable: its engine does not answer
    return not await engine_answers(engine)


async def internal_error(launcher: Launcher, run_id: str, exc: BaseException) -> None:
    """An error inside trainhub: logged once with its traceback; the run ends Failed with the
    exception's sentence, whatever of it exists is removed and what it held is freed."""
    log.error("run %s failed inside trainhub", run_id, exc_info=exc)
    sentence = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        attempt = await launcher.attempt(run_id)
        if attempt is not None:
            await launcher.driver_for(attempt).abandon(attempt)
    except Exception as cleanup:  # noqa: BLE001 - the run must end even if its cleanup fails
        log.warning("run %s: could not remove what it left: %s", run_id, cleanup)
    if is_disk_full(exc):  # the server's own disk (a copy, the database)
        await launcher.control.fail(run_id, EndReason.DISK_FULL, sentence)
        return
    if says_disk_full(sentence):  # the engine's own sentence: its node's disk is full
        await launcher.control.fail(run_id, EndReason.NODE_DISK_FULL, sentence)
        return
    await launcher.control.fail(
        run_id, EndReason.INTERNAL_ERROR, f"trainhub failed while running this: {sentence}"
    )


async def watchdog(launcher: Launcher, suspects: set[str]) -> set[str]:
    """Runs in a driven status with no task driving them (a crash path nobody thought of): those
    seen so on two passes in a row (a claim may be between its write and its task) are ended.
    Returns this pass's suspects."""
    active = await launcher.control.db.read(lambda db: driven(q.runs_with_status(db, ACTIVE)))
    orphans = {run.id for run in active if not launcher.driving(run.id)}
    for run_id in sorted(orphans & suspects):
        log.error("run %s: no task drives it any more; ending it", run_id)
        await internal_error(
            launcher, run_id, RuntimeError("the task driving this run ended without ending it")
        )
    return orphans - suspects
