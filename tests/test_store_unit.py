"""SQLite store: migrations, one writer, transitions that apply only from the expected status."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from trainhub.store import Database, lifecycle
from trainhub.store import runs as q
from trainhub.store.lifecycle import RunStatus


def test_migrations_are_applied_once_and_recorded(tmp_path: Path) -> None:
    db = Database(tmp_path / "t.db")
    instance = db.read_sync(q.instance_id)
    db.close()
    db = Database(tmp_path / "t.db")
    assert db.read_sync(q.instance_id) == instance
    names = db.read_sync(lambda c: [r["name"] for r in c.table("_sqlite_migrations").rows])
    assert names == [
        "0001_initial",
        "0002_snapshots_metrics_tags",
        "0003_environments",
        "0004_nodes_and_scheduling",
    ]
    assert db.read_sync(lambda c: c.execute("pragma journal_mode").fetchone()[0]) == "wal"
    db.close()


def test_concurrent_submissions_get_distinct_numbers(tmp_path: Path) -> None:
    db = Database(tmp_path / "t.db")

    def insert() -> None:
        for _ in range(20):
            db.write_sync(
                lambda c: q.insert_run(c, experiment="e", spec={}, snapshot="s", target="local")
            )

    threads = [threading.Thread(target=insert) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    numbers = db.read_sync(lambda c: [r.number for r in q.list_runs(c, experiment="e", limit=500)])
    assert sorted(numbers) == list(range(1, 81))
    db.close()


def test_transition_applies_only_from_the_expected_status(tmp_path: Path) -> None:
    db = Database(tmp_path / "t.db")

    async def scenario() -> None:
        run = await db.write(
            lambda c: q.insert_run(c, experiment="e", spec={}, snapshot="s", target="local")
        )
        assert await db.write(
            lambda c: lifecycle.move(c, run.id, RunStatus.CANCELED, expect=[RunStatus.QUEUED])
        )
        # The launcher's claim comes too late: nothing changes.
        assert not await db.write(
            lambda c: lifecycle.move(c, run.id, RunStatus.PREPARING, expect=[RunStatus.QUEUED])
        )
        # A terminal run never moves again.
        assert not await db.write(lambda c: lifecycle.move(c, run.id, RunStatus.RUNNING))
        events = await db.read(lambda c: q.run_events(c, run.id))
        assert [e["status"] for e in events] == ["Queued", "Canceled"]

    asyncio.run(scenario())
    db.close()


def test_a_failed_write_rolls_back(tmp_path: Path) -> None:
    db = Database(tmp_path / "t.db")

    def bad(c: object) -> None:
        q.insert_run(c, experiment="e", spec={}, snapshot="s", target="local")  # type: ignore[arg-type]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        db.write_sync(bad)
    assert db.read_sync(lambda c: q.list_runs(c)) == []
    db.close()
