"""API tokens: random, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
import time

import sqlite_utils

TOKEN_PREFIX = "th_"


def hash_token(token: str) -> str:
    # Tokens are 256-bit random values, so a plain (unsalted) SHA-256 is enough to make a stolen
    # database useless and still allows a constant-time lookup by hash.
    return hashlib.sha256(token.encode()).hexdigest()


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def has_admin(db: sqlite_utils.Database) -> bool:
    """Whether some admin holds a token that works."""
    row = db.execute(
        "select count(*) from tokens t join users u on u.id = t.user_id "
        "where u.role = 'admin' and u.disabled = 0 and t.revoked_at is null"
    ).fetchone()
    return bool(row[0])


def admin_id(db: sqlite_utils.Database) -> int:
    """The first-start admin's user id (the migration creates the user ``admin``)."""
    return int(db.execute("select id from users where name = 'admin'").fetchone()[0])


def add_token(
    db: sqlite_utils.Database, name: str, token: str, *, user_id: int, is_admin: bool = False
) -> int:
    """Store a new token (its hash) for ``user_id``; returns the token's id."""
    return int(
        db.table("tokens")  # type: ignore[arg-type]
        .insert(
            {
                "name": name,
                "hash": hash_token(token),
                "is_admin": int(is_admin),
                "created_at": time.time(),
                "user_id": user_id,
            }
        )
        .last_pk
    )


def find_token(db: sqlite_utils.Database, token: str) -> dict[str, object] | None:
    rows = list(db.table("tokens").rows_where("hash = ?", [hash_token(token)], limit=1))
    return rows[0] if rows else None
