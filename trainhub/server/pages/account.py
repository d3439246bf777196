"""Logging in and out, your account (password, API tokens) and, for admins, the users.

The session cookie holds the user's id and when it was last used. Every form here works as a plain
POST (with the CSRF token in the form); the row buttons (revoke a token, disable or enable a user)
also work through htmx, which swaps only their row. What may be done is checked here, on the
server, with the same rules and functions as the API (:mod:`trainhub.server.api.accounts`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotFoundException
from litestar.params import Body
from litestar.plugins.htmx import ClientRedirect, HTMXRequest
from litestar.response import Redirect, Template

from trainhub.accounts import (
    ROLES,
    AccountError,
    LoginThrottle,
    User,
    check_role,
    hash_password,
    verify_password,
)
from trainhub.runs.artifacts import human_size
from trainhub.runs.retention import disk_use
from trainhub.server.api.accounts import MAX_TOKEN_NAME, UserIn, create_token, create_user
from trainhub.server.auth import admin_only
from trainhub.store import Database
from trainhub.store import users as user_store
from trainhub.store.users import UserExists

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


def safe_next(target: str | None) -> str:
    """Only a path on this server (never ``//evil`` or ``https://evil``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def when(ts: float | None, never: str = "never") -> str:
    if ts is None:
        return never
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def form_error(form: str, exc: AccountError | UserExists) -> dict[str, str]:
    """An error shown beside ``form``, naming its field."""
    if isinstance(exc, UserExists):
        return {"form": form, "field": "name", "message": str(exc)}
    return {"form": form, "field": exc.field, "message": exc.message}


def token_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "created": when(row["created_at"]),
        "last_used": when(row["last_used_at"]),
    }


def user_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "role": row["role"],
        "disabled": bool(row["disabled"]),
        "has_password": bool(row["has_password"]),
        "runs": row["runs"],
        "created": when(row["created_at"]),
        "last_login": when(row["last_login_at"]),
    }


async def one_user(db: Database, name: str) -> dict[str, Any]:
    rows = await db.read(user_store.list_users)
    for row in rows:
        if row["name"] == name:
            return user_row(row)
    raise NotFoundException(f"No user named '{name}'")


class AccountPages(Controller):
    include_in_schema = False

    @get("/", sync_to_thread=False)
    def home(self) -> Redirect:
        return Redirect("/runs")

    # Logging in and out ------------------------------------------------------------------------
    @get("/login")
    async def login_page(
        self, request: Request[Any, Any, Any], next: str | None = None
    ) -> Template:
        return Template("login.html", context={"next": safe_next(next), "error": None, "name": ""})

    @post("/login", status_code=200)
    async def login(
        self, request: Request[Any, Any, Any], state: State, data: Form
    ) -> Template | Redirect:
        name = str(data.get("name", "")).strip()[:64]
        password = str(data.get("password", ""))
        target = safe_next(data.get("next"))
        address = request.client.host if request.client else "unknown"
        limiter: LoginThrottle = state.login_throttle
        wait = limiter.retry_after(name, address)
        if wait:
            return Template(
                "login.html",
                context={
                    "next": target,
                    "name": name,
                    "error": f"Too many wrong passwords: try again in {wait} s",
                },
                status_code=429,
                headers={"Retry-After": str(wait)},
            )
        row = await state.db.read(lambda conn: user_store.user_row(conn, name))
        if row is None or row["disabled"] or not verify_password(row["password_hash"], password):
            limiter.failed(name, address)
            return Template(
                "login.html",
                context={"next": target, "name": name, "error": "Wrong user name or password"},
                status_code=401,
            )
        user = User.from_row(row)
        now = time.time()
        await state.db.write(lambda conn: user_store.update_user(conn, name, last_login_at=now))
        request.set_session({"uid": user.id, "seen": now, "at": now})
        return Redirect(target, status_code=303)

    @post("/logout", status_code=303)
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        request.clear_session()
        return Redirect("/login", status_code=303)

    # Your account: password and API tokens -----------------------------------------------------
    async def _account(
        self,
        state: State,
        user: User,
        *,
        status: int = 200,
        error: dict[str, str] | None = None,
        flash: str | None = None,
        new_token: dict[str, Any] | None = None,
        token_name: str = "",
    ) -> Template:
        rows = await state.db.read(lambda conn: user_store.list_tokens(conn, user.id))
        return Template(
            "account/account.html",
            context={
                "tokens": [token_row(r) for r in rows],
                "error": error,
                "flash": flash,
                "new_token": new_token,
                "token_name": token_name,
                "max_token_name": MAX_TOKEN_NAME,
            },
            status_code=status,
        )

    @get("/account")
    async def account(self, request: HTMXRequest, state: State) -> Template:
        return await self._account(state, request.user)

    @post("/account/tokens", status_code=201)
    async def add_token(self, request: HTMXRequest, state: State, data: Form) -> Template:
        name = str(data.get("name", ""))
        try:
            made = await create_token(state.db, request.user, name)
        except AccountError as exc:
            return await self._account(
                state,
                request.user,
                status=422,
                error=form_error("token", exc),
                token_name=name[: MAX_TOKEN_NAME * 2],
            )
        return await self._account(state, request.user, status=201, new_token=made)

    @post("/account/tokens/{token_id:int}/revoke", status_code=200)
    async def revoke_token(
        self, request: HTMXRequest, state: State, token_id: int
    ) -> Template | Redirect:
        user: User = request.user
        rows = await state.db.read(lambda conn: user_store.list_tokens(conn, user.id))
        found = next((r for r in rows if r["id"] == token_id), None)
        done = found is not None and await state.db.write(
            lambda conn: user_store.revoke_token(conn, user.id, token_id)
        )
        if not done or found is None:
            raise NotFoundException(f"You have no token with id {token_id}")
        if request.htmx:
            return Template("account/_token_revoked.html", context={"token": token_row(found)})
        return Redirect("/account", status_code=303)

    @post("/account/password", status_code=200)
    async def change_password(self, request: HTMXRequest, state: State, data: Form) -> Template:
        user: User = request.user
        current = str(data.get("current_password", ""))
        new = str(data.get("new_password", ""))
        repeated = str(data.get("repeat_password", ""))
        row = await state.db.read(lambda conn: user_store.user_row(conn, user.name))
        try:
            if row is None or not verify_password(row["password_hash"], current):
                raise AccountError("current_password", "Your current password is not right")
            if new != repeated:
                raise AccountError("repeat_password", "The two new passwords differ")
            password_hash = hash_password(new)
        except AccountError as exc:
            field = "new_password" if exc.field == "password" else exc.field
            return await self._account(
                state,
                user,
                status=422,
                error={"form": "password", "field": field, "message": exc.message},
            )
        await state.db.write(lambda conn: user_store.set_password(conn, user.name, password_hash))
        # Other sessions of this user end; this one goes on (it logs in again, in effect).
        now = time.time()
        request.set_session({"uid": user.id, "seen": now, "at": now})
        return await self._account(state, user, flash="Your password was changed")

    # Users (admins) ----------------------------------------------------------------------------
    async def _users(
        self,
        state: State,
        *,
        status: int = 200,
        error: dict[str, str] | None = None,
        flash: str | None = None,
        form: dict[str, str] | None = None,
    ) -> Template:
        rows = await state.db.read(user_store.list_users)
        return Template(
            "account/users.html",
            context={
                "users": [user_row(r) for r in rows],
                "disk": await disk_use(state.db),
                "human_size": human_size,
                "retention_days": state.settings.retention_days,
                "roles": ROLES,
                "error": error,
                "flash": flash,
                "form": form or {"name": "", "role": "member"},
            },
            status_code=status,
        )

    @get("/users", guards=[admin_only])
    async def users(self, state: State) -> Template:
        return await self._users(state)

    @post("/users", guards=[admin_only], status_code=201)
    async def add_user(self, state: State, data: Form) -> Template:
        name = str(data.get("name", "")).strip()
        role = str(data.get("role", "member"))
        password = str(data.get("password", ""))
        try:
            await create_user(state.db, UserIn(name=name, role=role, password=password))
        except (AccountError, UserExists) as exc:
            return await self._users(
                state,
                status=409 if isinstance(exc, UserExists) else 422,
                error=form_error("add", exc),
                form={"name": name[:200], "role": role},
            )
        return await self._users(
            state, status=201, flash=f"Created {role} {name}: they can log in now"
        )

    async def _user(
        self,
        state: State,
        name: str,
        *,
        status: int = 200,
        error: dict[str, str] | None = None,
        flash: str | None = None,
    ) -> Template:
        found = await one_user(state.db, name)
        return Template(
            "account/user.html",
            context={"user": found, "error": error, "flash": flash},
            status_code=status,
        )

    @get("/users/{name:str}", guards=[admin_only])
    async def user(self, state: State, name: str) -> Template:
        return await self._user(state, name)

    @post("/users/{name:str}/disable", guards=[admin_only], status_code=200)
    async def disable(
        self, request: HTMXRequest, state: State, name: str, data: Form
    ) -> Template | Redirect | ClientRedirect:
        return await self._set_disabled(request, state, name, True, data)

    @post("/users/{name:str}/enable", guards=[admin_only], status_code=200)
    async def enable(
        self, request: HTMXRequest, state: State, name: str, data: Form
    ) -> Template | Redirect | ClientRedirect:
        return await self._set_disabled(request, state, name, False, data)

    async def _set_disabled(
        self, request: HTMXRequest, state: State, name: str, disabled: bool, data: dict[str, str]
    ) -> Template | Redirect | ClientRedirect:
        if disabled and name == request.user.name:
            raise AccountError("name", "You cannot disable yourself")
        found = await state.db.write(
            lambda conn: user_store.update_user(conn, name, disabled=int(disabled))
        )
        if found is None:
            raise NotFoundException(f"No user named '{name}'")
        target = safe_next(data.get("next") or f"/users/{name}")
        if request.htmx and data.get("row"):
            row = await one_user(state.db, name)
            return Template("account/_user_row.html", context={"u": row})
        if request.htmx:
            return ClientRedirect(target)
        return Redirect(target, status_code=303)

    @post("/users/{name:str}/role", guards=[admin_only], status_code=200)
    async def set_role(self, state: State, name: str, data: Form) -> Template:
        await one_user(state.db, name)  # a 404 for a missing user before anything else
        try:
            role = check_role(str(data.get("role", "")))
            await state.db.write(lambda conn: user_store.set_role(conn, name, role))
        except AccountError as exc:
            return await self._user(state, name, status=422, error=form_error("role", exc))
        return await self._user(
            state, name, flash=f"{name} is now {'an' if role == 'admin' else 'a'} {role}"
        )

    @post("/users/{name:str}/password", guards=[admin_only], status_code=200)
    async def set_password(self, state: State, name: str, data: Form) -> Template:
        await one_user(state.db, name)  # a 404 for a missing user before anything else
        try:
            password_hash = hash_password(str(data.get("password", "")))
        except AccountError as exc:
            return await self._user(state, name, status=422, error=form_error("password", exc))
        await state.db.write(lambda conn: user_store.set_password(conn, name, password_hash))
        return await self._user(state, name, flash=f"The password of {name} was set")
