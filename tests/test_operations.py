"""Watching a server: ``/metrics`` (Prometheus) after a run, who may read it, and the server's log
lines as JSON. The servers here have no Docker engine (runs are processes, which is all these tests
need) and two stand-in GPUs (the ``nvidia-smi`` of TESTBED.md), so the GPU gauges have something to
count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TOKEN, Server, start_server
from tests.helpers import add_user, submit, wait_for_status, wait_until
from tests.testbed import FAKE_NVIDIA_SMI

METRICS_TOKEN = "th_metrics_scraper_secret_0123"
GPUS = [f"GPU-{i}a1b2c3d-0000-4000-8000-00000000000{i}" for i in range(2)]


def _server(tmp_path_factory: pytest.TempPathFactory, name: str, **settings: str) -> Server:
    root = tmp_path_factory.mktemp(f"{name}-bin")
    smi = root / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI)
    smi.chmod(0o755)
    (root / "gpus.csv").write_text(
        "".join(f"{i}, {uuid_}, NVIDIA H200, 143771\n" for i, uuid_ in enumerate(GPUS))
    )
    (root / "usage.csv").write_text("0, 0, 0\n1, 0, 0\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", f"unix://{root / 'no-engine.sock'}")
        patch.setenv("PATH", f"{root}:{os.environ['PATH']}")
        return start_server(tmp_path_factory, name, **settings)


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """JSON logs, a metrics token, and an allow-list that does not hold 127.0.0.1."""
    srv = _server(
        tmp_path_factory,
        "ops-data",
        log_format="json",
        metrics_token=METRICS_TOKEN,
        metrics_allow="10.0.0.0/8",
    )
    yield srv
    srv.cleanup()


def _scrape(
    server: Server, token: str | None = METRICS_TOKEN
) -> dict[tuple[str, tuple[str, ...]], float]:
    """``/metrics`` as {(sample name, sorted label pairs): value}."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{server.url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(f"{k}={v}" for k, v in sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


HOLD = """
import os, time
from pathlib import Path
os.makedirs("outputs", exist_ok=True)
open("outputs/cuda.txt", "w").write(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
print("holding", flush=True)
while not Path(os.environ["RELEASE"]).exists():
    time.sleep(0.1)
"""


def test_metrics_count_a_run_and_the_gpus_it_holds(watched: Server, tmp_path: Path) -> None:
    client = watched.client()
    release = tmp_path / "release"
    run = submit(
        client,
        HOLD,
        use_docker=False,
        use_gpu=True,
        environment_variables={"RELEASE": str(release)},
    )
    wait_for_status(client, run["runId"], "Running")
    while_running = _scrape(watched)
    assert while_running[("trainhub_runs", ("status=Running",))] == 1
    assert while_running[("trainhub_gpus_used", ("node=local",))] == 1
    assert while_running[("trainhub_gpus_free", ("node=local",))] == 1
    wait_until(  # ./logs is copied every 0.5 s while the run goes
        lambda: _scrape(watched)[("trainhub_log_sync_seconds_count", ())] >= 1, "a log sync"
    )
    release.touch()
    done = wait_for_status(client, run["runId"])
    assert done["status"] == "Completed", done["error"]

    after = _scrape(watched)
    assert after[("trainhub_runs", ("status=Completed",))] == 1
    assert after[("trainhub_runs", ("status=Running",))] == 0
    assert after[("trainhub_queue_length", ())] == 0
    assert after[("trainhub_gpus_used", ("node=local",))] == 0
    assert after[("trainhub_gpus_free", ("node=local",))] == len(GPUS)
    assert after[("trainhub_output_copy_seconds_count", ())] == 1
    assert after[("trainhub_scheduling_pass_seconds_count", ())] >= 1
    submits = [
        value
        for (name, labels), value in after.items()
        if name == "trainhub_http_request_duration_seconds_count"
        and "method=POST" in labels
        and "path=/api/v1/experiments/{experiment}/runs" in labels
        and "status_code=201" in labels
    ]
    assert submits == [1], sorted(
        {k[1] for k in after if k[0].endswith("request_duration_seconds_count")}
    )


def test_metrics_refuse_anonymous_and_non_admin_callers(watched: Server) -> None:
    anonymous = httpx.get(f"{watched.url}/metrics", timeout=10)
    assert anonymous.status_code == 401, anonymous.text
    assert "TRAINHUB_METRICS_TOKEN" in anonymous.json()["error"]
    wrong = httpx.get(
        f"{watched.url}/metrics", headers={"Authorization": "Bearer th_not_a_token"}, timeout=10
    )
    assert wrong.status_code == 401
    user_token = add_user(watched.client(), "watcher")
    user = httpx.get(
        f"{watched.url}/metrics", headers={"Authorization": f"Bearer {user_token}"}, timeout=10
    )
    assert user.status_code == 403, user.text
    assert "watcher is not an admin" in user.json()["error"]
    assert ("trainhub_queue_length", ()) in _scrape(watched, TOKEN)  # an admin's token


def test_an_allowed_address_reads_metrics_without_a_token(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    srv = _server(tmp_path_factory, "ops-allow", metrics_allow="10.1.2.3, 127.0.0.0/8")
    try:
        found = _scrape(srv, token=None)
        assert found[("trainhub_gpus_free", ("node=local",))] == len(GPUS)
        assert found[("trainhub_runs", ("status=Queued",))] == 0
    finally:
        srv.cleanup()


def test_the_server_logs_json_lines_without_secrets(watched: Server) -> None:
    # A token pasted into a URL reaches the access line: it is masked there.
    httpx.get(f"{watched.url}/healthz?token={METRICS_TOKEN}", timeout=10)
    wait_until(lambda: '"/healthz"' in watched.log_path.read_text(), "the access line")
    text = watched.log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines, text[-2000:]
    for line in lines:
        assert {"time", "level", "logger", "msg"} <= line.keys(), line
    access = [line for line in lines if line.get("path") == "/healthz"]
    assert access, lines[-5:]
    assert access[-1]["method"] == "GET" and access[-1]["status"] == 200
    assert access[-1]["logger"] == "uvicorn.access" and access[-1]["level"] == "info"
    assert "GET /healthz?token=******** HTTP/1.1" in access[-1]["msg"]
    assert any(line["msg"].startswith("Uvicorn running on") for line in lines)
    for secret in (TOKEN, METRICS_TOKEN):
        assert secret not in text


def test_trainhub_settings_shows_values_sources_and_masks_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINHUB_")}
    env.update(
        {
            "TRAINHUB_ADMIN_TOKEN": "th_never_shown_admin",
            "TRAINHUB_PIP_INDEX_URL": "https://lab:mirror-password@pypi.lab/simple",
            "TRAINHUB_SYNC_INTERVAL_SECONDS": "7",
        }
    )
    cli = [sys.executable, "-m", "trainhub", "settings", "--port", "9100"]
    shown = subprocess.run(
        [*cli, "--json"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    rows = {row["variable"]: row for row in json.loads(shown.stdout)}
    assert (rows["TRAINHUB_PORT"]["value"], rows["TRAINHUB_PORT"]["source"]) == (9100, "flag")
    sync = rows["TRAINHUB_SYNC_INTERVAL_SECONDS"]
    assert (sync["value"], sync["source"]) == (7.0, "variable")
    assert (rows["TRAINHUB_HOST"]["value"], rows["TRAINHUB_HOST"]["source"]) == (
        "127.0.0.1",
        "default",
    )
    assert rows["TRAINHUB_ADMIN_TOKEN"]["value"] == "********"
    assert rows["TRAINHUB_PIP_INDEX_URL"]["value"] == "https://lab:****@pypi.lab/simple"
    assert rows["TRAINHUB_METRICS_TOKEN"]["value"] is None  # not set: nothing to mask
    assert all(row["help"] for row in rows.values())
    table = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60, check=True)
    for shown_text in (shown.stdout, table.stdout):
        assert "th_never_shown_admin" not in shown_text
        assert "mirror-password" not in shown_text
    assert "TRAINHUB_SYNC_INTERVAL_SECONDS" in table.stdout and "variable" in table.stdout
    bad = subprocess.run(
        [*cli, "--json"],
        env={**env, "TRAINHUB_METRICS_ALLOW": "10.0.0.0/33"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "TRAINHUB_METRICS_ALLOW must be addresses or networks" in bad.stderr
