"""``trainhub backup`` and ``trainhub restore``: a data folder kept in a content-addressed store.

Run history grows for ever and changes little between two backups, so every file is stored once by
its SHA-256 and each backup is only a manifest (path -> hash, mode, size, mtime) in
``PATH/manifests/``. Files over 1 MiB are objects of their own (``PATH/objects/``); smaller ones (logs,
most outputs: tens of thousands of them) go into pack files of up to 64 of them (``PATH/packs/``,
restic's idea), because creating a file costs more than writing a small one on most file systems. A file whose size and mtime match the previous manifest keeps its hash unread:
a backup with no changes reads directory entries and nothing else.

The database is copied with SQLite's online backup API *before* the files are walked, while the
server goes on writing: every file a row of that copy names (a snapshot, a run's outputs) is on disk
by then. Symbolic links are never followed (nor stored), nothing is written outside ``PATH``, and a
restore checks every path and every hash before a byte lands in the (empty) data folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from trainhub import __version__

FORMAT = 1
DB_NAME = "trainhub.db"
#: Top-level entries of the data folder that a backup leaves out: the database (copied through
#: SQLite instead), pre-migration copies, half-received uploads, the working folders of running
#: process runs, and environments that are built again when a run needs them.
EXCLUDED = frozenset(
    {
        DB_NAME,
        f"{DB_NAME}-wal",
        f"{DB_NAME}-shm",
        f"{DB_NAME}-journal",
        "backups",
        "uploads",
        "work",
        "envs",
        "conda",
    }
)
SMALL = 1 << 20  # files up to this size are read whole: hashed before anything is written
CHUNK = 1 << 20
_SHA = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]*")


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says what to do."""


class Meter(Protocol):
    """Where progress goes (a rich progress bar in the CLI)."""

    def start(self, total_bytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...


class _Quiet:
    def start(self, total_bytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass


@dataclass
class FileEntry:
    path: str
    sha256: str
    mode: int
    size: int
    mtime_ns: int


@dataclass
class Summary:
    """What ``--json`` prints."""

    backup: str
    path: str
    files: int = 0
    bytes: int = 0
    new_objects: int = 0
    new_bytes: int = 0
    hashed_files: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


# The store ---------------------------------------------------------------------------------------
class Store:
    """``PATH``: ``objects/<aa>/<sha256>``, ``packs/<id>.pack`` with ``packs/<id>.idx`` (JSON
    ``[[sha256, offset, size], ...]``, written after its pack: an index means a complete pack),
    ``manifests/<name>.json``, and ``tmp/`` for files on their way into those (renamed into place
    once complete, so a killed backup leaves no half object and no manifest naming a missing one)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.packs = root / "packs"
        self.manifests = root / "manifests"
        self.tmp = root / "tmp"
        self.packed: dict[str, tuple[str, int, int]] = {}  # sha256 -> (pack id, offset, size)
        self._claimed: set[str] = set()
        self._lock = threading.Lock()
        self._loaded = False

    def load_packs(self) -> None:
        """Read the packs' indexes (once, and only when a blob is looked for: a backup with no
        change never needs them)."""
        if self._loaded or not self.packs.is_dir():
            return
        self._loaded = True
        for idx in self.packs.glob("*.idx"):
            pack = idx.stem
            try:
                for sha, offset, size in json.loads(idx.read_text()):
                    self.packed[sha] = (pack, int(offset), int(size))
            except (ValueError, TypeError) as exc:
                raise BackupError(f"{idx} is damaged: {exc}") from None

    def create(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for folder in (self.objects, self.packs, self.manifests, self.tmp):
            folder.mkdir(mode=0o700, exist_ok=True)
        stale = time.time() - 86400
        for left in self.tmp.iterdir():  # what a killed backup left (a day old: not a live one's)
            if left.lstat().st_mtime < stale:
                left.unlink()

    def object(self, sha: str) -> Path:
        return self.objects / sha[:2] / sha

    def names(self) -> list[str]:
        if not self.manifests.is_dir():
            return []
        return sorted(p.stem for p in self.manifests.glob("*.json"))

    def manifest(self, name: str) -> dict[str, Any]:
        if not _NAME.fullmatch(name):
            raise BackupError(f"--backup: {name!r} is not a backup name")
        path = self.manifests / f"{name}.json"
        if not path.is_file():
            known = ", ".join(self.names()) or "none"
            raise BackupError(f"no backup named {name} in {self.root} (there are: {known})")
        try:
            manifest: dict[str, Any] = json.loads(path.read_text())
        except ValueError as exc:
            raise BackupError(f"{path} is not a backup manifest: {exc}") from None
        return manifest

    def claim(self, sha: str) -> bool:
        """Whether ``sha`` is new here (and now this caller's to store): one thread stores it."""
        with self._lock:
            self.load_packs()
            if sha in self._claimed or sha in self.packed:
                return False
            self._claimed.add(sha)
        return not self.object(sha).exists()

    def add(self, src: Path, meter: Meter, pack: Pack) -> tuple[str, int, bool]:
        """Store ``src`` (never through a symlink): (sha256, bytes read, whether it was new)."""
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            first = f.read(SMALL + 1)
            if len(first) <= SMALL:  # read whole: one already stored is not written again
                sha = hashlib.sha256(first).hexdigest()
                meter.advance(len(first))
                if not self.claim(sha):
                    return sha, len(first), False
                pack.put(sha, first)
                return sha, len(first), True
            digest = hashlib.sha256(first)
            size = len(first)
            meter.advance(size)

            def chunks() -> Iterator[bytes]:
                nonlocal size
                yield first
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    meter.advance(len(chunk))
                    yield chunk

            part = self._spool(chunks())
            sha = digest.hexdigest()
            return sha, size, self._place(sha, part)

    def add_file(self, path: Path) -> tuple[str, int, bool]:
        """Move a file made under ``tmp/`` (the database copy) into the store."""
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        sha = digest.hexdigest()
        size = path.stat().st_size
        return sha, size, self._place(sha, path)

    def _spool(self, chunks: Iterator[bytes] | list[bytes]) -> Path:
        part = self.tmp / f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
        with part.open("xb") as out:
            for chunk in chunks:
                out.write(chunk)
        return part

    def _place(self, sha: str, part: Path) -> bool:
        """Rename ``part`` into place: one system call, and a rename over an object that came in
        through another path meanwhile replaces it with the same bytes."""
        final = self.object(sha)
        new = not final.exists()
        final.parent.mkdir(mode=0o700, exist_ok=True)
        os.replace(part, final)
        return new

    def blob(self, sha: str) -> Iterator[bytes]:
        """The stored bytes of ``sha``, from its pack or its object file (unchecked)."""
        where = self.packed.get(sha)
        try:
            if where is not None:
                pack, offset, size = where
                with (self.packs / f"{pack}.pack").open("rb") as f:
                    f.seek(offset)
                    yield f.read(size)
                return
            with self.object(sha).open("rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
        except FileNotFoundError:
            raise BackupError(f"object {sha} is missing from {self.root}") from None

    def write_manifest(self, manifest: dict[str, Any]) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name, n = stamp, 1
        while (self.manifests / f"{name}.json").exists():
            n += 1
            name = f"{stamp}-{n:03d}"  # sorts after ``stamp`` and in order: the latest is last
        manifest["name"] = name
        part = self.tmp / f"{name}.json"
        part.write_text(json.dumps(manifest, separators=(",", ":")))
        os.replace(part, self.manifests / f"{name}.json")
        return name


class Pack:
    """Small files of one batch, written one after the other into one pack file."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.id = uuid.uuid4().hex
        self.part = store.tmp / f"{self.id}.pack"
        self.out: Any = None
        self.blobs: list[tuple[str, int, int]] = []
        self.offset = 0

    def put(self, sha: str, data: bytes) -> None:
        if self.out is None:
            self.out = self.part.open("xb")
        self.out.write(data)
        self.blobs.append((sha, self.offset, len(data)))
        self.offset += len(data)

    def close(self) -> None:
        if self.out is None:
            return
        self.out.close()
        os.replace(self.part, self.store.packs / f"{self.id}.pack")
        index = self.store.tmp / f"{self.id}.idx"
        index.write_text(json.dumps(self.blobs, separators=(",", ":")))
        os.replace(index, self.store.packs / f"{self.id}.idx")


# Backup ------------------------------------------------------------------------------------------
def _walk(data: Path, skipped: list[str]) -> Iterator[tuple[str, os.stat_result, bool]]:
    """(relative path, lstat, is a folder) for everything to back up, folders before their files;
    symlinks and other non-regular files are noted in ``skipped`` and not followed."""
    root = str(data)
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(f"{root}/{rel}" if rel else root) as entries:
            for entry in entries:
                path = f"{rel}/{entry.name}" if rel else entry.name
                if not rel and entry.name in EXCLUDED:
                    continue
                st = entry.stat(follow_symlinks=False)
                if entry.is_dir(follow_symlinks=False):
                    yield path, st, True
                    stack.append(path)
                elif entry.is_file(follow_symlinks=False):
                    yield path, st, False
                else:
                    skipped.append(path)


def _previous_hashes(store: Store) -> dict[str, tuple[int, int, str]]:
    """path -> (size, mtime_ns, sha256) from the latest manifest: the stat-based shortcut."""
    names = store.names()
    if not names:
        return {}
    try:
        files = store.manifest(names[-1]).get("files", [])
        return {f["path"]: (f["size"], f["mtime_ns"], f["sha256"]) for f in files}
    except (BackupError, KeyError, TypeError):
        return {}  # an unreadable manifest only costs the shortcut


def _check_paths(data: Path, dest: Path) -> None:
    if not (data / DB_NAME).is_file():
        raise BackupError(f"--data: {data} holds no {DB_NAME} (is it trainhub's data folder?)")
    inside = data.resolve()
    target = dest.resolve()
    if target == inside or inside in target.parents:
        raise BackupError(f"PATH: {dest} is inside the data folder {data}; back up elsewhere")


def backup(data: Path, dest: Path, meter: Meter | None = None, workers: int = 8) -> Summary:
    """Back up ``data`` (a running server's or not) into the store at ``dest``."""
    meter = meter or _Quiet()
    _check_paths(data, dest)
    store = Store(dest)
    store.create()
    started = time.monotonic()
    previous = _previous_hashes(store)

    copy = store.tmp / f"db-{os.getpid()}-{time.monotonic_ns()}"
    # SQLite's online backup API, as store.db.copy_database (not imported: sqlite_utils costs
    # 0.4 s of start-up, most of a backup with nothing new).
    source = sqlite3.connect(f"file:{data / DB_NAME}?mode=ro", uri=True)
    target = sqlite3.connect(str(copy))
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    db_sha, db_size, db_new = store.add_file(copy)

    summary = Summary(backup="", path=str(dest))
    dirs: list[dict[str, Any]] = []
    entries: list[FileEntry] = []
    todo: list[tuple[int, str]] = []
    for path, st, is_dir in _walk(data, summary.skipped):
        mode = st.st_mode & 0o777
        if is_dir:
            dirs.append({"path": path, "mode": mode})
            continue
        known = previous.get(path)
        sha = known[2] if known and known[:2] == (st.st_size, st.st_mtime_ns) else ""
        if not sha:
            todo.append((len(entries), path))
        entries.append(FileEntry(path, sha, mode, st.st_size, st.st_mtime_ns))

    meter.start(sum(entries[i].size for i, _ in todo))
    gone: set[int] = set()

    def store_batch(batch: list[tuple[int, str]]) -> list[tuple[int, str, int, bool]]:
        done = []
        pack = Pack(store)
        for index, path in batch:
            try:
                done.append((index, *store.add(data / path, meter, pack)))
            except OSError:  # removed meanwhile, or now a symlink (ELOOP)
                done.append((index, "", 0, False))
        pack.close()
        return done

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for results in pool.map(store_batch, _batches(todo, entries)):
            for index, sha, size, new in results:
                if not sha:
                    gone.add(index)
                    continue
                entries[index].sha256 = sha
                entries[index].size = size
                summary.new_objects += new
                summary.new_bytes += size if new else 0
    kept = [e for i, e in enumerate(entries) if i not in gone]
    summary.files = len(kept)
    summary.bytes = sum(e.size for e in kept)
    summary.hashed_files = len(todo)
    summary.new_objects += db_new
    summary.new_bytes += db_size if db_new else 0
    manifest = {
        "format": FORMAT,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "trainhub": __version__,
        "database": {"sha256": db_sha, "size": db_size},
        "dirs": dirs,
        "files": [
            {
                "path": e.path,
                "sha256": e.sha256,
                "mode": e.mode,
                "size": e.size,
                "mtime_ns": e.mtime_ns,
            }
            for e in kept
        ],
    }
    summary.backup = store.write_manifest(manifest)
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


def _batches(
    todo: list[tuple[int, str]], entries: list[FileEntry], most_bytes: int = 16 << 20
) -> Iterator[list[tuple[int, str]]]:
    """Files to hash in groups of up to 64 files or 16 MB: one thread hand-off per group, not per
    file (tens of thousands of small logs)."""
    batch: list[tuple[int, str]] = []
    size = 0
    for item in todo:
        batch.append(item)
        size += entries[item[0]].size
        if len(batch) >= 64 or size >= most_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# Restore -----------------------------------------------------------------------------------------
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


def _checked(manifest: dict[str, Any]) -> tuple[list[tuple[str, int]], list[FileEntry], str]:
    """Every directory, file and hash of ``manifest``, refused whole if one is wrong."""
    if manifest.get("format") != FORMAT:
        raise BackupError(f"backup format {manifest.get('format')!r} is not {FORMAT}")
    try:
        db_sha = manifest["database"]["sha256"]
        dirs = [(safe_path(d["path"]), int(d["mode"]) & 0o777) for d in manifest["dirs"]]
        files = [
            FileEntry(
                safe_path(f["path"]),
                str(f["sha256"]),
                int(f["mode"]) & 0o777,
                int(f["size"]),
                int(f["mtime_ns"]),
            )
            for f in manifest["files"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupError(f"the manifest is damaged: {exc!r}") from None
    for sha in [db_sha, *(f.sha256 for f in files)]:
        if not isinstance(sha, str) or not _SHA.fullmatch(sha):
            raise BackupError(f"the manifest names {sha!r}, which is not a SHA-256")
    return dirs, files, db_sha


def _copy_out(store: Store, sha: str, dest: Path, meter: Meter) -> int:
    """Copy blob ``sha`` to ``dest`` (created, never through a link), checking its hash."""
    digest = hashlib.sha256()
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
    meter = meter or _Quiet()
    store = Store(src)
    names = store.names()
    if not names:
        raise BackupError(f"PATH: {src} holds no backup")
    store.load_packs()
    name = name or names[-1]
    dirs, files, db_sha = _checked(store.manifest(name))
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
            size = _copy_out(store, entry.sha256, dest, meter)
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
