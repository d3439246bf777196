"""Metrics and tags a script logs with ``Run.get_context()``; they arrive through the launcher's sync."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlite_utils

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
    for index, line in enumerate(lines, start=first):
        if index < done:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if record.get("t") == "tag" and isinstance(record.get("key"), str):
            tags[record["key"]] = record.get("value")
            kept += 1
        elif (
            record.get("t") == "metric"
            and record.get("kind") in KINDS
            and isinstance(record.get("name"), str)
        ):
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
            kept += 1
    db.table("runs").update(seq, {"context_lines": max(done, upto), "tags": json.dumps(tags)})
    return kept


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
