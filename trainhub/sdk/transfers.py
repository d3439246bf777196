"""Moving a datastore's files between this machine and the server (``ds.upload``, ``ds.download``).

Each file goes with its SHA-256: a file the other side holds with the same bytes is skipped, one
with other bytes is refused before anything moves (unless ``overwrite``). A broken transfer is
resumed where it stopped (the server keeps what arrived of an upload, a ``.trainhub-partial`` file
what arrived of a download) and tried again a few times; a downloaded file is checked before it
appears. A few files move at once, behind one progress bar.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from threading import Lock
from typing import Any
from urllib.parse import quote

from rich.progress import Progress, TaskID

from trainhub.sdk.client import CHUNK, ApiClient, transfer_progress
from trainhub.sdk.errors import ServiceError, TrainhubError

log = logging.getLogger("trainhub.sdk")

RESUME_MIN = 1024 * 1024  # below this, a file is simply sent again rather than asked about
RETRIES = 3
WORKERS = 4
PARTIAL_SUFFIX = ".trainhub-partial"
MAX_LISTED = 10


class DatastoreError(TrainhubError):
    """A transfer refused on this side: a link out of the folder, files that differ, a bad path."""


@dataclass
class TransferSummary:
    """What a transfer did: files sent (or fetched), skipped as identical, resumed, bytes moved."""

    done: int = 0
    skipped: int = 0
    resumed: int = 0
    bytes: int = 0
    lock: Lock = field(default_factory=Lock, repr=False)

    def add(self, moved: int, resumed: bool) -> None:
        with self.lock:
            self.done += 1
            self.bytes += moved
            self.resumed += int(resumed)

    def public(self) -> dict[str, int]:
        return {
            "transferred": self.done,
            "skipped": self.skipped,
            "resumed": self.resumed,
            "bytes": self.bytes,
        }


class Transfer:
    """The transfers of one datastore's files through one client."""

    def __init__(self, client: ApiClient, datastore: str) -> None:
        self.client = client
        self.datastore = datastore

    def send(
        self,
        chosen: list[tuple[Path, str]],
        target: str,
        existing: dict[str, str],
        overwrite: bool,
        show_progress: bool,
    ) -> TransferSummary:
        """``chosen`` (local file, path under ``target``) to the datastore; ``existing`` is the
        checksum of each file already under ``target``, by path."""
        summary = TransferSummary()
        wanted: list[tuple[Path, str, int, str]] = []
        conflicts: list[str] = []
        for local, relative in chosen:
            dest = f"{target}/{relative}" if target else relative
            digest = sha256(local)
            if existing.get(dest) == digest:
                summary.skipped += 1
            elif dest in existing and not overwrite:
                conflicts.append(dest)
            else:
                wanted.append((local, dest, local.stat().st_size, digest))
        _refuse_conflicts(conflicts, f"files in datastore '{self.datastore}' have other content")
        with _progress(show_progress) as progress:
            task = progress.add_task(
                f"Uploading to {self.datastore}", total=sum(w[2] for w in wanted)
            )
            with ThreadPoolExecutor(WORKERS) as pool:
                sends = [(*w, overwrite, progress, task, i == 0) for i, w in enumerate(wanted)]
                for moved, resumed in pool.map(lambda a: self._put(*a), sends):
                    summary.add(moved, resumed)
        log.info("datastore %s: %s", self.datastore, summary.public())
        return summary

    def receive(
        self,
        entries: list[dict[str, Any]],
        dest: Path,
        overwrite: bool,
        show_progress: bool,
        base: str = "",
    ) -> TransferSummary:
        """The datastore's files ``entries`` (as listed by the server) into the folder ``dest``,
        each at its path in the datastore below ``base`` (a dataset's folder)."""
        summary = TransferSummary()
        wanted: list[tuple[dict[str, Any], Path]] = []
        conflicts: list[str] = []
        lead = f"{base}/" if base else ""
        for entry in entries:
            path = entry["path"]
            local = (dest / (path[len(lead) :] if path.startswith(lead) else path)).resolve()
            if not local.is_relative_to(dest.resolve()):
                raise DatastoreError(f"'{entry['path']}' would be written outside '{dest}'")
            if local.is_file():
                if sha256(local) == entry["sha256"]:
                    summary.skipped += 1
                    continue
                if not overwrite:
                    conflicts.append(str(local))
                    continue
            wanted.append((entry, local))
        _refuse_conflicts(conflicts, "local files differ from the datastore's")
        total = sum(e["size"] for e, _ in wanted)
        with _progress(show_progress) as progress:
            task = progress.add_task(f"Downloading from {self.datastore}", total=total)
            with ThreadPoolExecutor(WORKERS) as pool:
                for moved, resumed in pool.map(
                    lambda item: self._fetch(item[0], item[1], progress, task), wanted
                ):
                    summary.add(moved, resumed)
        return summary

    def _url(self, route: str, path: str) -> str:
        # Every segment quoted, dots too: no client may fold '..' away before the server sees it.
        quoted = "/".join(
            quote(s, safe="") if s not in (".", "..") else s.replace(".", "%2E")
            for s in path.split("/")
        )
        return f"/api/v1/datastores/{quote(self.datastore)}/{route}/{quoted}"

    def _put(
        self,
        local: Path,
        dest: str,
        size: int,
        digest: str,
        overwrite: bool,
        progress: Progress,
        task: TaskID,
        ask_first: bool,
    ) -> tuple[int, bool]:
        """Send one file, first asking how much of it the server holds (from a broken earlier
        try); a connection that breaks is tried again from where it stopped. (bytes sent,
        resumed)."""
        client = self.client
        query = {"size": size, "sha256": digest}
        bar = _Bar(progress, task)
        sent = 0
        resumed = False
        for attempt in range(RETRIES + 1):
            offset = 0
            if ask_first or size >= RESUME_MIN or attempt:
                offset = client.json("GET", self._url("uploads", dest), params=query)["received"]
            if offset:
                resumed = True
                log.info("resuming %s at byte %d of %d", dest, offset, size)
            bar.at(offset)
            try:
                response = client.request(
                    "PUT",
                    self._url("files", dest),
                    params={**query, "offset": offset, "overwrite": str(overwrite).lower()},
                    content=_chunks(local, offset, bar),
                    headers={"Content-Type": "application/octet-stream"},
                )
            except ServiceError as exc:
                # 409: the server was still taking in what a broken try delivered; ask again.
                if exc.status != 409 or attempt == RETRIES:
                    raise
                time.sleep(0.5 * (attempt + 1))
                continue
            except TrainhubError:  # the connection broke: the server keeps what arrived
                if attempt == RETRIES:
                    raise
                time.sleep(0.5 * (attempt + 1))
                continue
            sent += size - offset
            if response.json().get("complete"):
                return sent, resumed
        raise DatastoreError(f"'{dest}' could not be uploaded in {RETRIES + 1} tries")

    def _fetch(
        self, entry: dict[str, Any], local: Path, progress: Progress, task: TaskID
    ) -> tuple[int, bool]:
        """Fetch one file into ``<local>.trainhub-partial``, resuming what is there (a byte
        range), check its SHA-256, then rename it into place. (bytes fetched, resumed)."""
        client = self.client
        size, digest = entry["size"], entry["sha256"]
        part = local.with_name(local.name + PARTIAL_SUFFIX)
        local.parent.mkdir(parents=True, exist_ok=True)
        part.touch()
        bar = _Bar(progress, task)
        fetched = 0
        resumed = False
        for attempt in range(RETRIES + 1):
            held = part.stat().st_size
            if held > size:
                part.write_bytes(b"")
                held = 0
            bar.at(held)
            if held == size:
                break
            resumed = resumed or held > 0
            headers = {"Range": f"bytes={held}-"} if held else {}
            try:
                with client.stream("GET", self._url("files", entry["path"]), headers=headers) as r:
                    if r.status_code != 206:
                        bar.at(0)
                    with part.open("ab" if r.status_code == 206 else "wb") as out:
                        for block in r.iter_bytes(CHUNK):
                            out.write(block)
                            fetched += len(block)
                            bar.advance(len(block))
                break
            except ServiceError:
                raise
            except TrainhubError:  # the connection broke: what arrived stays in the partial file
                if attempt == RETRIES:
                    raise
                time.sleep(0.5 * (attempt + 1))
        if sha256(part) != digest:
            part.unlink()
            raise DatastoreError(
                f"'{entry['path']}' arrived with another SHA-256 than the datastore's: "
                "it was not kept, download again"
            )
        part.replace(local)
        return fetched, resumed


class _Bar:
    """One file's share of a transfer's progress bar, moved back when a try starts over."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task
        self._counted = 0

    def advance(self, done: int) -> None:
        self._counted += done
        self._progress.advance(self._task, done)

    def at(self, position: int) -> None:
        self.advance(position - self._counted)


def _chunks(local: Path, offset: int, bar: _Bar) -> Iterator[bytes]:
    with local.open("rb") as fh:
        fh.seek(offset)
        while block := fh.read(CHUNK):
            bar.advance(len(block))
            yield block


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def walk(root: Path) -> list[tuple[Path, str]]:
    """Every file under ``root`` with its path relative to it, sorted. A link to a file is sent as
    the file; a link that leads out of ``root`` is refused (nothing is read outside the folder
    asked for); links to folders are not entered."""
    base = root.resolve()
    if not base.is_dir():
        raise DatastoreError(f"src_dir '{root}' is not a folder")
    found: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(filenames):
            full = here / name
            relative = full.relative_to(base).as_posix()
            if full.is_symlink() and not full.resolve().is_relative_to(base):
                raise DatastoreError(
                    f"'{relative}' is a link to '{os.readlink(full)}', outside '{root}': "
                    "copy the file in or leave the link out"
                )
            if full.is_file():
                found.append((full, relative))
    return found


def under_root(
    paths: list[Path], relative_root: str | os.PathLike[str] | None
) -> list[tuple[Path, str]]:
    """Each file of ``paths`` (absolute) with its path relative to ``relative_root``: by default
    the folder they all share, as in Azure ML. A path that is not a file under it is refused."""
    if relative_root:
        root = Path(relative_root).absolute()
    else:
        root = Path(os.path.commonpath([p.parent for p in paths]))
    chosen: list[tuple[Path, str]] = []
    for path in paths:
        if not path.is_file():
            raise DatastoreError(f"'{path}' is not a file")
        if not path.is_relative_to(root):
            raise DatastoreError(f"'{path}' is not under relative_root '{root}'")
        chosen.append((path, path.relative_to(root).as_posix()))
    return chosen


def _refuse_conflicts(conflicts: list[str], what: str) -> None:
    if not conflicts:
        return
    shown = ", ".join(conflicts[:MAX_LISTED])
    more = f" and {len(conflicts) - MAX_LISTED} more" if len(conflicts) > MAX_LISTED else ""
    raise DatastoreError(
        f"{len(conflicts)} {what}: {shown}{more}. Nothing was transferred; pass overwrite=True "
        "to replace them"
    )


def _progress(show: bool) -> Progress:
    return transfer_progress() if show else Progress(disable=True)
