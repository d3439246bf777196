"""Faults a lab server meets: a full data disk, an error inside trainhub, a run whose task is gone.

Real engine, real filesystems: the small data disk is a 64 MB tmpfs mounted for these tests.
Every run ends with a reason a person understands, and nothing is left holding a slot.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.conftest import BASE_IMAGE, Server, start_server
from tests.helpers import (
    get_run,
    make_snapshot,
    submit,
    submit_raw,
    wait_for_status,
    wait_until,
)

MB = 1024 * 1024
BIG_OUTPUTS = """
import os
os.makedirs("outputs", exist_ok=True)
chunk = os.urandom(MB := 1024 * 1024)
with open("outputs/weights.bin", "wb") as f:
    for _ in range(200):
        f.write(chunk)
print("wrote 200 MB")
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_server(
    small_disk: Path, tmp_path_factory: pytest.TempPathFactory, docker_ready: None
) -> Iterator[Server]:
    """A server whose data folder is on the 64 MB disk, keeping 10 MB free, one run at a time."""
    srv = start_server(
        tmp_path_factory,
        "small",
        data=small_disk / "data",
        min_free_gb=str(10 / 1024),
        max_concurrent_runs="1",
    )
    yield srv
    srv.cleanup()


def test_outputs_that_overflow_the_data_disk_fail_the_run_with_disk_full(
    small_server: Server,
) -> None:
    client = small_server.client()
    run = submit(client, BIG_OUTPUTS, experiment="disk")
    ended = wait_for_status(client, run["runId"], timeout=120)
    assert ended["status"] == "Failed", ended
    assert ended["error"]["reason"] == "disk_full"
    message = ended["error"]["message"]
    assert "ran out of space while copying the run's outputs" in message
    assert " copied, " in message and " free; the partial files were removed" in message
    # The partial files are gone: the disk has room again, and nothing of outputs/ is listed.
    files = client.get(f"/api/v1/runs/{run['runId']}/files").json()
    assert not [f for f in files["files"] if f["path"].startswith("outputs/")], files
    assert "wrote 200 MB" in client.get(f"/api/v1/runs/{run['runId']}/logs").text
    # Its slot is free (one run at a time) and the container is gone: the next run completes.
    small = submit(client, "print('small and fine')", experiment="disk")
    assert wait_for_status(client, small["runId"], timeout=60)["status"] == "Completed"
    wait_until(lambda: small_server.containers() == [], "no container of the server left")


def _fill(disk: Path, leave: int) -> Path:
    """A file that leaves ``leave`` bytes free on ``disk``."""
    import shutil

    filler = disk / "filler"
    size = shutil.disk_usage(disk).free - leave
    with filler.open("wb") as f:
        f.truncate(0)
        chunk = b"\0" * MB
        for _ in range(size // MB):
            f.write(chunk)
    return filler


def test_below_the_free_space_floor_submits_get_507_and_queued_runs_wait_with_the_reason(
    small_server: Server, small_disk: Path
) -> None:
    client = small_server.client()
    blocker = submit(client, "import time; time.sleep(60)", experiment="floor")
    wait_for_status(client, blocker["runId"], "Running")
    queued = submit(client, "print('after the disk has room')", experiment="floor")
    filler = _fill(small_disk, 4 * MB)

    refused = submit_raw(
        client, {"entry_script": "train.py"}, make_snapshot({"train.py": "print(1)"}), "floor"
    )
    assert refused.status_code == 507, refused.text
    error = refused.json()["error"]
    assert f"The server's data folder ({small_disk / 'data'})" in error
    assert "MB free, below the 10.0 MB it keeps free (TRAINHUB_MIN_FREE_GB)" in error
    runs = client.get("/api/v1/runs", params={"experiment": "floor"}).json()["runs"]
    assert len(runs) == 2  # nothing of the refused submit was stored

    # The slot frees up, but nothing starts while the disk is below the floor.
    assert client.post(f"/api/v1/runs/{blocker['runId']}/cancel").status_code == 200
    wait_for_status(client, blocker["runId"], "Canceled")

    def reason() -> str:
        return str(get_run(client, queued["runId"])["properties"]["waitReason"] or "")

    wait_until(lambda: "the server's data disk has" in reason(), "the floor as the wait reason")
    assert "MB free, needs 10.0 MB (TRAINHUB_MIN_FREE_GB)" in reason()
    assert get_run(client, queued["runId"])["status"] == "Queued"

    filler.unlink()
    assert wait_for_status(client, queued["runId"], timeout=60)["status"] == "Completed"


@pytest.fixture(scope="module")
def broken_image() -> Iterator[str]:
    """An image where trainhub's own folder is a file: copying the run into it fails."""
    tag = "trainhub-test/broken-layout:1"
    client = docker.from_env()
    try:
        dockerfile = f"FROM {BASE_IMAGE}\nRUN touch /trainhub\n"
        import io

        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
        yield tag
    finally:
        client.close()


def test_an_error_inside_trainhub_fails_the_run_with_internal_error_and_frees_its_slot(
    make_server: type, broken_image: str
) -> None:
    srv: Server = make_server(max_concurrent_runs="1")  # type: ignore[call-arg]
    client = srv.client()
    run = submit(client, "print('never runs')", custom_docker_image=broken_image)
    ended = wait_for_status(client, run["runId"], timeout=60)
    assert ended["status"] == "Failed", ended
    assert ended["error"]["reason"] == "internal_error"
    assert ended["error"]["code"] == "SystemError"
    message = ended["error"]["message"]
    assert message.startswith("trainhub failed while running this: ")
    assert "Traceback" not in message and "\n" not in message
    assert srv.containers() == []
    # Logged once, with its traceback, on the server.
    log = srv.log_path.read_text()
    assert log.count(f"run {run['runId']} failed inside trainhub") == 1
    assert "Traceback" in log
    ok = submit(client, "print('the slot is free')")
    assert wait_for_status(client, ok["runId"], timeout=60)["status"] == "Completed"


def test_the_watchdog_ends_a_run_whose_task_is_gone(make_server: type) -> None:
    srv: Server = make_server(  # type: ignore[call-arg]
        fault_injection="drop-task", watchdog_seconds="1", max_concurrent_runs="1"
    )
    client: httpx.Client = srv.client()
    run = submit(client, "import time; print('started', flush=True); time.sleep(120)")
    wait_for_status(client, run["runId"], "Running")
    ended = wait_for_status(client, run["runId"], timeout=30)
    assert ended["status"] == "Failed", ended
    assert ended["error"]["reason"] == "internal_error"
    assert "the task driving this run ended without ending it" in ended["error"]["message"]
    wait_until(lambda: srv.containers() == [], "the run's container removed")
    # The slot was freed: the next run is claimed and started (and then dropped in its turn).
    second = submit(client, "import time; time.sleep(120)")
    wait_for_status(client, second["runId"], "Running", timeout=30)


def test_a_locked_database_fails_writes_with_503_and_reads_go_on(make_server: type) -> None:
    import sqlite3

    srv: Server = make_server(db_busy_seconds="1")  # type: ignore[call-arg]
    client = srv.client()
    before = submit(client, "print('before the lock')")
    wait_for_status(client, before["runId"], timeout=60)
    holder = sqlite3.connect(srv.data / "trainhub.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    try:
        response = submit_raw(
            client, {"entry_script": "train.py"}, make_snapshot({"train.py": "print(1)"})
        )
        assert response.status_code == 503, response.text
        assert (
            "The server's database could not do this now (database is locked)"
            in (response.json()["error"])
        )
        assert "nothing was changed, try again" in response.json()["error"]
        # Reads are served meanwhile, and nothing of the refused submit is there.
        listed = client.get("/api/v1/runs")
        assert listed.status_code == 200
        assert [r["runId"] for r in listed.json()["runs"]] == [before["runId"]]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    after = submit(client, "print('after the lock')")
    assert wait_for_status(client, after["runId"], timeout=60)["status"] == "Completed"
