"""Slurm compute targets and the batch job of each run sent to one (``0018_slurm_targets``)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import sqlite_utils


@dataclass(frozen=True)
class SlurmTarget:
    name: str
    host: str
    port: int
    user: str
    key_path: str
    host_key: str
    partition: str
    account: str | None
    qos: str | None
    work_dir: str
    created_at: float

    def public(self) -> dict[str, Any]:
        """What the API shows: never the key's path (a secret's location on the server)."""
        return {
            "name": self.name,
            "kind": "slurm",
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "hostKey": self.host_key,
            "partition": self.partition,
            "account": self.account,
            "qos": self.qos,
            "workDir": self.work_dir,
            "nodes": [],
        }


def put_target(db: sqlite_utils.Database, target: SlurmTarget) -> None:
    db.table("slurm_targets").upsert(asdict(target), pk="name")


def get_target(db: sqlite_utils.Database, name: str) -> SlurmTarget | None:
    rows = list(db.table("slurm_targets").rows_where("name = ?", [name], limit=1))
    return SlurmTarget(**rows[0]) if rows else None


def list_targets(db: sqlite_utils.Database) -> list[SlurmTarget]:
    return [SlurmTarget(**r) for r in db.table("slurm_targets").rows_where(order_by="name")]


def target_names(db: sqlite_utils.Database) -> frozenset[str]:
    return frozenset(str(r[0]) for r in db.execute("select name from slurm_targets").fetchall())


def remove_target(db: sqlite_utils.Database, name: str) -> None:
    db.execute("delete from slurm_targets where name = ?", [name])


def record_job(db: sqlite_utils.Database, run_id: str, target: str, job_id: str) -> None:
    db.table("slurm_jobs").upsert(
        {"run_id": run_id, "target": target, "job_id": job_id, "submitted_at": time.time()},
        pk="run_id",
    )


def job_of(db: sqlite_utils.Database, run_id: str) -> str | None:
    row = db.execute("select job_id from slurm_jobs where run_id = ?", [run_id]).fetchone()
    return str(row[0]) if row else None


def forget_job(db: sqlite_utils.Database, run_id: str) -> None:
    db.execute("delete from slurm_jobs where run_id = ?", [run_id])
