"""use_docker=False: the script runs as a process on the server's machine, same lifecycle."""

from __future__ import annotations

import textwrap
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server, ServerFactory, start_server
from tests.helpers import history, submit, wait_for_log, wait_for_status
from tests.test_environments import HOST_CA, make_wheel


@pytest.fixture(scope="module")
def proc_server(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Server]:
    wheels = tmp_path_factory.mktemp("proc-wheels")
    make_wheel(wheels, "thlocal", "1.0", "wheel in a venv")
    (wheels / f"session-{uuid.uuid4().hex}.txt").write_text("marker\n")
    srv = start_server(
        tmp_path_factory, "proc-data", build_ca_bundle=HOST_CA, wheel_dir=str(wheels)
    )
    yield srv
    srv.cleanup()


@pytest.fixture
def pclient(proc_server: Server) -> httpx.Client:
    return proc_server.client()


SCRIPT = textwrap.dedent(
    """
    import os, sys
    from trainhub import Run
    run = Run.get_context()
    run.log("acc", 0.5)
    print("argv", sys.argv[1:])
    print("token leaked:", any("ADMIN_TOKEN" in k for k in os.environ))
    print("cwd", os.path.basename(os.getcwd()))
    os.makedirs("outputs", exist_ok=True)
    open("outputs/model.txt", "w").write("process weights")
    os.symlink("/etc/passwd", "outputs/passwd")
    """
)


def test_a_run_without_docker_is_a_process_with_the_same_results(
    pclient: httpx.Client, proc_server: Server
) -> None:
    run = submit(pclient, SCRIPT, use_docker=False, script_params={"--epochs": 2})
    done = wait_for_status(pclient, run["runId"], timeout=60)
    assert done["status"] == "Completed", done["error"]
    assert history(done) == [
        "Queued",
        "Preparing",
        "Starting",
        "Running",
        "Finalizing",
        "Completed",
    ]
    log = pclient.get(f"/api/v1/runs/{run['runId']}/logs").text
    assert "argv ['--epochs', '2']" in log and "token leaked: False" in log and "cwd wd" in log
    assert done["runDefinition"]["image"].startswith("process:")
    assert (
        pclient.get(f"/api/v1/runs/{run['runId']}/files/outputs/model.txt").text
        == "process weights"
    )
    assert pclient.get(f"/api/v1/runs/{run['runId']}/files/outputs/passwd").status_code == 404
    assert pclient.get(f"/api/v1/runs/{run['runId']}/metrics").json()["metrics"] == {"acc": 0.5}
    assert proc_server.containers() == []
    assert not (proc_server.data / "work" / run["runId"]).exists()  # the work folder is cleaned up


def test_process_run_packages_come_from_a_cached_virtualenv(pclient: httpx.Client) -> None:
    script = "import thlocal, sys\nprint(thlocal.VALUE, sys.prefix)\n"
    first = wait_for_status(
        pclient,
        submit(pclient, script, use_docker=False, pip_packages=["thlocal==1.0"])["runId"],
        timeout=240,
    )
    second = wait_for_status(
        pclient,
        submit(pclient, script, use_docker=False, pip_packages=["thlocal==1.0"])["runId"],
        timeout=240,
    )
    assert first["status"] == second["status"] == "Completed", (first["error"], second["error"])
    for run in (first, second):
        assert "wheel in a venv" in pclient.get(f"/api/v1/runs/{run['runId']}/logs").text
    assert (
        "Successfully installed thlocal-1.0"
        in pclient.get(f"/api/v1/runs/{first['runId']}/files/logs/build_log.txt").text
    )
    assert (
        "reused, no build"
        in pclient.get(f"/api/v1/runs/{second['runId']}/files/logs/build_log.txt").text
    )


def test_process_runs_fail_cancel_and_time_out(pclient: httpx.Client) -> None:
    failed = wait_for_status(
        pclient, submit(pclient, "import sys\nsys.exit(5)\n", use_docker=False)["runId"]
    )
    assert (failed["status"], failed["properties"]["exitCode"]) == ("Failed", 5)
    slow = submit(
        pclient, "import time\nprint('busy', flush=True)\ntime.sleep(60)\n", use_docker=False
    )
    wait_for_log(pclient, slow["runId"], "busy")
    pclient.post(f"/api/v1/runs/{slow['runId']}/cancel")
    assert wait_for_status(pclient, slow["runId"], timeout=30)["status"] == "Canceled"
    timed = submit(
        pclient, "import time\ntime.sleep(60)\n", use_docker=False, max_run_duration_seconds=1
    )
    done = wait_for_status(pclient, timed["runId"], timeout=30)
    assert (done["status"], done["properties"]["reason"]) == ("Failed", "timeout")


def test_process_run_survives_a_server_kill(make_server: ServerFactory) -> None:
    server = make_server()
    client = server.client()
    script = "import time\nfor i in range(8):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\nimport os\nos.makedirs('outputs')\nopen('outputs/done.txt','w').write('yes')\n"
    run = submit(client, script, use_docker=False)
    wait_for_log(client, run["runId"], "tick 1")
    server.kill()
    time.sleep(1)
    server.start()
    client = server.client()
    done = wait_for_status(client, run["runId"], timeout=60)
    assert done["status"] == "Completed", done["error"]
    assert client.get(f"/api/v1/runs/{run['runId']}/logs").text.splitlines() == [
        f"tick {i}" for i in range(8)
    ]
    assert client.get(f"/api/v1/runs/{run['runId']}/files/outputs/done.txt").text == "yes"
