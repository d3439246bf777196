"""The containers of a PyTorch distributed or TensorFlow parameter-server run, one per node, watched
as one run.

Every node's container runs a ``torchrun`` (or the parameter-server launcher) of its own (MPI has one
``mpirun``, on the first node, that notices everything), so the run ends when the last of them has
ended, or when one of them fails: then the others are stopped (SIGTERM, SIGKILL after the grace
period) and the first process that failed, on whichever node, is named at the end of the driver log
with its last lines, which the run's error message ends with. A node whose engine cannot be reached
any more ends its part without an exit code: the driver's node-loss path takes the run from there,
as for MPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from trainhub.nodes.pool import NodePool
from trainhub.runs.artifacts import DRIVER_LOG
from trainhub.runs.containers import in_thread
from trainhub.runs.preparing import append_log
from trainhub.runtime.docker import DockerEngine
from trainhub.runtime.incontainer import LogSink
from trainhub.runtime.torch_launch import FAILURES

log = logging.getLogger("trainhub.containers")
KILL_WAIT_SECONDS = 30
SHOWN_LINES = 10  # of the failed process: the run's error message holds the driver log's last 20


class OutputTail:
    """The last bytes a container printed (a worker node's: the first node's is the driver log)."""

    LIMIT = 16 * 1024

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        if len(self.data) > 2 * self.LIMIT:
            del self.data[: -self.LIMIT]
        return len(chunk)

    def flush(self) -> None:
        pass

    def lines(self) -> list[str]:
        return bytes(self.data).decode("utf-8", "replace").splitlines()[-SHOWN_LINES:]


@dataclass
class Member:
    """One node's container of the run."""

    node: str
    rank: int  # the node rank: 0 is the first node
    engine: DockerEngine
    container_id: str
    output: OutputTail = field(default_factory=OutputTail)


async def find(pool: NodePool, instance: str, run_id: str, nodes: list[str]) -> dict[str, str]:
    """The run's container on each of ``nodes`` (after a re-attach), as far as they are found."""
    found: dict[str, str] = {}
    for node in nodes:
        with contextlib.suppress(Exception):  # not there or not reachable: it counts as ended
            containers = await asyncio.to_thread(pool.engine(node).find_run_containers, instance)
            if run_id in containers:
                found[node] = containers[run_id].id
    return found


async def watch(
    members: list[Member],
    head_ended: asyncio.Future[int | None],
    pool: NodePool,
    grace: tuple[float, float],
    run_dir: Path,
    stopping: Callable[[], bool],
) -> int | None:
    """The run's exit code: 0 once every node's container has ended well, else the first failure's
    (after stopping the rest). ``head_ended`` is the first node's (its errors are the driver's);
    ``grace`` is (SIGTERM to SIGKILL, how long a node's engine may be away); ``stopping`` says
    whether the run is being stopped from outside (cancel, time limit): nothing is named then."""
    head, workers = members[0], members[1:]
    endings: dict[asyncio.Future[int | None], Member] = {head_ended: head}
    for member in workers:
        endings[asyncio.ensure_future(_worker_end(member, pool, grace[1]))] = member
    pending = set(endings)
    failed: tuple[Member, int | None] | None = None
    try:
        while pending and failed is None:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for ending in sorted(done, key=lambda f: endings[f].rank):
                code = ending.result()  # the first node's broken wait is the driver's to judge
                if code != 0 and failed is None:
                    failed = (endings[ending], code)
    except BaseException:
        for ending in pending - {head_ended}:
            ending.cancel()
        raise
    if failed is None:
        return 0
    await stop([endings[f] for f in pending], pending, grace[0])
    if stopping():
        return failed[1]
    return await _name_first_failure(members, *failed, run_dir / DRIVER_LOG)


async def stop(members: list[Member], ended: set[asyncio.Future[int | None]], grace: float) -> None:
    """SIGTERM to ``members``' scripts; SIGKILL to their containers if ``ended`` are not all done
    after ``grace`` seconds."""
    await _signal(members, "SIGTERM")
    if not ended:
        return
    _, left = await asyncio.wait(ended, timeout=grace)
    if left:
        await _signal(members, "SIGKILL")
        await asyncio.wait(left, timeout=KILL_WAIT_SECONDS)


async def _signal(members: list[Member], name: str) -> None:
    for member in members:
        try:
            await asyncio.to_thread(member.engine.signal, member.container_id, name)
        except Exception as exc:  # noqa: BLE001 - an unreachable node's part ends by itself
            log.warning("could not send %s to the container on %s: %s", name, member.node, exc)


async def _worker_end(member: Member, pool: NodePool, away: float) -> int | None:
    """The exit code of the script in another node's container, as its wrapper reports it; None
    when the node stays unreachable for ``away`` seconds or the container is gone."""
    while True:
        try:
            return await _container_end(member)
        except Exception:  # noqa: BLE001 - the stream or the wait broke: is it still there?
            if not await _still_running(member, pool, away):
                return None


async def _container_end(member: Member) -> int | None:
    loop = asyncio.get_running_loop()
    script_done: asyncio.Future[int] = loop.create_future()

    def on_exit(code: int, _present: str | None) -> None:
        def settle() -> None:
            if not script_done.done():
                script_done.set_result(code)

        with contextlib.suppress(RuntimeError):  # the loop closed: the server is stopping
            loop.call_soon_threadsafe(settle)

    member.output = OutputTail()  # a stream read again starts from the first line
    in_thread(_stream, member.engine, member.container_id, member.output, on_exit)
    exited = in_thread(member.engine.wait, member.container_id)
    await asyncio.wait({script_done, exited}, return_when=asyncio.FIRST_COMPLETED)
    if script_done.done():
        return script_done.result()
    return exited.result()


def _stream(
    engine: DockerEngine,
    container_id: str,
    output: OutputTail,
    on_exit: Callable[[int, str | None], None],
) -> None:
    sink = LogSink(cast(IO[bytes], output), on_exit)
    try:
        engine.stream_logs(container_id, sink)  # type: ignore[arg-type]
    finally:
        sink.close()


async def _still_running(member: Member, pool: NodePool, away: float) -> bool:
    """Whether the member's container still runs once its node's engine answers again (its
    connection only dropped), waiting at most ``away`` seconds for the engine."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + away
    while True:
        try:
            engine = pool.engine(member.node)
            status = await asyncio.wait_for(
                asyncio.to_thread(engine.container_status, member.container_id), timeout=15
            )
        except Exception:  # noqa: BLE001 - away for now
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.5)
            continue
        member.engine = engine
        return status == "running"


async def _name_first_failure(
    members: list[Member], failed: Member, code: int | None, driver_log: Path
) -> int | None:
    """Name the process that failed first (the earliest record of any node) with its last lines,
    or, when no process failed (torchrun itself did), the failed node's last lines; returns the
    exit code the run ends with."""
    texts = {m.node: await asyncio.to_thread(_read_failures, m) for m in members}
    first = first_failure(texts)
    if first is not None:
        code, notes = failure_notes(first)
    elif failed.rank > 0:  # the first node's own output is the driver log already
        notes = [
            f"trainhub: the run ended on node {failed.node} (node rank {failed.rank}) with exit "
            f"code {code}; its last lines:",
            *(f"  {line}" for line in failed.output.lines()),
        ]
    else:
        return code
    await asyncio.to_thread(note, driver_log, notes)
    return code


def failure_notes(first: dict[str, Any]) -> tuple[int, list[str]]:
    """The exit code a failure record gives the run, and the lines naming its process."""
    code = int(first["code"])
    who = (  # a parameter-server run's records name the task ("worker 1")
        f"{first['task']} (node {first['node']})"
        if "task" in first
        else f"process {first['rank']} (node {first['node']}, local rank {first['local_rank']})"
    )
    return code, [
        f"trainhub: {who} failed first, with exit code {code}; its last lines:",
        *(f"  {line}" for line in str(first["tail"]).splitlines()[-SHOWN_LINES:]),
    ]


def first_failure(texts: dict[str, str]) -> dict[str, Any] | None:
    """The earliest of the failure records (:data:`FAILURES`, JSON lines) of every node (node ->
    its file's text), with its node; a line that is not a record is passed over."""
    records: list[dict[str, Any]] = []
    for node, text in texts.items():
        for line in text.splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                record = json.loads(line)
                int(record["code"])
                records.append({**record, "node": node, "time": float(record["time"])})
    return min(records, key=lambda r: r["time"]) if records else None


def _read_failures(member: Member) -> str:
    try:
        return member.engine.read_small_file(member.container_id, FAILURES) or ""
    except Exception:  # noqa: BLE001 - a node away has no say
        return ""


def note(driver_log: Path, lines: list[str]) -> None:
    """``lines`` at the end of the driver log, on lines of their own."""
    text = "".join(f"{line}\n" for line in lines)
    with contextlib.suppress(OSError), driver_log.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) != b"\n":
            text = "\n" + text
    append_log(driver_log, text)
