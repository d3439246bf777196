"""GPU telemetry: while runs hold GPUs on a node, ask its ``nvidia-smi`` every
``gpu_sample_seconds`` how busy each GPU is and how much memory it uses, and keep each reading for
the run holding that GPU (:mod:`trainhub.store.telemetry`).

One ``nvidia-smi`` call per node per tick, whatever the number of runs there; over the SSH
connection the node pool keeps (a new channel of it), or locally for ``local``. Load, act, apply:
who holds which GPU is read in one short read, the nodes are asked with no transaction open, and
the readings are written in one short write that keeps only those of GPUs still held by the same
run. Nothing is asked of any node while no run holds a GPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncssh

from trainhub.nodes.pool import LOCAL, NodePool
from trainhub.settings import Settings
from trainhub.store import Database
from trainhub.store import telemetry as store

log = logging.getLogger("trainhub.telemetry")

USAGE_QUERY = (
    "nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits"
)
# How long one node may take to answer before its reading of this tick is skipped.
QUERY_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Reading:
    """What ``nvidia-smi`` says about one GPU now (None: it said ``[N/A]`` or similar)."""

    index: int
    utilization: float | None  # percent
    memory_used: float | None  # MiB


def parse_usage(csv: str) -> dict[int, Reading]:
    """GPU index -> reading, from :data:`USAGE_QUERY`'s output; lines it cannot read are skipped."""
    readings: dict[int, Reading] = {}
    for line in csv.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        index = int(parts[0])
        readings[index] = Reading(index, _number(parts[1]), _number(parts[2]))
    return readings


def _number(text: str) -> float | None:
    """``nvidia-smi`` prints ``[N/A]`` or ``[Not Supported]`` where a GPU cannot say."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value


def attribute(
    holders: Mapping[str, Mapping[int, str]],
    readings: Mapping[str, Mapping[int, Reading]],
    at: float,
) -> list[store.Sample]:
    """The samples of one tick: each held GPU's reading, for the run holding it (GPUs nobody holds,
    and nodes that gave no answer, give none)."""
    samples = []
    for node, held in holders.items():
        found = readings.get(node, {})
        for index, run_id in sorted(held.items()):
            reading = found.get(index)
            if reading is not None:
                samples.append(
                    store.Sample(run_id, node, index, at, reading.utilization, reading.memory_used)
                )
    return samples


class GpuTelemetry:
    """The sampling loop, started and stopped by the server's lifespan."""

    def __init__(self, settings: Settings, db: Database, pool: NodePool) -> None:
        self.settings = settings
        self.db = db
        self.pool = pool
        self._task: asyncio.Task[None] | None = None
        # node -> (when, what its GPUs did then): the last answer of each node, for the nodes page.
        self._latest: dict[str, tuple[float, dict[int, Reading]]] = {}
        self._asking: dict[str, asyncio.Lock] = {}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="gpu-telemetry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        interval = self.settings.gpu_sample_seconds
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.tick()
            except Exception:  # a bad tick must not end telemetry for the server's lifetime
                log.exception("sampling GPUs failed; trying again in %.0f s", interval)
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    async def tick(self) -> int:
        """Sample every node where runs hold GPUs, once. Returns the number of samples kept."""
        holders = await self.db.read(store.gpu_holders)
        if not holders:
            return 0
        nodes = sorted(holders)
        answers = await asyncio.gather(*(self.read_node(node) for node in nodes))
        now = time.monotonic()
        self._latest.update(
            {node: (now, found) for node, found in zip(nodes, answers, strict=True)}
        )
        readings = {node: found for node, found in zip(nodes, answers, strict=True) if found}
        samples = attribute(holders, readings, time.time())
        if not samples:
            return 0
        return await self.db.write(lambda db: store.add_samples(db, samples))

    async def current(
        self, node: str, timeout: float = QUERY_TIMEOUT_SECONDS
    ) -> dict[int, Reading]:
        """What ``node``'s GPUs do now, for people watching the nodes page: the node's last answer
        while it is younger than one sampling interval, else asked now (once, however many pages
        ask at the same time)."""
        lock = self._asking.setdefault(node, asyncio.Lock())
        async with lock:
            at, found = self._latest.get(node, (float("-inf"), {}))
            if time.monotonic() - at < self.settings.gpu_sample_seconds:
                return found
            found = await self.read_node(node, timeout)
            self._latest[node] = (time.monotonic(), found)
            return found

    async def read_node(
        self, node: str, timeout: float = QUERY_TIMEOUT_SECONDS
    ) -> dict[int, Reading]:
        """What ``nvidia-smi`` on ``node`` says now; nothing when the node cannot be asked."""
        try:
            output = await asyncio.wait_for(self._query(node), timeout)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            log.debug("node %s: no GPU reading (%s)", node, exc)
            return {}
        return parse_usage(output) if output is not None else {}

    async def _query(self, node: str) -> str | None:
        if node == LOCAL:
            smi = shutil.which("nvidia-smi")
            if smi is None:
                return None
            proc = await asyncio.create_subprocess_exec(
                smi,
                *USAGE_QUERY.split()[1:],
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                out, _ = await proc.communicate()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            return out.decode(errors="replace") if proc.returncode == 0 else None
        remote = self.pool.remotes.get(node)
        if remote is None or remote.conn is None or remote.conn.is_closed():
            return None
        result = await remote.conn.run(USAGE_QUERY, check=False)
        return str(result.stdout) if result.exit_status == 0 else None


# A GPU under this utilisation (percent) counts as idle in a sample.
IDLE_BELOW = 10.0
# The hint is given when a GPU was idle in at least this share of its samples...
IDLE_SHARE = 0.8
# ...and it has at least this many samples (a run of a few seconds says nothing).
MIN_SAMPLES = 3


def idle_hint(samples: Mapping[str, Sequence[float]]) -> str | None:
    """A sentence for a run whose GPUs sat idle most of the time, or None.

    ``samples``: GPU label (its index, or ``node:index``) -> its utilisation readings in percent."""
    return hint_from_counts(
        {
            gpu: (sum(1 for v in values if v < IDLE_BELOW), len(values))
            for gpu, values in samples.items()
        }
    )


def hint_from_counts(counts: Mapping[str, tuple[int, int]]) -> str | None:
    """:func:`idle_hint` from GPU label -> (idle samples, all samples), as
    :func:`trainhub.store.telemetry.idle_counts` counts them."""
    idle = [
        (gpu, n_idle / total)
        for gpu, (n_idle, total) in counts.items()
        if total >= MIN_SAMPLES and n_idle / total >= IDLE_SHARE
    ]
    if not idle:
        return None
    below = f"under {IDLE_BELOW:g}% busy"
    if len(idle) == 1:
        gpu, share = idle[0]
        return f"GPU {gpu} was {below} for {_percent(share)} of the run"
    names = ", ".join(gpu for gpu, _ in idle[:-1]) + f" and {idle[-1][0]}"
    least = min(share for _, share in idle)
    return f"GPUs {names} were {below} for at least {_percent(least)} of the run"


def _percent(share: float) -> str:
    """Rounded down, so 99.6% idle never reads as 100%."""
    return f"{int(share * 100)}%"
