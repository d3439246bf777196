"""Environment images built on nodes, and named environment definitions (Azure ML's ``Environment``).

Definitions may hold registry passwords: they are stored here only and redacted on the way out.
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlite_utils


def record_image(
    db: sqlite_utils.Database,
    *,
    image: str,
    env_key: str,
    base_image: str,
    node: str,
    environment: dict[str, Any],
    build_seconds: float | None,
) -> None:
    now = time.time()
    existing = list(db.table("env_images").rows_where("image = ?", [image], limit=1))
    if existing:
        db.table("env_images").update(image, {"last_used_at": now})
        return
    db.table("env_images").insert(
        {
            "image": image,
            "env_key": env_key,
            "base_image": base_image,
            "node": node,
            "environment": json.dumps(environment),
            "created_at": now,
            "last_used_at": now,
            "build_seconds": build_seconds,
        }
    )


def touch_image(db: sqlite_utils.Database, image: str) -> None:
    if db.table("env_images").count_where("image = ?", [image]):
        db.table("env_images").update(image, {"last_used_at": time.time()})


def images(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return list(db.table("env_images").rows_where(order_by="last_used_at desc"))


def forget_image(db: sqlite_utils.Database, image: str) -> None:
    db.execute("delete from env_images where image = ?", [image])


def add_definition(db: sqlite_utils.Database, name: str, definition: dict[str, Any]) -> int:
    version = db.execute(
        "select coalesce(max(version), 0) + 1 from environment_definitions where name = ?", [name]
    ).fetchone()[0]
    db.table("environment_definitions").insert(
        {
            "name": name,
            "version": version,
            "definition": json.dumps(definition),
            "created_at": time.time(),
        }
    )
    return int(version)


def get_definition(
    db: sqlite_utils.Database, name: str, version: int | None = None
) -> dict[str, Any] | None:
    if version is None:
        row = db.execute(
            "select name, version, definition, created_at from environment_definitions where name = ? "
            "order by version desc limit 1",
            [name],
        ).fetchone()
    else:
        row = db.execute(
            "select name, version, definition, created_at from environment_definitions where name = ? and version = ?",
            [name, version],
        ).fetchone()
    if row is None:
        return None
    return {
        "name": row[0],
        "version": row[1],
        "definition": json.loads(row[2]),
        "created_at": row[3],
    }


def list_definitions(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    rows = db.execute(
        "select name, max(version) from environment_definitions group by name order by name"
    ).fetchall()
    found = [get_definition(db, name, version) for name, version in rows]
    return [f for f in found if f is not None]
