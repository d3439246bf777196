"""Datastores: named places for training data. ``server``: a folder under the data folder
(``Settings.datastore_dir(name)``), copied to the nodes that need it and cached there by content.
``shared``: a path every node of a target already has (an NFS mount), possibly one per node."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlite_utils

DEFAULT = "workspaceblobstore"


class DatastoreKind(StrEnum):
    SERVER = "server"
    SHARED = "shared"


@dataclass(frozen=True)
class DatastoreRow:
    name: str
    kind: str
    paths: dict[str, str]
    read_only: bool
    description: str | None
    created_by: str | None
    created_at: float

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DatastoreRow:
        values = dict(row)
        values["paths"] = json.loads(values.get("paths") or "{}")
        values["read_only"] = bool(values["read_only"])
        return cls(**values)

    def path_on(self, node: str) -> str | None:
        """A ``shared`` datastore's path on ``node`` (its own, else the one for every node)."""
        return self.paths.get(node) or self.paths.get("*")

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "paths": self.paths,
            "readOnly": self.read_only,
            "description": self.description,
            "createdBy": self.created_by,
            "createdUtc": self.created_at,
            "isDefault": self.name == DEFAULT,
        }


def get_datastore(db: sqlite_utils.Database, name: str) -> DatastoreRow | None:
    rows = list(db.query("select * from datastores where name = ?", [name]))
    return DatastoreRow.from_row(rows[0]) if rows else None


def list_datastores(db: sqlite_utils.Database) -> list[DatastoreRow]:
    return [DatastoreRow.from_row(r) for r in db.query("select * from datastores order by name")]


def add_datastore(
    db: sqlite_utils.Database,
    *,
    name: str,
    kind: str,
    paths: dict[str, str] | None = None,
    read_only: bool = False,
    description: str | None = None,
    created_by: str | None = None,
) -> DatastoreRow:
    db.table("datastores").insert(
        {
            "name": name,
            "kind": kind,
            "paths": json.dumps(paths or {}),
            "read_only": int(read_only),
            "description": description,
            "created_by": created_by,
            "created_at": time.time(),
        }
    )
    row = get_datastore(db, name)
    assert row is not None
    return row


def update_datastore(db: sqlite_utils.Database, name: str, **values: Any) -> None:
    if "paths" in values:
        values["paths"] = json.dumps(values["paths"])
    if "read_only" in values:
        values["read_only"] = int(values["read_only"])
    db.table("datastores").update(name, values)


def remove_datastore(db: sqlite_utils.Database, name: str) -> None:
    db.table("datastores").delete(name)


# A node's cached copies ---------------------------------------------------------------------
def get_copy(db: sqlite_utils.Database, node: str, key: str) -> dict[str, Any] | None:
    rows = list(db.query("select * from datastore_copies where node = ? and key = ?", [node, key]))
    return rows[0] if rows else None


def record_copy(db: sqlite_utils.Database, **values: Any) -> None:
    now = time.time()
    db.table("datastore_copies").upsert(
        {**values, "created_at": now, "last_used_at": now}, pk=("node", "key")
    )


def touch_copy(db: sqlite_utils.Database, node: str, key: str) -> None:
    db.execute(
        "update datastore_copies set last_used_at = ? where node = ? and key = ?",
        [time.time(), node, key],
    )


def forget_copy(db: sqlite_utils.Database, node: str, key: str) -> None:
    db.execute("delete from datastore_copies where node = ? and key = ?", [node, key])
