"""The run listing's filters in the store: kind, parent, top-level runs, properties (set once),
tags removed from the indexed run_tags table. Runs that are interactive or children are made with
the store's own writes here: the services that make them belong to other parts of the SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from trainhub.store import Database
from trainhub.store import runs as q
from trainhub.store.runs import RunKind


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "t.db")
    yield database
    database.close()


def new_run(db: Database, experiment: str = "e", **fields: object) -> str:
    run = db.write_sync(
        lambda c: q.insert_run(c, experiment=experiment, spec={}, snapshot="s", target="local")
    )
    if fields:
        db.write_sync(lambda c: q.update_run(c, run.id, **fields))
    return run.id


def listed(db: Database, **filters: object) -> list[str]:
    return db.read_sync(lambda c: [r.id for r in q.list_runs(c, limit=100, **filters)])


def test_kind_parent_and_top_level_filters(db: Database) -> None:
    script = new_run(db)
    notebook = new_run(db, kind=RunKind.INTERACTIVE.value)
    child = new_run(db, kind=RunKind.INTERACTIVE.value, parent_id=notebook)
    grandchild = new_run(db, parent_id=child)
    assert listed(db) == [grandchild, child, notebook, script]
    assert listed(db, top_level=True) == [notebook, script]
    assert listed(db, kind=RunKind.INTERACTIVE) == [child, notebook]
    assert listed(db, kind=RunKind.INTERACTIVE, top_level=True) == [notebook]
    assert listed(db, parent=notebook) == [child]
    assert listed(db, parent=notebook, top_level=True) == [child], "a parent names children"
    assert listed(db, parent=child, kind=RunKind.SCRIPT) == [grandchild]


def test_properties_are_set_once_and_filter_by_key_or_value(db: Database) -> None:
    plain = new_run(db)
    first = new_run(db)
    second = new_run(db)
    db.write_sync(lambda c: q.add_properties(c, first, {"dataset": "v1", "commit": "abc"}))
    db.write_sync(lambda c: q.add_properties(c, second, {"dataset": "v2"}))
    # The same value again is fine; another value for a key is refused, nothing changes.
    assert db.write_sync(lambda c: q.add_properties(c, first, {"dataset": "v1"})) == {
        "dataset": "v1",
        "commit": "abc",
    }
    with pytest.raises(q.PropertyAlreadySet) as refused:
        db.write_sync(lambda c: q.add_properties(c, first, {"note": "x", "dataset": "v9"}))
    assert (refused.value.key, refused.value.value) == ("dataset", "v1")
    row = db.read_sync(lambda c: q.get_run(c, first))
    assert row is not None and row.properties == {"dataset": "v1", "commit": "abc"}
    assert listed(db, properties=["dataset"]) == [second, first]
    assert listed(db, properties=["dataset=v1"]) == [first]
    assert listed(db, properties=["dataset=v2", "commit"]) == []
    assert listed(db, properties=["dataset", "commit=abc"]) == [first]
    assert listed(db, properties=["dataset", "commit=zzz"]) == []
    assert plain not in listed(db, properties=["dataset"])


def test_removed_tags_leave_the_tag_index(db: Database) -> None:
    run = new_run(db, tags='{"team": "vision", "stage": "final"}')
    other = new_run(db, tags='{"team": "nlp"}')
    assert listed(db, tags=["team"]) == [other, run]
    left = db.write_sync(lambda c: q.remove_tags(c, run, ["team", "absent"]))
    assert left == {"stage": "final"}
    assert listed(db, tags=["team"]) == [other]
    assert listed(db, tags=["stage=final"]) == [run]
    assert listed(db, tags=["stage", "team"]) == []
    db.write_sync(lambda c: q.add_properties(c, other, {"seed": "1"}))
    assert listed(db, tags=["team=nlp"], properties=["seed=1"]) == [other]
    assert listed(db, tags=["stage"], properties=["seed"]) == []
