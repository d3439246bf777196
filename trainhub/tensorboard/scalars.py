"""Metrics logged with ``run.log()`` as TensorBoard event files, so every run has curves in its
TensorBoard even when its script never wrote TensorBoard code.

They are written by the server into ``RUN_DIR/tensorboard/trainhub-metrics/``, beside (not inside)
the run's synced ``logs/``, with the ``tensorboard`` package's own protos and record writer (no
TensorFlow). One event file per run, only ever appended to (a TensorBoard reading it sees the new
records at its next reload); a small state file remembers the last metric row written.
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Any

from trainhub.store import Database
from trainhub.store import metrics as metric_store

METRICS_RUN = "trainhub-metrics"
EVENT_FILE = "events.out.tfevents.0000000000.trainhub"
STATE_FILE = "trainhub-export.json"
BATCH = 5000  # metric rows read per query


def metrics_dir(board_dir: Path) -> Path:
    return board_dir / METRICS_RUN


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def points(row: dict[str, Any], counts: dict[str, int]) -> list[tuple[str, int, float]]:
    """The (tag, step, value) points of one metric row: a scalar is one point, a row (``log_row``)
    one per numeric column (``name/column``); lists, tables and images have none. A point without
    a step takes the next step of its tag."""
    value = json.loads(row["value"]) if isinstance(row["value"], str) else row["value"]
    if row["kind"] == "scalar":
        items = [(row["name"], _number(value))]
    elif row["kind"] == "row" and isinstance(value, dict):
        items = [(f"{row['name']}/{column}", _number(v)) for column, v in value.items()]
    else:
        return []
    out: list[tuple[str, int, float]] = []
    for tag, number in items:
        if number is None:
            continue
        step = row["step"] if isinstance(row["step"], int) else counts.get(tag, 0)
        counts[tag] = max(counts.get(tag, 0), step + 1)
        out.append((tag, step, number))
    return out


def export(db: Database, run_id: str, board_dir: Path) -> int:
    """Append the run's metric rows not written yet to its event file; returns the points written.

    Blocking (a database read and a file append): run it off the event loop."""
    # Imported here: the protos are heavy, and only the server's TensorBoard side needs them.
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    folder = metrics_dir(board_dir)
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / STATE_FILE
    try:
        state = json.loads(state_path.read_text())
        last_id, counts = int(state["last_id"]), dict(state["counts"])
    except (OSError, ValueError, KeyError, TypeError):
        last_id, counts = 0, {}
    written = 0
    while True:
        rows = db.read_sync(
            functools.partial(metric_store.after_id, run_id=run_id, after=last_id, limit=BATCH)
        )
        if not rows:
            break
        path = folder / EVENT_FILE
        with path.open("ab") as raw:
            writer = RecordWriter(raw)
            if raw.tell() == 0:
                header = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
                writer.write(header.SerializeToString())
            for row in rows:
                for tag, step, number in points(row, counts):
                    summary = summary_pb2.Summary(
                        value=[summary_pb2.Summary.Value(tag=tag, simple_value=number)]
                    )
                    event = event_pb2.Event(wall_time=float(row["at"]), step=step, summary=summary)
                    writer.write(event.SerializeToString())
                    written += 1
            writer.flush()
        last_id = int(rows[-1]["id"])
        temporary = state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"last_id": last_id, "counts": counts}))
        os.replace(temporary, state_path)
    return written
