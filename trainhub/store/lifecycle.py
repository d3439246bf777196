"""How a run moves: its statuses (Azure ML's names), the reasons it ends, and the one table of edges.

This module is the only code that changes a run's status. ``move`` checks the edge against ``EDGES``
and applies it in the caller's write transaction (it runs on the store's writer thread): the new
status, the history event, and what the edge does to the run's allocation — taken when a run is
claimed, freed when it ends or goes back to the queue, kept otherwise. An edge outside the table is
refused and logged, never applied. ``grep -n "def " trainhub/store/lifecycle.py`` lists every way a
run can move.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from enum import Enum, StrEnum
from typing import Any, Protocol

import sqlite_utils

log = logging.getLogger("trainhub.lifecycle")


class RunStatus(StrEnum):
    QUEUED = "Queued"
    PREPARING = "Preparing"
    STARTING = "Starting"
    RUNNING = "Running"
    FINALIZING = "Finalizing"
    CANCEL_REQUESTED = "CancelRequested"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"

    def is_terminal(self) -> bool:
        return self in TERMINAL

    def __str__(self) -> str:
        return self.value


TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED})
# Statuses in which a container or process may exist for the run.
ACTIVE = frozenset(
    {
        RunStatus.PREPARING,
        RunStatus.STARTING,
        RunStatus.RUNNING,
        RunStatus.FINALIZING,
        RunStatus.CANCEL_REQUESTED,
    }
)


class EndReason(StrEnum):
    EXIT_CODE = "exit_code"
    TIMEOUT = "timeout"
    CANCELED = "canceled"
    IMAGE_MISSING = "image_missing"
    CONTAINER_GONE = "container_gone"
    INTERNAL_ERROR = "internal_error"  # an error inside trainhub while it drove the run
    NODE_LOST = "node_lost"
    BUILD_FAILED = "build_failed"
    PROCESS_GONE = "process_gone"
    DISK_FULL = "disk_full"  # the server's data disk filled up while results were copied
    NODE_DISK_FULL = "node_disk_full"  # the node's own disk (image build, container writes)
    ENGINE_RESTARTED = "engine_restarted"  # the node's Docker engine stopped or restarted
    DATA_UNAVAILABLE = "data_unavailable"  # a datastore reference could not be made ready
    ABANDONED = "abandoned"  # an interactive run's client stopped calling

    def __str__(self) -> str:
        return self.value


# Reasons that are the user's doing (Azure ML's error code "UserError"); the rest are "SystemError".
USER_REASONS = frozenset(
    {
        EndReason.EXIT_CODE,
        EndReason.TIMEOUT,
        EndReason.IMAGE_MISSING,
        EndReason.BUILD_FAILED,
        EndReason.DATA_UNAVAILABLE,
        EndReason.ABANDONED,
    }
)


class Hold(Enum):
    """What an edge does to the run's allocation (its GPUs and slots on its nodes)."""

    TAKE = "take"  # the claim: the placements given to ``move`` are recorded with the edge
    KEEP = "keep"
    FREE = "free"


S = RunStatus
_ENDS = (S.COMPLETED, S.FAILED, S.CANCELED)

# (from, to) -> what happens to the allocation. Self-edges update a run's fields without a new event.
EDGES: dict[tuple[RunStatus, RunStatus], Hold] = {
    (S.QUEUED, S.PREPARING): Hold.TAKE,  # claimed by the scheduler with its placements
    (S.QUEUED, S.CANCELED): Hold.FREE,  # canceled before it ever started
    (S.PREPARING, S.STARTING): Hold.KEEP,  # image or environment ready
    (S.PREPARING, S.RUNNING): Hold.KEEP,  # re-attached after a restart: its container was running
    (S.STARTING, S.RUNNING): Hold.KEEP,
    (S.RUNNING, S.RUNNING): Hold.KEEP,
    (S.RUNNING, S.FINALIZING): Hold.KEEP,  # the script ended: results are being copied
    (S.FINALIZING, S.FINALIZING): Hold.KEEP,
    (S.FINALIZING, S.COMPLETED): Hold.FREE,
    (S.RUNNING, S.COMPLETED): Hold.FREE,  # an interactive run (no script) ended by its client
    # Failing: from anywhere a run can be driven (exit code, timeout, node lost, launch error...).
    **{(s, S.FAILED): Hold.FREE for s in ACTIVE},
    # Cancel: requested while something runs, then ended once it has stopped.
    **{(s, S.CANCEL_REQUESTED): Hold.KEEP for s in ACTIVE - {S.CANCEL_REQUESTED}},
    (S.CANCEL_REQUESTED, S.CANCEL_REQUESTED): Hold.KEEP,
    **{(s, S.CANCELED): Hold.FREE for s in ACTIVE},
    # Back to the queue: a server restart before the script ran, or a retry after a lost node.
    **{(s, S.QUEUED): Hold.FREE for s in ACTIVE - {S.CANCEL_REQUESTED}},
}


class Placement(Protocol):
    """What a claimed run holds on one node (the scheduler's placements have this shape)."""

    @property
    def node(self) -> str: ...
    @property
    def gpus(self) -> tuple[int, ...]: ...
    @property
    def slots(self) -> int: ...


class EdgeRefused(Exception):
    """An edge outside ``EDGES`` was asked for (a bug in the caller); nothing was applied."""


def allowed(current: RunStatus, to: RunStatus) -> bool:
    return (current, to) in EDGES


def move(
    db: sqlite_utils.Database,
    run_id: str,
    to: RunStatus,
    *,
    expect: Iterable[RunStatus] | None = None,
    detail: str | None = None,
    placements: Sequence[Placement] = (),
    **fields: Any,
) -> bool:
    """Move a run to ``to`` if its status is still one of ``expect`` (any, when None) and the edge
    is in the table; record the event and take, keep or free its allocation as the edge says.

    Returns False, changing nothing, when the run has moved on meanwhile (load, act, apply) or the
    edge is not in the table (logged: that is a bug in the caller, never applied).
    """
    row = db.execute("select seq, status from runs where id = ?", [run_id]).fetchone()
    if row is None:
        return False
    seq, current = row[0], RunStatus(row[1])
    if expect is not None and current not in set(expect):
        return False
    hold = EDGES.get((current, to))
    if hold is None:
        if not current.is_terminal():  # a terminal run stays where it is: not worth a warning
            log.warning("run %s: refused the edge %s -> %s (not in the table)", run_id, current, to)
        return False
    if (hold is Hold.TAKE) != bool(placements):
        raise EdgeRefused(f"{current} -> {to} takes an allocation exactly when it is a claim")
    now = time.time()
    updates: dict[str, Any] = {"status": to.value, **fields}
    if to is RunStatus.RUNNING and current is not to and "started_at" not in fields:
        updates["started_at"] = now
    if to.is_terminal():
        updates["ended_at"] = now
    if hold is Hold.FREE:
        db.execute("delete from allocations where run_id = ?", [run_id])
    for placement in placements:
        db.table("allocations").insert(
            {
                "run_id": run_id,
                "node": placement.node,
                "gpus": json.dumps(list(placement.gpus)),
                "slots": placement.slots,
                "created_at": now,
            }
        )
    db.table("runs").update(seq, updates)
    if current is not to:
        db.table("run_events").insert(
            {"run_id": run_id, "status": to.value, "at": now, "detail": detail}
        )
    if to.is_terminal():
        _end_children(db, run_id, to, fields)
    return True


def _end_children(
    db: sqlite_utils.Database, run_id: str, to: RunStatus, fields: dict[str, Any]
) -> None:
    """Child runs still open when their parent ends end with it, with its end status (and their
    own children with them), in the same transaction: a script that never closed the children it
    made, a canceled or abandoned parent. Children are interactive runs: nothing of theirs runs."""
    open_children = [
        row[0]
        for row in db.execute(
            "select id from runs where parent_id = ? and kind = 'interactive'"
            " and status not in ('Completed', 'Failed', 'Canceled') order by seq",
            [run_id],
        )
    ]
    extra: dict[str, Any] = {}
    if to is RunStatus.FAILED:
        parent_error = json.loads(fields.get("error") or "{}")
        extra = {
            "reason": fields.get("reason"),
            "error": json.dumps(
                {
                    "code": parent_error.get("code", "UserError"),
                    "reason": fields.get("reason"),
                    "message": f"Its parent run {run_id} failed",
                }
            ),
        }
    elif to is RunStatus.CANCELED:
        extra = {"reason": EndReason.CANCELED.value}
    for child in open_children:
        move(db, child, to, detail=f"its parent run {run_id} ended", **extra)


# The named moves: each is ``move`` with what that edge records. -----------------------------------
def claim(db: sqlite_utils.Database, run_id: str, placements: Sequence[Placement]) -> bool:
    """Queued -> Preparing on the placed node(s), holding what it was given, in one transaction."""
    return move(
        db,
        run_id,
        RunStatus.PREPARING,
        expect=[RunStatus.QUEUED],
        placements=placements,
        node=placements[0].node,
        wait_reason=None,
    )


def fail(
    db: sqlite_utils.Database,
    run_id: str,
    reason: EndReason,
    message: str,
    **fields: Any,
) -> bool:
    """Failed, with the reason and a sentence a person understands (Azure ML's error shape)."""
    error = json.dumps(
        {
            "code": "UserError" if reason in USER_REASONS else "SystemError",
            "reason": reason.value,
            "message": message,
        }
    )
    return move(
        db,
        run_id,
        RunStatus.FAILED,
        detail=reason.value,
        reason=reason.value,
        error=error,
        **fields,
    )


def cancel(db: sqlite_utils.Database, run_id: str) -> bool:
    """Canceled: a queued run at once, a driven one once it has stopped."""
    return move(db, run_id, RunStatus.CANCELED, detail="canceled", reason=EndReason.CANCELED.value)


def request_cancel(db: sqlite_utils.Database, run_id: str, at: float) -> bool:
    return move(
        db,
        run_id,
        RunStatus.CANCEL_REQUESTED,
        expect=ACTIVE - {RunStatus.CANCEL_REQUESTED},
        cancel_requested_at=at,
    )


def complete_interactive(db: sqlite_utils.Database, run_id: str) -> bool:
    """``run.complete()`` of an interactive run: Completed at once (nothing to copy, no Finalizing)."""
    return move(
        db,
        run_id,
        RunStatus.COMPLETED,
        expect=[RunStatus.RUNNING],
        detail="completed by its client",
    )


def fail_interactive(db: sqlite_utils.Database, run_id: str, message: str) -> bool:
    """``run.fail(error_details)`` of an interactive run: Failed with the client's sentence."""
    error = json.dumps({"code": "UserError", "reason": None, "message": message})
    return move(
        db,
        run_id,
        RunStatus.FAILED,
        expect=[RunStatus.RUNNING],
        detail="failed by its client",
        error=error,
    )


def requeue(db: sqlite_utils.Database, run_id: str, why: str, **fields: Any) -> bool:
    """Back to the queue (a restart before the script ran, a retry): frees what it held."""
    return move(
        db,
        run_id,
        RunStatus.QUEUED,
        expect=ACTIVE - {RunStatus.CANCEL_REQUESTED},
        detail=why,
        node=None,
        container_id=None,
        pid=None,
        started_at=None,
        **fields,
    )
