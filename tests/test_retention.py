"""Retention and ``trainhub gc`` against a real server (real Docker runs, the real CLI).

"Old" is made by moving end times back in the server's database (two days, with
TRAINHUB_RETENTION_DAYS=1), and snapshots' store times back past gc's one-hour grace: the server
applies retention at start and then hourly, so within the test only ``trainhub gc`` applies it.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TOKEN, Server, ServerFactory, start_server
from tests.helpers import (
    add_user,
    cli_for,
    login,
    make_snapshot,
    submit,
    submit_raw,
    wait_for_log,
    wait_for_status,
    wait_until,
)
from tests.html import parse
from trainhub.settings import Settings
from trainhub.store import Database, snapshots

TWO_DAYS = 2 * 86400
# Writes an output of a known size, a log line and a metric; its name makes each snapshot its own.
SCRIPT = (
    "# {name}\nimport os\nfrom trainhub import Run\n"
    "os.makedirs('outputs', exist_ok=True)\n"
    "open('outputs/model.bin', 'wb').write(b'w' * 5000)\n"
    "print('trained {name}', flush=True)\n"
    "Run.get_context().log('loss', 0.25)\n"
)
HOLD = "import time\nprint('holding', flush=True)\ntime.sleep(120)\n"


def tree(path: Path) -> dict[str, int]:
    """Every file under ``path`` with its size."""
    return {
        p.relative_to(path).as_posix(): p.stat().st_size
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def folder_bytes(path: Path) -> int:
    return sum(tree(path).values()) if path.is_dir() else 0


@dataclass
class World:
    server: Server
    admin: httpx.Client
    runs: dict[str, str]  # role -> run id
    snapshots: dict[str, str]  # role -> sha256
    orphan: str  # a snapshot stored by a submission that was refused
    dry: dict[str, Any]  # `trainhub gc --dry-run --json`
    before_dry: dict[str, Any]
    after_dry: dict[str, Any]
    report: dict[str, Any]  # `trainhub gc --json`

    def run_dir(self, role: str) -> Path:
        return self.server.data / "runs" / self.runs[role]

    def snapshot_file(self, sha256: str) -> Path:
        return self.server.data / "snapshots" / f"{sha256}.tar.gz"


def _sql(server: Server, statement: str, params: list[Any]) -> None:
    with sqlite3.connect(server.data / "trainhub.db", timeout=30) as conn:
        conn.execute(statement, params)


def _disk_state(server: Server) -> dict[str, Any]:
    """What gc could change: the files of the runs and snapshots, and the runs' retention marks."""
    with sqlite3.connect(server.data / "trainhub.db", timeout=30) as conn:
        marks = conn.execute("select id, outputs_removed_at from runs order by id").fetchall()
        known = conn.execute("select sha256 from snapshots order by sha256").fetchall()
    runs = {p.name: tree(p) for p in (server.data / "runs").iterdir() if p.is_dir()}
    return {
        "runs": runs,
        "snapshots": tree(server.data / "snapshots"),
        "marks": marks,
        "known": known,
    }


def _interactive(admin: httpx.Client) -> dict[str, Any]:
    """An open interactive run holding a snapshot and one uploaded file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"print('notebook')\n"
        info = tarfile.TarInfo("nb.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    response = admin.post(
        "/api/v1/experiments/ret-open/interactive-runs",
        files={"snapshot": ("s.tar.gz", buf.getvalue(), "application/gzip")},
    )
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    put = admin.put(f"/api/v1/runs/{run['runId']}/files/outputs/table.csv", content=b"a,b\n1,2\n")
    assert put.status_code == 201, put.text
    return run


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[World]:
    srv = start_server(tmp_path_factory, "retention-data", retention_days="1")
    admin = srv.client()
    member = srv.client(add_user(admin, "ret-member"))
    runs = {
        role: submit(admin, SCRIPT.format(name=role), experiment="ret-a")["runId"]
        for role in ("old", "kept", "young")
    }
    runs["member"] = submit(member, SCRIPT.format(name="member"), experiment="ret-b")["runId"]
    runs["running"] = submit(admin, HOLD, experiment="ret-hold")["runId"]
    runs["open"] = _interactive(admin)["runId"]
    for role in ("old", "kept", "young", "member"):
        assert wait_for_status(admin, runs[role], timeout=120)["status"] == "Completed"
    wait_for_log(admin, runs["running"], "holding", timeout=120)
    # A submission refused after its snapshot was stored (no such compute target): no run holds it.
    refused = submit_raw(
        admin,
        {"entry_script": "train.py", "compute_target": "no-such-target"},
        make_snapshot({"train.py": "print('never runs')\n"}),
        experiment="ret-a",
    )
    assert refused.status_code == 422, refused.text
    tagged = admin.post(f"/api/v1/runs/{runs['kept']}/tags", json={"tags": {"keep": ""}})
    assert tagged.status_code == 200, tagged.text

    # "Old": every run but the young one ended (or started) two days ago; snapshots past the grace.
    for role in ("old", "kept", "running", "open"):
        _sql(
            srv,
            "update runs set created_at = created_at - ?, started_at = started_at - ?, "
            "ended_at = ended_at - ? where id = ?",
            [TWO_DAYS, TWO_DAYS, TWO_DAYS, runs[role]],
        )
    _sql(srv, "update snapshots set created_at = created_at - 7200", [])
    with sqlite3.connect(srv.data / "trainhub.db") as conn:
        snapshots = {
            role: conn.execute("select snapshot from runs where id = ?", [rid]).fetchone()[0]
            for role, rid in runs.items()
        }
        held = set(snapshots.values())
        (orphan,) = [
            row[0] for row in conn.execute("select sha256 from snapshots") if row[0] not in held
        ]

    cli = cli_for(srv.url, TOKEN)
    before_dry = _disk_state(srv)
    dry = cli("gc", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    after_dry = _disk_state(srv)
    done = cli("gc", "--json")
    assert done.returncode == 0, done.stderr
    yield World(
        srv,
        admin,
        runs,
        snapshots,
        orphan,
        json.loads(dry.stdout),
        before_dry,
        after_dry,
        json.loads(done.stdout),
    )
    admin.post(f"/api/v1/runs/{runs['running']}/cancel")
    admin.post(f"/api/v1/runs/{runs['open']}/complete")
    wait_for_status(admin, runs["running"], "Canceled", timeout=60)  # its container removed
    srv.cleanup()


@pytest.mark.docker
@pytest.mark.slow
def test_retention_removes_the_outputs_of_an_old_run_and_keeps_its_logs_and_metrics(
    world: World,
) -> None:
    admin, old = world.admin, world.runs["old"]
    assert world.report["runOutputs"]["names"] == [old]
    assert world.report["runOutputs"]["bytes"] >= 5000
    files = admin.get(f"/api/v1/runs/{old}/files").json()
    paths = [f["path"] for f in files["files"]]
    assert paths and all(p.startswith("logs/") for p in paths), paths
    assert files["outputsRemovedTimeUtc"]
    assert not (world.run_dir("old") / "outputs").exists()
    gone = admin.get(f"/api/v1/runs/{old}/files/outputs/model.bin")
    assert gone.status_code == 410
    assert "removed by retention" in gone.json()["error"]
    logs = [admin.get(f"/api/v1/runs/{old}/files/{p}") for p in paths]
    assert all(r.status_code == 200 for r in logs)
    assert any("trained old" in r.text for r in logs)
    metrics = admin.get(f"/api/v1/runs/{old}/metrics").json()
    assert "loss" in json.dumps(metrics)
    run = admin.get(f"/api/v1/runs/{old}").json()
    assert run["status"] == "Completed"


@pytest.mark.docker
@pytest.mark.slow
def test_the_run_page_says_the_outputs_were_removed(world: World) -> None:
    admin = world.server.client()
    add_user(admin, "ret-admin", role="admin")
    browser = login(world.server.url, "ret-admin")
    page = parse(browser.get(f"/runs/{world.runs['old']}"))
    assert "removed by retention" in page.find("outputs-removed").text
    kept_page = parse(browser.get(f"/runs/{world.runs['kept']}"))
    assert kept_page.by_id("outputs-removed") is None
    download = browser.get(f"/runs/{world.runs['old']}/files/outputs/model.bin")
    assert download.status_code == 410
    assert "removed by retention" in download.text


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("role", ["kept", "young"])
def test_a_kept_or_young_run_keeps_everything(world: World, role: str) -> None:
    response = world.admin.get(f"/api/v1/runs/{world.runs[role]}/files/outputs/model.bin")
    assert response.status_code == 200
    assert response.content == b"w" * 5000
    assert world.snapshot_file(world.snapshots[role]).is_file()


@pytest.mark.docker
@pytest.mark.slow
def test_a_running_run_and_an_open_interactive_run_are_untouched(world: World) -> None:
    running = world.admin.get(f"/api/v1/runs/{world.runs['running']}").json()
    assert running["status"] == "Running"
    assert world.snapshot_file(world.snapshots["running"]).is_file()
    opened = world.runs["open"]
    table = world.admin.get(f"/api/v1/runs/{opened}/files/outputs/table.csv")
    assert table.status_code == 200 and table.content == b"a,b\n1,2\n"
    assert world.snapshot_file(world.snapshots["open"]).is_file()
    before = world.before_dry["runs"][world.runs["running"]]
    assert set(before) <= set(tree(world.run_dir("running")))


@pytest.mark.docker
@pytest.mark.slow
def test_gc_dry_run_changes_nothing_and_says_what_gc_then_frees(world: World) -> None:
    assert world.before_dry == world.after_dry
    assert world.dry["dryRun"] is True
    assert world.dry["runOutputs"] == world.report["runOutputs"]
    assert world.dry["strayFiles"]["count"] == world.report["strayFiles"]["count"]


@pytest.mark.docker
@pytest.mark.slow
def test_gc_removes_an_unreferenced_snapshot_and_keeps_the_referenced_ones(world: World) -> None:
    removed = set(world.report["snapshots"]["names"])
    # The refused submission's snapshot (no run) and the old run's (retention let go of it).
    assert removed == {world.orphan, world.snapshots["old"]}
    for sha256 in removed:
        assert not world.snapshot_file(sha256).exists()
        assert world.admin.get(f"/api/v1/snapshots/{sha256}").status_code == 404
    for role in ("kept", "young", "running", "open"):
        assert world.snapshot_file(world.snapshots[role]).is_file(), role
    sizes = world.before_dry["snapshots"]
    assert world.report["snapshots"]["bytes"] == sum(sizes[f"{s}.tar.gz"] for s in removed)


@pytest.mark.docker
@pytest.mark.slow
def test_the_admin_page_shows_disk_use_per_experiment_and_user_matching_the_files(
    world: World,
) -> None:
    browser_admin = world.server.client()
    add_user(browser_admin, "ret-disk-admin", role="admin")
    page = parse(login(world.server.url, "ret-disk-admin").get("/users"))

    def shown(table_id: str) -> dict[str, tuple[int, int]]:
        rows = {}
        for tr in page.find(table_id).all(tag="tr")[1:]:
            cells = tr.all(tag="td")
            outputs, snapshots = cells[2].attrs["data-bytes"], cells[3].attrs["data-bytes"]
            rows[cells[0].text] = (int(outputs), int(snapshots))
        return rows

    def held(roles: list[str]) -> int:
        shas = {world.snapshots[r] for r in roles} - set(world.report["snapshots"]["names"])
        return sum(world.snapshot_file(s).stat().st_size for s in shas)

    experiments = shown("disk-experiment")
    ret_a = ["old", "kept", "young"]
    on_disk = sum(folder_bytes(world.run_dir(r)) for r in ret_a)
    assert experiments["ret-a"] == (on_disk, held(ret_a))
    assert experiments["ret-b"] == (folder_bytes(world.run_dir("member")), held(["member"]))
    users = shown("disk-user")
    assert users["ret-member"] == experiments["ret-b"]
    api = world.admin.get("/api/v1/disk").json()
    by_name = {r["name"]: (r["runBytes"], r["snapshotBytes"]) for r in api["experiments"]}
    assert by_name["ret-a"] == experiments["ret-a"]
    member = world.server.client(add_user(world.admin, "ret-nosy"))
    assert member.get("/api/v1/disk").status_code == 403
    assert member.post("/api/v1/gc", params={"dryRun": "true"}).status_code == 403


@pytest.mark.docker
def test_the_server_applies_retention_when_it_starts(make_server: ServerFactory) -> None:
    """The lifespan's pass, not ``trainhub gc``: an old run's outputs go at the next start."""
    srv = make_server(retention_days="1")
    admin = srv.client()
    run_id = submit(admin, SCRIPT.format(name="restart"), experiment="ret-start")["runId"]
    assert wait_for_status(admin, run_id)["status"] == "Completed"
    srv.stop()
    _sql(srv, "update runs set ended_at = ended_at - ? where id = ?", [TWO_DAYS, run_id])
    srv.start()
    admin = srv.client()
    wait_until(
        lambda: admin.get(f"/api/v1/runs/{run_id}/files/outputs/model.bin").status_code == 410,
        "the start's retention pass removed the old run's outputs",
    )
    assert not (srv.data / "runs" / run_id / "outputs").exists()


def test_gc_on_a_data_folder_no_server_uses(tmp_path: Path) -> None:
    """``--data``: retention and snapshots straight on the folder (a stopped server's)."""
    settings = Settings.load(data=tmp_path / "data")
    db = Database(settings.db_path)
    settings.snapshots_dir.mkdir(parents=True)
    for sha256, age in (("a" * 64, 7200), ("b" * 64, 0)):
        settings.snapshot_path(sha256).write_bytes(b"x" * 300)
        db.write_sync(lambda conn, s=sha256: snapshots.record(conn, s, 300, ["train.py"], 300))
        db.write_sync(
            lambda conn, s=sha256, a=age: conn.execute(
                "update snapshots set created_at = created_at - ? where sha256 = ?", [a, s]
            )
        )
    db.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINHUB_")}
    gc = [sys.executable, "-m", "trainhub", "gc", "--data", str(settings.data)]

    dry = subprocess.run([*gc, "--dry-run"], env=env, capture_output=True, text=True, check=True)
    assert "would free 300 bytes" in dry.stdout
    assert settings.snapshot_path("a" * 64).is_file()
    done = subprocess.run([*gc, "--json"], env=env, capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    assert report["snapshots"] == {"count": 1, "bytes": 300, "names": ["a" * 64]}
    assert report["images"] is None
    assert not settings.snapshot_path("a" * 64).exists()
    assert settings.snapshot_path("b" * 64).is_file()  # younger than the grace
    missing = subprocess.run(
        [*gc[:-1], str(tmp_path / "nowhere")], env=env, capture_output=True, text=True
    )
    assert missing.returncode != 0 and "not a trainhub data folder" in missing.stderr
