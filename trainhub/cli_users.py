"""``trainhub users ...`` (admins: accounts) and ``trainhub tokens ...`` (everyone: their own API
tokens), all through the HTTP API with the workspace's URL and token (``trainhub login``, or
``TRAINHUB_URL``/``TRAINHUB_TOKEN``). ``trainhub.cli`` adds both groups to the ``trainhub`` command.

A secret (a new token) goes alone on stdout, so ``TOKEN=$(trainhub tokens create ci)`` works; what
is said about it goes to stderr.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from trainhub.cli_common import client_call, emit_json


def register(group: click.Group) -> None:
    group.add_command(users)
    group.add_command(tokens)


def _table(*columns: str) -> Any:
    from rich.table import Table

    return Table(*columns)


def _print(table: Any) -> None:
    from rich.console import Console

    Console().print(table)


def _read_password(from_stdin: bool, whose: str) -> str:
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise click.UsageError("--password-stdin: stdin held no password")
        return line
    value: str = click.prompt(
        f"Password for {whose}", hide_input=True, confirmation_prompt=True, err=True
    )
    return value


# Users (admins) --------------------------------------------------------------------------------
@click.group()
def users() -> None:
    """Accounts (admins): add, list, disable, enable, set a password."""


@users.command("add")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["member", "admin"]),
    default="member",
    show_default=True,
    help="member: submits runs and changes their own; admin: manages everything.",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")
@click.option(
    "--no-password", is_flag=True, help="No password (no dashboard login; API tokens only)."
)
@click.option("--token", "with_token", is_flag=True, help="Also make and print a first API token.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def users_add(
    name: str,
    role: str,
    password_stdin: bool,
    no_password: bool,
    with_token: bool,
    as_json: bool,
) -> None:
    """Add user NAME; the password is prompted for unless --password-stdin or --no-password."""
    if password_stdin and no_password:
        raise click.UsageError("--password-stdin and --no-password exclude each other")
    password = None if no_password else _read_password(password_stdin, name)
    body = {"name": name, "role": role, "password": password, "token": with_token}
    made = client_call(lambda ws: ws.client.json("POST", "/api/v1/users", json=body))
    if as_json:
        emit_json(made)
        return
    said = f"Created {made['role']} {made['name']}"
    if not with_token:
        click.echo(said)
        return
    click.echo(f"{said}. Their first API token (shown once; only its hash is kept):", err=True)
    click.echo(made["token"])


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def users_list(as_json: bool) -> None:
    """Every user with role, state, runs and last login."""
    found = client_call(lambda ws: ws.client.json("GET", "/api/v1/users"))["users"]
    if as_json:
        emit_json(found)
        return
    table = _table("user", "role", "state", "runs", "last login (UTC)", "created (UTC)")
    for u in found:
        state = "disabled" if u["disabled"] else "active"
        if not u["hasPassword"]:
            state += " (tokens only)"
        table.add_row(
            u["name"],
            u["role"],
            state,
            str(u["runs"]),
            u["lastLoginTimeUtc"] or "never",
            u["createdTimeUtc"] or "",
        )
    _print(table)


def _user_action(name: str, action: str, as_json: bool) -> None:
    found = client_call(lambda ws: ws.client.json("POST", f"/api/v1/users/{name}/{action}"))
    if as_json:
        emit_json(found)
    else:
        click.echo(f"{found['name']}: {'disabled' if found['disabled'] else 'active'}")


@users.command("disable")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def users_disable(name: str, as_json: bool) -> None:
    """Stop NAME's logins and API tokens (their runs stay; enable undoes it)."""
    _user_action(name, "disable", as_json)


@users.command("enable")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def users_enable(name: str, as_json: bool) -> None:
    """Let NAME log in and use their API tokens again."""
    _user_action(name, "enable", as_json)


@users.command("role")
@click.argument("name")
@click.argument("role", type=click.Choice(["admin", "member"]))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def users_role(name: str, role: str, as_json: bool) -> None:
    """Make NAME an admin or a member (the last admin stays one)."""
    found = client_call(
        lambda ws: ws.client.json("POST", f"/api/v1/users/{name}/role", json={"role": role})
    )
    if as_json:
        emit_json(found)
    else:
        click.echo(f"{found['name']}: {found['role']}")


@users.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def users_passwd(name: str, password_stdin: bool, as_json: bool) -> None:
    """Set NAME's password (admins; anyone for their own name)."""
    password = _read_password(password_stdin, name)
    found = client_call(
        lambda ws: ws.client.json(
            "POST", f"/api/v1/users/{name}/password", json={"password": password}
        )
    )
    if as_json:
        emit_json(found)
    else:
        click.echo(f"{name}: password set")


# Your API tokens -------------------------------------------------------------------------------
@click.group()
def tokens() -> None:
    """Your own API tokens: list, create, revoke."""


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tokens_list(as_json: bool) -> None:
    """Your tokens with when each was made and last used (never their values)."""
    found = client_call(lambda ws: ws.client.json("GET", "/api/v1/tokens"))["tokens"]
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo("You have no API tokens. Make one with: trainhub tokens create NAME")
        return
    table = _table("id", "name", "created (UTC)", "last used (UTC)")
    for t in found:
        table.add_row(
            str(t["id"]), t["name"], t["createdTimeUtc"] or "", t["lastUsedTimeUtc"] or "never"
        )
    _print(table)


@tokens.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the token's value).")
def tokens_create(name: str, as_json: bool) -> None:
    """Make a token called NAME and print its value (shown only now)."""
    made = client_call(lambda ws: ws.client.json("POST", "/api/v1/tokens", json={"name": name}))
    if as_json:
        emit_json(made)
        return
    click.echo(
        f"Token {made['id']} '{made['name']}' (shown once; only its hash is kept, copy it now):",
        err=True,
    )
    click.echo(made["token"])


@tokens.command("revoke")
@click.argument("token_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tokens_revoke(token_id: int, as_json: bool) -> None:
    """Revoke your token TOKEN_ID (see `trainhub tokens list`): it stops working at once."""
    done = client_call(lambda ws: ws.client.json("DELETE", f"/api/v1/tokens/{token_id}"))
    if as_json:
        emit_json(done)
    else:
        click.echo(f"revoked token {token_id}")
