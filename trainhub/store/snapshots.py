"""Snapshots the server holds, by SHA-256, with the file list used to check entry scripts."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlite_utils


def record(
    db: sqlite_utils.Database, sha256: str, size: int, files: list[str], expanded: int
) -> None:
    db.table("snapshots").upsert(
        {
            "sha256": sha256,
            "size": size,
            "file_count": len(files),
            "expanded_bytes": expanded,
            "files": json.dumps(sorted(files)),
            "created_at": time.time(),
        },
        pk="sha256",
    )


def get(db: sqlite_utils.Database, sha256: str) -> dict[str, Any] | None:
    rows = list(db.table("snapshots").rows_where("sha256 = ?", [sha256], limit=1))
    if not rows:
        return None
    row = dict(rows[0])
    row["files"] = json.loads(row["files"])
    return row
