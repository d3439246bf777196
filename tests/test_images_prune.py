"""``images prune`` on every node, a remote one included (real sshd and dockerd in a network
namespace, TESTBED.md): an unused environment image trainhub built there is removed from that node's
engine, and the image of a run that is still running is kept on every node that has it, so the run
completes. Run under the test-bed lock."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import testbed
from tests.conftest import TOKEN, Server, start_server
from tests.helpers import cli_for, submit, wait_for_log, wait_for_status
from tests.test_environments import make_wheel, remove_env_images

NODE = "p1"
TARGET = "prune-node"
# Waits until the test lets it go (a file created in its container), then ends.
HOLD_SCRIPT = (
    "import os, time, thlocal\nprint('holding', flush=True)\n"
    "while not os.path.exists('/tmp/release'):\n    time.sleep(0.2)\nprint('released', flush=True)\n"
)


@pytest.fixture(scope="module")
def node(docker_ready: None) -> Iterator[testbed.Node]:
    root = Path("/tmp/trainhub-testbed")  # short paths: unix socket names are limited to 108 bytes
    made = testbed.start_node(NODE, 5, root / NODE, testbed.client_key(root), gpus=0)
    yield made
    testbed.stop_node(made.name, made.root)  # the bridge stays: the session's nodes use it


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, node: testbed.Node) -> Iterator[Server]:
    wheels = tmp_path_factory.mktemp("prune-wheels")
    make_wheel(wheels, "thlocal", "1.0", "from the wheel folder")
    # The wheel folder is part of every image's hash: this session's images are new on the node.
    (wheels / f"session-{uuid.uuid4().hex}.txt").write_text("marker\n")
    srv = start_server(tmp_path_factory, "prune-data", wheel_dir=str(wheels))
    client = srv.client()
    testbed.add_to(client, node, NODE)
    assert client.post("/api/v1/targets", json={"name": TARGET, "nodes": [NODE]}).status_code == 201
    yield srv
    srv.cleanup()
    remove_env_images(srv)  # what a failed test left on the local engine
    subprocess.run(
        f"docker -H unix://{node.docker_socket} ps -aq | xargs -r docker -H unix://{node.docker_socket} rm -f",
        shell=True,
        capture_output=True,
    )


def on_node(node: testbed.Node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "-H", f"unix://{node.docker_socket}", *args], capture_output=True, text=True
    )


def present(node: testbed.Node, image: str) -> bool:
    return on_node(node, "image", "inspect", image).returncode == 0


def present_here(image: str) -> bool:
    return (
        subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0
    )


def test_prune_removes_an_unused_image_on_a_remote_node_and_keeps_a_running_runs_image_everywhere(
    remote: Server, node: testbed.Node
) -> None:
    client: httpx.Client = remote.client()
    cli = cli_for(remote.url, TOKEN)
    unused_run = submit(client, "import thlocal\n", compute_target=TARGET, pip_packages=["thlocal"])
    unused = wait_for_status(client, unused_run["runId"], timeout=240)
    assert unused["status"] == "Completed", unused["error"]
    # The same environment on this server (node local) and on the remote node: one tag, two copies.
    local_run = submit(client, "import thlocal\n", pip_packages=["thlocal==1.0"])
    local = wait_for_status(client, local_run["runId"], timeout=240)
    assert local["status"] == "Completed", local["error"]
    held_run = submit(client, HOLD_SCRIPT, compute_target=TARGET, pip_packages=["thlocal==1.0"])
    wait_for_log(client, held_run["runId"], "holding", timeout=240)
    unused_image = unused["runDefinition"]["image"]
    held_image = client.get(f"/api/v1/runs/{held_run['runId']}").json()["runDefinition"]["image"]
    assert local["runDefinition"]["image"] == held_image != unused_image
    assert present(node, unused_image) and present(node, held_image)
    assert present_here(held_image) and not present_here(unused_image)
    listed = {img["image"]: img for img in client.get("/api/v1/images").json()["images"]}
    assert listed[unused_image]["presentOn"] == [NODE] and listed[unused_image]["node"] == NODE
    assert sorted(listed[held_image]["presentOn"]) == ["local", NODE]

    pruned = client.post("/api/v1/images/prune", params={"days": 0}).json()

    assert pruned == {"removed": [unused_image], "kept": [held_image], "unreachableNodes": []}
    assert not present(node, unused_image)
    assert present(node, held_image) and present_here(held_image)
    container = on_node(
        node, "ps", "-q", "--filter", f"label=org.trainhub.run_id={held_run['runId']}"
    ).stdout.split()
    assert len(container) == 1
    assert on_node(node, "exec", container[0], "touch", "/tmp/release").returncode == 0
    held = wait_for_status(client, held_run["runId"], timeout=60)
    assert held["status"] == "Completed", held["error"]
    assert "released" in client.get(f"/api/v1/runs/{held_run['runId']}/logs").text
    assert present(node, held_image)

    # Once no run uses it, the CLI's prune removes it from both nodes.
    again = cli("images", "prune", "--days", "0", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["removed"] == [held_image]
    assert not present(node, held_image) and not present_here(held_image)
    assert client.get("/api/v1/images").json()["images"] == []
