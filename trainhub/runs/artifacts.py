"""Run folders, snapshot checks and safe archive handling.

A snapshot is checked member by member *before* anything is done with it: absolute paths, ``..``,
links that leave the folder, device files and more files or bytes than the limits allow are refused.
The server never extracts a snapshot itself: it is copied into the run's container through the Docker
API. Archives coming back from a container (``./outputs``, ``./logs``) are extracted with tarfile's
``data`` filter into the run's folder only.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import os
import posixpath
import shutil
import sqlite3
import tarfile
import zlib
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from trainhub.context import CHILD_FILES

CHUNK = 1024 * 1024
MB = 1024 * 1024
GB = 1024 * MB
# Files the server writes into a run's folder itself.
DRIVER_LOG = "logs/driver_log.txt"
BUILD_LOG = "logs/build_log.txt"
# Tar headers and padding on top of the file bytes themselves.
_TAR_OVERHEAD_PER_MEMBER = 3 * 512


class DiskFull(Exception):
    """The data folder's disk filled up while a run's results were written into it."""

    def __init__(self, what: str, copied: int, free: int) -> None:
        self.what, self.copied, self.free = what, copied, free
        super().__init__(
            f"The server's data disk ran out of space while copying the run's {what}: "
            f"{human_size(copied)} copied, {human_size(free)} free; the partial files were removed"
        )


def human_size(size: float) -> str:
    """``5.2 MB``, ``3.1 GB``: sizes as a person reads them."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return "disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def says_disk_full(text: str) -> bool:
    """An engine's or a program's sentence for a full disk (ENOSPC), as Docker and libc word it."""
    return "no space left on device" in text.lower()


def drop_partial(run_dir: Path, what: str, exc: BaseException) -> DiskFull:
    """After a copy into ``run_dir/what`` ran out of space: remove what it wrote, say how much."""
    target = run_dir / what
    copied = tree_bytes(target)
    shutil.rmtree(target, ignore_errors=True)
    return DiskFull(what, copied, free_bytes(run_dir))


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links not followed)."""
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += (Path(dirpath) / name).lstat().st_size
    return total


def free_bytes(path: Path) -> int:
    """Free space of the disk holding ``path`` (its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


class SnapshotError(Exception):
    def __init__(self, status_code: int, message: str, field: str = "snapshot") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class SnapshotInfo:
    sha256: str
    files: frozenset[str]
    count: int
    expanded_bytes: int
    compressed_bytes: int


class _LimitedReader:
    """A read-only stream that refuses to yield more than ``limit`` bytes (gzip bombs)."""

    def __init__(self, raw: IO[bytes] | gzip.GzipFile, limit: int) -> None:
        self._raw = raw
        self._limit = limit
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.total += len(data)
        if self.total > self._limit:
            raise SnapshotError(413, f"The snapshot expands to more than {self._limit // 2**20} MB")
        return data


def _normalize(name: str) -> str:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def check_snapshot(path: Path, *, max_files: int, max_expanded_bytes: int) -> SnapshotInfo:
    """Check every member of a ``.tar.gz`` without extracting it; return what it holds."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    files: set[str] = set()
    count = 0
    entries = 0
    expanded = 0
    stream_limit = max_expanded_bytes + (max_files + 16) * _TAR_OVERHEAD_PER_MEMBER + 2 * CHUNK
    try:
        with gzip.open(path, "rb") as gz:
            reader = _LimitedReader(gz, stream_limit)
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    name = _normalize(member.name)
                    if name in ("", "."):
                        continue
                    _check_member(member, name)
                    entries += 1
                    if not member.isdir():
                        count += 1
                    if count > max_files or entries > 4 * max_files:
                        raise SnapshotError(
                            413, f"The snapshot holds more than {max_files} files (the limit)"
                        )
                    expanded += max(member.size, 0)
                    if expanded > max_expanded_bytes:
                        raise SnapshotError(
                            413,
                            f"The snapshot expands to more than {max_expanded_bytes // 2**20} MB (the limit)",
                        )
                    if member.isreg() or member.issym() or member.islnk():
                        files.add(name)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise SnapshotError(400, f"The snapshot is not a valid .tar.gz archive ({exc})") from None
    return SnapshotInfo(
        sha256=digest.hexdigest(),
        files=frozenset(files),
        count=count,
        expanded_bytes=expanded,
        compressed_bytes=path.stat().st_size,
    )


def _check_member(member: tarfile.TarInfo, name: str) -> None:
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise SnapshotError(422, f"The snapshot holds an absolute path: '{member.name}'")
    if ".." in name.split("/"):
        raise SnapshotError(422, f"The snapshot holds a path with '..': '{member.name}'")
    if member.isreg() or member.isdir():
        return
    if member.issym() or member.islnk():
        target = member.linkname.replace("\\", "/")
        if target.startswith("/"):
            raise SnapshotError(422, f"The link '{name}' points outside the folder (to '{target}')")
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            raise SnapshotError(422, f"The link '{name}' points outside the folder (to '{target}')")
        return
    kind = "device file" if (member.ischr() or member.isblk()) else "special file"
    raise SnapshotError(
        422, f"The snapshot holds a {kind}: '{name}' (only files, folders and links are allowed)"
    )


def store_snapshot(upload: Path, info: SnapshotInfo, snapshots_dir: Path) -> Path:
    """Move a checked upload to its content address; an identical snapshot is kept once."""
    snapshots_dir.mkdir(parents=True, exist_ok=True)
    final = snapshots_dir / f"{info.sha256}.tar.gz"
    if final.exists():
        upload.unlink(missing_ok=True)
    else:
        os.replace(upload, final)
    return final


# Run folders -------------------------------------------------------------------------------------
def prepare_run_dir(run_dir: Path) -> None:
    (run_dir / "outputs").mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)


def resolve_artifact(run_dir: Path, relative: str) -> Path | None:
    """The file ``relative`` inside ``run_dir``, or None when it is absent or would leave it."""
    relative = relative.replace("\\", "/")
    if (
        not relative
        or relative.startswith("/")
        or ".." in relative.split("/")
        or "\x00" in relative
    ):
        return None
    root = run_dir.resolve()
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


# Folders of a run's history that the server keeps for itself (TensorBoard's event files of the
# run's metrics; files of a script's child runs on their way to them), not artifacts of the run.
SERVER_FOLDERS = frozenset({"tensorboard", CHILD_FILES})


def list_artifacts(run_dir: Path) -> list[tuple[str, int]]:
    root = run_dir.resolve()
    found: list[tuple[str, int]] = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in SERVER_FOLDERS]
        for filename in filenames:
            full = Path(dirpath) / filename
            if full.is_symlink() or not full.is_file():
                continue
            found.append((full.relative_to(root).as_posix(), full.stat().st_size))
    return sorted(found)


def adopt_child_files(run_dir: Path, runs_dir: Path, children: Collection[str]) -> int:
    """Files a script uploaded for its child runs (``CHILD_FILES/<child id>/...`` among its own,
    copied into ``run_dir``) moved into each child's history; files for any run that is not one
    of ``children`` are dropped, links never followed. Returns how many files moved."""
    holding = run_dir / CHILD_FILES
    if not holding.is_dir() or holding.is_symlink():
        return 0
    moved = 0
    for entry in holding.iterdir():
        if entry.name not in children or entry.is_symlink() or not entry.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(entry):
            base = Path(dirpath)
            dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
            for filename in filenames:
                source = base / filename
                relative = source.relative_to(entry).as_posix()
                dest = runs_dir / entry.name / relative
                if (
                    source.is_symlink()
                    or not source.is_file()
                    or relative.split("/")[0] in SERVER_FOLDERS
                    or relative in SERVER_WRITTEN
                    or dest.is_dir()
                ):
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, dest)
                moved += 1
    shutil.rmtree(holding, ignore_errors=True)
    return moved


def extract_container_archive(
    chunks: Iterable[bytes],
    run_dir: Path,
    top: str,
    *,
    skip: Iterable[str] = (),
    strip_top: bool = False,
    capture: dict[str, bytes] | None = None,
    seen: set[str] | None = None,
) -> int:
    """Extract a ``get_archive`` stream whose members start with ``top/`` into ``run_dir/top``.

    The ``data`` filter refuses links out, device files and absolute paths; ``skip`` names files
    (relative to the run folder) that the server writes itself and a container may not overwrite.
    With ``strip_top`` the members land in ``run_dir`` itself. Files named in ``capture`` (archive
    names) are read into it instead of being written. ``seen`` gets the name of every file of the
    archive, skipped or not. Returns the number of files written.
    """
    skipped = {_normalize(s) for s in skip}
    written = 0
    with _streamed_tar(chunks) as tar:
        for member in tar:
            name = _normalize(member.name)
            if capture is not None and name in capture and member.isfile():
                handle = tar.extractfile(member)
                capture[name] = handle.read() if handle else b""
                continue
            if name != top and not name.startswith(top + "/"):
                continue
            if strip_top:
                name = name[len(top) + 1 :]
                if not name:
                    continue
                member.name = name
            if seen is not None and member.isfile():
                seen.add(name)
            if name in skipped or name.endswith(".part"):
                continue
            try:
                safe = tarfile.data_filter(member, str(run_dir))
            except tarfile.FilterError:
                continue
            if safe.isfile():
                written += 1
                dest = run_dir / name
                if dest.is_symlink() or dest.is_dir():
                    if dest.is_dir() and not dest.is_symlink():
                        shutil.rmtree(dest)
                    else:
                        dest.unlink()
            tar.extract(safe, str(run_dir), filter="fully_trusted")
    return written


class ChunkReader(io.RawIOBase):
    """A read-only stream over an iterator of byte chunks (a ``get_archive`` response)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


@contextmanager
def _streamed_tar(chunks: Iterable[bytes]) -> Iterator[tarfile.TarFile]:
    """A ``get_archive`` stream opened as a streaming tar, read as it arrives (no copy on disk)."""
    reader = io.BufferedReader(ChunkReader(chunks), buffer_size=1024 * 1024)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            yield tar
    finally:  # an aborted copy (a full disk) closes the stream: the engine lets go of it
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


SERVER_WRITTEN = (DRIVER_LOG, BUILD_LOG)
