"""Files into and out of a run's containers (the runtime and snapshot in; the driver log, ``./outputs``,
``./logs`` and the in-run context out), and a thread of its own for each long blocking wait."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from trainhub.nodes.pool import NodePool
from trainhub.runs import environment as envs
from trainhub.runs.artifacts import SERVER_WRITTEN, extract_container_archive
from trainhub.runtime.docker import WORKDIR, DockerEngine
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
    with path.open("wb") as raw:
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


def collect(engine: DockerEngine, container_id: str, run_dir: Path, tops: tuple[str, ...]) -> None:
    """``./outputs`` and/or ``./logs`` of the container into run history."""
    for top in tops:
        chunks = engine.get_archive(container_id, f"{WORKDIR}/{top}")
        if chunks is not None:
            extract_container_archive(chunks, run_dir, top, skip=SERVER_WRITTEN)


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


async def collect_from(
    pool: NodePool,
    instance: str,
    run_id: str,
    nodes: list[str],
    run_dir: Path,
    tops: tuple[str, ...],
) -> None:
    """``collect`` from the run's containers on other ``nodes`` (a multi-node run's), as far as they
    can be reached."""
    for node in nodes:
        try:
            found = await asyncio.to_thread(pool.engine(node).find_run_containers, instance)
            if run_id in found:
                bulk = pool.bulk_engine(node)
                await asyncio.to_thread(collect, bulk, found[run_id].id, run_dir, tops)
        except Exception as exc:  # noqa: BLE001 - what can be had is kept; the run goes on ending
            log.warning("run %s: could not collect %s from %s: %s", run_id, tops, node, exc)


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
