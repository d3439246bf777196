"""Nodes (machines with a Docker engine), compute targets (named groups of nodes) and allocations
(what each running run holds). Allocations are freed in the same transaction that ends a run."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import sqlite_utils

LOCAL = "local"


@dataclass(frozen=True)
class NodeRow:
    name: str
    host: str
    port: int
    user: str
    key_path: str
    docker_socket: str
    host_key: str
    state: str
    enabled: bool
    draining: bool
    inventory: dict[str, Any]
    error: str | None
    created_at: float
    last_seen_at: float | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> NodeRow:
        values = dict(row)
        values["enabled"] = bool(values["enabled"])
        values["draining"] = bool(values["draining"])
        values["inventory"] = json.loads(values.get("inventory") or "{}")
        return cls(**values)

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dockerSocket": self.docker_socket,
            "hostKey": self.host_key,
            "state": self.state,
            "inventory": self.inventory,
            "error": self.error,
            "lastSeenUtc": self.last_seen_at,
        }


def add_node(db: sqlite_utils.Database, **values: Any) -> None:
    now = time.time()
    db.table("nodes").insert(
        {
            **values,
            "enabled": 1,
            "draining": 0,
            "created_at": now,
            "last_seen_at": now,
            "inventory": json.dumps(values.get("inventory") or {}),
        },
        replace=False,
    )


def get_node(db: sqlite_utils.Database, name: str) -> NodeRow | None:
    rows = list(db.table("nodes").rows_where("name = ?", [name], limit=1))
    return NodeRow.from_row(rows[0]) if rows else None


def list_nodes(db: sqlite_utils.Database) -> list[NodeRow]:
    return [NodeRow.from_row(r) for r in db.table("nodes").rows_where(order_by="name")]


def update_node(db: sqlite_utils.Database, name: str, **values: Any) -> None:
    if "inventory" in values:
        values["inventory"] = json.dumps(values["inventory"])
    db.table("nodes").update(name, values)


def remove_node(db: sqlite_utils.Database, name: str) -> None:
    db.execute("delete from nodes where name = ?", [name])
    for target in list(db.table("targets").rows):
        members = [n for n in json.loads(target["nodes"]) if n != name]
        db.table("targets").update(target["name"], {"nodes": json.dumps(members)})


def set_target(db: sqlite_utils.Database, name: str, nodes: list[str]) -> None:
    db.table("targets").upsert(
        {"name": name, "nodes": json.dumps(nodes), "created_at": time.time()}, pk="name"
    )


def remove_target(db: sqlite_utils.Database, name: str) -> None:
    db.execute("delete from targets where name = ?", [name])


def target_nodes(db: sqlite_utils.Database, name: str) -> list[str] | None:
    if name == LOCAL:
        return [LOCAL]
    rows = list(db.table("targets").rows_where("name = ?", [name], limit=1))
    return json.loads(rows[0]["nodes"]) if rows else None


def list_targets(db: sqlite_utils.Database) -> dict[str, list[str]]:
    found = {LOCAL: [LOCAL]}
    for row in db.table("targets").rows_where(order_by="name"):
        found[row["name"]] = json.loads(row["nodes"])
    return found


def allocations(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return [{**r, "gpus": json.loads(r["gpus"])} for r in db.table("allocations").rows]


def allocation_of(db: sqlite_utils.Database, run_id: str) -> list[dict[str, Any]]:
    return [
        {**r, "gpus": json.loads(r["gpus"])}
        for r in db.table("allocations").rows_where("run_id = ?", [run_id])
    ]


def allocations_of_ended_runs(db: sqlite_utils.Database) -> list[str]:
    """Runs that hold GPUs or slots although they are queued or finished (never, if all is well)."""
    rows = db.execute(
        "select distinct a.run_id from allocations a join runs r on r.id = a.run_id "
        "where r.status in ('Queued', 'Completed', 'Failed', 'Canceled') order by a.run_id"
    ).fetchall()
    return [str(row[0]) for row in rows]
