"""``trainhub users ...`` and ``trainhub tokens ...`` as a person types them, against the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable

import pytest

from tests.conftest import TOKEN, Server
from tests.helpers import add_user, login

Cli = Callable[..., subprocess.CompletedProcess[str]]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cli_as(server: Server, token: str) -> Cli:
    """``trainhub ARGS`` with ``token``, stdin given as ``input``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINHUB_")}
    env.update({"TRAINHUB_URL": server.url, "TRAINHUB_TOKEN": token})

    def run(*args: str, input: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "trainhub", *args],
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,  # no terminal: a password prompt reads stdin
        )

    return run


@pytest.fixture
def admin_cli(server: Server) -> Cli:
    return cli_as(server, TOKEN)


def test_users_add_with_a_password_from_stdin_and_a_first_token(
    server: Server, admin_cli: Cli
) -> None:
    name = unique("wes")
    made = admin_cli("users", "add", name, "--password-stdin", "--token", input="wes-password\n")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("th_") and "\n" not in token
    assert f"Created member {name}" in made.stderr and "shown once" in made.stderr
    assert server.client(token).get("/api/v1/me").json() == {"name": name, "role": "member"}
    assert login(server.url, name, "wes-password").get("/account").status_code == 200

    boss = unique("xena")
    plain = admin_cli("users", "add", boss, "--role", "admin", input="pw-typed-at-the-prompt\n" * 2)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == f"Created admin {boss}"
    assert "th_" not in plain.stdout + plain.stderr  # a token only with --token
    assert login(server.url, boss, "pw-typed-at-the-prompt").get("/account").status_code == 200


def test_users_add_refuses_bad_input_naming_the_field(admin_cli: Cli) -> None:
    bad = admin_cli("users", "add", "no/slash", "--password-stdin", input="long-enough\n")
    assert bad.returncode == 1 and "field 'name'" in bad.stderr
    short = admin_cli("users", "add", unique("yan"), "--password-stdin", input="short\n")
    assert short.returncode == 1 and "field 'password'" in short.stderr
    assert "8 to 1024 characters" in short.stderr
    role = admin_cli("users", "add", unique("yan"), "--role", "root", "--no-password")
    assert role.returncode == 2 and "'root' is not one of" in role.stderr


def test_users_list_disable_enable_and_passwd(server: Server, admin_cli: Cli) -> None:
    name = unique("zed")
    member_token = add_user(server.client(), name)
    member = server.client(member_token)
    table = admin_cli("users", "list")
    assert table.returncode == 0, table.stderr
    line = next(row for row in table.stdout.splitlines() if name in row)
    assert "member" in line and "active" in line and "never" in line
    listed = json.loads(admin_cli("users", "list", "--json").stdout)
    assert {"name": name, "role": "member", "disabled": False}.items() <= next(
        u for u in listed if u["name"] == name
    ).items()

    disabled = admin_cli("users", "disable", name)
    assert disabled.returncode == 0 and disabled.stdout.strip() == f"{name}: disabled"
    assert member.get("/api/v1/me").status_code == 401
    assert next(
        u for u in json.loads(admin_cli("users", "list", "--json").stdout) if u["name"] == name
    )["disabled"]
    enabled = admin_cli("users", "enable", name)
    assert enabled.returncode == 0 and enabled.stdout.strip() == f"{name}: active"
    assert member.get("/api/v1/me").status_code == 200

    passwd = admin_cli("users", "passwd", name, "--password-stdin", input="set-by-the-admin\n")
    assert passwd.returncode == 0 and passwd.stdout.strip() == f"{name}: password set"
    assert login(server.url, name, "set-by-the-admin").get("/account").status_code == 200

    promoted = admin_cli("users", "role", name, "admin")
    assert promoted.returncode == 0 and promoted.stdout.strip() == f"{name}: admin"
    assert member.get("/api/v1/users").status_code == 200
    assert admin_cli("users", "role", name, "member").returncode == 0
    assert member.get("/api/v1/users").status_code == 403

    missing = admin_cli("users", "disable", "nobody-at-all")
    assert missing.returncode == 1 and "No user named 'nobody-at-all'" in missing.stderr


def test_a_member_is_refused_the_users_commands(server: Server) -> None:
    member = cli_as(server, add_user(server.client(), unique("amy")))
    for args in (("users", "list"), ("users", "disable", "admin")):
        refused = member(*args)
        assert refused.returncode == 1, args
        assert "Only an admin may do this" in refused.stderr and "HTTP 403" in refused.stderr
    added = member("users", "add", unique("bob"), "--no-password")
    assert added.returncode == 1 and "HTTP 403" in added.stderr


def test_tokens_create_list_and_revoke_your_own(server: Server) -> None:
    name = unique("cy")
    cli = cli_as(server, add_user(server.client(), name))
    empty_name = cli("tokens", "create", "  ")
    assert empty_name.returncode == 1 and "field 'name'" in empty_name.stderr

    made = cli("tokens", "create", "training box")
    assert made.returncode == 0, made.stderr
    value = made.stdout.strip()
    assert value.startswith("th_") and "shown once" in made.stderr
    assert server.client(value).get("/api/v1/me").json()["name"] == name

    table = cli("tokens", "list")
    assert table.returncode == 0 and "training box" in table.stdout
    assert value not in table.stdout
    listed = json.loads(cli("tokens", "list", "--json").stdout)
    box = next(t for t in listed if t["name"] == "training box")
    assert box["lastUsedTimeUtc"] is not None and "token" not in box

    revoked = cli("tokens", "revoke", str(box["id"]))
    assert revoked.returncode == 0 and revoked.stdout.strip() == f"revoked token {box['id']}"
    assert server.client(value).get("/api/v1/me").status_code == 401
    assert "training box" not in cli("tokens", "list").stdout
    again = cli("tokens", "revoke", str(box["id"]))
    assert again.returncode == 1 and f"You have no token with id {box['id']}" in again.stderr


def test_help_describes_every_command() -> None:
    for args in (("users",), ("users", "add"), ("tokens",), ("tokens", "create")):
        shown = subprocess.run(
            [sys.executable, "-m", "trainhub", *args, "--help"], capture_output=True, text=True
        )
        assert shown.returncode == 0 and "Usage:" in shown.stdout, args
    users_help = subprocess.run(
        [sys.executable, "-m", "trainhub", "users", "add", "--help"], capture_output=True, text=True
    ).stdout
    assert "--password-stdin" in users_help and "--token" in users_help and "--role" in users_help
