"""The README's first command, ``scripts/serve``, from a clean clone: it sets the machine up (here
everything is in place already, so each step finds its work done), starts the server, and the
README's curl walk-through completes against it. Without an engine it starts anyway and says what
that allows."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TOKEN, free_port
from tests.test_readme import run_walkthrough

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of the committed tree (HEAD), as a reader gets it: nothing built, no .venv."""
    target = tmp_path_factory.mktemp("clone") / "trainhub"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True)
    return target


class Serve:
    """``scripts/serve --port P --data D`` in a session of its own (killed whole at the end)."""

    def __init__(self, clone: Path, data: Path, **env: str) -> None:
        self.port = free_port()
        self.log = data.parent / f"{data.name}-serve.log"
        variables = {k: v for k, v in os.environ.items() if not k.startswith("TRAINHUB_")}
        variables.update(TRAINHUB_ADMIN_TOKEN=TOKEN, **env)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["scripts/serve", "--port", str(self.port), "--data", str(data)],
                cwd=clone,
                env=variables,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self, timeout: float) -> dict[str, object]:
        """``/healthz`` once it answers (the first start installs trainhub into the clone)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"scripts/serve exited: {self.log.read_text()[-3000:]}")
            try:
                answer = httpx.get(f"{self.url}/healthz", timeout=2)
                if answer.status_code == 200:
                    return dict(answer.json())
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pytest.fail(f"scripts/serve did not answer: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def serve(clone: Path, tmp_path: Path) -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for server in started:
        server.stop()


def test_scripts_serve_in_a_clean_clone_completes_the_curl_walkthrough(
    clone: Path, serve: list[Serve], tmp_path: Path
) -> None:
    server = Serve(clone, tmp_path / "data")
    serve.append(server)
    server.health(timeout=300)
    run_walkthrough(server.url, tmp_path)
    assert (clone / ".venv" / "bin" / "trainhub").exists()


def test_scripts_serve_without_an_engine_starts_and_says_what_that_allows(
    clone: Path, serve: list[Serve], tmp_path: Path
) -> None:
    server = Serve(clone, tmp_path / "data", TRAINHUB_SERVE_NO_ENGINE="1")
    serve.append(server)
    health = server.health(timeout=300)
    nodes = health["details"]["nodes"]  # type: ignore[index]
    assert nodes["local"]["runtimes"] == ["process"]
    said = server.log.read_text()
    assert "no Docker engine (TRAINHUB_SERVE_NO_ENGINE=1)" in said
    assert "the server starts without one, so only runs with use_docker=False run" in said
