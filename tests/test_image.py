"""The server image, built with scripts/build-image from the committed tree: started with the
engine's socket and a volume, a run submitted with curl, ``docker stop`` mid-run, a new container on
the same volume, and the run completes with its whole log and outputs. The server runs as the user
trainhub and keeps everything in /data."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.conftest import TOKEN, free_port
from tests.helpers import wait_for_log, wait_for_status, wait_until

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "trainhub-test/server:latest"
SOCKET = "/var/run/docker.sock"
TICKS = 40  # 0.5 s each: about 20 s
SCRIPT = f"""
import os, time
os.makedirs("outputs", exist_ok=True)
for i in range({TICKS}):
    print("tick", i, flush=True)
    time.sleep(0.5)
open("outputs/result.txt", "w").write("all ticks")
print("done", flush=True)
"""

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image of HEAD, built as a reader builds it (the layer cache makes a rebuild quick). The
    CA that pip trusts here (a TLS-intercepting proxy's) goes where the README says."""
    clone = tmp_path_factory.mktemp("image") / "trainhub"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    if os.environ.get("PIP_CERT"):
        shutil.copy(os.environ["PIP_CERT"], clone / "deploy" / "extra-ca.crt")
    subprocess.run([str(clone / "scripts" / "build-image"), IMAGE], check=True, timeout=1800)
    return IMAGE


class Deployment:
    """Server containers on one volume, and everything they leave behind, removed at the end."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.engine = docker.from_env()
        self.volume = f"trainhub-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.names: list[str] = []
        self.instances: set[str] = set()  # the servers' ids, from their runs' containers' labels

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        name = f"{self.volume}-{len(self.names)}"
        self.names.append(name)
        subprocess.run(
            ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{self.port}:8000",
             "-e", f"TRAINHUB_ADMIN_TOKEN={TOKEN}", "-e", "TRAINHUB_SYNC_INTERVAL_SECONDS=0.5",
             "-v", f"{SOCKET}:{SOCKET}", "-v", f"{self.volume}:/data", self.image],
            check=True, capture_output=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return name
            except httpx.HTTPError:
                time.sleep(0.5)
        pytest.fail(f"{name} did not answer: {self.engine.api.logs(name).decode()[-3000:]}")

    def run_containers(self, run_id: str) -> list[dict[str, object]]:
        found = self.engine.api.containers(
            all=True, filters={"label": f"org.trainhub.run_id={run_id}"}
        )
        self.instances.update(c["Labels"]["org.trainhub.instance"] for c in found)
        return list(found)

    def cleanup(self) -> None:
        for name in self.names:
            for c in self.engine.api.containers(all=True, filters={"name": name}):
                self.engine.api.remove_container(c["Id"], force=True)
        for instance in self.instances:  # what its runs left (none, unless the test failed)
            mine = {"label": f"org.trainhub.instance={instance}"}
            for c in self.engine.api.containers(all=True, filters=mine):
                self.engine.api.remove_container(c["Id"], force=True)
            for volume in self.engine.api.volumes(filters=mine).get("Volumes") or []:
                self.engine.api.remove_volume(volume["Name"], force=True)
        self.engine.api.remove_volume(self.volume, force=True)
        self.engine.close()


@pytest.fixture
def deployment(image: str) -> Iterator[Deployment]:
    made = Deployment(image)
    yield made
    made.cleanup()


def _curl(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["curl", "-sf", "-H", f"Authorization: Bearer {TOKEN}", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout


def test_docker_stop_mid_run_then_a_new_container_on_the_volume_completes_the_run(
    deployment: Deployment, tmp_path: Path
) -> None:
    first = deployment.start()
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "train.py").write_text(SCRIPT)
    subprocess.run(["tar", "czf", "demo.tar.gz", "-C", "demo", "."], cwd=tmp_path, check=True)
    answer = _curl(
        "-F", 'estimator={"entry_script": "train.py"}', "-F", "snapshot=@demo.tar.gz",
        f"{deployment.url}/api/v1/experiments/image/runs", cwd=tmp_path,
    )  # fmt: skip
    run_id = json.loads(answer)["runId"]
    client = httpx.Client(
        base_url=deployment.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    wait_for_log(client, run_id, "tick 3", timeout=60)

    # Not root: the server's user, with the socket's group; its state in /data, owned by it.
    engine = deployment.engine
    processes = engine.api.top(first, ps_args="-o pid,uid,args")["Processes"]
    assert [uid for _, uid, args in processes if "trainhub serve" in args] == ["8000"], processes
    owner = subprocess.run(
        ["docker", "exec", first, "stat", "-c", "%U", "/data/trainhub.db"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert owner.strip() == "trainhub"

    started = time.monotonic()
    subprocess.run(["docker", "stop", first], check=True, capture_output=True)
    state = engine.api.inspect_container(first)["State"]
    assert state["ExitCode"] != 137, "docker stop had to kill the server"
    assert time.monotonic() - started < 10
    (container,) = deployment.run_containers(run_id)
    assert container["State"] == "running", "the run was stopped with the server"

    client.close()
    deployment.start()
    client = httpx.Client(
        base_url=deployment.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    done = wait_for_status(client, run_id, timeout=90)
    assert done["status"] == "Completed", done["error"]
    log = _curl(f"{deployment.url}/api/v1/runs/{run_id}/logs", cwd=tmp_path)
    assert log.splitlines() == [f"tick {i}" for i in range(TICKS)] + ["done"]
    result = _curl(f"{deployment.url}/api/v1/runs/{run_id}/files/outputs/result.txt", cwd=tmp_path)
    assert result == "all ticks"
    client.close()
    wait_until(lambda: deployment.run_containers(run_id) == [], "the run's container is removed")


def _entrypoint_as(
    image: str, socket_dir: Path, mode: int, gid: int
) -> subprocess.CompletedProcess[str]:
    """``id`` through the image's entrypoint, with a socket of this mode and group as the engine's."""
    path = socket_dir / f"docker-{mode:o}.sock"
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(path))
        os.chown(path, 0, gid)
        path.chmod(mode)
        return subprocess.run(
            ["docker", "run", "--rm", "-v", f"{path}:{SOCKET}", image, "id"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip


def test_the_server_joins_the_sockets_group_or_stays_root_when_the_socket_has_none(
    image: str, tmp_path: Path
) -> None:
    shared = _entrypoint_as(image, tmp_path, 0o660, 4321)
    assert shared.stdout.startswith(
        "uid=8000(trainhub) gid=8000(trainhub) groups=8000(trainhub),4321"
    )
    owner_only = _entrypoint_as(image, tmp_path, 0o600, 0)
    assert owner_only.stdout.startswith("uid=0(root)")
    assert "open to its owner only: the server runs as root" in owner_only.stderr
