"""The files of a ``server`` datastore: safe paths inside its folder, listing, checksums.

A path in a datastore is relative and ``/``-separated, like a blob name in Azure ML. One that would
leave the folder (``..``, an absolute path, a symbolic link to outside) is refused with the path
named, so nothing is ever read or written outside the datastore's folder. The folder
:data:`RESERVED` at a datastore's root is the server's own: partial uploads (renamed into place
once their checksum matches, on the same file system) and the SHA-256 of each file, kept with the
size, times and inode it was computed for so that an unchanged file is never read twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from trainhub.spec import SpecError

log = logging.getLogger("trainhub.datastores")

RESERVED = ".trainhub"
MAX_PATH = 1024  # Azure ML's blob names were at most 1,024 characters
MAX_SEGMENT = 255
CHUNK = 1024 * 1024
PARTIAL_DAYS = 7.0  # an abandoned partial upload is swept after this long
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class StoredFile:
    path: str
    size: int
    sha256: str
    modified: float


# Paths ------------------------------------------------------------------------------------------
def clean_path(path: str, *, field: str = "path", prefix: bool = False) -> str:
    """``path`` normalised (no ``./``, no empty segments), or a 422 naming it. A ``prefix`` may
    be empty (the whole datastore) and may end with ``/``."""
    if not isinstance(path, str):
        raise SpecError(field, "A path in a datastore is a string")
    if path.startswith("/") or re.match(r"[A-Za-z]:/", path):
        raise SpecError(field, f"'{path}' is absolute: a path in a datastore is relative to it")
    if "\\" in path or _CONTROL.search(path):
        raise SpecError(
            field, f"{path!r} has a backslash or a control character: separate folders with '/'"
        )
    if len(path) > MAX_PATH:
        raise SpecError(field, f"A path in a datastore is at most {MAX_PATH} characters long")
    segments = [s for s in path.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise SpecError(field, f"'{path}' climbs out of the datastore ('..')")
    if any(len(s.encode()) > MAX_SEGMENT for s in segments):
        raise SpecError(field, f"'{path}' has a name longer than {MAX_SEGMENT} bytes")
    if segments and segments[0] == RESERVED:
        raise SpecError(field, f"'{path}': the folder '{RESERVED}' is the server's own")
    clean = "/".join(segments)
    if not clean and not prefix:
        raise SpecError(field, f"'{path}' names no file")
    if prefix and clean and path.endswith("/"):
        clean += "/"
    return clean


def inside(root: Path, relative: str, *, field: str = "path") -> Path:
    """``root/relative`` with every symbolic link on the way followed, refused when it leads out
    of ``root`` (``relative`` is a :func:`clean_path`). ``root`` itself may be a link (an admin
    may keep a datastore on another disk)."""
    base = root.resolve()
    target = (base / relative).resolve()
    if target != base and not target.is_relative_to(base):
        raise SpecError(field, f"'{relative}' leads out of the datastore (a symbolic link)")
    return target


# Listing and checksums --------------------------------------------------------------------------
def walk(root: Path, prefix: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """Regular files under ``root`` whose path starts with ``prefix``, sorted, with their stat.
    Links to folders are not entered; links to files outside ``root`` are left out."""
    base = root.resolve()
    folder = prefix.rpartition("/")[0]
    start = inside(root, folder, field="prefix") if folder else base
    if not start.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(start):
        here = Path(dirpath)
        rel_dir = here.relative_to(base).as_posix()
        lead = "" if rel_dir == "." else rel_dir + "/"
        if not lead:
            dirnames[:] = [d for d in dirnames if d != RESERVED]
        dirnames.sort()
        for name in sorted(filenames):
            relative = lead + name
            if not relative.startswith(prefix):
                continue
            full = here / name
            try:
                if full.is_symlink() and not full.resolve().is_relative_to(base):
                    continue
                st = full.stat()
            except OSError:
                continue  # vanished meanwhile, or a dangling link
            if stat.S_ISREG(st.st_mode):
                yield relative, st


def _sum_path(root: Path, relative: str) -> Path:
    return root / RESERVED / "sums" / (relative + ".sha256")


def _stamp(st: os.stat_result) -> str:
    """What changes whenever a file's bytes may have: its size, times and inode. The change time
    (ctime) cannot be set back by anyone, so a file rewritten with its old size and modification
    time (an archive extracted over it) is not mistaken for the old one."""
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}"


def _known_sum(root: Path, relative: str, st: os.stat_result) -> str | None:
    try:
        digest, _, stamp = _sum_path(root, relative).read_text().strip().partition(" ")
    except OSError:
        return None
    return digest if stamp == _stamp(st) else None


def record_sum(root: Path, relative: str, digest: str, st: os.stat_result) -> None:
    """Remember ``relative``'s checksum for the file as it is now (``st``)."""
    path = _sum_path(root, relative)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{digest} {_stamp(st)}\n")
        tmp.replace(path)
    except OSError as exc:  # a cache: the next listing computes it again
        log.warning("cannot keep the checksum of %s in %s: %s", relative, root, exc)


def hash_file(path: Path, upto: int | None = None) -> hashlib._Hash:
    """SHA-256 of ``path`` (of its first ``upto`` bytes), ready to be fed more."""
    digest = hashlib.sha256()
    left = upto
    with path.open("rb") as fh:
        while left is None or left > 0:
            block = fh.read(CHUNK if left is None else min(CHUNK, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest


def sha256_of(root: Path, relative: str, st: os.stat_result) -> str:
    known = _known_sum(root, relative, st)
    if known is not None:
        return known
    digest = hash_file(inside(root, relative)).hexdigest()
    record_sum(root, relative, digest, st)
    return digest


def manifest(root: Path, prefix: str = "") -> list[StoredFile]:
    """Every file under ``prefix`` with its size, SHA-256 (computed once per content) and time."""
    found = [
        StoredFile(relative, st.st_size, sha256_of(root, relative, st), st.st_mtime)
        for relative, st in walk(root, prefix)
    ]
    return sorted(found, key=lambda f: f.path)


# Partial uploads --------------------------------------------------------------------------------
def partial_path(root: Path, relative: str, size: int, sha256: str) -> Path:
    """Where the received part of one upload (this path, this content) waits."""
    key = hashlib.sha256(f"{relative}\0{size}\0{sha256}".encode()).hexdigest()
    return root / RESERVED / "partial" / f"{key}.part"


def received(root: Path, relative: str, size: int, sha256: str) -> int:
    try:
        return partial_path(root, relative, size, sha256).stat().st_size
    except FileNotFoundError:
        return 0


def sweep_partials(root: Path, max_age_seconds: float = PARTIAL_DAYS * 86400) -> None:
    """Forget uploads nobody came back to finish."""
    folder = root / RESERVED / "partial"
    if not folder.is_dir():
        return
    cutoff = time.time() - max_age_seconds
    for path in folder.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            continue
