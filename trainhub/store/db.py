"""The database handle: every write goes through ONE writer thread; reads run in parallel.

The pattern is datasette's: a queue feeds the writer, each write is a function of a
``sqlite_utils.Database`` run in one transaction; readers each hold a connection of their own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from trainhub.store.migrations import MIGRATIONS

T = TypeVar("T")
_STOP = object()
log = logging.getLogger("trainhub.store")

#: How many pre-migration copies of the database ``DATA/backups/`` keeps (the oldest go first).
PRE_MIGRATION_KEEP = 5


def _connect(path: Path, busy_seconds: float) -> sqlite_utils.Database:
    conn = sqlite3.connect(
        str(path), check_same_thread=False, timeout=busy_seconds, isolation_level=None
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_seconds * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    return sqlite_utils.Database(conn)


def copy_database(source: sqlite3.Connection, dest: Path) -> None:
    """A consistent copy of ``source`` at ``dest`` through SQLite's online backup API: one read
    transaction over every page, so writers (in WAL mode) go on and the copy is never torn."""
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    target = sqlite3.connect(str(part))
    try:
        source.backup(target)
    finally:
        target.close()
    os.replace(part, dest)


def copy_before_migrating(db: sqlite_utils.Database, path: Path) -> Path | None:
    """Copy a database that has pending migrations to ``DATA/backups/`` before they run, so an
    upgrade that goes wrong can be undone by putting the copy back. A new database (nothing applied
    yet) has nothing to lose; only the last :data:`PRE_MIGRATION_KEEP` copies are kept."""
    applied = MIGRATIONS.applied(db)
    if not applied or not MIGRATIONS.pending(db):
        return None
    folder = path.parent / "backups"
    folder.mkdir(mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = folder / f"pre-migration-{stamp}-{applied[-1].name}.db"
    copy_database(db.conn, dest)
    log.info("pending migrations: the database was copied to %s first", dest)
    for old in sorted(folder.glob("pre-migration-*.db"))[:-PRE_MIGRATION_KEEP]:
        old.unlink()
    return dest


class Database:
    def __init__(self, path: Path, busy_seconds: float = 30.0) -> None:
        self.path = path
        self.busy_seconds = busy_seconds
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = _connect(path, busy_seconds)
        self._writer.enable_wal()
        self._writer.execute("PRAGMA synchronous = NORMAL")
        copy_before_migrating(self._writer, path)
        MIGRATIONS.apply(self._writer)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._local = threading.local()
        self._readers: list[sqlite_utils.Database] = []
        self._readers_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._write_loop, name="trainhub-db-writer", daemon=True
        )
        self._thread.start()

    # Writes ---------------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            conn = self._writer.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = fn(self._writer)
                conn.execute("COMMIT")
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                future.set_exception(exc)
            else:
                future.set_result(result)

    def write_sync(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        future: Future[T] = Future()
        self._queue.put((fn, future))
        return future.result()

    async def write(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        future: Future[T] = Future()
        self._queue.put((fn, future))
        return await asyncio.wrap_future(future)

    # Reads ----------------------------------------------------------------------------------
    def read_sync(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        db = getattr(self._local, "db", None)
        if db is None:
            db = _connect(self.path, self.busy_seconds)
            db.execute("PRAGMA query_only = ON")
            self._local.db = db
            with self._readers_lock:
                self._readers.append(db)
        return fn(db)

    async def read(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        return await asyncio.to_thread(self.read_sync, fn)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
        self._writer.close()
        with self._readers_lock:
            for db in self._readers:
                db.close()
            self._readers.clear()
