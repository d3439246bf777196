"""Node administration as an admin types it: ``trainhub node add/show/trust/disable/enable/remove``
against the real server and a real node of the test bed (tests/testbed.py, fixtures in
tests/conftest.py).

The node is n1 added a second time, as ``n1b``: the shared nodes n1 and n2 and their targets stay as
the other tests expect them, whatever these tests do to ``n1b``."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests import testbed
from tests.conftest import TOKEN, Server
from tests.helpers import cli_for, get_run, submit, wait_for_log, wait_for_status, wait_until
from tests.test_nodes import GATED_SCRIPT, MPI_WORLD, release

ALIAS = "n1b"
Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(cluster: Server) -> Cli:
    return cli_for(cluster.url, TOKEN)


@pytest.fixture
def alias(cluster: Server, bed: dict[str, testbed.Node]) -> Iterator[testbed.Node]:
    """n1, to be added as n1b by the test; whatever the test left of n1b is removed after it."""
    yield bed["n1"]
    client = cluster.client()
    if client.get(f"/api/v1/nodes/{ALIAS}").status_code != 200:
        return
    for run_id in client.get(f"/api/v1/nodes/{ALIAS}").json()["runs"]:
        client.post(f"/api/v1/runs/{run_id}/cancel")
        wait_for_status(client, run_id, timeout=60)
    client.delete(f"/api/v1/nodes/{ALIAS}")


def _add(cli: Cli, node: testbed.Node) -> subprocess.CompletedProcess[str]:
    return cli(
        "node",
        "add",
        ALIAS,
        "--host",
        node.address,
        "--user",
        "root",
        "--key",
        str(node.client_key),
        "--docker-socket",
        node.docker_socket,
    )


def _wait_reason(client: httpx.Client, run_id: str) -> str:
    wait_until(
        lambda: get_run(client, run_id)["properties"]["waitReason"] is not None,
        "the queued run says why it waits",
    )
    run = get_run(client, run_id)
    assert run["status"] == "Queued"
    return str(run["properties"]["waitReason"])


def test_an_admin_adds_trusts_disables_enables_and_removes_a_node_from_the_cli(
    cli: Cli, nclient: httpx.Client, alias: testbed.Node
) -> None:
    added = _add(cli, alias)
    assert added.returncode == 0, added.stderr
    pinned = " ".join(Path(f"{alias.host_key}.pub").read_text().split()[:2])
    assert added.stdout.splitlines()[:3] == [
        f"Added node {ALIAS} (root@{alias.address}:22), state Ready",
        f"Pinned host key: {pinned}",
        "GPUs: 4 (NVIDIA A100-SXM4-40GB), CPUs: "
        f"{nclient.get('/api/v1/nodes/n1').json()['inventory']['cpus']}, "
        f"Docker {nclient.get('/api/v1/nodes/n1').json()['inventory']['docker_version']}",
    ]
    assert ALIAS in cli("node", "list").stdout
    shown = cli("node", "show", ALIAS).stdout
    assert "State:     Ready" in shown and f"Host key:  {pinned}" in shown
    again = _add(cli, alias)
    assert again.returncode == 1 and f"A node named '{ALIAS}' exists already" in again.stderr

    trusted = cli("node", "trust", ALIAS)
    assert trusted.returncode == 0 and trusted.stdout.strip() == f"{ALIAS}: Ready"
    assert nclient.get(f"/api/v1/nodes/{ALIAS}").json()["hostKey"] == pinned

    # Disabled: no runs are placed there, and a waiting run says why; enabled: it runs there.
    assert cli("node", "disable", ALIAS).stdout.strip() == f"{ALIAS}: Disabled"
    assert cli("target", "create", "only-n1b", "--nodes", ALIAS).returncode == 0
    run = submit(nclient, "print('hi')", compute_target="only-n1b", experiment="admin")
    assert _wait_reason(nclient, run["runId"]) == (
        f"no node of target 'only-n1b' can take runs now ({ALIAS} Disabled)"
    )
    assert cli("node", "enable", ALIAS).stdout.strip() == f"{ALIAS}: Ready"
    done = wait_for_status(nclient, run["runId"], timeout=60)
    assert done["status"] == "Completed" and done["properties"]["node"] == ALIAS

    removed = cli("node", "remove", ALIAS)
    assert removed.returncode == 0 and removed.stdout.strip() == f"removed {ALIAS}"
    assert ALIAS not in cli("node", "list").stdout
    gone = cli("node", "show", ALIAS)
    assert gone.returncode == 1 and f"No node named '{ALIAS}'" in gone.stderr


def test_adding_a_node_that_cannot_be_reached_or_refuses_the_key_says_so(
    cli: Cli, alias: testbed.Node, tmp_path: Path
) -> None:
    unreachable = cli(
        "node",
        "add",
        ALIAS,
        "--host",
        "10.77.0.99",
        "--user",
        "root",
        "--key",
        str(alias.client_key),
    )
    assert unreachable.returncode == 1 and "Cannot reach 10.77.0.99:22" in unreachable.stderr
    stranger = tmp_path / "stranger_key"
    testbed.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger))
    refused = cli(
        "node", "add", ALIAS, "--host", alias.address, "--user", "root", "--key", str(stranger)
    )
    assert refused.returncode == 1
    assert f"root@{alias.address}:22 refused the key {stranger}" in refused.stderr
    assert ALIAS not in cli("node", "list").stdout


def test_remove_is_refused_while_a_run_uses_the_node_and_allowed_after(
    cli: Cli, nclient: httpx.Client, bed: dict[str, testbed.Node], alias: testbed.Node
) -> None:
    assert _add(cli, alias).returncode == 0
    cli("target", "create", "only-n1b", "--nodes", ALIAS)
    run = submit(nclient, GATED_SCRIPT, compute_target="only-n1b", experiment="admin")
    wait_for_log(nclient, run["runId"], f"started on {ALIAS}", timeout=60)
    refused = cli("node", "remove", ALIAS)
    assert refused.returncode == 1
    assert f"Node {ALIAS} has 1 active run(s); drain it and wait, or cancel them" in refused.stderr
    assert nclient.get(f"/api/v1/nodes/{ALIAS}").json()["state"] == "Ready"
    # The run was not disturbed by the attempt.
    release(bed, run["runId"])
    assert wait_for_status(nclient, run["runId"], timeout=60)["status"] == "Completed"
    removed = cli("node", "remove", ALIAS)
    assert removed.returncode == 0 and removed.stdout.strip() == f"removed {ALIAS}"


def test_remove_is_refused_for_the_other_node_of_a_running_multi_node_run(
    cli: Cli, nclient: httpx.Client, bed: dict[str, testbed.Node], alias: testbed.Node
) -> None:
    assert _add(cli, alias).returncode == 0
    cli("target", "create", "n1b-and-n2", "--nodes", f"{ALIAS},n2")
    run = submit(
        nclient,
        MPI_WORLD.replace("{sleep}", "300"),
        compute_target="n1b-and-n2",
        node_count=2,
        distributed_training={"type": "mpi", "process_count_per_node": 1},
        experiment="admin",
    )
    wait_until(
        lambda: all(
            f"rank {r} of 2" in nclient.get(f"/api/v1/runs/{run['runId']}/logs").text
            for r in range(2)
        ),
        "both ranks have said hello",
        timeout=90,
    )
    try:
        # Best fit makes n2 (fewer GPUs left over) the first node: n1b only holds the other rank.
        assert get_run(nclient, run["runId"])["properties"]["node"] == "n2"
        refused = cli("node", "remove", ALIAS)
        assert refused.returncode == 1, refused.stdout
        assert (
            f"Node {ALIAS} has 1 active run(s); drain it and wait, or cancel them" in refused.stderr
        )
        assert get_run(nclient, run["runId"])["status"] == "Running"
    finally:
        nclient.post(f"/api/v1/runs/{run['runId']}/cancel")
    assert wait_for_status(nclient, run["runId"], timeout=60)["status"] == "Canceled"
    assert cli("node", "remove", ALIAS).returncode == 0
