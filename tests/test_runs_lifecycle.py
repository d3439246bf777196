"""A run's life through the HTTP API, on the real Docker engine."""

from __future__ import annotations

import json
import textwrap
import time

import httpx

from tests.conftest import Server
from tests.helpers import get_run, history, submit, wait_for_log, wait_for_status

TRAIN = textwrap.dedent(
    """
    import os, sys
    print("args", sys.argv[1:])
    print("run id", os.environ["TRAINHUB_RUN_ID"], os.environ["AZUREML_RUN_ID"])
    print("lr env", os.environ["LEARNING_RATE"])
    print("cwd has", sorted(os.listdir(".")))
    os.makedirs("outputs/sub", exist_ok=True)
    with open("outputs/model.txt", "w") as f:
        f.write("weights " + sys.argv[2])
    with open("outputs/sub/data.bin", "wb") as f:
        f.write(bytes(range(256)) * 40)
    os.makedirs("logs", exist_ok=True)
    with open("logs/train.log", "w") as f:
        f.write("epoch 1 done")
    print("finished")
    """
)


def test_completed_run_has_its_log_outputs_and_history(client: httpx.Client) -> None:
    run = submit(
        client,
        TRAIN,
        experiment="lifecycle",
        extra_files={"helper/data.csv": "a,b\n"},
        script_params={"--lr": 0.5, "--verbose": "", "--epochs": 3},
        environment_variables={"LEARNING_RATE": "0.5"},
    )
    assert run["status"] == "Queued"
    assert run["runId"].startswith("lifecycle_")
    assert run["runDefinition"]["arguments"] == ["--lr", "0.5", "--verbose", "--epochs", "3"]

    done = wait_for_status(client, run["runId"])
    assert done["status"] == "Completed", done["error"]
    assert history(done) == [
        "Queued",
        "Preparing",
        "Starting",
        "Running",
        "Finalizing",
        "Completed",
    ]
    assert done["startTimeUtc"] and done["endTimeUtc"]
    assert done["properties"]["exitCode"] == 0
    assert done["error"] is None

    log = client.get(f"/api/v1/runs/{run['runId']}/logs").text
    assert "args ['--lr', '0.5', '--verbose', '--epochs', '3']" in log
    assert f"run id {run['runId']} {run['runId']}" in log
    assert "lr env 0.5" in log
    assert "'helper', 'train.py'" in log
    assert log.rstrip().endswith("finished")

    files = {
        f["path"]: f["size"]
        for f in client.get(f"/api/v1/runs/{run['runId']}/files").json()["files"]
    }
    assert files == {
        "logs/driver_log.txt": len(log.encode()),
        "logs/train.log": len("epoch 1 done"),
        "outputs/model.txt": len("weights 0.5"),
        "outputs/sub/data.bin": 256 * 40,
    }
    model = client.get(f"/api/v1/runs/{run['runId']}/files/outputs/model.txt")
    assert model.status_code == 200
    assert model.text == "weights 0.5"
    assert "attachment" in model.headers["content-disposition"]
    data = client.get(f"/api/v1/runs/{run['runId']}/files/outputs/sub/data.bin")
    assert data.content == bytes(range(256)) * 40


def test_runs_are_numbered_per_experiment(client: httpx.Client) -> None:
    first = submit(client, "print(1)", experiment="numbering-a")
    second = submit(client, "print(2)", experiment="numbering-a")
    other = submit(client, "print(3)", experiment="numbering-b")
    assert (first["number"], second["number"], other["number"]) == (1, 2, 1)
    for run in (first, second, other):
        wait_for_status(client, run["runId"], "Completed")


def test_failing_script_reports_exit_code_and_traceback(client: httpx.Client) -> None:
    script = "print('starting')\ndef train():\n    raise ValueError('bad learning rate')\ntrain()\n"
    run = submit(client, script)
    done = wait_for_status(client, run["runId"])
    assert done["status"] == "Failed"
    assert done["properties"]["exitCode"] == 1
    assert done["properties"]["reason"] == "exit_code"
    assert done["error"]["code"] == "UserError"
    assert "exited with code 1" in done["error"]["message"]
    assert "ValueError: bad learning rate" in done["error"]["message"]
    log = client.get(f"/api/v1/runs/{run['runId']}/logs").text
    assert "Traceback (most recent call last)" in log
    assert "starting" in log


def test_exit_code_is_the_scripts_own(client: httpx.Client) -> None:
    run = submit(client, "import sys\nsys.exit(3)\n")
    done = wait_for_status(client, run["runId"])
    assert (done["status"], done["properties"]["exitCode"]) == ("Failed", 3)


def test_cancel_sends_sigterm_and_keeps_outputs(client: httpx.Client, server: Server) -> None:
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        def stop(signum, frame):
            os.makedirs("outputs", exist_ok=True)
            open("outputs/checkpoint.txt", "w").write("saved on SIGTERM")
            print("got SIGTERM", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        print("training", flush=True)
        time.sleep(120)
        """
    )
    run = submit(client, script)
    wait_for_log(client, run["runId"], "training")
    response = client.post(f"/api/v1/runs/{run['runId']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] in {"CancelRequested", "Canceled"}
    done = wait_for_status(client, run["runId"], timeout=30)
    assert done["status"] == "Canceled"
    assert "CancelRequested" in history(done)
    assert "got SIGTERM" in client.get(f"/api/v1/runs/{run['runId']}/logs").text
    checkpoint = client.get(f"/api/v1/runs/{run['runId']}/files/outputs/checkpoint.txt")
    assert checkpoint.text == "saved on SIGTERM"
    deadline = time.monotonic() + 10
    while run["runId"] in _run_ids_of_containers(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run["runId"] not in _run_ids_of_containers(server)


def test_cancel_kills_a_script_that_ignores_sigterm(client: httpx.Client) -> None:
    script = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('stubborn', flush=True)\ntime.sleep(120)\n"
    run = submit(client, script)
    wait_for_log(client, run["runId"], "stubborn")
    started = time.monotonic()
    client.post(f"/api/v1/runs/{run['runId']}/cancel")
    done = wait_for_status(client, run["runId"], timeout=30)
    assert done["status"] == "Canceled"
    assert time.monotonic() - started < 20  # grace is 3 s in the suite, then SIGKILL


def test_cancel_of_an_ended_run_is_a_conflict(client: httpx.Client) -> None:
    run = submit(client, "print('quick')")
    wait_for_status(client, run["runId"], "Completed")
    response = client.post(f"/api/v1/runs/{run['runId']}/cancel")
    assert response.status_code == 409
    assert "already ended (Completed)" in response.json()["error"]


def test_max_run_duration_stops_the_run_with_that_reason(client: httpx.Client) -> None:
    run = submit(
        client,
        "import time\nprint('long', flush=True)\ntime.sleep(120)\n",
        max_run_duration_seconds=2,
    )
    done = wait_for_status(client, run["runId"], timeout=40)
    assert done["status"] == "Failed"
    assert done["properties"]["reason"] == "timeout"
    assert "max_run_duration_seconds (2 s)" in done["error"]["message"]
    assert "long" in client.get(f"/api/v1/runs/{run['runId']}/logs").text


def test_logs_folder_is_synced_while_the_run_is_running(client: httpx.Client) -> None:
    script = textwrap.dedent(
        """
        import os, time
        os.makedirs("logs", exist_ok=True)
        with open("logs/progress.txt", "w") as f:
            f.write("epoch 1")
        print("wrote progress", flush=True)
        time.sleep(120)
        """
    )
    run = submit(client, script)
    wait_for_log(client, run["runId"], "wrote progress")
    deadline = time.monotonic() + 15
    while True:
        paths = [
            f["path"] for f in client.get(f"/api/v1/runs/{run['runId']}/files").json()["files"]
        ]
        if "logs/progress.txt" in paths:
            break
        assert time.monotonic() < deadline, paths
        time.sleep(0.2)
    assert get_run(client, run["runId"])["status"] == "Running"
    assert client.get(f"/api/v1/runs/{run['runId']}/files/logs/progress.txt").text == "epoch 1"
    client.post(f"/api/v1/runs/{run['runId']}/cancel")
    wait_for_status(client, run["runId"])


def test_follow_streams_lines_as_they_are_printed(client: httpx.Client) -> None:
    script = (
        "import time\nfor i in range(4):\n    print('step', i, flush=True)\n    time.sleep(0.7)\n"
    )
    run = submit(client, script)
    seen: list[tuple[str, str]] = []
    with client.stream(
        "GET", f"/api/v1/runs/{run['runId']}/logs", params={"follow": "true"}
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line:
                seen.append((line, get_run(client, run["runId"])["status"]))
    assert [line for line, _ in seen] == ["step 0", "step 1", "step 2", "step 3"]
    assert seen[0][1] == "Running"  # the first line arrived while the script still ran
    assert get_run(client, run["runId"])["status"] in {"Finalizing", "Completed"}


def test_list_runs_filters_and_paginates(client: httpx.Client) -> None:
    ids = [submit(client, f"print({i})", experiment="listing")["runId"] for i in range(3)]
    for run_id in ids:
        wait_for_status(client, run_id, "Completed")
    page = client.get("/api/v1/runs", params={"experiment": "listing", "limit": 2}).json()
    assert [r["runId"] for r in page["runs"]] == [ids[2], ids[1]]
    assert page["nextCursor"]
    rest = client.get(
        "/api/v1/runs", params={"experiment": "listing", "limit": 2, "cursor": page["nextCursor"]}
    ).json()
    assert [r["runId"] for r in rest["runs"]] == [ids[0]]
    assert rest["nextCursor"] is None
    completed = client.get(
        "/api/v1/runs", params={"experiment": "listing", "status": "Completed"}
    ).json()
    assert len(completed["runs"]) == 3
    none = client.get("/api/v1/runs", params={"experiment": "listing", "status": "Failed"}).json()
    assert none["runs"] == []
    bad = client.get("/api/v1/runs", params={"status": "Done"})
    assert bad.status_code == 400
    assert "Unknown status" in bad.json()["error"]


def test_list_runs_filters_by_several_statuses(client: httpx.Client) -> None:
    def listed(status: str) -> set[str]:
        response = client.get("/api/v1/runs", params={"experiment": "statuses", "status": status})
        assert response.status_code == 200, response.text
        return {r["runId"] for r in response.json()["runs"]}

    busy = submit(
        client, "import time\nprint('busy', flush=True)\ntime.sleep(120)\n", experiment="statuses"
    )["runId"]
    done = submit(client, "print('done')", experiment="statuses")["runId"]
    wait_for_status(client, done, "Completed")
    wait_for_status(client, busy, "Running")
    assert listed("Running,Completed") == {busy, done}
    assert listed("Queued,Running") == {busy}
    assert listed("Completed, Failed") == {done}
    bad = client.get("/api/v1/runs", params={"status": "Running,Done"})
    assert bad.status_code == 400
    assert "Unknown status in 'status': Running,Done" in bad.json()["error"]
    client.post(f"/api/v1/runs/{busy}/cancel")
    wait_for_status(client, busy, "Canceled")
    assert listed("Completed,Canceled") == {busy, done}
    assert listed("Running,Queued") == set()


def test_shm_size_is_the_size_of_dev_shm_in_the_container(client: httpx.Client) -> None:
    script = (
        "import os\nst = os.statvfs('/dev/shm')\nos.makedirs('outputs')\n"
        "open('outputs/shm.txt', 'w').write(str(st.f_blocks * st.f_frsize))\n"
    )
    run = submit(client, script, shm_size="256m")
    wait_for_status(client, run["runId"], "Completed")
    shm = client.get(f"/api/v1/runs/{run['runId']}/files/outputs/shm.txt").text
    assert int(shm) == 256 * 1024 * 1024  # Docker's default is 64 MB


def test_unknown_run_is_a_404_with_a_sentence(client: httpx.Client) -> None:
    response = client.get("/api/v1/runs/nope_1_deadbeef")
    assert response.status_code == 404
    assert response.json() == {"status": 404, "error": "No run with id 'nope_1_deadbeef'"}


DETAIL_KEYS = {
    "runId",
    "experiment",
    "number",
    "target",
    "status",
    "startTimeUtc",
    "endTimeUtc",
    "properties",
    "runDefinition",
    "logFiles",
    "error",
    "tags",
    "submittedBy",
    "portalUrl",
    "displayName",
    "description",
    "kind",
    "parentRunId",
}
PROPERTY_KEYS = {
    "createdTimeUtc",
    "snapshotId",
    "snapshotUploaded",
    "node",
    "exitCode",
    "reason",
    "priority",
    "retries",
    "maxRetries",
    "waitReason",
}
DEFINITION_KEYS = {
    "script",
    "arguments",
    "target",
    "nodeCount",
    "communicator",
    "mpi",
    "maxRunDurationSeconds",
    "environmentVariables",
    "image",
    "environment",
    "framework",
    "estimator",
}


def test_run_details_never_return_hidden_fields(client: httpx.Client) -> None:
    run = submit(client, "print('x')", experiment="details", environment_variables={"A": "1"})
    done = wait_for_status(client, run["runId"])
    assert set(done) == DETAIL_KEYS | {"statusHistory"}
    assert set(done["properties"]) == PROPERTY_KEYS | {"allocation"}
    assert done["properties"]["allocation"] == []  # what it held is given back once it ended
    assert set(done["runDefinition"]) == DEFINITION_KEYS
    assert set(done["runDefinition"]["environment"]) == set()  # only the fields the spec set
    assert done["runDefinition"]["estimator"] == {
        "entry_script": "train.py",
        "environment_variables": {"A": "1"},
    }
    assert done["target"] == "local"
    assert done["logFiles"] == {
        "logs/driver_log.txt": f"/api/v1/runs/{run['runId']}/files/logs/driver_log.txt"
    }
    (listed,) = client.get("/api/v1/runs", params={"experiment": "details"}).json()["runs"]
    assert set(listed) == DETAIL_KEYS
    assert set(listed["properties"]) == PROPERTY_KEYS
    assert json.dumps(done).count("Traceback") == 0


def _run_ids_of_containers(server: Server) -> set[str]:
    import docker

    client = docker.from_env()
    try:
        found = client.api.containers(
            all=True, filters={"label": f"org.trainhub.instance={server.instance_id()}"}
        )
        return {c["Labels"]["org.trainhub.run_id"] for c in found}
    finally:
        client.close()
