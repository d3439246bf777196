"""Files into and out of a run's containers (the runtime and snapshot in; the driver log, ``./outputs``,
``./logs`` and the in-run context out), and a thread of its own for each long blocking wait."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import docker.errors

from trainhub.nodes.pool import NodePool
from trainhub.runs import environment as envs
from trainhub.runs.artifacts import SERVER_WRITTEN, ChunkReader, extract_container_archive
from trainhub.runtime.docker import CHUNK, WORKDIR, DockerEngine
from trainhub.runtime.incontainer import (
    CONTEXT_DIR,
    LIB_DIR,
    LogSink,
    combined_archive,
    runtime_archive,
)
from trainhub.spec import EstimatorSpec
from trainhub.store import metrics
from trainhub.store.runs import RunRow

log = logging.getLogger("trainhub.containers")

T = TypeVar("T")
LOG_TAIL_LINES = 20


def in_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Run a long blocking call (a followed log stream, a container wait) on a thread of its own,
    so it never starves the shared pool that database reads use."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            outcome: tuple[Any, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop closed: the server is shutting down
            pass

    threading.Thread(
        target=target, name=f"trainhub-{getattr(fn, '__name__', 'job')}", daemon=True
    ).start()
    return future


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def copy_in(engine: DockerEngine, container_id: str, snapshot: Path, azureml_compat: bool) -> None:
    """The runtime and the snapshot into the container: one copy when the snapshot is small."""
    combined = combined_archive(snapshot, WORKDIR, azureml_compat)
    if combined is not None:
        engine.put_archive(container_id, "/", combined)
        return
    engine.put_archive(container_id, "/", runtime_archive(azureml_compat))
    engine.put_snapshot(container_id, snapshot)


def copy_log(
    engine: DockerEngine,
    container_id: str,
    path: Path,
    on_exit: Callable[[int, str | None], None],
) -> None:
    # From the first line every time: a re-attached run gets its whole log, never twice.
    # Unbuffered: the live tail (and a server restart) sees every chunk as soon as it arrives.
    # Appended to: trainhub's own notes at its end (runs/gang.py) are never written over.
    path.write_bytes(b"")
    with path.open("ab", buffering=0) as raw:
        sink = LogSink(raw, on_exit)
        try:
            engine.stream_logs(container_id, sink)  # type: ignore[arg-type]
        finally:
            sink.close()


def copy_context(engine: DockerEngine, container_id: str, run_dir: Path) -> list[str]:
    """Uploaded files of ``Run.get_context()`` into run history; its complete metric lines back."""
    chunks = engine.get_archive(container_id, CONTEXT_DIR)
    if chunks is None:
        return []
    metrics_name = "ctx/metrics.jsonl"
    captured: dict[str, bytes] = {metrics_name: b""}
    extract_container_archive(
        chunks, run_dir, "ctx/files", skip=SERVER_WRITTEN, strip_top=True, capture=captured
    )
    return metrics.complete_lines(captured[metrics_name])


def collect(
    engine: DockerEngine,
    container_id: str,
    run_dir: Path,
    tops: tuple[str, ...],
    seen: set[str] | None = None,
) -> int:
    """``./outputs`` and/or ``./logs`` of the container into run history; returns the bytes of
    file content copied. ``./logs`` is copied incrementally (:func:`sync_logs`) while the container
    runs; ``./outputs``, or ``./logs`` of a container that has stopped, as one archive. ``seen``
    gets the names (``outputs/...``, ``logs/...``) of the files the container has there."""
    copied = 0
    for top in tops:
        if top == "logs":
            synced = sync_logs(engine, container_id, run_dir, seen)
            if synced is not None:
                copied += synced
                continue
        chunks = engine.get_archive(container_id, f"{WORKDIR}/{top}")
        if chunks is not None:
            counter = _Counted(chunks)
            extract_container_archive(counter, run_dir, top, skip=SERVER_WRITTEN, seen=seen)
            copied += counter.total
    return copied


def run_environment(
    spec: EstimatorSpec,
    run: RunRow,
    node: str,
    image_env: dict[str, str],
    gpu_uuids: list[str],
    extra: dict[str, str],
) -> dict[str, str]:
    """The variables of one of the run's containers: the run's own, ``TRAINHUB_NODE`` and the
    node's GPUs for that container."""
    environment = envs.environment_for(
        spec,
        run,
        lib_dir=LIB_DIR,
        context_dir=CONTEXT_DIR,
        inherited_pythonpath=image_env.get("PYTHONPATH"),
    )
    environment.update(extra)
    environment["TRAINHUB_NODE"] = node
    if spec.use_gpu:
        # UUIDs name the same devices inside and outside the container.
        environment["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_uuids)
        environment["NVIDIA_VISIBLE_DEVICES"] = ",".join(gpu_uuids) or "none"
    return environment


async def remove_run_containers(
    pool: NodePool, instance: str, run_id: str, nodes: list[str]
) -> None:
    """Remove the run's containers on ``nodes`` (found by their labels); an unreachable node's
    leftovers are removed when it is back (the launcher's ``_node_ready``)."""
    for node in nodes:
        try:
            engine = pool.engine(node)
            await asyncio.to_thread(engine.remove_containers_of, instance, run_id)
        except Exception as exc:  # noqa: BLE001 - best effort; the node tidies up when back
            log.warning("run %s: could not remove its container on %s: %s", run_id, node, exc)


async def collect_ranked(
    pool: NodePool,
    instance: str,
    run_id: str,
    nodes: list[str],
    run_dir: Path,
    taken: dict[str, str],
) -> list[tuple[str, str, str]]:
    """``./outputs`` and ``./logs`` of the run's containers on the other ``nodes`` of a multi-node
    run, in node rank order, as far as they can be reached. A file that a lower node rank brought
    already (``taken``: path -> node, the first node's files to begin with) stays as that node wrote
    it; returns those as (path, node kept, node not kept)."""
    collisions: list[tuple[str, str, str]] = []
    for node in nodes:
        names: set[str] = set()
        try:
            found = await asyncio.to_thread(pool.engine(node).find_run_containers, instance)
            if run_id not in found:
                continue
            bulk = pool.bulk_engine(node)
            await asyncio.to_thread(_collect_new, bulk, found[run_id].id, run_dir, taken, names)
        except Exception as exc:  # noqa: BLE001 - what can be had is kept; the run goes on ending
            log.warning("run %s: could not collect its results from %s: %s", run_id, node, exc)
        for name in sorted(names - set(SERVER_WRITTEN)):
            if name in taken:
                collisions.append((name, taken[name], node))
            else:
                taken[name] = node
    return collisions


def _collect_new(
    engine: DockerEngine, container_id: str, run_dir: Path, taken: dict[str, str], seen: set[str]
) -> None:
    skip = (*SERVER_WRITTEN, *taken)
    for top in ("outputs", "logs"):
        chunks = engine.get_archive(container_id, f"{WORKDIR}/{top}")
        if chunks is not None:
            extract_container_archive(chunks, run_dir, top, skip=skip, seen=seen)


async def first_unreachable(pool: NodePool, instance: str, nodes: list[str]) -> str | None:
    """The first of ``nodes`` whose Docker engine does not answer now, if any."""
    for node in nodes:
        try:
            engine = pool.engine(node)
            await asyncio.wait_for(
                asyncio.to_thread(engine.find_run_containers, instance), timeout=15
            )
        except Exception:  # noqa: BLE001 - unreachable, whatever the way it fails
            return node
    return None


# The incremental sync of ./logs ------------------------------------------------------------------
# Run in the container by its own Python (every run's image has one: the wrapper needs it). LIST
# prints [path, size, mtime_ns] of every regular file under the folder (links not followed); READ
# sends the files asked for, each from its offset, as chunks "<n>\n<n bytes>" ending with "0\n"
# ("-1\n" for a file that is gone).
_PROGRAM = 'py=$(command -v python3 || command -v python) && exec "$py" -c "$0" "$@"'
_LIST = """
import json, os, stat, sys
root = sys.argv[1]
found = []
for top, dirs, files in os.walk(root):
    dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(top, d))]
    for name in files:
        try:
            st = os.lstat(os.path.join(top, name))
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            found.append([os.path.relpath(os.path.join(top, name), root), st.st_size, st.st_mtime_ns])
sys.stdout.write(json.dumps(found))
"""
_READ = """
import json, os, sys
root, wanted = sys.argv[1], json.loads(sys.argv[2])
out = sys.stdout.buffer
for path, offset in wanted:
    try:
        f = open(os.open(os.path.join(root, path), os.O_RDONLY | os.O_NOFOLLOW), "rb")
    except OSError:
        out.write(b"-1\\n")
        continue
    with f:
        f.seek(offset)
        while True:
            chunk = f.read(1 << 20)
            out.write(b"%d\\n" % len(chunk))
            if not chunk:
                break
            out.write(chunk)
out.flush()
"""
OVERLAP = 64  # bytes before a grown file's end fetched again: it grew only if they are unchanged
_ARGUMENT_BYTES = 100_000  # one argument of a process may hold 128 KiB on Linux


@dataclass(frozen=True)
class Listed:
    path: str  # relative to ./logs
    size: int
    mtime_ns: int


def plan(listed: list[Listed], dest: Path, run_dir: Path) -> list[tuple[Listed, int]]:
    """What to fetch: (file, offset) for files that are new or changed; the offset is where the
    copy here can go on from (minus :data:`OVERLAP`, checked) when the file only grew, else 0."""
    root = run_dir.resolve()
    skipped = {root / name for name in SERVER_WRITTEN}
    wanted: list[tuple[Listed, int]] = []
    for item in listed:
        target = _target(dest, item.path, root)
        if target is None or target in skipped or item.path.endswith(".part"):
            continue
        try:
            have = target.lstat()
        except OSError:
            wanted.append((item, 0))
            continue
        if not stat.S_ISREG(have.st_mode):
            wanted.append((item, 0))
        elif have.st_size == item.size and have.st_mtime_ns == item.mtime_ns:
            continue  # unchanged
        elif have.st_size >= OVERLAP and item.size > have.st_size:
            wanted.append((item, have.st_size - OVERLAP))
        else:
            wanted.append((item, 0))
    return wanted


def _target(dest: Path, relative: str, root: Path) -> Path | None:
    """``dest/relative`` if it stays inside the run's folder (the container names the paths)."""
    parts = relative.replace("\\", "/").split("/")
    if not relative or relative.startswith("/") or ".." in parts or "\x00" in relative:
        return None
    target = dest.joinpath(*parts)
    if not target.parent.resolve().is_relative_to(root):
        return None
    return target.parent.resolve() / target.name


def sync_logs(
    engine: DockerEngine, container_id: str, run_dir: Path, seen: set[str] | None = None
) -> int | None:
    """Copy ``./logs`` of a running container into run history, only what changed: a new or
    rewritten file whole, a file that grew only its new bytes (appended to the copy here, so that a
    TensorBoard reading it reads on). Returns the bytes of file content copied, or None when the
    container cannot run the copy (it has stopped): the caller copies the folder as an archive."""
    folder = f"{WORKDIR}/logs"
    try:
        listing = _exec(engine, container_id, [_LIST, folder])
        if listing is None:
            return None
        found = json.loads(b"".join(listing))
        listed = [Listed(str(p), int(s), int(m)) for p, s, m in found]
        if seen is not None:
            seen.update(f"logs/{item.path}" for item in listed)
        dest = run_dir / "logs"
        wanted = plan(listed, dest, run_dir.resolve())
        copied = 0
        while wanted:
            batch: list[tuple[Listed, int]] = []
            size = 0
            while len(batch) < len(wanted) and (not batch or size < _ARGUMENT_BYTES):
                batch.append(wanted[len(batch)])
                size += len(json.dumps(batch[-1][0].path)) + 24
            wanted = wanted[len(batch) :]
            arguments = json.dumps([[item.path, offset] for item, offset in batch])
            stream = _exec(engine, container_id, [_READ, folder, arguments])
            if stream is None:
                return None
            refetch, received = _receive(stream, batch, dest, run_dir.resolve())
            copied += received
            wanted.extend((item, 0) for item in refetch)
    except (EOFError, ValueError, TypeError) as exc:  # no Python there, or it stopped meanwhile
        log.info(
            "incremental copy of ./logs out of %s failed (%s): copied whole", container_id, exc
        )
        return None
    return copied


def _receive(
    chunks: Iterator[bytes], batch: list[tuple[Listed, int]], dest: Path, root: Path
) -> tuple[list[Listed], int]:
    """Write what READ sends for ``batch``; returns the files to fetch again whole (their bytes
    before the new ones were not what the copy here holds) and the bytes received."""
    reader = io.BufferedReader(ChunkReader(chunks), buffer_size=CHUNK)
    refetch: list[Listed] = []
    received = 0
    for item, offset in batch:
        target = _target(dest, item.path, root)
        assert target is not None  # plan() kept only these
        first = int(reader.readline())
        if first < 0:
            continue  # gone meanwhile
        frames = _frames(reader, first)
        if offset == 0:
            with open_fresh(target) as out:
                for data in frames:
                    received += len(data)
                    out.write(data)
        else:
            head = b""
            for data in frames:
                received += len(data)
                head += data
                if len(head) >= OVERLAP:
                    break
            if len(head) < OVERLAP or bytes_at(target, offset, OVERLAP) != head[:OVERLAP]:
                received += sum(len(data) for data in frames)  # rewritten, not appended to
                refetch.append(item)
                continue
            with target.open("r+b") as out:
                out.seek(offset + OVERLAP)
                out.truncate()
                out.write(head[OVERLAP:])
                for data in frames:
                    received += len(data)
                    out.write(data)
        os.utime(target, ns=(item.mtime_ns, item.mtime_ns))
    return refetch, received


def _frames(reader: IO[bytes], size: int) -> Iterator[bytes]:
    while size > 0:
        data = reader.read(size)
        if len(data) < size:
            raise EOFError("the copy out of the container ended early")
        yield data
        size = int(reader.readline())


def bytes_at(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read(size)


def open_fresh(target: Path) -> IO[bytes]:
    """``target`` for writing from its start, in place (a reader of it, such as TensorBoard, keeps
    reading the same file); a link or a folder in its way is removed first."""
    if target.is_symlink() or (target.exists() and not target.is_file()):
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "wb")


def _exec(engine: DockerEngine, container_id: str, args: list[str]) -> Iterator[bytes] | None:
    """The stdout of one of the programs above run in the container, as it streams; None when
    the container cannot run it (it has stopped, or has no shell)."""
    api = engine.client.api
    try:
        created = api.exec_create(
            container_id, ["/bin/sh", "-c", _PROGRAM, *args], stdout=True, stderr=False
        )
        stream: Iterator[bytes] = api.exec_start(created["Id"], stream=True)
    except docker.errors.APIError:
        return None

    def checked() -> Iterator[bytes]:
        yield from stream
        if api.exec_inspect(created["Id"]).get("ExitCode") != 0:
            raise EOFError("the copy out of the container failed")

    return checked()


class _Counted:
    """An iterator of chunks that counts their bytes (and closes like the one it wraps)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.total = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.total += len(chunk)
            yield chunk

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
