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
    assert names[:5] == [
        "0001_initial",
        "0002_snapshots_metrics_tags",
        "0003_environments",
        "0004_nodes_and_scheduling",
        "0005_accounts",
    ]
    assert names == sorted(set(names)), "each migration once, in order"
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


def test_the_table_of_edges_frees_exactly_on_ends_and_requeues() -> None:
    for (current, to), hold in lifecycle.EDGES.items():
        assert not current.is_terminal(), f"{current} is terminal and has an edge out"
        if to.is_terminal() or to is RunStatus.QUEUED:
            assert hold is lifecycle.Hold.FREE, (current, to)
        elif (current, to) == (RunStatus.QUEUED, RunStatus.PREPARING):
            assert hold is lifecycle.Hold.TAKE
        else:
            assert hold is lifecycle.Hold.KEEP, (current, to)
    assert not lifecycle.allowed(RunStatus.QUEUED, RunStatus.RUNNING)
    assert not lifecycle.allowed(RunStatus.CANCEL_REQUESTED, RunStatus.COMPLETED)


def test_an_edge_outside_the_table_is_refused_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(tmp_path / "t.db")
    run = db.write_sync(
        lambda c: q.insert_run(c, experiment="e", spec={}, snapshot="s", target="local")
    )
    with caplog.at_level("WARNING", logger="trainhub.lifecycle"):
        assert not db.write_sync(lambda c: lifecycle.move(c, run.id, RunStatus.COMPLETED))
    assert f"run {run.id}: refused the edge Queued -> Completed" in caplog.text
    assert db.read_sync(lambda c: q.get_run(c, run.id)).status is RunStatus.QUEUED  # type: ignore[union-attr]
    # A claim without placements would hold nothing: refused before anything is written.
    with pytest.raises(lifecycle.EdgeRefused):
        db.write_sync(lambda c: lifecycle.move(c, run.id, RunStatus.PREPARING))
    assert [e["status"] for e in db.read_sync(lambda c: q.run_events(c, run.id))] == ["Queued"]
    db.close()


def test_metric_summary_kept_by_its_trigger_matches_the_points(tmp_path: Path) -> None:
    """The runs table's metric columns read metric_summary: it must equal aggregating the points,
    whatever was logged (numbers, text, lists, a name logged once)."""
    import json

    from trainhub.store import metrics, views

    db = Database(tmp_path / "t.db")
    run = db.write_sync(
        lambda c: q.insert_run(
            c, experiment="e", spec={"entry_script": "t.py"}, snapshot="x", target="local"
        )
    )

    def record(name: str, kind: str, value: object, step: int | None = None) -> str:
        return json.dumps({"t": "metric", "name": name, "kind": kind, "value": value, "step": step})

    lines = [
        record("loss", "scalar", 0.9, 0),
        record("loss", "scalar", 0.2, 1),
        record("loss", "scalar", "nan-ish", 2),  # text: not a number, never the last value
        record("loss", "scalar", 0.5, 3),
        record("acc", "scalar", 7),
        record("labels", "list", [1, 2, 3]),
        record("note", "scalar", "hello"),
    ]
    db.write_sync(lambda c: metrics.ingest(c, run.id, lines, len(lines)))
    columns = db.read_sync(lambda c: views.metric_columns(c, [run.id], ["loss", "acc", "note"]))
    assert columns == {
        (run.id, "loss"): {"last": 0.5, "min": 0.2, "max": 0.9},
        (run.id, "acc"): {"last": 7, "min": 7.0, "max": 7.0},
    }
    assert db.read_sync(lambda c: views.metric_names(c, [run.id])) == ["acc", "loss", "note"]
    db.close()
