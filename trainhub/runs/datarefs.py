"""Data references in a run (``ds.as_mount()``, ``ds.path('x').as_download()``, ``ds.as_upload()``):
the data onto each node of the run before its containers are created, and an upload's folder back
into its datastore when the run ends.

A ``server`` datastore's folder is copied to a node once per content: into a Docker volume named
from its content key (a hash of the files' relative paths, sizes and modification times: no file is
read to compute it), filled through a helper container that is never started, and recorded in
``datastore_copies`` only once complete. A later run that wants the same content on that node finds
the volume and copies nothing; a volume without its record (the server was killed while filling
it) is removed and filled again. A ``shared`` datastore is a folder every node has already: it is
bind-mounted. In the run, a mount is read-only; a download is a writable copy made on the node
(a volume of the run's own, filled from the cached copy or the shared folder); an upload is an
empty volume of the run's own whose content goes back into the datastore at the end. Local and
remote nodes are the same code: a remote engine is its socket forwarded over SSH (the OpenSSH
forward for the bulk copy).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import logging
import os
import shlex
import stat
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from trainhub.datasets import registry as datasets
from trainhub.datasets.paths import Selection
from trainhub.nodes.pool import NodePool
from trainhub.runs.artifacts import BUILD_LOG, ChunkReader, human_size, says_disk_full
from trainhub.runs.driving import Attempt
from trainhub.runs.preparing import PrepareFailed, append_log
from trainhub.runtime.docker import (
    CHUNK,
    LABEL_INSTANCE,
    LABEL_KIND,
    LABEL_RUN,
    ArchivePart,
    DataMount,
    DockerEngine,
    EngineError,
    FileBytes,
    MissingBindSource,
)
from trainhub.settings import Settings
from trainhub.spec import DataReference, EstimatorSpec, SpecError
from trainhub.store import Database
from trainhub.store import datastores as ds_store
from trainhub.store import runs as runs_store
from trainhub.store.datastores import DatastoreKind, DatastoreRow
from trainhub.store.lifecycle import EndReason

log = logging.getLogger("trainhub.datarefs")

COPY_PREFIX = "trainhub-data-"
RUN_PREFIX = "trainhub-run-"
LABEL_DATASTORE = "org.trainhub.datastore"
LABEL_PATH = "org.trainhub.path"
LABEL_KEY = "org.trainhub.key"
# Where a staging helper sees the sources and the run's volumes.
STAGE = "/trainhub-stage"
# The datasets a run reads, as JSON: trainhub.context's ``input_datasets``.
INPUT_DATASETS_ENV = "TRAINHUB_INPUT_DATASETS"
# A server datastore's own folder at its root (checksums, partial uploads: trainhub.datastores):
# never copied to a run, never written by one.
RESERVED = ".trainhub"


class DataChanged(Exception):
    """A file of a datastore changed while it was being copied."""


def server_folder(settings: Settings, datastore: str, folder: str) -> Path | None:
    """``folder`` of a server datastore, if it is a folder there that stays inside it (a link out
    of the datastore is never followed)."""
    root = settings.datastore_dir(datastore).resolve()
    found = (root / folder).resolve() if folder else root
    if not found.is_relative_to(root) or (folder and not found.is_dir()):
        return None
    return found


# Content key and the streamed copy ---------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    path: str  # relative to the copied folder
    size: int
    mtime_ns: int
    mode: int  # permission bits; a folder when ``size`` < 0


@dataclass(frozen=True)
class Listing:
    """What a copy of a folder holds, and its content key."""

    root: Path
    entries: tuple[Entry, ...]
    key: str

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries if e.size >= 0)

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.entries if e.size >= 0)


def listing(
    root: Path, *, datastore_root: bool = False, keep: Callable[[str], bool] | None = None
) -> Listing:
    """Files and folders under ``root`` (links and special files are left out, never followed;
    so is the datastore's own folder when ``root`` is a datastore's root), with the key of that
    content: sha256 over the sorted (path, size, mtime_ns). ``keep`` (a dataset's patterns)
    picks files by their path below ``root``; then only their folders are listed."""
    entries: list[Entry] = []
    folders: set[str] = set()
    if root.is_dir():
        for top, dirs, files in os.walk(root):
            base = Path(top)
            if datastore_root and base == root:
                dirs[:] = [d for d in dirs if d != RESERVED]
            for name in sorted(dirs):
                st = (base / name).lstat()
                if stat.S_ISDIR(st.st_mode):
                    folders.add((base / name).relative_to(root).as_posix())
            dirs[:] = [d for d in dirs if not (base / d).is_symlink()]
            for name in files:
                try:
                    st = (base / name).lstat()
                except OSError:
                    continue
                rel = (base / name).relative_to(root).as_posix()
                if stat.S_ISREG(st.st_mode) and (keep is None or keep(rel)):
                    mode = 0o755 if st.st_mode & 0o111 else 0o644
                    entries.append(Entry(rel, st.st_size, st.st_mtime_ns, mode))
    if keep is not None:  # only the folders that lead to a kept file
        folders = {f for e in entries for f in _parents(e.path)}
    entries += [Entry(folder, -1, 0, 0o755) for folder in folders]
    entries.sort(key=lambda e: e.path)
    digest = hashlib.sha256()
    for e in entries:
        digest.update(
            f"{e.path}\0{e.size}\0{e.mtime_ns}\0{e.mode}\n".encode(errors="surrogateescape")
        )
    return Listing(root, tuple(entries), digest.hexdigest())


def _parents(path: str) -> Iterator[str]:
    parts = path.split("/")[:-1]
    for end in range(1, len(parts) + 1):
        yield "/".join(parts[:end])


def _header(entry: Entry) -> bytes:
    info = tarfile.TarInfo(entry.path)
    info.mode = entry.mode
    if entry.size < 0:
        info.type = tarfile.DIRTYPE
    else:
        info.size = entry.size
        info.mtime = entry.mtime_ns // 1_000_000_000
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> int:
    return -size % tarfile.BLOCKSIZE if size > 0 else 0


def tar_size(source: Listing) -> int:
    """The length of :func:`tar_parts`' archive, known before it is sent."""
    total = 2 * tarfile.BLOCKSIZE
    for entry in source.entries:
        total += len(_header(entry))
        if entry.size >= 0:
            total += entry.size + _padding(entry.size)
    return total


def tar_parts(source: Listing) -> Iterator[ArchivePart]:
    """The listed files as an uncompressed tar, produced as it is sent: headers as bytes, file
    contents as open files for the engine's sendfile. A file that is not what the listing says any
    more stops the copy (the content key would be wrong)."""
    for entry in source.entries:
        yield _header(entry)
        if entry.size < 0:
            continue
        try:
            fd = os.open(source.root / entry.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise DataChanged(f"{entry.path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns:
                raise DataChanged(f"{entry.path} changed while it was being copied")
            yield FileBytes(fh, entry.size)
        if _padding(entry.size):
            yield tarfile.NUL * _padding(entry.size)
    yield tarfile.NUL * (2 * tarfile.BLOCKSIZE)


def extract_upload(
    chunks: Iterable[bytes], dest: Path, overwrite: bool, *, datastore_root: bool = False
) -> tuple[int, int, int]:
    """An upload folder's archive (``get_archive`` of it: its members start with the folder's own
    name) into ``dest``: files and folders only, through tarfile's ``data`` filter (nothing lands
    outside ``dest``, through a link or otherwise; nothing into the datastore's own folder when
    ``dest`` is a datastore's root). An existing file is kept unless ``overwrite``. Returns
    (files written, their bytes, files kept)."""
    dest.mkdir(parents=True, exist_ok=True)
    written = size = kept = 0
    reader = io.BufferedReader(ChunkReader(chunks), buffer_size=CHUNK)
    try:
        tar = tarfile.open(fileobj=reader, mode="r|")  # noqa: SIM115 - closed below
    except BaseException:
        _close(chunks)
        raise
    with tar:
        for member in tar:
            parts = [p for p in member.name.replace("\\", "/").split("/") if p not in ("", ".")]
            name = "/".join(parts[1:])
            if not name or not (member.isfile() or member.isdir()):
                continue
            if datastore_root and parts[1] == RESERVED:
                continue
            member.name = name
            try:
                safe = tarfile.data_filter(member, str(dest))
            except tarfile.FilterError:
                log.warning("upload into %s: %s refused (it would leave the folder)", dest, name)
                continue
            target = dest / name
            if member.isfile() and (target.exists() or target.is_symlink()):
                if not overwrite:
                    kept += 1
                    continue
                if target.is_dir() and not target.is_symlink():
                    kept += 1  # a folder is never replaced by a file
                    continue
                target.unlink()
            if member.isdir() and target.is_dir():
                continue
            tar.extract(safe, str(dest), filter="fully_trusted")
            if member.isfile():
                written += 1
                size += member.size
    _close(chunks)
    return written, size, kept


def _close(chunks: Iterable[bytes]) -> None:
    """Let the engine go of an archive stream (read to its end or not)."""
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


# Staging the data of a run on its nodes -----------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """One reference of the run with its datastore, and (server datastores, mount or download)
    what is copied."""

    ref: DataReference
    row: DatastoreRow
    listing: Listing | None

    @property
    def label(self) -> str:
        return f"{self.row.name}/{self.ref.folder}" if self.ref.folder else self.row.name


def copy_volume(instance: str, key: str) -> str:
    """The cached copy of some content on a node, for this server (a node may serve several)."""
    return f"{COPY_PREFIX}{instance[:8]}-{key[:24]}"


def run_volume(run_id: str, name: str) -> str:
    """A run's own volume for one reference (a download's copy, an upload's folder)."""
    return RUN_PREFIX + hashlib.sha256(f"{run_id}/{name}".encode()).hexdigest()[:24]


def environment(spec: EstimatorSpec) -> dict[str, str]:
    """``AZUREML_DATAREFERENCE_<name>`` = the reference's path in the run, for every reference;
    ``TRAINHUB_INPUT_DATASETS``: the datasets the run reads, for ``run.input_datasets``."""
    refs = spec.references()
    env = {ref.env_var: ref.path_in_run() for ref in refs.values()}
    datasets = {
        name: {
            "id": ref.dataset.id,
            "name": ref.dataset.name,
            "version": ref.dataset.version,
            "kind": ref.dataset.kind,
            "options": ref.dataset.options,
            "mode": ref.mode,
            "path": ref.path_in_run(),
        }
        for name, ref in refs.items()
        if ref.dataset is not None
    }
    if datasets:
        env[INPUT_DATASETS_ENV] = json.dumps(datasets, sort_keys=True)
    return env


def paths(spec: EstimatorSpec) -> dict[str, str]:
    """Reference name -> what the script's argument becomes (its path in the run; a direct
    dataset's id)."""
    return {name: ref.argument() for name, ref in spec.references().items()}


class DataStager:
    """The data of runs on their nodes. One per driver: it holds the copy locks (one per node and
    content) and, between Preparing and Starting, the mounts each run's containers get."""

    def __init__(self, settings: Settings, db: Database, pool: NodePool, instance: str) -> None:
        self.settings = settings
        self.db = db
        self.pool = pool
        self.instance = instance
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._mounts: dict[str, dict[str, list[DataMount]]] = {}

    def mounts(self, run_id: str, node: str) -> list[DataMount]:
        return self._mounts.get(run_id, {}).get(node, [])

    def forget(self, run_id: str) -> None:
        self._mounts.pop(run_id, None)

    async def prepare(self, attempt: Attempt, images: dict[str, str]) -> None:
        """The run's data on each of its nodes (``images``: node -> the run's image there, which
        the helper containers use); raises :class:`PrepareFailed` with a sentence."""
        refs = attempt.spec.references()
        if not refs:
            return
        log_path = self.settings.run_dir(attempt.run_id) / BUILD_LOG
        sources = await self._sources(list(refs.values()))
        try:
            placed = await asyncio.gather(
                *(
                    self._place(attempt, node, image, sources, log_path)
                    for node, image in images.items()
                )
            )
        except BaseException:  # no run volume outlives a failed Preparing
            await self.remove(attempt.run_id, list(images))
            raise
        self._mounts[attempt.run_id] = dict(zip(images, placed, strict=True))
        if attempt.cancel.is_set():  # canceled meanwhile: no container will hold these
            await self.remove(attempt.run_id, list(images))

    async def _sources(self, refs: list[DataReference]) -> list[Source]:
        rows = {row.name: row for row in await self.db.read(ds_store.list_datastores)}
        sources: list[Source] = []
        for ref in refs:
            row = rows.get(ref.datastore)
            if row is None:
                raise PrepareFailed(
                    EndReason.DATA_UNAVAILABLE,
                    f"datastore {ref.datastore}: it was removed after the run was submitted",
                )
            found = None
            if row.kind == DatastoreKind.SERVER and ref.mode != "upload":
                folder = server_folder(self.settings, row.name, ref.folder)
                if folder is None:
                    raise PrepareFailed(
                        EndReason.DATA_UNAVAILABLE,
                        f"datastore {row.name}: it has no folder '{ref.folder}' on the server",
                    )
                keep = None
                if ref.dataset is not None and ref.dataset.patterns:
                    keep = Selection(ref.folder, tuple(ref.dataset.patterns)).matches
                found = await asyncio.to_thread(
                    functools.partial(listing, folder, datastore_root=not ref.folder, keep=keep)
                )
            sources.append(Source(ref, row, found))
        return sources

    async def _place(
        self,
        attempt: Attempt,
        node: str,
        image: str,
        sources: list[Source],
        log_path: Path,
    ) -> list[DataMount]:
        """The mounts of the run's container on ``node``, with what they need made there: cached
        copies, the run's own volumes (filled by one helper container), shared folders checked."""
        engine = self.pool.engine(node)
        run_labels = {LABEL_INSTANCE: self.instance, LABEL_RUN: attempt.run_id}
        mounts: list[DataMount] = []
        helper_mounts: list[DataMount] = []
        script: list[str] = []
        shared: dict[str, Source] = {}
        if any(s.ref.mode not in ("mount", "direct") for s in sources):
            await asyncio.to_thread(self._remove_run_volumes, engine, attempt.run_id)
        for index, source in enumerate(sources):
            ref, row = source.ref, source.row
            target = ref.path_in_run()
            if row.kind == DatastoreKind.SERVER and source.listing is not None:
                origin = DataMount(
                    f"{STAGE}/s{index}", await self._cached_copy(node, image, source, log_path)
                )
            elif row.kind == DatastoreKind.SHARED:
                root = row.path_on(node)
                if not root:
                    raise PrepareFailed(
                        EndReason.DATA_UNAVAILABLE,
                        f"datastore {row.name}: it has no path for node {node}",
                    )
                where = _joined(root, ref.folder if ref.mode != "upload" else "")
                shared[where] = source
                origin = DataMount(f"{STAGE}/s{index}", where, bind=True)
            else:  # an upload into a server datastore: nothing to bring
                origin = None
            if ref.mode in ("mount", "direct"):  # a direct dataset is mounted
                assert origin is not None
                mounts.append(DataMount(target, origin.source, bind=origin.bind))
                if origin.bind:
                    helper_mounts.append(origin)
                continue
            own = run_volume(attempt.run_id, ref.ref_name)
            await asyncio.to_thread(
                engine.create_volume, own, {**run_labels, LABEL_KIND: "run-data"}
            )
            mounts.append(DataMount(target, own, read_only=False))
            helper_mounts.append(DataMount(f"{STAGE}/d{index}", own, read_only=False))
            if origin is not None:
                helper_mounts.append(origin)
            if ref.mode == "download":
                assert origin is not None
                script.append(f"cp -a {STAGE}/s{index}/. {STAGE}/d{index}/")
            script.append(f"chmod 0777 {STAGE}/d{index}")
        if helper_mounts:
            started = time.monotonic()
            await self._stage(engine, node, image, helper_mounts, script, shared, run_labels)
            for source in sources:
                if source.ref.mode == "download":
                    append_log(
                        log_path,
                        f"datastore {source.label}: a writable copy made on {node} "
                        f"in {time.monotonic() - started:.1f} s\n",
                    )
        return mounts

    async def _stage(
        self,
        engine: DockerEngine,
        node: str,
        image: str,
        mounts: list[DataMount],
        script: list[str],
        shared: dict[str, Source],
        labels: dict[str, str],
    ) -> None:
        """One helper container on ``node`` for the run's own volumes (a download's copy made
        there, an upload's folder made writable): shared folders missing on the node are named."""
        try:
            if script:
                await asyncio.to_thread(engine.run_helper, image, "\n".join(script), mounts, labels)
            else:  # only shared folders to mount: the engine checks they exist
                await asyncio.to_thread(engine.check_mounts, image, mounts, labels)
        except MissingBindSource as exc:
            source = shared.get(exc.path)
            name = source.row.name if source else "?"
            raise PrepareFailed(
                EndReason.DATA_UNAVAILABLE,
                f"datastore {name}: {exc.path} does not exist on node {node}",
            ) from None
        except EngineError as exc:
            reason = (
                EndReason.NODE_DISK_FULL if says_disk_full(str(exc)) else EndReason.DATA_UNAVAILABLE
            )
            raise PrepareFailed(
                reason, f"The run's data could not be made ready on node {node}: {exc}"
            ) from None

    async def _cached_copy(self, node: str, image: str, source: Source, log_path: Path) -> str:
        """The node's volume holding ``source``'s content: found, or filled now (one fill per
        node and content at a time; the others wait and then find it)."""
        content = source.listing
        assert content is not None
        volume = copy_volume(self.instance, content.key)
        lock = self._locks.setdefault((node, content.key), asyncio.Lock())
        async with lock:
            engine = self.pool.engine(node)
            row = await self.db.read(lambda db: ds_store.get_copy(db, node, content.key))
            present = await asyncio.to_thread(engine.volume_present, volume)
            if row is not None and present:
                await self.db.write(lambda db: ds_store.touch_copy(db, node, content.key))
                append_log(log_path, f"datastore {source.label}: reused the copy on {node}\n")
                return volume
            if row is not None:  # the volume was removed behind our back
                await self.db.write(lambda db: ds_store.forget_copy(db, node, content.key))
            if present:  # filled by a server killed before it was complete: never used
                await asyncio.to_thread(engine.remove_volume, volume)
            started = time.monotonic()
            try:
                await asyncio.to_thread(self._fill, node, image, volume, source)
            except DataChanged as exc:
                raise PrepareFailed(
                    EndReason.DATA_UNAVAILABLE, f"datastore {source.label}: {exc}; submit again"
                ) from None
            except EngineError as exc:
                reason = (
                    EndReason.NODE_DISK_FULL
                    if says_disk_full(str(exc))
                    else EndReason.DATA_UNAVAILABLE
                )
                raise PrepareFailed(
                    reason, f"datastore {source.label}: the copy to {node} failed: {exc}"
                ) from None
            seconds = time.monotonic() - started
            await self.db.write(
                lambda db: ds_store.record_copy(
                    db,
                    node=node,
                    key=content.key,
                    datastore=source.row.name,
                    path=source.ref.folder,
                    volume=volume,
                    bytes=content.bytes,
                    files=content.files,
                )
            )
            append_log(
                log_path,
                f"datastore {source.label}: copied {content.files} files, "
                f"{human_size(content.bytes)} to {node} in {seconds:.1f} s\n",
            )
            return volume

    def _fill(self, node: str, image: str, volume: str, source: Source) -> None:
        """Create the volume and stream the files into it (blocking; the OpenSSH forward for a
        remote node). A failed fill leaves no volume behind."""
        assert source.listing is not None
        engine = self.pool.bulk_engine(node)
        labels = {
            LABEL_INSTANCE: self.instance,
            LABEL_KIND: "datastore-copy",
            LABEL_DATASTORE: source.row.name,
            LABEL_PATH: source.ref.folder,
            LABEL_KEY: source.listing.key,
        }
        try:
            engine.create_volume(volume, labels)
            content = source.listing
            engine.fill_volume(volume, image, tar_parts(content), tar_size(content), labels)
        except BaseException:
            try:
                engine.remove_volume(volume)
            except Exception as exc:  # noqa: BLE001 - the next fill removes it (no record)
                log.warning("could not remove the partial copy %s on %s: %s", volume, node, exc)
            raise

    # The end of the run ---------------------------------------------------------------------------
    async def upload_back(self, attempt: Attempt, container_id: str) -> None:
        """Every upload reference's folder, as the run left it on its head node, into its
        datastore (whatever the run's end)."""
        uploads = [r for r in attempt.spec.references().values() if r.mode == "upload"]
        if not uploads:
            return
        node = attempt.node
        log_path = self.settings.run_dir(attempt.run_id) / BUILD_LOG
        rows = {row.name: row for row in await self.db.read(ds_store.list_datastores)}
        for ref in uploads:
            row = rows.get(ref.datastore)
            folder = ref.folder_for(attempt.run_id)
            label = f"{ref.datastore}/{folder}" if folder else ref.datastore
            if row is None:
                append_log(log_path, f"datastore {label}: removed meanwhile; nothing uploaded\n")
                continue
            started = time.monotonic()
            if row.kind == DatastoreKind.SERVER:
                text = await self._upload_to_server(node, container_id, ref, row, folder)
            else:
                text = await self._upload_to_shared(attempt, node, container_id, ref, row, folder)
            append_log(
                log_path,
                f"datastore {label}: uploaded from {node}: {text} in "
                f"{time.monotonic() - started:.1f} s\n",
            )
            if ref.register_as is not None and not text.startswith("refused"):
                await self._register_output(attempt, ref, folder, log_path)

    async def _register_output(
        self, attempt: Attempt, ref: DataReference, folder: str, log_path: Path
    ) -> None:
        """``register_on_complete(name)``: the uploaded folder as a version of a dataset."""
        try:
            user = await self.db.read(lambda db: runs_store.get_run(db, attempt.run_id))
            row = await datasets.register_output(
                self.db, attempt.run_id, ref, folder, user.user if user else None
            )
        except SpecError as exc:
            append_log(log_path, f"output {ref.ref_name}: not registered as a dataset: {exc}\n")
            return
        append_log(log_path, f"output {ref.ref_name}: registered as dataset {row.label}\n")

    async def _upload_to_server(
        self, node: str, container_id: str, ref: DataReference, row: DatastoreRow, folder: str
    ) -> str:
        root = self.settings.datastore_dir(row.name)
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        dest = (root / folder).resolve() if folder else root.resolve()
        if not dest.is_relative_to(root.resolve()):
            return f"refused: {folder} leads out of the datastore"
        engine = self.pool.bulk_engine(node)
        chunks = await asyncio.to_thread(engine.get_archive, container_id, ref.path_in_run())
        if chunks is None:
            return "no folder to upload"
        files, size, kept = await asyncio.to_thread(
            lambda: extract_upload(chunks, dest, ref.overwrite, datastore_root=not folder)
        )
        text = f"{files} files, {human_size(size)}"
        return text + (f"; {kept} existing files kept (overwrite=False)" if kept else "")

    async def _upload_to_shared(
        self,
        attempt: Attempt,
        node: str,
        container_id: str,
        ref: DataReference,
        row: DatastoreRow,
        folder: str,
    ) -> str:
        root = row.path_on(node)
        if not root:
            return f"refused: datastore {row.name} has no path for node {node}"
        engine = self.pool.engine(node)
        image = await asyncio.to_thread(engine.container_image, container_id)
        dest = shlex.quote(f"{STAGE}/dest/{folder}".rstrip("/"))  # the user's folder name
        copy = "cp -a" if ref.overwrite else "cp -an"
        script = f"mkdir -p -- {dest}\n{copy} {STAGE}/up/. {dest}/"
        mounts = [
            DataMount(f"{STAGE}/up", run_volume(attempt.run_id, ref.ref_name)),
            DataMount(f"{STAGE}/dest", root, bind=True, read_only=False),
        ]
        labels = {LABEL_INSTANCE: self.instance, LABEL_RUN: attempt.run_id}
        await asyncio.to_thread(engine.run_helper, image, script, mounts, labels)
        return f"copied into {_joined(root, folder)}" + (
            "" if ref.overwrite else " (existing files kept: overwrite=False)"
        )

    async def remove(self, run_id: str, nodes: list[str]) -> None:
        """The run's own volumes on ``nodes`` (after its containers are gone)."""
        self.forget(run_id)
        for node in nodes:
            try:
                engine = self.pool.engine(node)
                await asyncio.to_thread(self._remove_run_volumes, engine, run_id)
            except Exception as exc:  # noqa: BLE001 - best effort, like the containers'
                log.warning(
                    "run %s: could not remove its data volumes on %s: %s", run_id, node, exc
                )

    def _remove_run_volumes(self, engine: DockerEngine, run_id: str) -> None:
        engine.remove_volumes([f"{LABEL_INSTANCE}={self.instance}", f"{LABEL_RUN}={run_id}"])


def _joined(root: str, folder: str) -> str:
    base = root.rstrip("/") or "/"
    return f"{base.rstrip('/')}/{folder}" if folder else base
