"""Typed exceptions the SDK raises; each carries the server's own sentence."""

from __future__ import annotations


class TrainhubError(Exception):
    """Base class of every trainhub SDK error."""


class SnapshotError(TrainhubError):
    """The source directory cannot be packed (limits, links out of the folder)."""


class ConfigError(TrainhubError):
    """No workspace configuration found, or it is not valid."""


class ServiceError(TrainhubError):
    """The server answered with an error: ``status`` and its message (and the field, if any)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(
            f"{message} (HTTP {status})"
            if not field
            else f"{message} (HTTP {status}, field '{field}')"
        )
        self.status = status
        self.message = message
        self.field = field


class AuthenticationError(ServiceError):
    """401: no token or a wrong one."""


class RunNotFoundError(ServiceError):
    """404 for a run or a file."""


class ValidationError(ServiceError):
    """422: the estimator or the snapshot was refused; ``field`` names the culprit."""


class ActivityFailedException(TrainhubError):
    """Azure ML's name: ``wait_for_completion(raise_on_error=True)`` on a run that did not complete."""

    def __init__(self, run_id: str, status: str, error: dict[str, object] | None) -> None:
        message = (error or {}).get("message") or status
        super().__init__(f"Run {run_id} ended {status}: {message}")
        self.run_id = run_id
        self.status = status
        self.error = error
