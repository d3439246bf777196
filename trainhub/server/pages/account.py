"""Logging in and out. The session cookie holds the user's id and when it was last used."""

from __future__ import annotations

import time
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from trainhub.accounts import LoginThrottle, User, verify_password
from trainhub.store import users as user_store


def safe_next(target: str | None) -> str:
    """Only a path on this server (never ``//evil`` or ``https://evil``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class AccountPages(Controller):
    include_in_schema = False

    @get("/", sync_to_thread=False)
    def home(self) -> Redirect:
        return Redirect("/runs")

    @get("/login")
    async def login_page(
        self, request: Request[Any, Any, Any], next: str | None = None
    ) -> Template:
        return Template("login.html", context={"next": safe_next(next), "error": None, "name": ""})

    @post("/login", status_code=200)
    async def login(
        self,
        request: Request[Any, Any, Any],
        state: State,
        data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
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
        request.set_session({"uid": user.id, "seen": now})
        return Redirect(target, status_code=303)

    @post("/logout", status_code=303)
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        request.clear_session()
        return Redirect("/login", status_code=303)
