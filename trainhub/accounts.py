"""Users, roles and what each may do. The same rules serve the API and the pages.

Two roles: ``admin`` manages nodes, targets, environments, images, users and every run; ``member``
submits runs and cancels, tags and clones their own, and sees everyone's. Passwords are hashed with
argon2 (argon2-cffi); API tokens are random and stored hashed (:mod:`trainhub.store.tokens`).
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

ROLES = ("admin", "member")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024

_hasher = PasswordHasher()


class Forbidden(Exception):
    """The user may not do this (HTTP 403)."""


class AccountError(ValueError):
    """Bad input for an account (HTTP 422), naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    disabled: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> User:
        return cls(
            id=int(row["id"]),
            name=str(row["name"]),
            role=str(row["role"]),
            disabled=bool(row["disabled"]),
        )


def require_admin(user: User, action: str = "do this") -> None:
    if not user.is_admin:
        raise Forbidden(f"Only an admin may {action}; {user.name} is a {user.role}")


def can_change_run(user: User, run_user: str | None) -> bool:
    return user.is_admin or (run_user is not None and run_user == user.name)


def require_run_owner(user: User, run_id: str, run_user: str | None, action: str) -> None:
    if not can_change_run(user, run_user):
        raise Forbidden(
            f"Only {run_user or 'its submitter'} or an admin may {action} run {run_id}; "
            f"{user.name} is a {user.role}"
        )


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise AccountError(
            "name",
            "A user name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError("role", f"Unknown role {role!r}: one of {', '.join(ROLES)}")
    return role


def hash_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(
            "password", f"A password is {MIN_PASSWORD} to {MAX_PASSWORD} characters long"
        )
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash or not password or len(password) > MAX_PASSWORD:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class LoginThrottle:
    """Wrong passwords per user name and per client address, over a sliding minute."""

    def __init__(self, per_minute: int, window: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and now - times[0] > self.window:
            times.popleft()
        return times

    def retry_after(self, name: str, address: str) -> int:
        """Seconds until another try is allowed; 0 when one is allowed now."""
        now = time.monotonic()
        wait = 0.0
        for key in (f"user:{name.lower()}", f"addr:{address}"):
            times = self._recent(key, now)
            if len(times) >= self.per_minute:
                wait = max(wait, self.window - (now - times[0]))
        return int(wait) + 1 if wait > 0 else 0

    def failed(self, name: str, address: str) -> None:
        now = time.monotonic()
        for key in (f"user:{name.lower()}", f"addr:{address}"):
            self._recent(key, now).append(now)
        if len(self._failures) > 10_000:  # forget idle keys so the map cannot grow without end
            for key in [k for k, v in self._failures.items() if not v]:
                del self._failures[key]
