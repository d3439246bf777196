"""Metrics and tags a script logs with ``Run.get_context()`` (they arrive through the launcher's
sync, with the records of the child runs it made) or a client sends straight (interactive runs)."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlite_utils

from trainhub.store import interactive, lifecycle
from trainhub.store.lifecycle import RunStatus

KINDS = ("scalar", "list", "row", "table", "image")


def complete_lines(data: bytes) -> list[str]:
    """The finished lines of a records file that a script may be writing right now."""
    complete = data[: data.rfind(b"\n") + 1]
    return complete.decode("utf-8", errors="replace").splitlines()


def ingest(db: sqlite_utils.Database, run_id: str, lines: list[str], upto: int) -> int:
    """Store context records ``lines`` (they are records ``upto - len(lines)`` .. ``upto``) and
    remember how many were taken, so a re-sent file is never counted twice. Returns the count kept."""
    row = db.execute("select seq, context_lines, tags from runs where id = ?", [run_id]).fetchone()
    if row is None:
        return 0
    seq, done, tags_json = row
    first = upto - len(lines)
    tags: dict[str, Any] = json.loads(tags_json or "{}")
    kept = 0
    family: _Family | None = None  # the run's children, read on the first record about one
    for index, line in enumerate(lines, start=first):
        if index < done:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if record.get("run", run_id) != run_id or record.get("t") in ("child", "end"):
            family = family or _Family(db, run_id)
            kept += family.apply(record)
        elif record.get("t") == "tag" and isinstance(record.get("key"), str):
            tags[record["key"]] = record.get("value")
            kept += 1
        elif _insert(db, run_id, record):
            kept += 1
    db.table("runs").update(seq, {"context_lines": max(done, upto), "tags": json.dumps(tags)})
    return kept


def _insert(db: sqlite_utils.Database, run_id: str, record: dict[str, Any]) -> bool:
    """One metric record (``Run.log*``) of the run, if it is one."""
    if not (
        record.get("t") == "metric"
        and record.get("kind") in KINDS
        and isinstance(record.get("name"), str)
    ):
        return False
    db.table("metrics").insert(
        {
            "run_id": run_id,
            "name": record["name"][:255],
            "kind": record["kind"],
            "step": record.get("step") if isinstance(record.get("step"), int) else None,
            "value": json.dumps(record.get("value")),
            "description": str(record.get("description") or "")[:1000],
            "at": float(record.get("at") or time.time()),
        }
    )
    return True


def append(db: sqlite_utils.Database, run_id: str, records: list[dict[str, Any]]) -> int:
    """Metric records a client sent straight to the server (checked by the caller): the same rows
    as a script's, so they show wherever a script's do (charts, TensorBoard, ``get_metrics``)."""
    return sum(_insert(db, run_id, {"t": "metric", **record}) for record in records)


class _Family:
    """Records a script wrote about child runs (``Run.get_context().child_run()``): a child made,
    a child's metrics and tags, a child ended. Only the run's own descendants are touched; records
    about any other run, or about a child that has ended, are dropped."""

    def __init__(self, db: sqlite_utils.Database, run_id: str) -> None:
        self.db = db
        self.run_id = run_id
        self.known = interactive.descendants(db, run_id)

    def _open(self, run_id: str) -> bool:
        row = self.db.execute("select status from runs where id = ?", [run_id]).fetchone()
        return row is not None and not RunStatus(row[0]).is_terminal()

    def apply(self, record: dict[str, Any]) -> int:
        subject = record.get("run", self.run_id)
        kind = record.get("t")
        if not isinstance(subject, str):
            return 0
        if kind == "child":
            return self._child(subject, record)
        if subject not in self.known or not self._open(subject):
            return 0
        if kind == "end":
            return self._end(subject, record)
        if kind == "tag" and isinstance(record.get("key"), str):
            set_tags(self.db, subject, {record["key"]: record.get("value")})
            return 1
        return int(_insert(self.db, subject, record))

    def _child(self, creator: str, record: dict[str, Any]) -> int:
        child_id = record.get("id")
        if (
            not (creator == self.run_id or creator in self.known)
            or not self._open(creator)
            or not isinstance(child_id, str)
            or not interactive.RUN_ID.fullmatch(child_id)
            or interactive.exists(self.db, child_id)
        ):
            return 0
        root = self.db.execute(
            "select experiment, user, target from runs where id = ?", [self.run_id]
        ).fetchone()
        name = record.get("name")
        interactive.insert(
            self.db,
            experiment=root[0],
            user=root[1],
            target=root[2],
            parent_id=creator,
            run_id=child_id,
            display_name=name[:255] if isinstance(name, str) else None,
            watched=False,
            why=f"started by the script of run {self.run_id}",
        )
        self.known.add(child_id)
        return 1

    def _end(self, subject: str, record: dict[str, Any]) -> int:
        status = record.get("status")
        if status == RunStatus.COMPLETED.value:
            done = lifecycle.complete_interactive(self.db, subject)
        elif status == RunStatus.FAILED.value:
            message = record.get("error")
            done = lifecycle.fail_interactive(
                self.db,
                subject,
                str(message)[:4000] if message else f"Failed by the script of run {self.run_id}",
            )
        elif status == RunStatus.CANCELED.value:
            done = lifecycle.cancel(self.db, subject)
        else:
            return 0
        return int(done)


def series(db: sqlite_utils.Database, run_id: str, name: str | None = None) -> list[dict[str, Any]]:
    where, params = "run_id = ?", [run_id]
    if name is not None:
        where += " and name = ?"
        params.append(name)
    rows = db.table("metrics").rows_where(where, params, order_by="id")
    return [{**r, "value": json.loads(r["value"])} for r in rows]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Azure ML's ``get_metrics()`` shape: a value logged once is the value, several times a list;
    ``log_list``/``log_table`` give the latest; ``log_row`` columns accumulate."""
    out: dict[str, Any] = {}
    grouped: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        grouped.setdefault(r["name"], []).append(r)
    for name, items in grouped.items():
        kind = items[-1]["kind"]
        if kind in ("list", "table"):
            out[name] = items[-1]["value"]
        elif kind == "row":
            columns: dict[str, list[Any]] = {}
            for item in items:
                if isinstance(item["value"], dict):
                    for col, val in item["value"].items():
                        columns.setdefault(col, []).append(val)
            out[name] = columns
        else:
            values = [i["value"] for i in items]
            out[name] = values[0] if len(values) == 1 else values
    return out


def set_tags(db: sqlite_utils.Database, run_id: str, new: dict[str, Any]) -> dict[str, Any]:
    row = db.execute("select seq, tags from runs where id = ?", [run_id]).fetchone()
    tags: dict[str, Any] = json.loads(row[1] or "{}")
    tags.update(new)
    db.table("runs").update(row[0], {"tags": json.dumps(tags)})
    return tags


def after_id(
    db: sqlite_utils.Database, run_id: str, after: int, limit: int
) -> list[dict[str, Any]]:
    """The run's metric rows logged after row ``after``, in order (for exports that go on)."""
    return list(
        db.query(
            "select id, name, kind, step, value, at from metrics"
            " where run_id = ? and id > ? order by id limit ?",
            [run_id, after, limit],
        )
    )
