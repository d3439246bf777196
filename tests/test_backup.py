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
from trainhub.store import Database
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


def backup_json(store: Path, data: Path, *more: str) -> dict[str, Any]:
    done = trainhub("backup", str(store), "--data", str(data), "--json", *more)
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
    manifest["files"].append([bad, db["hash"], 0o644, db["size"], 0])
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
    victim = store / "objects" / manifest["database"]["hash"][:2] / manifest["database"]["hash"]
    victim.chmod(0o600)
    with victim.open("r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    target = tmp_path / "data"
    out = trainhub("restore", str(store), "--data", str(target))
    assert out.returncode == 1
    assert f"object {manifest['database']['hash']} is damaged" in out.stderr
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


def test_a_touched_but_unchanged_file_is_read_again_by_full_and_stores_nothing(
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
    # The run has ended: its folder is taken from the previous backup, unread, unless --full.
    assert backup_json(store, bk_server.data)["hashed_files"] == 0
    again = backup_json(store, bk_server.data, "--full")
    assert again["hashed_files"] == len(touched) > 1
    # No content stored again: the one new object is the segment of the finished runs' rows,
    # whose mtimes changed.
    assert again["new_objects"] == 1 and len(objects(store) - held) == 1


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


# Finished runs taken from the previous backup (synthetic data folders with the real schema: quick)
def new_data(folder: Path) -> Path:
    Database(folder / "trainhub.db").close()
    with sqlite3.connect(folder / "trainhub.db") as conn:
        conn.execute("insert into experiments (name, created_at) values ('e', 0)")
    return folder


def add_run(
    data: Path, run_id: str, files: dict[str, str], ended: bool, parent: str | None = None
) -> None:
    """A run's row and folder as the server leaves them: an ended run is measured."""
    for name, text in files.items():
        (data / "runs" / run_id / name).parent.mkdir(parents=True, exist_ok=True)
        (data / "runs" / run_id / name).write_text(text)
    with sqlite3.connect(data / "trainhub.db") as conn:
        number = conn.execute("select count(*) + 1 from runs").fetchone()[0]
        conn.execute(
            "insert into runs (id, experiment, number, status, spec, created_at, ended_at, "
            "stored_bytes, parent_id) values (?, 'e', ?, ?, '{}', 0, ?, ?, ?)",
            [run_id, number, "Completed", 1.0, 10, parent]
            if ended
            else [run_id, number, "Running", None, None, parent],
        )


def tree(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``folder`` but the database: bytes, mode and mtime."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mode, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith("trainhub.db")
    }


def restored_tree(store: Path, target: Path) -> dict[str, tuple[bytes, int, int]]:
    out = trainhub("restore", str(store), "--data", str(target))
    assert out.returncode == 0, out.stderr
    return tree(target)


def test_a_file_changed_in_a_running_runs_folder_is_backed_up_again(tmp_path: Path) -> None:
    data = new_data(tmp_path / "data")
    add_run(data, "done_1", {"outputs/a.txt": "final"}, ended=True)
    add_run(data, "live_1", {"outputs/progress.txt": "step 1"}, ended=False)
    # A child run that has ended still gets the files its running parent's script uploads for it.
    add_run(data, "child_1", {"outputs/c.txt": "first"}, ended=True, parent="live_1")
    add_run(data, "grandchild_1", {"outputs/g.txt": "first"}, ended=True, parent="child_1")
    store = tmp_path / "store"
    backup_json(store, data)
    (data / "runs" / "live_1" / "outputs" / "progress.txt").write_text("step 2")
    (data / "runs" / "child_1" / "outputs" / "c.txt").write_text("uploaded later")
    (data / "runs" / "grandchild_1" / "outputs" / "g.txt").write_text("uploaded later")
    again = backup_json(store, data)
    assert again["runs_reused"] == 1 and again["hashed_files"] == 3
    got = restored_tree(store, tmp_path / "restored")
    assert got["runs/live_1/outputs/progress.txt"][0] == b"step 2"
    assert got["runs/grandchild_1/outputs/g.txt"][0] == b"uploaded later"
    assert got == tree(data)


def test_full_notices_a_hand_edit_in_a_finished_runs_folder(tmp_path: Path) -> None:
    data = new_data(tmp_path / "data")
    add_run(data, "done_1", {"outputs/a.txt": "final", "logs/driver_log.txt": "ok"}, ended=True)
    store = tmp_path / "store"
    backup_json(store, data)
    (data / "runs" / "done_1" / "outputs" / "a.txt").write_text("edited by hand")
    # Without --full the finished run's folder is taken as it was (the documented assumption).
    assert backup_json(store, data)["hashed_files"] == 0
    assert restored_tree(store, tmp_path / "r1")["runs/done_1/outputs/a.txt"][0] == b"final"
    full = backup_json(store, data, "--full")
    assert full["hashed_files"] == 1 and full["runs_reused"] == 0
    assert restored_tree(store, tmp_path / "r2") == tree(data)
    assert backup_json(store, data)["runs_reused"] == 1  # and later ones reuse it again


def test_restoring_the_third_of_a_chain_of_backups_gives_the_latest_state(tmp_path: Path) -> None:
    data = new_data(tmp_path / "data")
    for n in range(3):
        add_run(data, f"old_{n}", {"outputs/m.bin": f"model {n}", "logs/l.txt": "log"}, ended=True)
    add_run(data, "live_1", {"outputs/p.txt": "1"}, ended=False)
    (data / "snapshots").mkdir()
    (data / "snapshots" / "s1.tar.gz").write_bytes(b"snap 1")
    store = tmp_path / "store"
    backup_json(store, data)

    # Second: a run ends, retention removes a finished run's outputs, a new run and a snapshot.
    with sqlite3.connect(data / "trainhub.db") as conn:
        conn.execute("update runs set ended_at = 2, stored_bytes = 1 where id = 'live_1'")
        conn.execute("update runs set outputs_removed_at = ? where id = 'old_0'", [time.time()])
    (data / "runs" / "live_1" / "outputs" / "p.txt").write_text("final 2")
    (data / "runs" / "old_0" / "outputs" / "m.bin").unlink()
    add_run(data, "live_2", {"outputs/p.txt": "a"}, ended=False)
    (data / "snapshots" / "s2.tar.gz").write_bytes(b"snap 2")
    second = backup_json(store, data)
    assert second["runs_reused"] == 2  # old_1, old_2

    # Third: a finished run deleted, the new run ends with one more file.
    with sqlite3.connect(data / "trainhub.db") as conn:
        conn.execute("delete from runs where id = 'old_2'")
        conn.execute("update runs set ended_at = 3, stored_bytes = 2 where id = 'live_2'")
    (data / "runs" / "old_2" / "outputs" / "m.bin").unlink()
    (data / "runs" / "old_2" / "logs" / "l.txt").unlink()
    (data / "runs" / "live_2" / "outputs" / "more.txt").write_text("b")
    third = backup_json(store, data)
    assert third["runs_reused"] == 2  # old_1, live_1

    got = restored_tree(store, tmp_path / "restored")
    assert got == tree(data)
    assert "runs/old_0/outputs/m.bin" not in got and "runs/old_2/logs/l.txt" not in got
    with sqlite3.connect(tmp_path / "restored" / "trainhub.db") as conn:
        assert {r[0] for r in conn.execute("select id from runs")} == {
            "old_0",
            "old_1",
            "live_1",
            "live_2",
        }


def test_a_store_of_the_older_sha256_format_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    data = new_data(tmp_path / "data")
    store = tmp_path / "store"
    name = backup_json(store, data)["backup"]
    manifest = json.loads((store / "manifests" / f"{name}.json").read_text())
    manifest["format"] = 2
    (store / "manifests" / f"{name}.json").write_text(json.dumps(manifest))
    said = f"backup {name} has format 2, made by a development build of trainhub before BLAKE3"
    out = trainhub("restore", str(store), "--data", str(tmp_path / "restored"))
    assert out.returncode == 1 and said in out.stderr
    out = trainhub("backup", str(store), "--data", str(data))
    assert out.returncode == 1 and said in out.stderr
    assert [p.stem for p in (store / "manifests").iterdir()] == [name]
