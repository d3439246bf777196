"""Registered models: one row per version of a name (Azure ML's ``Model``). The files are under
``Settings.model_dir(name, version)``; a row says what was registered and where it came from."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import sqlite_utils


@dataclass(frozen=True)
class ModelRow:
    seq: int
    name: str
    version: int
    path: str
    entry: str  # the file or folder name under the version's folder
    is_folder: bool
    size_bytes: int
    files: int
    sha256: str
    tags: dict[str, str]
    properties: dict[str, str]
    description: str | None
    run_id: str | None
    experiment: str | None
    created_by: str | None
    created_at: float

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ModelRow:
        values = dict(row)
        values["tags"] = json.loads(values.get("tags") or "{}")
        values["properties"] = json.loads(values.get("properties") or "{}")
        values["is_folder"] = bool(values["is_folder"])
        return cls(**values)

    @property
    def id(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class ModelName:
    """A name and its latest version, for the list of models."""

    latest: ModelRow
    versions: int


def get_model(db: sqlite_utils.Database, name: str, version: int | None = None) -> ModelRow | None:
    """A version of ``name``, or its latest one."""
    params: list[Any]
    if version is None:
        sql, params = "select * from models where name = ? order by version desc limit 1", [name]
    else:
        sql, params = "select * from models where name = ? and version = ?", [name, version]
    rows = list(db.query(sql, params))
    return ModelRow.from_row(rows[0]) if rows else None


def _tag_clauses(tags: list[tuple[str, str | None]]) -> tuple[list[str], list[Any]]:
    """Each tag as a clause: its key is set (``(key, None)``), or set to ``value``."""
    clauses: list[str] = []
    params: list[Any] = []
    for key, value in tags:
        if value is None:
            clauses.append("exists (select 1 from json_each(models.tags) where key = ?)")
            params.append(key)
        else:
            clauses.append(
                "exists (select 1 from json_each(models.tags) where key = ? and value = ?)"
            )
            params += [key, value]
    return clauses, params


def list_models(
    db: sqlite_utils.Database,
    *,
    name: str | None = None,
    tags: list[tuple[str, str | None]] | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[ModelRow]:
    """Versions, newest first; ``before`` (a ``seq``) continues a listing where a page ended."""
    clauses, params = _tag_clauses(tags or [])
    if name is not None:
        clauses.append("name = ?")
        params.append(name)
    if before is not None:
        clauses.append("seq < ?")
        params.append(before)
    where = f"where {' and '.join(clauses)}" if clauses else ""
    sql = f"select * from models {where} order by seq desc limit ?"
    return [ModelRow.from_row(r) for r in db.query(sql, [*params, limit])]


def list_names(
    db: sqlite_utils.Database, *, contains: str | None = None, limit: int = 500
) -> list[ModelName]:
    """Each name's latest version and how many versions it has, the newest registration first."""
    where, params = "", []
    if contains:
        where = "where instr(lower(name), lower(?)) > 0"
        params.append(contains)
    sql = (
        "select m.*, g.n as n from models m join ("
        f" select name, max(version) as v, count(*) as n from models {where} group by name"
        ") g on m.name = g.name and m.version = g.v order by m.seq desc limit ?"
    )
    out = []
    for row in db.query(sql, [*params, limit]):
        values = dict(row)
        versions = int(values.pop("n"))
        out.append(ModelName(ModelRow.from_row(values), versions))
    return out


def versions_of(db: sqlite_utils.Database, name: str) -> list[ModelRow]:
    return [
        ModelRow.from_row(r)
        for r in db.query("select * from models where name = ? order by version desc", [name])
    ]


def next_version(db: sqlite_utils.Database, name: str) -> int:
    found = db.execute(
        "select coalesce(max(version), 0) + 1 from models where name = ?", [name]
    ).fetchone()
    return int(found[0])


def add_model(db: sqlite_utils.Database, **values: Any) -> ModelRow:
    """Insert a version (``values`` holds every column but ``seq`` and ``created_at``)."""
    values["tags"] = json.dumps(values.get("tags") or {})
    values["properties"] = json.dumps(values.get("properties") or {})
    values["is_folder"] = int(values["is_folder"])
    db.table("models").insert({**values, "created_at": time.time()})
    row = get_model(db, values["name"], values["version"])
    assert row is not None
    return row


def update_model(
    db: sqlite_utils.Database,
    name: str,
    version: int,
    *,
    tags: dict[str, str] | None = None,
    description: str | None = None,
) -> None:
    values: dict[str, Any] = {}
    if tags is not None:
        values["tags"] = json.dumps(tags)
    if description is not None:
        values["description"] = description or None
    if values:
        sets = ", ".join(f"{key} = ?" for key in values)
        db.execute(
            f"update models set {sets} where name = ? and version = ?",
            [*values.values(), name, version],
        )


def remove_model(db: sqlite_utils.Database, name: str, version: int) -> None:
    db.execute("delete from models where name = ? and version = ?", [name, version])
