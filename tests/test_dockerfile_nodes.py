"""A Dockerfile environment in a two-node MPI run on the test bed's nodes (tests/testbed.py): each node
builds the Dockerfile's image on its own engine under the same tag, every rank runs in it, and the next
run finds it on both. Run under the test-bed lock."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests import testbed
from tests.conftest import Server
from tests.helpers import submit, wait_for_status

DOCKERFILE = (
    "FROM trainhub/base:cpu\n"
    f"RUN echo 'built on this node {uuid.uuid4().hex}' > /etc/trainhub-dockerfile.txt\n"
)
SCRIPT = """
import os
from mpi4py import MPI

said = open("/etc/trainhub-dockerfile.txt").read().split()[:4]
print("rank", MPI.COMM_WORLD.Get_rank(), "on", os.environ["TRAINHUB_NODE"], *said, flush=True)
"""


def on_node(node: testbed.Node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "-H", f"unix://{node.docker_socket}", *args], capture_output=True, text=True
    )


@pytest.fixture
def built(bed: dict[str, testbed.Node]) -> Iterator[list[str]]:
    """The images the test built; removed from the nodes afterwards (the bed is shared)."""
    images: list[str] = []
    yield images
    for node in bed.values():
        for image in images:
            on_node(node, "rmi", image)


@pytest.mark.docker
def test_each_node_builds_the_dockerfile_image_under_one_tag_and_reuses_it(
    cluster: Server, bed: dict[str, testbed.Node], built: list[str]
) -> None:
    client: httpx.Client = cluster.client()

    def two_node_run() -> tuple[dict[str, object], str, str]:
        run = submit(
            client,
            SCRIPT,
            compute_target="gpu-cluster",
            node_count=2,
            distributed_training={"type": "mpi", "process_count_per_node": 1},
            custom_dockerfile=DOCKERFILE,
            experiment="dockerfile-nodes",
        )
        done = wait_for_status(client, run["runId"], timeout=180)
        log = client.get(f"/api/v1/runs/{run['runId']}/logs").text
        build = client.get(f"/api/v1/runs/{run['runId']}/files/logs/build_log.txt").text
        assert done["status"] == "Completed", (done["error"], log, build)
        return done, log, build

    done, log, build = two_node_run()
    image = str(done["runDefinition"]["image"])  # type: ignore[index]
    built.append(image)
    assert sorted(
        line.split(" on ", 1)[1] for line in log.splitlines() if line.startswith("rank")
    ) == [
        "n1 built on this node",
        "n2 built on this node",
    ]
    for name in ("n1", "n2"):
        assert f"Building environment image {image} on node {name} from the environment's" in build
        assert on_node(bed[name], "image", "inspect", image).returncode == 0

    again, _, build = two_node_run()
    assert again["runDefinition"]["image"] == image  # type: ignore[index]
    for name in ("n1", "n2"):
        assert f"Environment image {image} is present on node {name}: reused, no build." in build
    assert "Step 1/" not in build
