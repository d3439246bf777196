"""``trainhub backup`` / ``trainhub restore`` against a real server, and the copy of the database taken
before pending migrations run. Runs are use_docker=False processes: quick, and the same history."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlite_utils

from tests.conftest import Server, start_server
from tests.helpers import submit, wait_for_log, wait_for_status, wait_until
from trainhub.store.migrations import MIGRATIONS

DONE = textwrap.dedent(
    """
    import os
    from trainhub import Run
    run = Run.get_context()
    for step in range(5):
        run.log("loss", 1.0 / (step + 1))
    run.log("acc", 0.75)
    os.makedirs("outputs/sub", exist_ok=True)
    open("outputs/model.bin", "wb").write(os.urandom(300_000))
    open("outputs/sub/notes.txt", "w").write("kept\\n")
    """
)
LONG = textwrap.dedent(
    """
    import time
    from trainhub import Run
    Run.get_context().log("started", 1)
    print("ready", flush=True)
    time.sleep(300)
    """
)


def trainhub(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINHUB_")}
    return subprocess.run(
        [sys.executable, "-m", "trainhub", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def backup_json(store: Path, data: Path) -> dict[str, Any]:
    done = trainhub("backup", str(store), "--data", str(data), "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def objects(store: Path) -> set[str]:
    """Every file holding stored content: objects, and packs of small files."""
    return {p.name for p in (store / "objects").glob("*/*")} | {
        p.name for p in (store / "packs").iterdir()
    }


def seen(client: httpx.Client, run_id: str) -> dict[str, Any]:
    """What a user sees of a run through the API: details, log, metrics, files and their bytes."""
    files = client.get(f"/api/v1/runs/{run_id}/files").json()["files"]
    return {
        "details": client.get(f"/api/v1/runs/{run_id}").json(),
        "log": client.get(f"/api/v1/runs/{run_id}/logs").text,
        "metrics": client.get(f"/api/v1/runs/{run_id}/metrics").json(),
        "files": files,
        "content": {
            f["path"]: client.get(f"/api/v1/runs/{run_id}/files/{f['path']}").content
            for f in files
            if f["path"].startswith("outputs/")
        },
    }


@pytest.fixture(scope="module")
def bk_server(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Server]:
    srv = start_server(tmp_path_factory, "backup-data")
    yield srv
    srv.cleanup()


def test_a_backup_during_a_run_restores_the_same_runs_metrics_and_files(
    bk_server: Server, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    client = bk_server.client()
    done = submit(client, DONE, experiment="keep", use_docker=False)
    assert wait_for_status(client, done["runId"])["status"] == "Completed"
    running = submit(client, LONG, experiment="keep", use_docker=False)
    wait_for_log(client, running["runId"], "ready")
    wait_for_status(client, running["runId"], "Running")
    wait_until(
        lambda: (
            "started" in client.get(f"/api/v1/runs/{running['runId']}/metrics").json()["metrics"]
        ),
        "the running run's metric is stored",
    )

    summary = backup_json(tmp_path / "store", bk_server.data)
    assert summary["files"] > 0 and summary["new_objects"] > 0
    ids = {r["runId"] for r in client.get("/api/v1/runs", params={"limit": 500}).json()["runs"]}
    before = seen(client, done["runId"])
    assert before["content"]["outputs/sub/notes.txt"] == b"kept\n"
    assert len(before["content"]["outputs/model.bin"]) == 300_000
    client.post(f"/api/v1/runs/{running['runId']}/cancel")
    wait_for_status(client, running["runId"], "Canceled")

    restored = tmp_path / "restored"
    out = trainhub("restore", str(tmp_path / "store"), "--data", str(restored))
    assert out.returncode == 0, out.stderr
    assert f"Restored {summary['backup']}" in out.stdout
    srv = start_server(tmp_path_factory, "restored", data=restored)
    try:
        again = srv.client()
        listed = again.get("/api/v1/runs", params={"limit": 500}).json()["runs"]
        assert {r["runId"] for r in listed} == ids
        assert seen(again, done["runId"]) == before
        # The run that was running at backup time is there, with what it had logged; its process
        # is not the restored server's, so it ends (not a second driver of the original's process).
        ended = wait_for_status(again, running["runId"])
        assert ended["status"] == "Failed"
        logged = again.get(f"/api/v1/runs/{running['runId']}/metrics").json()["metrics"]
        assert logged["started"] == 1
    finally:
        srv.cleanup()


def test_a_second_backup_with_no_changes_copies_no_object(
    bk_server: Server, tmp_path: Path
) -> None:
    client = bk_server.client()
    run = submit(client, DONE, use_docker=False)
    wait_for_status(client, run["runId"])
    store = tmp_path / "store"
    first = backup_json(store, bk_server.data)
    held = objects(store)
    second = backup_json(store, bk_server.data)
    assert second["backup"] != first["backup"]
    assert (second["files"], second["bytes"]) == (first["files"], first["bytes"])
    assert second["hashed_files"] == 0, "unchanged files were read again"
    assert second["new_objects"] == 0 and objects(store) == held
    names = sorted(m.stem for m in (store / "manifests").glob("*.json"))
    assert names == [first["backup"], second["backup"]]  # the latest sorts last


def test_restore_refuses_a_data_folder_that_is_not_empty(bk_server: Server, tmp_path: Path) -> None:
    store = tmp_path / "store"
    backup_json(store, bk_server.data)
    target = tmp_path / "taken"
    target.mkdir()
    (target / "precious.txt").write_text("mine")
    out = trainhub("restore", str(store), "--data", str(target))
    assert out.returncode == 1
    assert f"--data: {target} is not empty" in out.stderr
    assert [p.name for p in target.iterdir()] == ["precious.txt"]


@pytest.mark.parametrize("bad", ["../escaped.txt", "/tmp/escaped.txt", "runs/../../escaped.txt"])
def test_a_manifest_path_that_leaves_the_data_folder_is_refused(
    bk_server: Server, tmp_path: Path, bad: str
) -> None:
    store = tmp_path / "store"
    name = backup_json(store, bk_server.data)["backup"]
    manifest = json.loads((store / "manifests" / f"{name}.json").read_text())
    db = manifest["database"]
    manifest["files"].append([bad, db["sha256"], 0o644, db["size"], 0])
    (store / "manifests" / "evil.json").write_text(json.dumps(manifest))
    target = tmp_path / "inner" / "data"
    out = trainhub("restore", str(store), "--backup", "evil", "--data", str(target))
    assert out.returncode == 1
    assert f"manifest path {bad!r} leaves the data folder" in out.stderr
    assert not (tmp_path / "inner" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/escaped.txt").exists()
    assert not target.exists() or not any(target.iterdir())


def test_a_damaged_object_stops_the_restore_and_leaves_the_folder_empty(
    bk_server: Server, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    name = backup_json(store, bk_server.data)["backup"]
    manifest = json.loads((store / "manifests" / f"{name}.json").read_text())
    victim = store / "objects" / manifest["database"]["sha256"][:2] / manifest["database"]["sha256"]
    victim.chmod(0o600)
    with victim.open("r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    target = tmp_path / "data"
    out = trainhub("restore", str(store), "--data", str(target))
    assert out.returncode == 1
    assert f"object {manifest['database']['sha256']} is damaged" in out.stderr
    assert list(target.iterdir()) == []


def test_pending_migrations_copy_the_database_first(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, docker_ready: None
) -> None:
    data = tmp_path / "old"
    data.mkdir()
    last = MIGRATIONS.pending(sqlite_utils.Database(memory=True))[-1].name
    old = sqlite_utils.Database(data / "trainhub.db")
    MIGRATIONS.apply(old, stop_before=last)  # a database one migration behind this trainhub
    old.close()
    srv = start_server(tmp_path_factory, "migrated", data=data)
    try:
        copies = list((data / "backups").glob("pre-migration-*.db"))
        assert len(copies) == 1, copies
        with sqlite3.connect(copies[0]) as conn:
            names = {r[0] for r in conn.execute("select name from _sqlite_migrations")}
        assert last not in names and len(names) > 0
        with sqlite3.connect(data / "trainhub.db") as conn:
            assert last in {r[0] for r in conn.execute("select name from _sqlite_migrations")}
        srv.stop()
        srv.start()  # nothing pending now: no second copy
        assert list((data / "backups").glob("pre-migration-*.db")) == copies
    finally:
        srv.cleanup()


def test_a_new_data_folder_gets_no_pre_migration_copy(bk_server: Server) -> None:
    assert not (bk_server.data / "backups").exists()


def test_a_touched_but_unchanged_file_is_read_again_and_stores_nothing(
    bk_server: Server, tmp_path: Path
) -> None:
    client = bk_server.client()
    run = submit(client, DONE, use_docker=False)
    wait_for_status(client, run["runId"])
    store = tmp_path / "store"
    backup_json(store, bk_server.data)
    held = objects(store)
    touched = [p for p in (bk_server.data / "runs" / run["runId"]).rglob("*") if p.is_file()]
    for path in touched:
        os.utime(path)  # a new mtime, the same bytes: the stat shortcut misses, the hash matches
    again = backup_json(store, bk_server.data)
    assert again["hashed_files"] == len(touched) > 1
    assert again["new_objects"] == 0 and objects(store) == held


def test_a_later_backup_sees_files_added_changed_and_removed_in_old_folders(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    outputs = data / "runs" / "r1" / "outputs"
    outputs.mkdir(parents=True)
    with sqlite3.connect(data / "trainhub.db") as conn:
        conn.execute("create table t (x)")
    for name in ("kept.txt", "changed.txt", "gone.txt"):
        (outputs / name).write_text(name)
    time.sleep(1.1)  # older than a backup's one second of doubt: their folders need no listing
    store = tmp_path / "store"
    backup_json(store, data)
    (outputs / "new.txt").write_text("new")
    (outputs / "changed.txt").write_text("changed, longer")
    (outputs / "gone.txt").unlink()
    assert backup_json(store, data)["hashed_files"] == 2
    restored = tmp_path / "restored"
    out = trainhub("restore", str(store), "--data", str(restored))
    assert out.returncode == 0, out.stderr
    got = {p.name: p.read_text() for p in (restored / "runs" / "r1" / "outputs").iterdir()}
    assert got == {"kept.txt": "kept.txt", "changed.txt": "changed, longer", "new.txt": "new"}
