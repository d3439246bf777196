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
    return bool(db.table("tokens").count_where("is_admin = 1"))


def add_token(db: sqlite_utils.Database, name: str, token: str, *, is_admin: bool) -> None:
    db.table("tokens").insert(
        {
            "name": name,
            "hash": hash_token(token),
            "is_admin": int(is_admin),
            "created_at": time.time(),
        }
    )


def find_token(db: sqlite_utils.Database, token: str) -> dict[str, object] | None:
    rows = list(db.table("tokens").rows_where("hash = ?", [hash_token(token)], limit=1))
    return rows[0] if rows else None
