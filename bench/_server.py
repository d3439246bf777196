"""A real ``trainhub serve`` in a subprocess, for the benchmarks."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

TOKEN = "th_bench_token"


def one_file_snapshot(name: str, source: str | bytes) -> bytes:
    """A source folder holding one script, as the .tar.gz a submission carries."""
    data = source.encode() if isinstance(source, str) else source
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(data: Path, **settings: str) -> Iterator[httpx.Client]:
    """A server on a free port with ``TRAINHUB_<NAME>`` settings; yields an authenticated client."""
    port = free_port()
    env = {**os.environ, "TRAINHUB_ADMIN_TOKEN": TOKEN}
    env.update({f"TRAINHUB_{k.upper()}": v for k, v in settings.items()})
    data.mkdir(parents=True, exist_ok=True)
    with (data / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trainhub",
                "serve",
                "--port",
                str(port),
                "--data",
                str(data / "data"),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=120,
        )
        try:
            for _ in range(200):
                try:
                    client.get("/healthz")
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            yield client
        finally:
            client.close()
            server.terminate()
            server.wait(10)


def add_remote_target(
    client: httpx.Client, name: str, address: str, key: Path, docker_socket: str
) -> None:
    """Register a test-bed node (real SSH) and a compute target ``remote`` holding just it."""
    body = {
        "name": name,
        "host": address,
        "user": "root",
        "key_path": str(key),
        "docker_socket": docker_socket,
    }
    client.post("/api/v1/nodes", json=body).raise_for_status()
    client.post("/api/v1/targets", json={"name": "remote", "nodes": [name]}).raise_for_status()
