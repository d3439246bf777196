"""Run trees in the store, without a server: a script's records reach its own children only, a
parent's end ends its open children, a script's files for its children land in theirs only."""

from __future__ import annotations

import json
import os
from pathlib import Path

from trainhub.runs.artifacts import adopt_child_files, list_artifacts
from trainhub.store import Database, interactive, lifecycle, metrics
from trainhub.store import runs as q
from trainhub.store.lifecycle import EndReason, RunStatus


def _lines(*records: dict[str, object]) -> list[str]:
    return [json.dumps(r) for r in records]


def test_a_scripts_records_reach_its_own_children_and_no_other_run(tmp_path: Path) -> None:
    db = Database(tmp_path / "t.db")
    parent = db.write_sync(
        lambda c: q.insert_run(c, experiment="e", spec={}, snapshot="s", target="local", user="ann")
    )
    other = db.write_sync(
        lambda c: q.insert_run(c, experiment="o", spec={}, snapshot="s", target="local", user="bob")
    )
    metric = {"t": "metric", "kind": "scalar", "name": "acc", "value": 0.5}
    lines = _lines(
        {"t": "child", "id": "kid-1", "name": "fold 1"},
        {**metric, "run": "kid-1"},
        {"t": "tag", "run": "kid-1", "key": "fold", "value": "1"},
        {"t": "child", "run": "kid-1", "id": "kid-1-inner"},
        {**metric, "run": other.id},  # another run's: dropped
        {"t": "tag", "run": other.id, "key": "owned", "value": "yes"},
        {"t": "end", "run": other.id, "status": "Canceled"},
        {"t": "child", "id": other.id},  # an existing run is not taken over
        {"t": "child", "run": other.id, "id": "kid-of-other"},
        {"t": "child", "id": "../escape"},
        {"t": "end", "status": "Completed"},  # the script's own run ends when the script does
        {"t": "end", "run": "kid-1", "status": "Completed"},
        {**metric, "run": "kid-1", "value": 0.9},  # after its end: dropped
        {**metric, "run": ["not", "an", "id"]},
        {**metric},  # the script's own
    )
    assert db.write_sync(lambda c: metrics.ingest(c, parent.id, lines, len(lines))) == 6

    def read(run_id: str) -> q.RunRow:
        found = db.read_sync(lambda c: q.get_run(c, run_id))
        assert found is not None
        return found

    kid, inner = read("kid-1"), read("kid-1-inner")
    assert (kid.parent_id, kid.display_name, kid.kind, kid.user) == (
        parent.id,
        "fold 1",
        "interactive",
        "ann",
    )
    assert (kid.status, kid.tags, kid.last_seen_at) == (RunStatus.COMPLETED, {"fold": "1"}, None)
    assert (inner.parent_id, inner.status) == ("kid-1", RunStatus.COMPLETED)  # ended with kid-1
    assert db.read_sync(lambda c: metrics.summarize(metrics.series(c, "kid-1"))) == {"acc": 0.5}
    untouched = read(other.id)
    assert (untouched.status, untouched.tags, untouched.parent_id) == (RunStatus.QUEUED, {}, None)
    assert db.read_sync(lambda c: metrics.series(c, other.id)) == []
    assert read(parent.id).status is RunStatus.QUEUED
    assert db.read_sync(lambda c: metrics.summarize(metrics.series(c, parent.id))) == {"acc": 0.5}
    for missing in ("kid-of-other", "../escape"):
        assert db.read_sync(lambda c, m=missing: q.get_run(c, m)) is None
    db.close()


def test_open_children_end_with_their_parent_and_a_client_keeps_its_tree_open(
    tmp_path: Path,
) -> None:
    db = Database(tmp_path / "t.db")

    def start(parent: str | None = None, run_id: str | None = None) -> str:
        row = db.write_sync(
            lambda c: interactive.insert(
                c, experiment="e", user="ann", target="local", parent_id=parent, run_id=run_id
            )
        )
        return row.id

    top = start()
    done, open_child = start(top, "done"), start(top, "open")
    grandchild = start(open_child, "grand")
    db.write_sync(lambda c: lifecycle.complete_interactive(c, done))
    assert set(db.read_sync(lambda c: interactive.open_descendants(c, top))) == {
        open_child,
        grandchild,
    }
    db.write_sync(lambda c: c.execute("update runs set last_seen_at = 1"))
    db.write_sync(lambda c: interactive.touch_tree(c, top, 100.0))
    assert db.read_sync(lambda c: interactive.abandoned(c, before=50.0)) == []
    assert db.read_sync(lambda c: interactive.abandoned(c, before=200.0)) == [
        top,
        open_child,
        grandchild,
    ]

    db.write_sync(lambda c: lifecycle.fail(c, top, EndReason.ABANDONED, "its client went away"))
    rows = {r: db.read_sync(lambda c, r=r: q.get_run(c, r)) for r in (done, open_child, grandchild)}
    assert rows[done] is not None and rows[done].status is RunStatus.COMPLETED  # ended before
    for run_id in (open_child, grandchild):
        row = rows[run_id]
        assert row is not None and row.status is RunStatus.FAILED and row.reason == "abandoned"
        assert row.error is not None and "Its parent run" in json.loads(row.error)["message"]
    db.close()


def test_files_for_children_move_into_their_history_and_no_other_run_s(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    parent = runs_dir / "parent"
    holding = parent / ".trainhub-children"
    for relative, text in {
        "kid/outputs/model.txt": "kid's model",
        "kid/tensorboard/x": "not its to write",
        "stranger/outputs/planted.txt": "for a run that is not a child",
    }.items():
        (holding / relative).parent.mkdir(parents=True, exist_ok=True)
        (holding / relative).write_text(text)
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", holding / "kid" / "outputs" / "link.txt")
    assert list_artifacts(parent) == []  # the server's folder, not the parent's artifacts

    assert adopt_child_files(parent, runs_dir, {"kid"}) == 1
    assert (runs_dir / "kid" / "outputs" / "model.txt").read_text() == "kid's model"
    assert list_artifacts(runs_dir / "kid") == [("outputs/model.txt", 11)]
    assert not (runs_dir / "stranger").exists() and not holding.exists()
