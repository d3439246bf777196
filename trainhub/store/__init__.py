"""SQLite state: one writer thread, parallel readers, named append-only migrations."""

from trainhub.store.db import Database

__all__ = ["Database"]
