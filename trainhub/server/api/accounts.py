"""``/api/v1/users``, ``/api/v1/tokens`` and ``/api/v1/me``: accounts and each user's API tokens.

Admins create, list, disable and enable users; every user manages their own tokens. A token is
shown once, when it is made; only its hash is stored.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException

from trainhub.accounts import AccountError, Forbidden, User, check_name, check_role, hash_password
from trainhub.runs.service import iso
from trainhub.server.api import decode
from trainhub.server.auth import admin_only
from trainhub.store import users as user_store
from trainhub.store.tokens import add_token, generate_token

MAX_TOKEN_NAME = 100


class UserIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    role: str = "member"
    password: str | None = None
    token: bool = False


class PasswordIn(msgspec.Struct, forbid_unknown_fields=True):
    password: str


class RoleIn(msgspec.Struct, forbid_unknown_fields=True):
    role: str


class TokenIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str


def check_token_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_TOKEN_NAME:
        raise AccountError("name", f"A token's name is 1 to {MAX_TOKEN_NAME} characters long")
    return name


def public_user(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "role": row["role"],
        "disabled": bool(row["disabled"]),
        "hasPassword": bool(row.get("has_password")),
        "runs": row.get("runs", 0),
        "createdTimeUtc": iso(row["created_at"]),
        "lastLoginTimeUtc": iso(row.get("last_login_at")),
    }


def public_token(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "createdTimeUtc": iso(row["created_at"]),
        "lastUsedTimeUtc": iso(row["last_used_at"]),
    }


async def create_user(db: Any, data: UserIn) -> tuple[dict[str, Any], str | None]:
    """The new user (public fields) and, when asked for, a first API token for them."""
    name = check_name(data.name)
    role = check_role(data.role)
    password_hash = hash_password(data.password) if data.password is not None else None
    user = await db.write(lambda conn: user_store.create_user(conn, name, role, password_hash))
    token = None
    if data.token:
        token = generate_token()
        await db.write(lambda conn: add_token(conn, "first token", token, user_id=user.id))
    rows = await db.read(user_store.list_users)
    return public_user(next(r for r in rows if r["name"] == name)), token


async def create_token(db: Any, user: User, name: str) -> dict[str, Any]:
    clean = check_token_name(name)
    token = generate_token()
    token_id = await db.write(lambda conn: add_token(conn, clean, token, user_id=user.id))
    rows = await db.read(lambda conn: user_store.list_tokens(conn, user.id))
    return {**public_token(next(r for r in rows if r["id"] == token_id)), "token": token}


class AccountsController(Controller):
    path = "/api/v1"
    tags = ["accounts"]

    @get("/me", summary="Who this token belongs to")
    async def me(self, request: Request[User, Any, Any]) -> dict[str, Any]:
        return {"name": request.user.name, "role": request.user.role}

    @get("/users", summary="Every user (admins)", guards=[admin_only])
    async def list_users(self, state: State) -> dict[str, Any]:
        rows = await state.db.read(user_store.list_users)
        return {"users": [public_user(r) for r in rows]}

    @post("/users", status_code=201, summary="Create a user (admins)", guards=[admin_only])
    async def add_user(self, state: State, request: Request[User, Any, Any]) -> dict[str, Any]:
        data = decode(await request.body(), UserIn)
        user, token = await create_user(state.db, data)
        return {**user, **({"token": token} if token else {})}

    @post(
        "/users/{name:str}/{action:str}",
        status_code=200,
        summary="disable or enable a user (admins)",
        guards=[admin_only],
    )
    async def act(
        self, state: State, request: Request[User, Any, Any], name: str, action: str
    ) -> dict[str, Any]:
        if action not in ("disable", "enable"):
            raise NotFoundException(f"Unknown action '{action}': disable or enable")
        if action == "disable" and name == request.user.name:
            raise AccountError("name", "You cannot disable yourself")
        found = await state.db.write(
            lambda conn: user_store.update_user(conn, name, disabled=int(action == "disable"))
        )
        if found is None:
            raise NotFoundException(f"No user named '{name}'")
        rows = await state.db.read(user_store.list_users)
        return public_user(next(r for r in rows if r["name"] == name))

    @post(
        "/users/{name:str}/role",
        status_code=200,
        summary="Make a user an admin or a member (admins)",
        guards=[admin_only],
    )
    async def set_role(
        self, state: State, request: Request[User, Any, Any], name: str
    ) -> dict[str, Any]:
        role = check_role(decode(await request.body(), RoleIn).role)
        found = await state.db.write(lambda conn: user_store.set_role(conn, name, role))
        if found is None:
            raise NotFoundException(f"No user named '{name}'")
        rows = await state.db.read(user_store.list_users)
        return public_user(next(r for r in rows if r["name"] == name))

    @post("/users/{name:str}/password", status_code=200, summary="Set a password (admins, or self)")
    async def set_password(
        self, state: State, request: Request[User, Any, Any], name: str
    ) -> dict[str, Any]:
        if name != request.user.name and not request.user.is_admin:
            raise Forbidden("Only an admin may set another user's password")
        data = decode(await request.body(), PasswordIn)
        password_hash = hash_password(data.password)
        found = await state.db.write(
            lambda conn: user_store.set_password(conn, name, password_hash)
        )
        if found is None:
            raise NotFoundException(f"No user named '{name}'")
        return {"name": name, "passwordSet": True}

    @get("/tokens", summary="Your API tokens (never their values)")
    async def list_tokens(self, state: State, request: Request[User, Any, Any]) -> dict[str, Any]:
        rows = await state.db.read(lambda conn: user_store.list_tokens(conn, request.user.id))
        return {"tokens": [public_token(r) for r in rows]}

    @post("/tokens", status_code=201, summary="Make an API token (its value is shown only now)")
    async def add_token(self, state: State, request: Request[User, Any, Any]) -> dict[str, Any]:
        data = decode(await request.body(), TokenIn)
        return await create_token(state.db, request.user, data.name)

    @delete("/tokens/{token_id:int}", status_code=200, summary="Revoke one of your tokens")
    async def revoke(
        self, state: State, request: Request[User, Any, Any], token_id: int
    ) -> dict[str, Any]:
        done = await state.db.write(
            lambda conn: user_store.revoke_token(conn, request.user.id, token_id)
        )
        if not done:
            raise NotFoundException(f"You have no token with id {token_id}")
        return {"revoked": token_id}
