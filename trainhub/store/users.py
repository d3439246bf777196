"""Users and their API tokens. Plain functions of a sqlite_utils.Database."""

from __future__ import annotations

import time
from typing import Any

import sqlite_utils

from trainhub.accounts import AccountError, User
from trainhub.store.tokens import hash_token

# A token's last use is written at most this often (not on every request).
TOKEN_TOUCH_SECONDS = 60.0


class UserExists(ValueError):
    pass


def create_user(db: sqlite_utils.Database, name: str, role: str, password_hash: str | None) -> User:
    if db.table("users").count_where("name = ? collate nocase", [name]):
        raise UserExists(f"A user named '{name}' exists already")
    db.table("users").insert(
        {
            "name": name,
            "password_hash": password_hash,
            "role": role,
            "disabled": 0,
            "created_at": time.time(),
        }
    )
    found = user_by_name(db, name)
    assert found is not None
    return found


def user_row(db: sqlite_utils.Database, name: str) -> dict[str, Any] | None:
    rows = list(db.table("users").rows_where("name = ?", [name], limit=1))
    return rows[0] if rows else None


def user_by_name(db: sqlite_utils.Database, name: str) -> User | None:
    row = user_row(db, name)
    return User.from_row(row) if row else None


def user_by_id(db: sqlite_utils.Database, user_id: int) -> User | None:
    rows = list(db.table("users").rows_where("id = ?", [user_id], limit=1))
    return User.from_row(rows[0]) if rows else None


def list_users(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every user with their role, state, last login and how many runs they submitted."""
    return [
        dict(r)
        for r in db.query(
            "select u.id, u.name, u.role, u.disabled, u.created_at, u.last_login_at, "
            "(u.password_hash is not null) as has_password, "
            "(select count(*) from runs where runs.user = u.name) as runs "
            "from users u order by u.name"
        )
    ]


def update_user(db: sqlite_utils.Database, name: str, **fields: Any) -> User | None:
    row = user_row(db, name)
    if row is None:
        return None
    db.table("users").update(row["id"], fields)
    return user_by_name(db, name)


def set_password(db: sqlite_utils.Database, name: str, password_hash: str) -> User | None:
    """A new password; every login session from before it ends."""
    return update_user(db, name, password_hash=password_hash, password_changed_at=time.time())


def set_role(db: sqlite_utils.Database, name: str, role: str) -> User | None:
    """A new role; the last enabled admin stays an admin (someone must be able to manage)."""
    row = user_row(db, name)
    if row is None:
        return None
    if row["role"] == "admin" and role != "admin":
        others = db.execute(
            "select count(*) from users where role = 'admin' and disabled = 0 and id != ?",
            [row["id"]],
        ).fetchone()[0]
        if not others:
            raise AccountError("role", f"{name} is the last admin: make another admin first")
    return update_user(db, name, role=role)


def session_user(db: sqlite_utils.Database, user_id: int) -> tuple[User, float | None] | None:
    """The user of a login session and when their password was last set."""
    rows = list(db.table("users").rows_where("id = ?", [user_id], limit=1))
    if not rows:
        return None
    return User.from_row(rows[0]), rows[0].get("password_changed_at")


def user_for_token(db: sqlite_utils.Database, token: str) -> tuple[User, int, float | None] | None:
    """The user an unrevoked token belongs to, the token's id and its last use."""
    row = db.execute(
        "select u.id, u.name, u.role, u.disabled, t.id, t.last_used_at from tokens t "
        "join users u on u.id = t.user_id where t.hash = ? and t.revoked_at is null",
        [hash_token(token)],
    ).fetchone()
    if row is None:
        return None
    user = User(id=row[0], name=row[1], role=row[2], disabled=bool(row[3]))
    return user, int(row[4]), row[5]


def touch_token(db: sqlite_utils.Database, token_id: int, now: float) -> None:
    db.execute("update tokens set last_used_at = ? where id = ?", [now, token_id])


def list_tokens(db: sqlite_utils.Database, user_id: int) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in db.query(
            "select id, name, created_at, last_used_at from tokens "
            "where user_id = ? and revoked_at is null order by id",
            [user_id],
        )
    ]


def revoke_token(db: sqlite_utils.Database, user_id: int, token_id: int) -> bool:
    cursor = db.execute(
        "update tokens set revoked_at = ? where id = ? and user_id = ? and revoked_at is null",
        [time.time(), token_id, user_id],
    )
    return cursor.rowcount > 0
