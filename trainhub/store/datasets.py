"""Datasets: versioned records over paths of one datastore (Azure ML's ``FileDataset`` and
``TabularDataset``), and which runs read or wrote them. A row without a name is a dataset a run used
unregistered (Azure ML's "saved" dataset): one row per definition."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import sqlite_utils

KINDS = ("file", "tabular")


@dataclass(frozen=True)
class DatasetRow:
    id: str
    seq: int
    name: str | None
    version: int | None
    kind: str
    datastore: str
    paths: list[str]
    options: dict[str, Any]
    definition: str
    description: str | None
    tags: dict[str, str]
    created_by: str | None
    created_at: float

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DatasetRow:
        values = dict(row)
        for key in ("paths", "options", "tags"):
            values[key] = json.loads(values.get(key) or ("[]" if key == "paths" else "{}"))
        return cls(**values)

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}" if self.name else f"(unregistered) {self.id[:8]}"


@dataclass(frozen=True)
class DatasetName:
    """A name's latest version and how many versions it has, for the list of datasets."""

    latest: DatasetRow
    versions: int
    runs: int


@dataclass(frozen=True)
class DatasetUse:
    """A run that read or wrote a dataset, with what the run pages show of it."""

    run_id: str
    reference: str
    direction: str
    mode: str | None
    dataset: DatasetRow
    experiment: str
    status: str
    created_at: float


def definition_key(kind: str, datastore: str, paths: list[str], options: dict[str, Any]) -> str:
    """Equal data, equal key: what a dataset reads, not its name or tags."""
    body = json.dumps([kind, datastore.lower(), paths, options], sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def get_by_id(db: sqlite_utils.Database, dataset_id: str) -> DatasetRow | None:
    rows = list(db.query("select * from datasets where id = ?", [dataset_id]))
    return DatasetRow.from_row(rows[0]) if rows else None


def get_by_name(
    db: sqlite_utils.Database, name: str, version: int | None = None
) -> DatasetRow | None:
    """A version of ``name`` (names are case-insensitive), or its latest one."""
    if version is None:
        sql = "select * from datasets where lower(name) = lower(?) order by version desc limit 1"
        rows = list(db.query(sql, [name]))
    else:
        sql = "select * from datasets where lower(name) = lower(?) and version = ?"
        rows = list(db.query(sql, [name, version]))
    return DatasetRow.from_row(rows[0]) if rows else None


def find_saved(db: sqlite_utils.Database, definition: str) -> DatasetRow | None:
    sql = "select * from datasets where name is null and definition = ? limit 1"
    rows = list(db.query(sql, [definition]))
    return DatasetRow.from_row(rows[0]) if rows else None


def versions_of(db: sqlite_utils.Database, name: str) -> list[DatasetRow]:
    sql = "select * from datasets where lower(name) = lower(?) order by version desc"
    return [DatasetRow.from_row(r) for r in db.query(sql, [name])]


def list_names(
    db: sqlite_utils.Database, *, contains: str | None = None, limit: int = 500
) -> list[DatasetName]:
    """Each registered name's latest version, its number of versions and of runs that used any
    of them, the newest registration first."""
    where, params = "where name is not null", []
    if contains:
        where += " and instr(lower(name), lower(?)) > 0"
        params.append(contains)
    sql = (
        "select d.*, g.n as n, (select count(distinct r.run_id) from dataset_runs r"
        " join datasets v on v.id = r.dataset_id where lower(v.name) = lower(d.name)) as runs"
        " from datasets d join ("
        f" select lower(name) as lname, max(version) as v, count(*) as n from datasets {where}"
        " group by lower(name)"
        ") g on lower(d.name) = g.lname and d.version = g.v order by d.seq desc limit ?"
    )
    out = []
    for row in db.query(sql, [*params, limit]):
        values = dict(row)
        versions, runs = int(values.pop("n")), int(values.pop("runs"))
        out.append(DatasetName(DatasetRow.from_row(values), versions, runs))
    return out


def add_dataset(
    db: sqlite_utils.Database,
    *,
    dataset_id: str,
    name: str | None,
    kind: str,
    datastore: str,
    paths: list[str],
    options: dict[str, Any],
    description: str | None = None,
    tags: dict[str, str] | None = None,
    created_by: str | None = None,
) -> DatasetRow:
    """A new record: the next version of ``name``, or a saved dataset when ``name`` is None. Run
    inside the writer, so two registrations of one name get two versions."""
    seq = int(db.execute("select coalesce(max(seq), 0) + 1 from datasets").fetchone()[0])
    version = None
    if name is not None:
        found = db.execute(
            "select coalesce(max(version), 0) + 1 from datasets where lower(name) = lower(?)",
            [name],
        ).fetchone()
        version = int(found[0])
    db.table("datasets").insert(
        {
            "id": dataset_id,
            "seq": seq,
            "name": name,
            "version": version,
            "kind": kind,
            "datastore": datastore,
            "paths": json.dumps(paths),
            "options": json.dumps(options, sort_keys=True),
            "definition": definition_key(kind, datastore, paths, options),
            "description": description or None,
            "tags": json.dumps(tags or {}),
            "created_by": created_by,
            "created_at": time.time(),
        }
    )
    row = get_by_id(db, dataset_id)
    assert row is not None
    return row


def record_use(
    db: sqlite_utils.Database,
    run_id: str,
    reference: str,
    dataset_id: str,
    direction: str,
    mode: str | None,
) -> None:
    db.table("dataset_runs").insert(
        {
            "run_id": run_id,
            "reference": reference,
            "dataset_id": dataset_id,
            "direction": direction,
            "mode": mode,
            "created_at": time.time(),
        },
        replace=True,
    )


_USES = (
    "select u.run_id, u.reference, u.direction, u.mode, r.experiment, r.status,"
    " r.created_at as run_created_at, d.* from dataset_runs u"
    " join datasets d on d.id = u.dataset_id join runs r on r.id = u.run_id"
)


def _uses(db: sqlite_utils.Database, where: str, params: list[Any]) -> list[DatasetUse]:
    out = []
    for row in db.query(f"{_USES} {where}", params):
        values = dict(row)
        head = {k: values.pop(k) for k in ("run_id", "reference", "direction", "mode")}
        experiment, status = values.pop("experiment"), values.pop("status")
        created = float(values.pop("run_created_at") or 0)
        out.append(
            DatasetUse(
                **head,
                dataset=DatasetRow.from_row(values),
                experiment=experiment,
                status=status,
                created_at=created,
            )
        )
    return out


def uses_of_run(db: sqlite_utils.Database, run_id: str) -> list[DatasetUse]:
    """The datasets a run read and wrote, inputs first."""
    return _uses(db, "where u.run_id = ? order by u.direction, u.reference", [run_id])


def uses_of_name(db: sqlite_utils.Database, name: str, limit: int = 200) -> list[DatasetUse]:
    """The runs that read or wrote any version of ``name``, newest first."""
    return _uses(
        db, "where lower(d.name) = lower(?) order by r.created_at desc limit ?", [name, limit]
    )
