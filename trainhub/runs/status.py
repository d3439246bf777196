"""Run statuses (Azure ML's names) and the reasons a run ends."""

from __future__ import annotations

from enum import StrEnum


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
# Statuses in which a container may exist for the run.
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
    LAUNCH_ERROR = "launch_error"
    NODE_LOST = "node_lost"
    BUILD_FAILED = "build_failed"
    PROCESS_GONE = "process_gone"

    def __str__(self) -> str:
        return self.value


DRIVER_LOG = "logs/driver_log.txt"
BUILD_LOG = "logs/build_log.txt"
