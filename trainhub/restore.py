"""``trainhub restore``: a backup of :mod:`trainhub.backup` back into an empty data folder, every
manifest path checked before anything is written and every file's BLAKE3 hash checked as it is copied.
A manifest names the segments holding its finished runs' rows (:mod:`trainhub.backup_runs`), made by
this backup or taken from earlier ones: each is read back and checked against its hash as well."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from blake3 import blake3

from trainhub.backup import DB_NAME, EXCLUDED, BackupError, Meter, Quiet, Store, check_format

_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass
class FileEntry:
    path: str
    hash: str
    mode: int
    size: int
    mtime_ns: int


@dataclass
class RestoreSummary:
    backup: str
    data: str
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0


def safe_path(raw: Any) -> str:
    """A manifest path that stays inside the data folder: relative, no ``..``, ``.`` or empty
    parts, and none of the names the database and the server's own folders own."""
    if not isinstance(raw, str) or not raw or "\0" in raw:
        raise BackupError(f"manifest path {raw!r} is not a path")
    parts = PurePosixPath(raw).parts
    if raw.startswith("/") or any(p in ("", ".", "..") for p in raw.split("/")):
        raise BackupError(f"manifest path {raw!r} leaves the data folder: refused")
    if parts[0] in EXCLUDED:
        raise BackupError(f"manifest path {raw!r} names {parts[0]}, which a backup never holds")
    return raw


def _checked(
    store: Store, manifest: dict[str, Any], name: str
) -> tuple[list[tuple[str, int]], list[FileEntry], str]:
    """Every directory, file and hash of ``manifest`` and of the segments it names, refused whole
    if one is wrong."""
    check_format(manifest, name)
    try:
        db_sha = manifest["database"]["hash"]
        parts = [manifest]
        for entry in manifest["segments"]:
            if not isinstance(entry[0], str) or not _HASH.fullmatch(entry[0]):
                raise BackupError(f"the manifest names segment {entry[0]!r}, not a BLAKE3 hash")
            parts.append(json.loads(store.read(entry[0])))
        dirs = [
            (safe_path(path), int(mode) & 0o777)
            for part in parts
            for path, mode, *_ in part["dirs"]
        ]
        files = [
            FileEntry(safe_path(path), sha, int(mode) & 0o777, int(size), int(mtime_ns))
            for part in parts
            for path, sha, mode, size, mtime_ns in part["files"]
        ]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise BackupError(f"the manifest is damaged: {exc!r}") from None
    for sha in [db_sha, *(f.hash for f in files)]:
        if not isinstance(sha, str) or not _HASH.fullmatch(sha):
            raise BackupError(f"the manifest names {sha!r}, which is not a BLAKE3 hash")
    return dirs, files, db_sha


def _copy_out(store: Store, sha: str, dest: Path, meter: Meter) -> int:
    """Copy blob ``sha`` to ``dest`` (created, never through a link), checking its hash."""
    digest = blake3()
    size = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        for chunk in store.blob(sha):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
            meter.advance(len(chunk))
    if digest.hexdigest() != sha:
        raise BackupError(
            f"object {sha} is damaged (its content hashes to {digest.hexdigest()}): "
            f"{dest} not restored"
        )
    return size


def restore(
    src: Path, data: Path, name: str | None = None, meter: Meter | None = None, workers: int = 8
) -> RestoreSummary:
    """Restore backup ``name`` (the latest by default) from ``src`` into the empty folder ``data``."""
    meter = meter or Quiet()
    store = Store(src)
    names = store.names()
    if not names:
        raise BackupError(f"PATH: {src} holds no backup")
    store.load_packs()
    name = name or names[-1]
    dirs, files, db_sha = _checked(store, store.manifest(name), name)
    if data.exists() and (not data.is_dir() or any(data.iterdir())):
        raise BackupError(
            f"--data: {data} is not empty; restore only into an empty or new data folder"
        )
    started = time.monotonic()
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    summary = RestoreSummary(backup=name, data=str(data))
    meter.start(sum(f.size for f in files))
    try:
        for path, _mode in dirs:
            (data / path).mkdir(mode=0o700, parents=True, exist_ok=True)

        def restore_one(entry: FileEntry) -> int:
            dest = data / entry.path
            dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            size = _copy_out(store, entry.hash, dest, meter)
            os.chmod(dest, entry.mode)
            os.utime(dest, ns=(entry.mtime_ns, entry.mtime_ns))
            return size

        with ThreadPoolExecutor(max_workers=workers) as pool:
            summary.bytes = sum(pool.map(restore_one, files))
        summary.files = len(files)
        for path, mode in dirs:
            os.chmod(data / path, mode)
        _copy_out(store, db_sha, data / DB_NAME, meter)
    except OSError as exc:
        _empty(data)  # it was empty: leave it so, ready for another try
        raise BackupError(f"restore failed, {data} left empty: {exc}") from exc
    except BaseException:
        _empty(data)
        raise
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
