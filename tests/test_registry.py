"""Private registries: a real registry server on loopback with htpasswd authentication."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import httpx
import pytest

from tests.conftest import Server, free_port, start_server
from tests.helpers import submit, wait_for_status

USER = "lab"
PASSWORD = "s3cret-Registry-pw"


@dataclass
class Registry:
    address: str
    image: str


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    htpasswd = subprocess.run(
        ["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True
    )
    (root / "htpasswd").write_text(htpasswd.stdout)
    config = root / "config.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"auth:\n  htpasswd:\n    realm: trainhub-tests\n    path: {root / 'htpasswd'}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=(root / "log").open("wb"),
    )
    address = f"127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://{address}/v2/").status_code == 401:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        engine = docker.from_env()
        repository = f"{address}/team/trainer"
        engine.images.get("trainhub/base:cpu").tag(repository, "1")
        for event in engine.api.push(
            repository,
            "1",
            auth_config={"username": USER, "password": PASSWORD},
            stream=True,
            decode=True,
        ):
            assert "error" not in event, event
        engine.images.remove(f"{repository}:1")  # runs must pull it
        engine.close()
        yield Registry(address=address, image=f"{repository}:1")
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def reg_server(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Server]:
    srv = start_server(tmp_path_factory, "registry-data")
    yield srv
    srv.cleanup()


def _remove_local(image: str) -> None:
    engine = docker.from_env()
    try:
        engine.images.remove(image)
    except docker.errors.ImageNotFound:
        pass
    engine.close()


def test_run_pulls_a_private_image_with_credentials(registry: Registry, reg_server: Server) -> None:
    _remove_local(registry.image)
    client = reg_server.client()
    details = {"address": registry.address, "username": USER, "password": PASSWORD}
    run = submit(
        client,
        "print('from the private image')\n",
        custom_docker_image=registry.image,
        image_registry_details=details,
    )
    done = wait_for_status(client, run["runId"], timeout=120)
    assert done["status"] == "Completed", done["error"]
    assert "from the private image" in client.get(f"/api/v1/runs/{run['runId']}/logs").text
    returned = done["runDefinition"]["estimator"]["image_registry_details"]
    assert returned == {"address": registry.address, "username": USER, "password": "***"}
    # The password is never returned, listed or logged.
    for path in (
        f"/api/v1/runs/{run['runId']}",
        "/api/v1/runs",
        f"/api/v1/runs/{run['runId']}/files/logs/build_log.txt",
    ):
        assert PASSWORD not in client.get(path).text
    assert PASSWORD not in json.dumps(run)
    assert PASSWORD not in reg_server.log_path.read_text()


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        ({"username": USER, "password": "wrong"}, "could not pull"),
        (None, "could not pull"),
    ],
    ids=["wrong-password", "no-credentials"],
)
def test_wrong_or_missing_credentials_fail_clearly(
    registry: Registry, reg_server: Server, details: dict[str, str] | None, expected: str
) -> None:
    _remove_local(registry.image)
    client = reg_server.client()
    fields: dict[str, object] = {"custom_docker_image": registry.image}
    if details:
        fields["image_registry_details"] = {"address": registry.address, **details}
    run = submit(client, "print('never')\n", **fields)
    done = wait_for_status(client, run["runId"], timeout=60)
    assert done["status"] == "Failed"
    assert done["properties"]["reason"] == "image_missing"
    message = done["error"]["message"]
    assert f"The image {registry.image} is not on node local and {expected}" in message
    assert any(
        word in message.lower()
        for word in ("unauthorized", "authentication required", "no basic auth")
    )
    assert "wrong" not in message
