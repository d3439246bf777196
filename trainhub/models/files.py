"""A model's files: taken from a run's history or from a client's tar archive into a staging folder
of the models folder, summed, then renamed into the version's folder (same file system).

A model is one file or one folder (its ``entry``) in ``Settings.model_dir(name, version)``. Its
SHA-256 is the file's own, or for a folder that of a canonical listing (one line per file, sorted:
``path``, size and SHA-256, separated by NUL), so the same content gives the same sum however it
was registered. Only regular files are copied: links and special files are left out (from a run)
or refused (from a client), so nothing outside the model's folder is ever read or written.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from trainhub.datastores.files import clean_path, hash_file
from trainhub.runs.artifacts import SERVER_FOLDERS
from trainhub.spec import SpecError

STAGING = ".incoming"  # under the models folder: a model being copied in, before its version


@dataclass(frozen=True)
class Staged:
    """Files copied into a staging folder, ready to become a version."""

    folder: Path  # holds exactly ``entry``
    entry: str
    is_folder: bool
    size_bytes: int
    files: int
    sha256: str


def new_staging(models_dir: Path) -> Path:
    folder = models_dir / STAGING / secrets.token_hex(8)
    folder.mkdir(parents=True)
    return folder


def discard(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def manifest(root: Path) -> list[tuple[str, int, str]]:
    """``(path, size, sha256)`` of every regular file under ``root`` (a file: itself), sorted."""
    if root.is_file():
        return [(root.name, root.stat().st_size, hash_file(root).hexdigest())]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = Path(dirpath) / name
            st = full.lstat()
            if stat.S_ISREG(st.st_mode):
                relative = full.relative_to(root.parent).as_posix()
                found.append((relative, st.st_size, hash_file(full).hexdigest()))
    return sorted(found)


def summarize(folder: Path, entry: str) -> Staged:
    target = folder / entry
    listing = manifest(target)
    if target.is_file():
        digest = listing[0][2]
    else:
        canonical = "".join(f"{path}\0{size}\0{sha}\n" for path, size, sha in listing)
        digest = hashlib.sha256(canonical.encode()).hexdigest()
    return Staged(
        folder=folder,
        entry=entry,
        is_folder=target.is_dir(),
        size_bytes=sum(size for _, size, _ in listing),
        files=len(listing),
        sha256=digest,
    )


# From a run -------------------------------------------------------------------------------------
def run_source(run_dir: Path, path: str) -> tuple[str, Path]:
    """The run's file or folder ``path`` (``outputs/model.pkl``, ``./outputs/model/``), cleaned,
    or a 422 naming ``path``: never outside the run's folder, never the server's own folders."""
    relative = clean_path(path, field="path")
    if relative.split("/")[0] in SERVER_FOLDERS:
        raise SpecError("path", f"'{relative}' is the server's own folder, not the run's output")
    root = run_dir.resolve()
    source = (root / relative).resolve()
    if not source.is_relative_to(root) or source == root:
        raise SpecError("path", f"'{relative}' leads out of the run's folder (a symbolic link)")
    if not (source.is_file() or source.is_dir()):
        raise SpecError(
            "path",
            f"The run has no file or folder '{relative}' among its stored outputs (a run's "
            "./outputs are stored when it ends; Run.get_file_names() lists them)",
        )
    return relative, source


def copy_from_run(source: Path, folder: Path) -> Staged:
    """Copy the run's file or folder into ``folder`` (regular files only) and sum it."""
    entry = source.name
    if source.is_file():
        shutil.copyfile(source, folder / entry)
    else:
        shutil.copytree(source, folder / entry, ignore=_not_plain)
    return summarize(folder, entry)


def _not_plain(directory: str, names: list[str]) -> list[str]:
    """Links (which could lead anywhere) and special files are not part of a model."""
    left_out = []
    for name in names:
        st = os.lstat(os.path.join(directory, name))
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            left_out.append(name)
    return left_out


# From a client ----------------------------------------------------------------------------------
def check_entry(path: str) -> str:
    """The name of what a client registers: one file or folder name, no folders above it."""
    entry = clean_path(path, field="path")
    if "/" in entry:
        raise SpecError(
            "path", f"'{path}' is a path: send the name of the one file or folder registered"
        )
    return entry


async def receive(chunks: AsyncIterator[bytes], target: Path, max_bytes: int) -> int:
    """Write a request body to ``target``; a 422 once it passes ``max_bytes``."""
    written = 0
    with target.open("wb") as out:
        async for chunk in chunks:
            written += len(chunk)
            if written > max_bytes:
                raise SpecError(
                    "archive", f"The archive is larger than {max_bytes // 2**20} MB (the limit)"
                )
            out.write(chunk)
    return written


def extract_archive(
    archive: Path, folder: Path, entry: str, *, max_files: int, max_bytes: int
) -> Staged:
    """Check every member of the client's tar (``entry`` or under ``entry/``, files and folders
    only, within the limits), then extract it into ``folder`` with tarfile's ``data`` filter."""
    count = expanded = 0
    try:
        with tarfile.open(archive, mode="r:") as tar:
            members = tar.getmembers()
            for member in members:
                name = member.name.removeprefix("./").rstrip("/")
                if name != entry and not name.startswith(entry + "/"):
                    raise SpecError(
                        "archive",
                        f"The archive holds '{member.name}', which is not under '{entry}'",
                    )
                if not (member.isreg() or member.isdir()):
                    raise SpecError(
                        "archive", f"The archive holds '{member.name}': only files and folders"
                    )
                count += member.isreg()
                expanded += member.size
                if count > max_files or expanded > max_bytes:
                    raise SpecError(
                        "archive",
                        f"The model is larger than the limits ({max_files} files, "
                        f"{max_bytes // 2**20} MB)",
                    )
            if not members:
                raise SpecError("archive", "The archive is empty")
            tar.extractall(folder, members=members, filter="data")
    except tarfile.TarError as exc:
        raise SpecError("archive", f"The body is not a tar archive ({exc})") from None
    if not (folder / entry).exists():
        raise SpecError("archive", f"The archive holds no '{entry}'")
    return summarize(folder, entry)


def listing(version_dir: Path) -> list[tuple[str, int]]:
    """The files of a stored version, relative to its folder, with their sizes."""
    out = []
    for dirpath, dirnames, filenames in os.walk(version_dir):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            out.append((full.relative_to(version_dir).as_posix(), full.stat().st_size))
    return sorted(out)
