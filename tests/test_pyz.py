"""The single file: ``scripts/build-pyz`` makes ``dist/trainhub.pyz``; copied alone into an empty folder
and started by a bare CPython (a venv made ``--without-pip`` from the machine's python3, so that nothing
but the file itself can supply trainhub or a dependency), with HOME and SHIV_ROOT in a temporary folder,
it runs a run on the local engine and serves the dashboard with its static files."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import LIVE_SERVERS, TOKEN, Server, free_port
from tests.helpers import add_user, login, submit, wait_for_status
from tests.test_tensorboard import wait_for_points

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Bare:
    """An empty folder holding only the file, and what starts it there."""

    folder: Path
    python: Path  # the bare interpreter
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*args], cwd=self.folder, env=self.env, capture_output=True, text=True, timeout=120
        )


def system_python3() -> Path:
    """The machine's python3 (not this test run's venv), resolved past shims such as pyenv's."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    found = shutil.which("python3", path=path)
    assert found, "no python3 on PATH"
    real = subprocess.run(
        [found, "-c", "import sys; print(sys.executable)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(real)


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Bare:
    build = subprocess.run(
        [str(ROOT / "scripts" / "build-pyz")], capture_output=True, text=True, timeout=900
    )
    assert build.returncode == 0, build.stderr[-3000:]
    folder = tmp_path_factory.mktemp("pyz")
    shutil.copy2(ROOT / "dist" / "trainhub.pyz", folder / "trainhub.pyz")
    interpreter = tmp_path_factory.mktemp("bare-python")
    subprocess.run(
        [str(system_python3()), "-m", "venv", "--without-pip", str(interpreter)], check=True
    )
    home = tmp_path_factory.mktemp("home")
    env = {
        # The bare python3 first: ./trainhub.pyz's "#!/usr/bin/env python3" finds it.
        "PATH": os.pathsep.join([str(interpreter / "bin"), "/usr/bin", "/bin"]),
        "HOME": str(home),
        "SHIV_ROOT": str(home / "shiv"),
        "LANG": "C.UTF-8",
    }
    return Bare(folder=folder, python=interpreter / "bin" / "python3", env=env)


class PyzServer(Server):
    """``python3 trainhub.pyz serve`` in the bare folder, with the suite's teardown (its
    containers and volumes removed)."""

    folder: Path
    python: Path

    def start(self) -> None:
        LIVE_SERVERS.append(self)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(self.python), "trainhub.pyz", "serve", "--port", str(self.port)]
            + ["--data", str(self.data)],
            cwd=self.folder,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.wait_healthy(120)  # the first start extracts the file into SHIV_ROOT


@pytest.fixture(scope="module")
def pyz_server(
    bare: Bare, tmp_path_factory: pytest.TempPathFactory, docker_ready: None
) -> Iterator[PyzServer]:
    data = tmp_path_factory.mktemp("pyz-data")
    env = {**bare.env, "TRAINHUB_ADMIN_TOKEN": TOKEN, "TRAINHUB_SYNC_INTERVAL_SECONDS": "0.5"}
    srv = PyzServer(data=data, port=free_port(), env=env, log_path=data.parent / "pyz.log")
    srv.folder, srv.python = bare.folder, bare.python
    srv.start()
    yield srv
    srv.cleanup()


@pytest.mark.slow
def test_the_file_alone_answers_help_and_version(bare: Bare) -> None:
    version = bare.run("./trainhub.pyz", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("trainhub, version "), version.stdout
    helped = bare.run(str(bare.python), "trainhub.pyz", "serve", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--port" in helped.stdout and "--data" in helped.stdout
    assert sorted(p.name for p in bare.folder.iterdir()) == ["trainhub.pyz"]


@pytest.mark.docker
@pytest.mark.slow
def test_a_run_completes_through_the_file_and_the_dashboard_is_served(
    pyz_server: PyzServer,
) -> None:
    admin = pyz_server.client()
    script = (
        "import os, sys\n"
        "from trainhub import Run\n"  # the SDK inside the container: from the extracted file
        "print('training with', sys.argv[1:])\n"
        "Run.get_context().log('accuracy', 0.75)\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/model.txt', 'w').write('weights\\n')\n"
    )
    run = submit(admin, script, experiment="pyz", script_params={"--lr": 0.1})
    done = wait_for_status(admin, run["runId"], timeout=120)
    assert done["status"] == "Completed", done
    log = admin.get(f"/api/v1/runs/{run['runId']}/logs").text
    assert "training with ['--lr', '0.1']" in log
    model = admin.get(f"/api/v1/runs/{run['runId']}/files/outputs/model.txt")
    assert model.status_code == 200 and model.text == "weights\n"

    add_user(admin, "pyz-viewer")
    browser = login(pyz_server.url, "pyz-viewer")
    try:
        page = browser.get("/experiments/pyz")
        assert page.status_code == 200, page.text[:2000]
        assert run["runId"] in page.text
        assert '<script src="/static/htmx.min.js"' in page.text
        htmx = browser.get("/static/htmx.min.js")
        assert htmx.status_code == 200
        assert htmx.content == (ROOT / "static" / "htmx.min.js").read_bytes()
        # TensorBoard runs as a child python (sys.executable): it must find the file's packages.
        base = f"/runs/{run['runId']}/tensorboard/"
        points = wait_for_points(browser, base, "trainhub-metrics", "accuracy", at_least=1)
        assert [p[2] for p in points] == [0.75]
    finally:
        browser.close()


def load_preamble() -> object:
    spec = importlib.util.spec_from_file_location("pyz_preamble", ROOT / "scripts/pyz_preamble.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_file_names_the_python_it_needs_when_started_by_another() -> None:
    preamble = load_preamble()
    here = {
        "implementation": "CPython",
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "platform": sys.platform,
        "machine": os.uname().machine,
    }
    assert preamble.problem(here) is None  # type: ignore[attr-defined]
    message = preamble.problem({**here, "python": "3.99"})  # type: ignore[attr-defined]
    assert "for CPython 3.99 on linux" in message and "Start it with python3.99" in message
