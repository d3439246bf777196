"""Uploads into a ``server`` datastore and downloads out of it, resumable and checksummed.

An upload announces the file's size and SHA-256. Its bytes are appended, as they arrive and never
held in memory, to a partial file in the datastore's own :data:`~.files.RESERVED` folder; a
connection that breaks leaves what arrived there, and the client asks how much the server holds
(:func:`~.files.received`) and sends the rest. Once every byte is in, the checksum is compared and
only a matching file is renamed into place (one file system, so the rename is atomic): a file
never appears half-written or with other bytes than the client announced. A download serves byte
ranges (``Range: bytes=N-``), so a broken download resumes too.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from trainhub.datastores import files
from trainhub.runs.artifacts import free_bytes, human_size
from trainhub.runs.service import StorageFull
from trainhub.settings import Settings
from trainhub.spec import SpecError

GB = 1024**3
WRITE_BUFFER = 1024 * 1024
LOCK_WAIT_SECONDS = 10.0
_SHA256 = re.compile(r"[0-9a-f]{64}")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class UploadConflict(Exception):
    """The upload cannot go on as asked (HTTP 409): the file differs and ``overwrite`` is off, or
    the client's offset is not what the server holds, or another upload of the path is going."""


class RangeNotSatisfiable(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"The range asked for is not within the file's {size} bytes")
        self.size = size


class _Partial:
    """The partial file of one upload, locked for it; it hashes what it holds and what it gets."""

    def __init__(self, path: Path) -> None:
        """Raises BlockingIOError while another request holds the upload (see :func:`_locked`)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino != os.fstat(self.fd).st_ino:
                raise BlockingIOError("the holder removed it meanwhile: open it again")
        except (BlockingIOError, FileNotFoundError):
            os.close(self.fd)
            raise BlockingIOError from None
        self.held = os.fstat(self.fd).st_size
        self.digest = files.hash_file(path, self.held)

    def restart(self) -> None:
        os.ftruncate(self.fd, 0)
        self.held = 0
        self.digest = files.hash_file(self.path, 0)

    def write(self, data: bytes) -> None:
        os.lseek(self.fd, self.held, os.SEEK_SET)
        view = memoryview(data)
        while view:
            done = os.write(self.fd, view)
            view = view[done:]
        self.digest.update(data)
        self.held += len(data)

    def close(self) -> None:
        os.close(self.fd)  # releases the lock


def check_announced(size: int, sha256: str, offset: int) -> str:
    if size < 0:
        raise SpecError("size", "size is the file's length in bytes (0 or more)")
    if not 0 <= offset <= size:
        raise SpecError("offset", f"offset {offset} is not within the file's {size} bytes")
    digest = sha256.lower()
    if not _SHA256.fullmatch(digest):
        raise SpecError("sha256", "sha256 is the file's SHA-256 as 64 hexadecimal digits")
    return digest


async def receive(
    settings: Settings,
    root: Path,
    relative: str,
    body: AsyncIterator[bytes],
    *,
    size: int,
    sha256: str,
    offset: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Append ``body`` at ``offset`` to the upload of ``relative``; store the file once complete."""
    digest = check_announced(size, sha256, offset)
    target = await asyncio.to_thread(files.inside, root, relative)
    existing = await asyncio.to_thread(_existing_sum, root, relative, target)
    if existing == digest:
        return _answer(relative, size, digest, received=size, stored=False)
    if existing is not None and not overwrite:
        raise UploadConflict(
            f"'{relative}' is already in the datastore with other content: upload with "
            "overwrite to replace it"
        )
    await asyncio.to_thread(_check_room, settings, root, size - offset)
    await asyncio.to_thread(files.sweep_partials, root)
    partial = await _locked(files.partial_path(root, relative, size, digest), relative)
    path = partial.path
    try:
        if offset == 0 and partial.held:
            await asyncio.to_thread(partial.restart)
        elif offset != partial.held:
            raise UploadConflict(
                f"The server holds {partial.held} bytes of '{relative}', not {offset}: "
                f"send the rest from byte {partial.held}"
            )
        await _append(partial, body, size, relative)
        if partial.held < size:
            return _answer(relative, size, digest, received=partial.held, stored=False)
        got = partial.digest.hexdigest()
        if got != digest:
            await asyncio.to_thread(path.unlink, True)
            raise SpecError(
                "sha256",
                f"'{relative}': the bytes received have SHA-256 {got}, not the {digest} "
                "announced: nothing was stored, upload it again",
            )
        await asyncio.to_thread(_put_in_place, root, relative, target, path, digest)
        return _answer(relative, size, digest, received=size, stored=True)
    finally:
        await asyncio.to_thread(partial.close)


async def _locked(path: Path, relative: str) -> _Partial:
    """The partial file of an upload, once no other request holds it. A client that lost its
    connection comes back at once, while the server may still be writing what the broken
    request delivered: that request is waited for (a little), not refused."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            return await asyncio.to_thread(_Partial, path)
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise UploadConflict(f"Another upload of '{relative}' is in progress") from None
            await asyncio.sleep(0.05)


async def _append(partial: _Partial, body: AsyncIterator[bytes], size: int, relative: str) -> None:
    """Write what arrives in blocks of about a megabyte; what arrived before a broken connection
    is written too, so that the client can resume after it."""
    pending: list[bytes] = []
    buffered = 0
    try:
        async for chunk in body:
            if partial.held + buffered + len(chunk) > size:
                pending.clear()
                await asyncio.to_thread(partial.path.unlink, True)
                raise SpecError(
                    "size", f"'{relative}': more bytes arrived than the {size} announced"
                )
            pending.append(chunk)
            buffered += len(chunk)
            if buffered >= WRITE_BUFFER:
                await asyncio.to_thread(partial.write, b"".join(pending))
                pending.clear()
                buffered = 0
    finally:
        if pending:
            await asyncio.to_thread(partial.write, b"".join(pending))


def _existing_sum(root: Path, relative: str, target: Path) -> str | None:
    """The checksum of the file already at ``relative`` (None if there is none); a refusal when
    a folder is there, or a file where one of its folders would be."""
    if target.is_dir():
        raise SpecError("path", f"'{relative}' is a folder in the datastore, not a file")
    for folder in target.parents:
        if folder.exists() and not folder.is_dir():
            raise SpecError(
                "path", f"'{relative}': a file in the datastore is where a folder of this path is"
            )
        if folder == root.resolve():
            break
    if not target.is_file():
        return None
    return files.sha256_of(root, relative, target.stat())


def _check_room(settings: Settings, root: Path, incoming: int) -> None:
    free = free_bytes(root)
    floor = int(settings.min_free_gb * GB)
    if free - incoming < floor:
        raise StorageFull(
            f"The server's disk has {human_size(free)} free: {human_size(incoming)} more would "
            f"leave less than the {human_size(floor)} it keeps free (TRAINHUB_MIN_FREE_GB)"
        )


def _put_in_place(root: Path, relative: str, target: Path, partial: Path, digest: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        partial.unlink(missing_ok=True)
        raise SpecError(
            "path", f"'{relative}': a file in the datastore is where a folder of this path is"
        ) from None
    files.inside(root, relative)  # a link made meanwhile changes nothing: still inside
    os.replace(partial, target)
    files.record_sum(root, relative, digest, target.stat())


def _answer(
    relative: str, size: int, digest: str, *, received: int, stored: bool
) -> dict[str, Any]:
    return {
        "path": relative,
        "size": size,
        "sha256": digest,
        "received": received,
        "complete": received == size,
        "stored": stored,
    }


# Downloads --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive
    size: int
    partial: bool

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange:
    """One ``bytes=`` range of RFC 9110 (first-last, first-, or -suffix); anything else (several
    ranges, another unit) is answered with the whole file, as the RFC allows."""
    whole = ByteRange(0, size, size, partial=False)
    found = _RANGE.fullmatch((header or "").strip())
    if not found:
        return whole
    first, last = found.groups()
    if not first and not last:
        return whole
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(max(size - suffix, 0), size, size, partial=True)
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        raise RangeNotSatisfiable(size)
    return ByteRange(start, end, size, partial=True)


def open_file(root: Path, relative: str) -> tuple[IO[bytes], int]:
    """The datastore's file ``relative``, opened (so that a replacement meanwhile does not mix
    two versions), and its size."""
    target = files.inside(root, relative)
    if not target.is_file():
        raise FileNotFoundError(relative)
    fh = target.open("rb")
    return fh, os.fstat(fh.fileno()).st_size


async def read_range(fh: IO[bytes], span: ByteRange) -> AsyncIterator[bytes]:
    try:
        await asyncio.to_thread(fh.seek, span.start)
        left = span.end - span.start
        while left > 0:
            block = await asyncio.to_thread(fh.read, min(files.CHUNK, left))
            if not block:
                return
            left -= len(block)
            yield block
    finally:
        await asyncio.to_thread(fh.close)
