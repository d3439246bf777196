"""Pack a source directory into a canonical, content-addressed snapshot.

The archive is canonical: entries sorted, times and owners fixed, modes normalised, gzip without a
timestamp or name. The same folder therefore always gives the same bytes and the same SHA-256, which
the server uses to skip uploading a folder it already has. ``.trainhubignore``, else ``.amlignore``,
else ``.gitignore`` at the folder's root chooses what to leave out (gitignore rules, via pathspec);
``.git/`` is always left out.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pathspec

from trainhub.sdk.errors import SnapshotError

IGNORE_FILES = (".trainhubignore", ".amlignore", ".gitignore")
DEFAULT_MAX_BYTES = 300 * 1024 * 1024
DEFAULT_MAX_FILES = 2000
COPY_BUFFER = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    relative: str  # POSIX path inside the snapshot
    path: Path
    kind: str  # "file", "dir" or "link"
    size: int
    executable: bool = False
    target: str = ""


@dataclass
class Snapshot:
    path: Path
    sha256: str
    size: int
    file_count: int
    total_bytes: int
    ignore_file: str | None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def ignore_spec(root: Path) -> tuple[pathspec.GitIgnoreSpec | None, str | None]:
    for name in IGNORE_FILES:
        candidate = root / name
        if candidate.is_file():
            return pathspec.GitIgnoreSpec.from_lines(candidate.read_text().splitlines()), name
    return None, None


def collect(root: Path) -> tuple[list[Entry], str | None]:
    """Every entry to pack, sorted, with ignore rules applied."""
    root = root.resolve()
    if not root.is_dir():
        raise SnapshotError(f"source_directory '{root}' is not a folder")
    spec, ignore_name = ignore_spec(root)
    entries: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        rel_base = base.relative_to(root).as_posix()
        prefix = "" if rel_base == "." else rel_base + "/"
        kept_dirs = []
        for name in sorted(dirnames):
            rel = prefix + name
            full = base / name
            if name == ".git" or (spec is not None and spec.match_file(rel + "/")):
                continue
            if full.is_symlink():
                entries.append(_link(root, full, rel))
                continue
            kept_dirs.append(name)
            entries.append(Entry(rel, full, "dir", 0))
        dirnames[:] = kept_dirs
        for name in sorted(filenames):
            rel = prefix + name
            full = base / name
            if spec is not None and spec.match_file(rel):
                continue
            if full.is_symlink():
                entries.append(_link(root, full, rel))
                continue
            st = full.stat()
            if not stat.S_ISREG(st.st_mode):
                continue  # sockets, FIFOs, devices never go into a snapshot
            entries.append(Entry(rel, full, "file", st.st_size, bool(st.st_mode & 0o111)))
    entries.sort(key=lambda e: e.relative)
    return entries, ignore_name


def _link(root: Path, full: Path, rel: str) -> Entry:
    target = os.readlink(full)
    resolved = (full.parent / target).resolve()
    if os.path.isabs(target) or not resolved.is_relative_to(root):
        raise SnapshotError(
            f"'{rel}' is a link to '{target}', outside source_directory: copy the file in, "
            "or list the link in .trainhubignore"
        )
    return Entry(rel, full, "link", 0, target=target)


def check_limits(entries: list[Entry], max_files: int, max_bytes: int) -> tuple[int, int]:
    files = [e for e in entries if e.kind != "dir"]
    total = sum(e.size for e in files)
    if len(files) > max_files or total > max_bytes:
        what = (
            f"{len(files)} files (the limit is {max_files})"
            if len(files) > max_files
            else f"{_mb(total)} (the limit is {_mb(max_bytes)})"
        )
        raise SnapshotError(
            f"The snapshot would hold {what}. Leave things out with a .trainhubignore file "
            f"(gitignore rules) or raise the limit.\n{_largest(files)}"
        )
    return len(files), total


def _largest(files: list[Entry]) -> str:
    by_folder: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in files:
        parts = e.relative.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth]) + "/"
            by_folder[folder][0] += e.size
            by_folder[folder][1] += 1
    biggest_files = sorted(files, key=lambda e: e.size, reverse=True)[:5]
    biggest_folders = sorted(by_folder.items(), key=lambda kv: (kv[1][0], kv[1][1]), reverse=True)[
        :5
    ]
    lines = ["Largest files:"]
    lines += [f"  {_mb(e.size):>10}  {e.relative}" for e in biggest_files]
    if biggest_folders:
        lines.append("Largest folders:")
        lines += [
            f"  {_mb(size):>10}  {folder} ({count} files)"
            for folder, (size, count) in biggest_folders
        ]
    return "\n".join(lines)


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


class _HashingWriter:
    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def pack(
    source_directory: str | os.PathLike[str],
    *,
    max_files: int = DEFAULT_MAX_FILES,
    max_bytes: int = DEFAULT_MAX_BYTES,
    directory: str | None = None,
) -> Snapshot:
    """Pack ``source_directory`` into a temporary ``.tar.gz``; the caller removes it when done."""
    root = Path(source_directory)
    entries, ignore_name = collect(root)
    file_count, total = check_limits(entries, max_files, max_bytes)
    fd, name = tempfile.mkstemp(prefix="trainhub-snapshot-", suffix=".tar.gz", dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as raw:
            writer = _HashingWriter(raw)
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=writer, compresslevel=6, mtime=0)
            with (
                gz,
                tarfile.TarFile(
                    fileobj=gz, mode="w", format=tarfile.GNU_FORMAT, copybufsize=COPY_BUFFER
                ) as tar,
            ):
                for entry in entries:
                    _add(tar, entry)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Snapshot(path, writer.digest.hexdigest(), writer.size, file_count, total, ignore_name)


def _add(tar: tarfile.TarFile, entry: Entry) -> None:
    info = tarfile.TarInfo(entry.relative)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
    elif entry.kind == "link":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target
        info.mode = 0o777
        tar.addfile(info)
    else:
        info.mode = 0o755 if entry.executable else 0o644
        with entry.path.open("rb") as fh:
            info.size = os.fstat(fh.fileno()).st_size
            tar.addfile(info, fh)


def to_zip(archive: Path, dest: Path) -> int:
    """A snapshot (``.tar.gz``, as the server keeps it) rewritten as the zip Azure ML's
    ``run.restore_snapshot()`` gave: its files and folders, modes kept, nothing extracted to disk.
    Links are left out (a zip has no portable form for them). Returns the number of files."""
    part = dest.with_name(dest.name + ".part")
    count = 0
    try:
        with tarfile.open(archive, "r:gz") as tar, zipfile.ZipFile(part, "w") as out:
            for member in tar:
                name = member.name.removeprefix("./")
                if not name or name == ".":
                    continue
                if name.startswith("/") or ".." in name.split("/"):
                    raise SnapshotError(f"The snapshot holds a path outside its folder: {name!r}")
                if member.isdir():
                    out.writestr(zipfile.ZipInfo(name.rstrip("/") + "/"), b"")
                elif member.isfile():
                    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                    info.external_attr = (stat.S_IFREG | (member.mode & 0o777)) << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    source = tar.extractfile(member)
                    assert source is not None  # a regular file always has its bytes
                    with source, out.open(info, "w") as target:
                        shutil.copyfileobj(source, target, COPY_BUFFER)
                    count += 1
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)
    return count
