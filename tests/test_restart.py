"""Runs survive the server: SIGKILL mid-run, restart, the run finishes with its whole log and outputs."""

from __future__ import annotations

import hashlib
import re
import textwrap
import time

import docker

from tests.conftest import TOKEN, Server, ServerFactory
from tests.helpers import (
    db_dump,
    db_files,
    history,
    submit,
    wait_for_log,
    wait_for_status,
    wait_until,
)

TICKS = 12
SCRIPT = textwrap.dedent(
    f"""
    import os, time
    os.makedirs("outputs", exist_ok=True)
    for i in range({TICKS}):
        print("tick", i, flush=True)
        time.sleep(0.5)
    open("outputs/result.txt", "w").write("all {TICKS} ticks")
    print("done", flush=True)
    """
)


def _assert_whole_log(log: str) -> None:
    lines = log.splitlines()
    assert lines == [f"tick {i}" for i in range(TICKS)] + ["done"], lines


def test_sigkill_mid_run_then_restart_completes_the_run(make_server: ServerFactory) -> None:
    server = make_server()
    client = server.client()
    run = submit(client, SCRIPT)
    wait_for_log(client, run["runId"], "tick 2")
    server.kill()
    time.sleep(1.5)  # the script keeps printing while no server watches it
    server.start()
    client = server.client()
    done = wait_for_status(client, run["runId"], timeout=60)
    assert done["status"] == "Completed", done["error"]
    _assert_whole_log(client.get(f"/api/v1/runs/{run['runId']}/logs").text)
    assert (
        client.get(f"/api/v1/runs/{run['runId']}/files/outputs/result.txt").text
        == f"all {TICKS} ticks"
    )
    assert history(done)[-2:] == ["Finalizing", "Completed"]
    wait_until(lambda: server.containers() == [], "the run's container is removed")


def test_run_that_ended_while_the_server_was_down_is_finished_at_start(
    make_server: ServerFactory,
) -> None:
    server = make_server()
    client = server.client()
    run = submit(client, SCRIPT)
    wait_for_log(client, run["runId"], "tick 0")
    server.kill()
    time.sleep(TICKS * 0.5 + 2)  # the script ends with no server
    server.start()
    client = server.client()
    done = wait_for_status(client, run["runId"], timeout=60)
    assert done["status"] == "Completed"
    _assert_whole_log(client.get(f"/api/v1/runs/{run['runId']}/logs").text)
    assert client.get(f"/api/v1/runs/{run['runId']}/files/outputs/result.txt").status_code == 200


def test_run_whose_container_vanished_fails_with_that_reason(make_server: ServerFactory) -> None:
    server = make_server()
    client = server.client()
    run = submit(client, SCRIPT)
    wait_for_log(client, run["runId"], "tick 1")
    server.kill()
    engine = docker.from_env()
    for cid in server.containers():
        engine.api.remove_container(cid, force=True)
    engine.close()
    server.start()
    client = server.client()
    done = wait_for_status(client, run["runId"], timeout=30)
    assert done["status"] == "Failed"
    assert done["properties"]["reason"] == "container_gone"
    assert "container is gone" in done["error"]["message"]


def test_queued_runs_wait_for_a_slot_and_cancel_at_once(make_server: ServerFactory) -> None:
    server = make_server(max_concurrent_runs="1")
    client = server.client()
    first = submit(client, "import time\nprint('busy', flush=True)\ntime.sleep(60)\n")
    wait_for_log(client, first["runId"], "busy")
    second = submit(client, "print('second')")
    time.sleep(1)
    assert client.get(f"/api/v1/runs/{second['runId']}").json()["status"] == "Queued"
    canceled = client.post(f"/api/v1/runs/{second['runId']}/cancel").json()
    assert canceled["status"] == "Canceled"
    third = submit(client, "print('third')")
    client.post(f"/api/v1/runs/{first['runId']}/cancel")
    assert wait_for_status(client, first["runId"])["status"] == "Canceled"
    assert wait_for_status(client, third["runId"])["status"] == "Completed"
    assert client.get(f"/api/v1/runs/{second['runId']}/logs").text == ""


def test_queued_runs_survive_a_restart(make_server: ServerFactory) -> None:
    server = make_server(max_concurrent_runs="1")
    client = server.client()
    first = submit(client, "import time\nprint('busy', flush=True)\ntime.sleep(3)\n")
    wait_for_log(client, first["runId"], "busy")
    second = submit(client, "print('second ran')")
    server.kill()
    server.start()
    client = server.client()
    assert wait_for_status(client, first["runId"])["status"] == "Completed"
    assert wait_for_status(client, second["runId"])["status"] == "Completed"
    assert "second ran" in client.get(f"/api/v1/runs/{second['runId']}/logs").text


def test_missing_default_image_names_the_command_to_build_it(make_server: ServerFactory) -> None:
    server = make_server(default_image="trainhub/absent:never")
    client = server.client()
    run = submit(client, "print('x')")
    done = wait_for_status(client, run["runId"])
    assert done["status"] == "Failed"
    assert done["properties"]["reason"] == "image_missing"
    assert "trainhub images build-base" in done["error"]["message"]


def _printed_tokens(server: Server) -> list[str]:
    """Admin tokens ``trainhub serve`` printed so far (on its stderr, kept in the server's log)."""
    return re.findall(r"^ {4}(th_\S+)$", server.log_path.read_text(), flags=re.MULTILINE)


def _assert_stored_only_as_hash(server: Server, token: str) -> None:
    assert hashlib.sha256(token.encode()).hexdigest() in db_dump(server.data)
    assert token not in db_dump(server.data)
    assert token.encode() not in db_files(server.data)  # main file, WAL and shared memory


def test_the_admin_token_is_stored_only_as_its_hash(make_server: ServerFactory) -> None:
    server = make_server()
    assert server.client().get("/api/v1/runs").status_code == 200
    _assert_stored_only_as_hash(server, TOKEN)
    assert TOKEN not in server.log_path.read_text()
    assert _printed_tokens(server) == []


def test_first_start_prints_a_generated_token_once(make_server: ServerFactory) -> None:
    server = make_server(admin_token="")
    (token,) = _printed_tokens(server)
    assert server.client(token).get("/api/v1/runs").status_code == 200
    assert server.client("th_not_the_token").get("/api/v1/runs").status_code == 401
    _assert_stored_only_as_hash(server, token)
    server.stop()
    server.start()
    assert _printed_tokens(server) == [token]  # not a second one
    assert server.client(token).get("/api/v1/runs").status_code == 200
