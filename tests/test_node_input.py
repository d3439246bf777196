"""A node's ``user`` and ``host`` reach OpenSSH's command line as ``user@host``: values that ``ssh``
would read as an option (``-oProxyCommand=...``) are refused at registration, naming the field, and
the command line ends its options with ``--`` before the destination anyway."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import TOKEN, Server
from tests.helpers import cli_for
from trainhub.nodes import service
from trainhub.nodes.pool import bulk_forward_command
from trainhub.spec import SpecError
from trainhub.store.nodes import NodeRow


def _node_names(client: httpx.Client) -> list[str]:
    return [n["name"] for n in client.get("/api/v1/nodes").json()["nodes"]]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("host", "-oProxyCommand=touch {marker}"),
        ("user", "-oProxyCommand=touch {marker}"),
        ("host", "10.0.0.1 -oProxyCommand=touch {marker}"),
        ("user", "root@10.0.0.1"),
        ("user", "root\n-oProxyCommand=touch {marker}"),
    ],
)
def test_a_node_address_ssh_would_read_as_an_option_is_422_naming_the_field_and_stores_nothing(
    client: httpx.Client, tmp_path: Path, field: str, value: str
) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("a key file\n")
    marker = tmp_path / "pwned"
    before = _node_names(client)
    body = {"name": "evil", "host": "127.0.0.1", "user": "root", "key_path": str(key)}
    body[field] = value.format(marker=marker)

    response = client.post("/api/v1/nodes", json=body)

    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert response.json()["error"].startswith(f"{field} {body[field]!r} is not")
    assert _node_names(client) == before
    assert client.get("/api/v1/nodes/evil").status_code == 404
    assert not marker.exists()


def test_node_add_from_the_cli_refuses_an_option_as_host(server: Server, tmp_path: Path) -> None:
    cli = cli_for(server.url, TOKEN)
    key = tmp_path / "id_ed25519"
    key.write_text("a key file\n")
    marker = tmp_path / "pwned"

    added = cli(
        "node",
        "add",
        "evil",
        f"--host=-oProxyCommand=touch {marker}",
        "--user",
        "root",
        "--key",
        str(key),
    )

    assert added.returncode == 1
    assert f"error: host '-oProxyCommand=touch {marker}' is not" in added.stderr
    assert "evil" not in cli("node", "list").stdout
    assert not marker.exists()


@pytest.mark.parametrize(
    "host", ["gpu1", "gpu-1.lab.example.org", "10.77.0.11", "fe80::1", "2001:db8::7", "node."]
)
def test_dns_names_and_ip_addresses_are_hosts(host: str) -> None:
    service.check_host(host)


@pytest.mark.parametrize(
    "host", ["", "-gpu1", "gpu1-", "gpu_1", "a b", "a@b", "a..b", "[::1]", "x" * 64 + ".lab"]
)
def test_other_hosts_are_refused(host: str) -> None:
    with pytest.raises(SpecError) as refused:
        service.check_host(host)
    assert refused.value.field == "host"


@pytest.mark.parametrize("user", ["root", "ml-ops", "svc_train", "j.doe", "_build", "u1"])
def test_posix_user_names_are_users(user: str) -> None:
    service.check_user(user)


@pytest.mark.parametrize("user", ["", "-root", "-oProxyCommand=x", "a b", "a@b", "u" * 33, "r\n"])
def test_other_users_are_refused(user: str) -> None:
    with pytest.raises(SpecError) as refused:
        service.check_user(user)
    assert refused.value.field == "user"


def test_the_openssh_command_line_ends_its_options_before_the_destination(tmp_path: Path) -> None:
    # A row as it could be stored before validation existed: the destination still cannot be an option.
    row = NodeRow(
        name="n1",
        host="-oProxyCommand=touch /tmp/pwned",
        port=2222,
        user="root",
        key_path="/keys/id",
        docker_socket="/run/docker.sock",
        host_key="ssh-ed25519 AAAA",
        state="Ready",
        enabled=True,
        draining=False,
        inventory={},
        error=None,
        created_at=0.0,
        last_seen_at=None,
    )

    command = bulk_forward_command("/usr/bin/ssh", row, tmp_path / "kh", tmp_path / "s.sock")

    assert command[-2:] == ["--", "root@-oProxyCommand=touch /tmp/pwned"]
    assert command.count("--") == 1
    assert command[:3] == ["/usr/bin/ssh", "-N", "-T"]
    assert command[command.index("-p") + 1] == "2222"
    assert command[command.index("-L") + 1] == f"{tmp_path / 's.sock'}:/run/docker.sock"
