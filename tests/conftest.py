"""Fixtures: a real ``trainhub serve`` process on the real Docker engine."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import httpx
import pytest

from tests import slurm_bed, testbed

TOKEN = "th_test_admin_token_for_the_suite"
BASE_IMAGE = "trainhub/base:cpu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    data: Path
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        LIVE_SERVERS.append(self)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trainhub",
                "serve",
                "--port",
                str(self.port),
                "--data",
                str(self.data),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.wait_healthy(30)

    def wait_healthy(self, seconds: float) -> None:
        """Until ``/healthz`` answers; the log's tail in the error if the server exits or stays
        silent."""
        assert self.proc is not None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        c = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self.clients.append(c)
        return c

    def instance_id(self) -> str:
        with sqlite3.connect(self.data / "trainhub.db") as conn:
            return str(conn.execute("select value from meta where key='instance_id'").fetchone()[0])

    def containers(self) -> list[str]:
        client = docker.from_env()
        try:
            found = client.api.containers(
                all=True, filters={"label": f"org.trainhub.instance={self.instance_id()}"}
            )
            return [str(c["Id"]) for c in found]
        finally:
            client.close()

    def assert_nothing_stranded(self) -> None:
        """What ``/healthz`` says: no run without a task, no ended run holding nodes (waiting a
        little: a claim between its write and its task, the watchdog ending a run)."""
        if self.proc is None or self.proc.poll() is not None:
            if self in LIVE_SERVERS:
                LIVE_SERVERS.remove(self)
            return
        deadline = time.monotonic() + 10
        while True:
            try:
                details = httpx.get(f"{self.url}/healthz", timeout=10).json()["details"]
            except httpx.HTTPError:
                return  # stopped meanwhile
            stranded = details["runsWithoutTask"], details["allocationsOfEndedRuns"]
            if stranded == (0, 0):
                return
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{self.url}: runs without a task, ended runs holding nodes: {stranded}"
                )
            time.sleep(0.2)

    def cleanup(self) -> None:
        try:
            self.assert_nothing_stranded()
        finally:
            for c in self.clients:
                c.close()
            self.stop()
            if self in LIVE_SERVERS:
                LIVE_SERVERS.remove(self)
            if (self.data / "trainhub.db").exists():
                client = docker.from_env()
                try:
                    for cid in self.containers():
                        try:
                            client.api.remove_container(cid, force=True)
                        except docker.errors.APIError as e:
                            # Gone meanwhile, or the server's own removal is under way.
                            if e.status_code not in (404, 409):
                                raise
                    # Its datastore copies and runs' data volumes (labelled with the server's id).
                    mine = {"label": f"org.trainhub.instance={self.instance_id()}"}
                    for volume in client.api.volumes(filters=mine).get("Volumes") or []:
                        client.api.remove_volume(volume["Name"], force=True)
                finally:
                    client.close()


LIVE_SERVERS: list[Server] = []


@pytest.fixture(autouse=True)
def nothing_stranded() -> Iterator[None]:
    """After every test, on every server still running: no run sits in a driven status without a
    task driving it, and no queued or finished run holds GPUs or slots (servers of a test's own
    are checked the same way before they stop)."""
    yield
    for srv in list(LIVE_SERVERS):
        srv.assert_nothing_stranded()


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """The real engine and the base image must be there: ./scripts/test sets both up."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"No Docker engine ({exc}): run the suite with ./scripts/test")
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(
            f"{BASE_IMAGE} is missing: run `trainhub images build-base` (./scripts/test does)"
        )
    finally:
        client.close()


ServerFactory = Callable[..., Server]


@pytest.fixture
def make_server(
    tmp_path_factory: pytest.TempPathFactory, docker_ready: None
) -> Iterator[ServerFactory]:
    """Servers of a test's own (restarts, special settings), torn down after it."""
    made: list[Server] = []

    def factory(**settings: str) -> Server:
        server = start_server(tmp_path_factory, "data", **settings)
        made.append(server)
        return server

    yield factory
    for server in made:
        server.cleanup()


def start_server(
    tmp_path_factory: pytest.TempPathFactory, name: str, data: Path | None = None, **settings: str
) -> Server:
    """A server process; its data folder is ``data`` or a new temporary one."""
    logs = tmp_path_factory.mktemp(f"{name}-log") if data else None
    data = data or tmp_path_factory.mktemp(name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINHUB_")}
    env.update(
        {
            "TRAINHUB_ADMIN_TOKEN": TOKEN,
            "TRAINHUB_SYNC_INTERVAL_SECONDS": "0.5",
            "TRAINHUB_CANCEL_GRACE_SECONDS": "3",
        }
    )
    env.update({f"TRAINHUB_{k.upper()}": v for k, v in settings.items()})
    log_path = (logs or data.parent) / f"{data.name}.log"
    srv = Server(data=data, port=free_port(), env=env, log_path=log_path)
    srv.start()
    return srv


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Server]:
    """One shared server for the tests that need nothing special (small snapshot limits)."""
    srv = start_server(
        tmp_path_factory,
        "shared-data",
        max_snapshot_mb="2",
        max_snapshot_expanded_mb="8",
        max_snapshot_files="50",
    )
    yield srv
    srv.cleanup()


@pytest.fixture
def client(server: Server) -> httpx.Client:
    return server.client()


@pytest.fixture(scope="session")
def bed(
    tmp_path_factory: pytest.TempPathFactory, docker_ready: None
) -> Iterator[dict[str, testbed.Node]]:
    """Nodes n1 (4 GPUs) and n2 (2 GPUs), both with the stand-in NVIDIA hook, shared by the test
    files that use them (run them under ``flock /tmp/trainhub-testbed.lock``)."""
    root = Path("/tmp/trainhub-testbed")  # short paths: unix socket names are limited to 108 bytes
    key = testbed.client_key(root)
    nodes = {
        "n1": testbed.start_node("n1", 1, root / "n1", key, gpus=4),
        "n2": testbed.start_node("n2", 2, root / "n2", key, gpus=2),
    }
    yield nodes
    for node in nodes.values():
        testbed.stop_node(node.name, node.root)
    testbed.remove_bridge()


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, bed: dict[str, testbed.Node]
) -> Iterator[Server]:
    """A server with n1 and n2 added and a target ``gpu-cluster`` of both. use_gpu runs get the
    default GPU image, which the test bed's nodes have (the CPU image under that tag)."""
    srv = start_server(
        tmp_path_factory,
        "nodes-data",
        ssh_keepalive_seconds="1",
        node_lost_grace_seconds="6",
        sync_interval_seconds="0.5",
        starvation_seconds="10",
    )
    client = srv.client()
    for node in bed.values():
        testbed.add_to(client, node)
    assert (
        client.post(
            "/api/v1/targets", json={"name": "gpu-cluster", "nodes": ["n1", "n2"]}
        ).status_code
        == 201
    )
    yield srv
    instance = srv.instance_id()
    srv.cleanup()
    for node in bed.values():  # containers and volumes the server left on the nodes
        docker_cli = f"docker -H unix://{node.docker_socket}"
        subprocess.run(
            f"{docker_cli} ps -aq | xargs -r {docker_cli} rm -f; "
            f"{docker_cli} volume ls -q --filter label=org.trainhub.instance={instance}"
            f" | xargs -r {docker_cli} volume rm -f",
            shell=True,
            capture_output=True,
        )


@pytest.fixture(scope="session")
def slurm() -> Iterator[slurm_bed.SlurmBed]:
    """A real Slurm cluster (munged, slurmctld, slurmd) whose login node runs sshd, on the test
    bed's bridge: run its tests under ``flock /tmp/trainhub-testbed.lock``."""
    root = Path("/tmp/trainhub-slurmbed")
    bed = slurm_bed.start(root, testbed.client_key(root))
    yield bed
    slurm_bed.stop(root)


@pytest.fixture
def nclient(cluster: Server) -> httpx.Client:
    return cluster.client()
