"""``trainhub backup`` and ``trainhub restore``: a data folder kept in a content-addressed store.

Run history grows for ever and changes little between two backups, so every file is stored once by
its BLAKE3 hash (three times SHA-256's speed: hashing is most of a first backup's CPU) and each
backup is only a manifest (path -> hash, mode, size, mtime) in
``PATH/manifests/``. Files over 1 MiB are objects of their own (``PATH/objects/``); smaller ones (logs,
most outputs: tens of thousands of them) go into pack files of up to 64 MiB (``PATH/packs/``,
restic's idea), because creating a file costs more than writing a small one on most file systems. A
file whose size and mtime match the previous manifest keeps its hash unread, and a folder whose mtime
and ctime match is not listed again. The folders of finished runs are not even walked: a backup takes
their rows from the previous one by reference (:mod:`trainhub.backup_runs`), so one with no change
reads the database copy, a short manifest and the folders that are not finished runs' folders.

The database is copied with SQLite's online backup API *before* the files are walked, while the
server goes on writing: every file a row of that copy names (a snapshot, a run's outputs) is on disk
by then. Symbolic links are never followed (nor stored), nothing is written outside ``PATH``, and a
restore (:mod:`trainhub.restore`) checks every path and every hash before a byte lands in the
(empty) data folder.

Speed (``bench/backup.py``) shapes the inner loops: a file is read with ``os.readv`` into one buffer
per thread (no file object, no allocation), a few threads hash (``blake3`` lets go of the GIL) while
the scan goes on, each thread fills its own pack, and a manifest row is a list, which JSON writes four
times faster than a dict.
"""

from __future__ import annotations

import json
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import Any, Protocol

from blake3 import blake3

from trainhub import __version__
from trainhub.backup_runs import RUNS, Segments, settled

#: 2: manifest rows are lists, [path, sha256, mode, size, mtime_ns]; 3: BLAKE3 instead of SHA-256,
#: and finished runs' rows in segments the manifest names (:mod:`trainhub.backup_runs`).
FORMAT = 3
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
#: Files up to this size are read whole and packed: hashed before anything is written.
SMALL = 1 << 20
BUFFER = 256 << 10  # stored blobs are read back in pieces of this size
PACK_BYTES = 64 << 20  # a pack is closed once this full
#: Hashing threads: BLAKE3 runs without the GIL, the per-file Python work holds it, so a few more
#: than the cores keeps them busy while one thread waits on a read or a write.
WORKERS = min(4, (os.cpu_count() or 1) + 1)
_NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]*")
_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW

#: A manifest's file row: [path, blake3, mode, size, mtime_ns].
Row = list[Any]


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says what to do."""


class Meter(Protocol):
    """Where progress goes (a rich progress bar in the CLI). ``start`` comes once the scan has
    found every file to read, after the first ``advance`` calls perhaps (hashing begins at once)."""

    def start(self, total_bytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...


class Quiet:
    """No progress shown (the library's default)."""

    def start(self, total_bytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass


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
    #: Finished runs whose folders were taken from the previous backup, not walked.
    runs_reused: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


# The store ---------------------------------------------------------------------------------------
class Store:
    """``PATH``: ``objects/<aa>/<blake3>``, ``packs/<id>.pack`` with ``packs/<id>.idx`` (JSON
    ``[[blake3, offset, size], ...]``, written after its pack: an index means a complete pack),
    ``manifests/<name>.json`` (the segments of finished runs' rows they name are objects too), and
    ``tmp/`` for files on their way into those (renamed into place once complete, so a killed
    backup leaves no half object and no manifest naming a missing one)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.packs = root / "packs"
        self.manifests = root / "manifests"
        self.tmp = root / "tmp"
        self.packed: dict[str, tuple[str, int, int]] = {}  # blake3 -> (pack id, offset, size)
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
            manifest: dict[str, Any] = json.loads(path.read_bytes())
        except ValueError as exc:
            raise BackupError(f"{path} is not a backup manifest: {exc}") from None
        return manifest

    def claim(self, sha: str) -> bool:
        """Whether the small blob ``sha`` is new here (and now this caller's to pack): one thread
        packs it. Small contents only ever go into packs, so the objects are not looked at."""
        with self._lock:
            self.load_packs()
            if sha in self._claimed or sha in self.packed:
                return False
            self._claimed.add(sha)
        return True

    def add(self, src: str, pack: Pack, buf: bytearray, meter: Meter) -> tuple[str, int, bool]:
        """Store the file ``src`` (never through a symlink) through ``buf`` (SMALL + 1 bytes, the
        calling thread's: no allocation per file): (blake3, bytes read, whether it was new)."""
        view = memoryview(buf)
        fd = os.open(src, _NOFOLLOW)
        try:
            n = _read_into(fd, view)
            if n <= SMALL:  # read whole: one already stored is not written again
                sha = blake3(view[:n]).hexdigest()
                if not self.claim(sha):
                    return sha, n, False
                pack.put(sha, view[:n])
                return sha, n, True
            return self._add_big(fd, view, meter)
        finally:
            os.close(fd)

    def _add_big(self, fd: int, view: memoryview, meter: Meter) -> tuple[str, int, bool]:
        """Hash and copy ``view`` (full) and the rest of ``fd`` in one pass into an object."""
        digest = blake3()
        size = 0
        part = self._part()
        out = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            n = len(view)
            while n:
                digest.update(view[:n])
                _write_all(out, view[:n])
                size += n
                meter.advance(n)
                n = os.readv(fd, [view])
        finally:
            os.close(out)
        sha = digest.hexdigest()
        return sha, size, self._place(sha, part)

    def add_file(self, path: Path) -> tuple[str, int, bool]:
        """Move a file made under ``tmp/`` (the database copy) into the store."""
        sha = blake3().update_mmap(path).hexdigest()
        return sha, path.stat().st_size, self._place(sha, path)

    def add_bytes(self, data: bytes) -> tuple[str, int, bool]:
        """Store ``data`` (a segment of run rows) as an object."""
        part = self._part()
        part.write_bytes(data)
        return self.add_file(part)

    def read(self, sha: str) -> bytes:
        """The whole blob ``sha``, checked against its hash (a segment: small)."""
        data = b"".join(self.blob(sha))
        if blake3(data).hexdigest() != sha:
            raise BackupError(f"object {sha} is damaged (its content hashes otherwise)")
        return data

    def _part(self) -> Path:
        return self.tmp / f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"

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
                while chunk := f.read(BUFFER):
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


def _read_into(fd: int, view: memoryview) -> int:
    """Fill ``view`` from ``fd``: fewer bytes only at its end."""
    got = 0
    while got < len(view) and (n := os.readv(fd, [view[got:]])):
        got += n
    return got


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Pack:
    """Small files written one after the other into one pack file, by one thread at a time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.id = os.urandom(16).hex()  # not uuid: its import is 5 ms of a backup with no change
        self.part = store.tmp / f"{self.id}.pack"
        self.fd = -1
        self.blobs: list[tuple[str, int, int]] = []
        self.offset = 0

    def put(self, sha: str, data: memoryview) -> None:
        if self.fd < 0:
            self.fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        _write_all(self.fd, data)
        self.blobs.append((sha, self.offset, len(data)))
        self.offset += len(data)

    def close(self) -> None:
        if self.fd < 0:
            return
        os.close(self.fd)
        self.fd = -1
        os.replace(self.part, self.store.packs / f"{self.id}.pack")
        index = self.store.tmp / f"{self.id}.idx"
        index.write_text(json.dumps(self.blobs, separators=(",", ":")))
        os.replace(index, self.store.packs / f"{self.id}.idx")


# Backup ------------------------------------------------------------------------------------------
@dataclass
class _Previous:
    """What the latest manifest says, for the two shortcuts: a file whose size and mtime match its
    row keeps its hash unread, and a folder whose mtime and ctime match its row is not listed again
    (its entries are the names its row holds; each is still ``lstat``-ed)."""

    files: dict[str, Row] = field(default_factory=dict)
    dirs: dict[str, Row] = field(default_factory=dict)
    #: A folder changed less than a second before the previous scan began may have changed again
    #: within the same clock tick (its stamps equal, its entries not): it is listed again.
    cutoff_ns: int = 0
    #: The segments of finished runs' rows the manifest names (``[blake3, files, bytes, keys]``).
    segments: list[Any] = field(default_factory=list)

    def names(self, path: str, mtime_ns: int, ctime_ns: int) -> list[str] | None:
        """The entries of folder ``path`` when they can be taken from the manifest, else None.
        ``runs/`` is always listed: the manifest does not name the runs its segments hold."""
        known = self.dirs.get(path)
        if known is None or ctime_ns >= self.cutoff_ns or path == RUNS:
            return None
        return known[4] if known[2] == mtime_ns and known[3] == ctime_ns else None


def _previous(store: Store) -> _Previous:
    """The latest manifest's rows (nothing, and so no shortcut, if it is unreadable). A store
    of an older format is refused: its objects are named by another hash."""
    names = store.names()
    if not names:
        return _Previous()
    try:
        manifest = store.manifest(names[-1])
    except BackupError:
        return _Previous()  # an unreadable manifest only costs the shortcuts
    check_format(manifest, names[-1])
    try:
        files = {r[0]: r for r in manifest["files"] if isinstance(r, list) and len(r) == 5}
        dirs = {r[0]: r for r in manifest["dirs"] if isinstance(r, list) and len(r) == 5}
        cutoff = int(manifest["scanned_at_ns"]) - 1_000_000_000
        return _Previous(files, dirs, cutoff, list(manifest["segments"]))
    except (KeyError, TypeError, ValueError):
        return _Previous()


def check_format(manifest: dict[str, Any], name: str) -> None:
    """Refuse a manifest of another format: 1 and 2 (SHA-256) came only from development builds."""
    found = manifest.get("format")
    if found != FORMAT:
        raise BackupError(
            f"backup {name} has format {found!r}, made by a development build of trainhub before "
            f"BLAKE3; this trainhub reads and writes format {FORMAT} only: back up into a new PATH"
        )


@dataclass
class _Found:
    """What a scan finds: folder rows [path, mode, mtime_ns, ctime_ns, entry names], file rows,
    and the paths of links and special files (not backed up)."""

    dirs: list[Row] = field(default_factory=list)
    files: list[Row] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _scan(root: str, previous: _Previous, found: _Found, reused: set[str]) -> Iterator[int]:
    """Fill ``found`` with everything to back up (folders before their files), yielding the index
    of each file row whose file must be read, as soon as it is found: the threads hash while the
    scan goes on. A file whose size and mtime match its previous row keeps that row's hash (and the
    row itself, when its mode is the same too). Symlinks and other non-regular files are noted in
    ``found.skipped``, not followed. The folders of the finished runs ``reused`` (their rows are
    the previous backup's) are neither ``lstat``-ed nor walked. No object per file but its row."""
    dirs, files, skipped = found.dirs, found.files, found.skipped
    known_files = previous.files
    stack: list[tuple[str, list[str], list[str] | None]] = [("", [], None)]
    while stack:
        rel, seen, names = stack.pop()
        prefix = f"{rel}/" if rel else ""
        omit: set[str] | frozenset[str] = reused if rel == RUNS else frozenset()
        for name, st in _entries(f"{root}/{prefix}", names, not rel, omit):
            seen.append(name)
            path = prefix + name
            mode = st.st_mode
            if S_ISREG(mode):
                mode, size, mtime = mode & 0o777, st.st_size, st.st_mtime_ns
                old = known_files.get(path)
                if old is not None and old[3] == size and old[4] == mtime:
                    files.append(old if old[2] == mode else [*old[:2], mode, size, mtime])
                else:
                    files.append([path, "", mode, size, mtime])
                    yield len(files) - 1
            elif S_ISDIR(mode):
                mtime, ctime = st.st_mtime_ns, st.st_ctime_ns
                entries: list[str] = []
                dirs.append([path, mode & 0o777, mtime, ctime, entries])
                stack.append((path, entries, previous.names(path, mtime, ctime)))
            else:
                skipped.append(path)


def _entries(
    folder: str, names: list[str] | None, top: bool, omit: set[str] | frozenset[str]
) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of each entry of ``folder`` (ending in ``/``): the ones ``names`` lists, or
    those read from the folder but ``omit``. One that vanishes meanwhile is left out, as if it had
    gone a moment earlier. A list, not a generator: cheaper, and a folder's entries are few."""
    found = []
    if names is None:
        with os.scandir(folder) as listed:
            for entry in listed:
                if not (top and entry.name in EXCLUDED) and entry.name not in omit:
                    try:
                        found.append((entry.name, entry.stat(follow_symlinks=False)))
                    except FileNotFoundError:
                        continue
        return found
    lstat = os.lstat
    for name in names:
        try:
            found.append((name, lstat(folder + name)))
        except FileNotFoundError:
            continue
    return found


def _check_paths(data: Path, dest: Path) -> None:
    if not (data / DB_NAME).is_file():
        raise BackupError(f"--data: {data} holds no {DB_NAME} (is it trainhub's data folder?)")
    inside = data.resolve()
    target = dest.resolve()
    if target == inside or inside in target.parents:
        raise BackupError(f"PATH: {dest} is inside the data folder {data}; back up elsewhere")


def _copy_database(data: Path, store: Store) -> Path:
    """SQLite's online backup API, as store.db.copy_database (not imported: sqlite_utils costs
    0.4 s of start-up, most of a backup with nothing new). The copy is not synced: nothing else a
    backup writes is, and a crash mid-backup leaves no manifest naming it."""
    copy = store.tmp / f"db-{os.getpid()}-{time.monotonic_ns()}"
    source = sqlite3.connect(f"file:{data / DB_NAME}?mode=ro", uri=True)
    target = sqlite3.connect(str(copy))
    try:
        target.execute("pragma synchronous = off")
        source.backup(target)
    finally:
        target.close()
        source.close()
    return copy


def backup(
    data: Path,
    dest: Path,
    meter: Meter | None = None,
    workers: int = WORKERS,
    *,
    full: bool = False,
) -> Summary:
    """Back up ``data`` (a running server's or not) into the store at ``dest``; ``full`` walks
    the folders of finished runs too (a hand edit in one is otherwise not seen)."""
    meter = meter or Quiet()
    _check_paths(data, dest)
    store = Store(dest)
    store.create()
    started = time.monotonic()
    previous = _previous(store)
    copy = _copy_database(data, store)
    segments = Segments(store, previous.segments, settled(copy, time.time()), full)
    db_sha, db_size, db_new = store.add_file(copy)
    for row in segments.shortcuts:  # for the runs walked again: unchanged files are not read
        previous.files.setdefault(row[0], row)

    summary = Summary(backup="", path=str(dest))
    scanned_at_ns = time.time_ns()
    found = _Found(skipped=summary.skipped)
    todo = _scan(str(data), previous, found, segments.reused)
    _store_files(store, str(data), found, todo, meter, summary, workers)
    kept = [row for row in found.files if row[1]]  # one removed meanwhile or unreadable: no hash
    dirs, kept, new = segments.split(found.dirs, kept)
    summary.files = len(kept) + segments.files()
    summary.bytes = sum(row[3] for row in kept) + segments.bytes()
    summary.runs_reused = len(segments.reused)
    summary.new_objects += db_new + new.objects
    summary.new_bytes += (db_size if db_new else 0) + new.bytes
    manifest = {
        "format": FORMAT,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "trainhub": __version__,
        "database": {"hash": db_sha, "size": db_size},
        "scanned_at_ns": scanned_at_ns,
        "dirs": dirs,
        "files": kept,
        "segments": segments.entries(),
    }
    summary.backup = store.write_manifest(manifest)
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


def _store_files(
    store: Store,
    root: str,
    found: _Found,
    todo: Iterator[int],
    meter: Meter,
    summary: Summary,
    workers: int,
) -> None:
    """Read, hash and store the files of the rows ``todo`` yields (as the scan finds them),
    filling in each row's hash and size (one removed meanwhile keeps an empty hash). Each thread
    takes a pack from ``idle`` for a batch and gives it back, so packs fill across batches."""
    files = found.files
    idle: queue.SimpleQueue[Pack] = queue.SimpleQueue()
    buffers = threading.local()

    def store_batch(batch: list[int]) -> list[tuple[int, str, int, bool]]:
        if not hasattr(buffers, "buf"):
            buffers.buf = bytearray(SMALL + 1)
        try:
            pack = idle.get_nowait()
        except queue.Empty:
            pack = Pack(store)
        done = []
        small = 0
        for index in batch:
            row = files[index]
            try:
                sha, size, new = store.add(f"{root}/{row[0]}", pack, buffers.buf, meter)
            except FileNotFoundError:  # removed meanwhile
                continue
            except OSError:  # now a symlink (ELOOP), or unreadable: noted as skipped
                done.append((index, "", 0, False))
                continue
            done.append((index, sha, size, new))
            small += size if size <= SMALL else 0
        meter.advance(small)
        if pack.offset >= PACK_BYTES:
            pack.close()
        else:
            idle.put(pack)
        return done

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            hashed: list[int] = []
            # map() submits every batch before it returns: the scan runs here, to its end.
            batches = pool.map(store_batch, _batches(todo, files, hashed))
            meter.start(sum(files[i][3] for i in hashed))
            summary.hashed_files = len(hashed)
            for results in batches:
                for index, sha, size, new in results:
                    row = files[index]
                    if not sha:
                        summary.skipped.append(row[0])  # listed again next time, and retried
                        continue
                    row[1], row[3] = sha, size
                    summary.new_objects += new
                    summary.new_bytes += size if new else 0
    finally:
        while not idle.empty():
            idle.get().close()


def _batches(
    todo: Iterator[int], files: list[Row], hashed: list[int], most_bytes: int = 16 << 20
) -> Iterator[list[int]]:
    """Files to hash in groups of up to 64 files or 16 MB: one thread hand-off per group, not per
    file (tens of thousands of small logs). Every index taken is noted in ``hashed``."""
    batch: list[int] = []
    size = 0
    for index in todo:
        hashed.append(index)
        batch.append(index)
        size += files[index][3]
        if len(batch) >= 64 or size >= most_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
