"""TensorBoard processes the server starts on demand, one per run (or per chosen set of runs).

A *board* is one ``tensorboard`` process over a folder, bound to 127.0.0.1 on a port the system
picks, with ``--path_prefix`` set to the URL path the server proxies it at, so it is reachable only
through the server (and its login). A board nobody used for ``tensorboard_idle_minutes`` is stopped;
starting one beyond ``tensorboard_max`` stops the least recently used; all are stopped with the
server. Each process also exits by itself when the server's process is gone (a killed server leaves
none behind).

Folders (a run's own under its run folder, so they move with it):

* ``RUN_DIR/tensorboard/`` is a run's board: ``logs`` (a link to the run's synced ``../logs``) and
  ``trainhub-metrics/`` (its ``run.log()`` metrics as event files, see :mod:`.scalars`).
* ``DATA/tensorboard/views/<id>/`` is a board over several runs: one link per run, named by its
  id, to that run's board folder. The id is a digest of the run ids, so the same runs give the same
  view; the folder is the view's record and survives a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from trainhub.settings import Settings
from trainhub.store import Database
from trainhub.tensorboard import scalars

log = logging.getLogger("trainhub.tensorboard")

MAX_VIEW_RUNS = 100
START_TIMEOUT = 120.0  # seconds a board may take to answer before it counts as failed
RETRY_AFTER_FAILURE = 10.0  # seconds a failed board is reported as failed before another try
_SERVING = re.compile(r"TensorBoard \S+ at http://127\.0\.0\.1:(\d+)/")
VIEW_ID = re.compile(r"^[0-9a-f]{16}$")

# The process: TensorBoard's own entry point, plus a thread that ends it when its parent (the
# server) is gone, however the server ended.
_BOOT = """
import os, sys, threading, time
parent = int(sys.argv[1])
def watch():
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
sys.argv = ["tensorboard", *sys.argv[2:]]
from tensorboard.main import run_main
run_main()
"""


def board_dir(settings: Settings, run_id: str) -> Path:
    return settings.run_dir(run_id) / "tensorboard"


def views_dir(settings: Settings) -> Path:
    return settings.data / "tensorboard" / "views"


def run_prefix(run_id: str) -> str:
    return f"/runs/{run_id}/tensorboard"


def view_prefix(view_id: str) -> str:
    return f"/tensorboard/{view_id}"


def prepare_board_dir(settings: Settings, run_id: str) -> Path:
    """The run's board folder: its synced ``logs`` (linked) and its metrics folder."""
    folder = board_dir(settings, run_id)
    (settings.run_dir(run_id) / "logs").mkdir(parents=True, exist_ok=True)
    scalars.metrics_dir(folder).mkdir(parents=True, exist_ok=True)
    link = folder / "logs"
    if not link.is_symlink():
        link.symlink_to(Path("..") / "logs", target_is_directory=True)
    return folder


def view_id_for(run_ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(set(run_ids))).encode()).hexdigest()[:16]


def prepare_view(settings: Settings, run_ids: list[str]) -> str:
    """The folder of a board over ``run_ids`` (made once, atomically); returns its id."""
    view_id = view_id_for(run_ids)
    folder = views_dir(settings) / view_id
    if folder.is_dir():
        return view_id
    building = folder.with_name(f".{view_id}.{secrets.token_hex(4)}.tmp")
    building.mkdir(parents=True)
    for run_id in sorted(set(run_ids)):
        target = prepare_board_dir(settings, run_id)
        link = building / run_id
        if not link.is_symlink():
            link.symlink_to(Path(os.path.relpath(target, folder)), target_is_directory=True)
    try:
        building.rename(folder)
    except OSError:  # made meanwhile by another request
        shutil.rmtree(building, ignore_errors=True)
    return view_id


def view_runs(settings: Settings, view_id: str) -> list[str] | None:
    """The run ids of a view, or None when there is no such view."""
    folder = views_dir(settings) / view_id
    if not VIEW_ID.match(view_id) or not folder.is_dir():
        return None
    return sorted(p.name for p in folder.iterdir() if p.is_symlink())


def _reload_interval(seconds: float) -> float:
    """0 loads once; TensorBoard's fast loader counts whole seconds, so a fraction is 1 s."""
    return 0.0 if seconds <= 0 else max(1.0, seconds)


class BoardFailed(Exception):
    """TensorBoard exited, or did not answer in time; the message says what it printed last."""


@dataclass
class Board:
    key: str  # "run:<id>" or "view:<id>"
    prefix: str  # the URL path TensorBoard is served under
    logdir: Path
    run_ids: tuple[str, ...]
    last_used: float = field(default_factory=time.monotonic)
    process: asyncio.subprocess.Process | None = None
    port: int | None = None
    output: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failed: str | None = None
    reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Where TensorBoard itself answers (loopback only)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def touch(self) -> None:
        self.last_used = time.monotonic()


class TensorboardManager:
    """Starts, finds and stops the boards. ``start()``/``stop()`` belong in the app's lifespan."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.boards: dict[str, Board] = {}
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(120.0, connect=5.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=32),
            trust_env=False,  # never a proxy between the server and its own loopback
            follow_redirects=False,
        )
        self._lock = asyncio.Lock()
        self._loop: asyncio.Task[None] | None = None
        self._last_export = 0.0

    # Lifespan ---------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.create_task(self._maintain(), name="trainhub-tensorboard")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        boards = list(self.boards.values())
        self.boards.clear()
        await asyncio.gather(*(self._terminate(b) for b in boards))
        await self.client.aclose()

    # Boards -----------------------------------------------------------------------------------
    async def for_run(self, run_id: str) -> Board:
        """The run's board, started if it is not running (the run must exist: callers check)."""
        return await self._open(
            f"run:{run_id}",
            run_prefix(run_id),
            lambda: prepare_board_dir(self.settings, run_id),
            (run_id,),
        )

    async def for_view(self, view_id: str, run_ids: list[str]) -> Board:
        folder = views_dir(self.settings) / view_id

        def prepare() -> Path:
            for run_id in run_ids:  # a run's board folder may be missing (a restored backup)
                prepare_board_dir(self.settings, run_id)
            return folder

        return await self._open(f"view:{view_id}", view_prefix(view_id), prepare, tuple(run_ids))

    async def close(self, key: str) -> bool:
        """Stop one board now (the SDK's ``Tensorboard.stop()``); False when none was running."""
        async with self._lock:
            board = self.boards.pop(key, None)
        if board is None:
            return False
        await self._terminate(board)
        return True

    async def wait_ready(self, board: Board, timeout: float) -> bool:
        """Whether the board answers within ``timeout`` seconds; raises BoardFailed if it died."""
        if board.ready.is_set() and board.failed is None:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(board.ready.wait(), timeout)
        if board.failed is not None:
            raise BoardFailed(board.failed)
        return board.ready.is_set()

    def running(self) -> list[Board]:
        return [b for b in self.boards.values() if b.alive]

    async def _open(
        self, key: str, prefix: str, prepare: Callable[[], Path], run_ids: tuple[str, ...]
    ) -> Board:
        board = self.boards.get(key)
        if board is not None and board.alive and board.failed is None:
            board.touch()  # the common case, without waiting for the lock
            return board
        async with self._lock:
            board = self.boards.get(key)
            if board is not None and board.alive and board.failed is None:
                board.touch()
                return board
            if board is not None and time.monotonic() - board.last_used < RETRY_AFTER_FAILURE:
                return board  # it failed a moment ago: say so rather than start it again at once
            if board is not None:  # it died: start it again
                self.boards.pop(key)
                await self._terminate(board)
            while len(self.boards) >= max(1, self.settings.tensorboard_max):
                oldest = min(self.boards.values(), key=lambda b: b.last_used)
                log.info("TensorBoard %s stopped: more than %d open", oldest.key, len(self.boards))
                self.boards.pop(oldest.key)
                await self._terminate(oldest)
            logdir: Path = await asyncio.to_thread(prepare)
            board = Board(key=key, prefix=prefix, logdir=logdir, run_ids=run_ids)
            self.boards[key] = board
            await self._export(board.run_ids)
            try:
                await self._launch(board)
            except OSError as exc:  # not even started: say why to whoever waits for it
                board.failed = f"TensorBoard could not be started: {exc}"
                board.ready.set()
            return board

    async def _launch(self, board: Board) -> None:
        args = [
            "--logdir",
            str(board.logdir),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--path_prefix",
            board.prefix,
            "--reload_interval",
            str(_reload_interval(self.settings.tensorboard_reload_seconds)),
        ]
        board.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _BOOT,
            str(os.getpid()),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole (data server too)
        )
        log.info("TensorBoard %s started (pid %d)", board.key, board.process.pid)
        board.reader = asyncio.create_task(self._follow(board))

    async def _follow(self, board: Board) -> None:
        """Read what TensorBoard prints: its port, then poll it until it answers."""
        process = board.process
        assert process is not None and process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        poller: asyncio.Task[None] | None = None
        try:
            async for raw in process.stdout:
                line = raw.decode(errors="replace").rstrip()
                board.output.append(line)
                log.debug("TensorBoard %s: %s", board.key, line)
                found = _SERVING.search(line)
                if found and poller is None:
                    board.port = int(found.group(1))
                    poller = asyncio.create_task(self._poll(board, deadline))
            await process.wait()
        finally:
            if poller is not None:
                poller.cancel()
            if not board.ready.is_set() or process.returncode is not None:
                tail = "\n".join(board.output)
                board.failed = board.failed or (
                    f"TensorBoard exited with code {process.returncode}: {tail[-1500:]}"
                )
                board.touch()  # when it failed: RETRY_AFTER_FAILURE counts from here
                board.ready.set()  # waiters wake up and see it failed

    async def _poll(self, board: Board, deadline: float) -> None:
        url = f"{board.url}{board.prefix}/data/environment"
        while time.monotonic() < deadline:
            try:
                response = await self.client.get(url, timeout=2.0)
                if response.status_code == 200:
                    board.ready.set()
                    log.info("TensorBoard %s answers on port %d", board.key, board.port)
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        board.failed = f"TensorBoard did not answer within {START_TIMEOUT:.0f} s"
        board.ready.set()

    async def _terminate(self, board: Board) -> None:
        process = board.process
        if process is not None and process.returncode is None:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), wait)
                    break
        if board.reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(board.reader, 5.0)
        log.info("TensorBoard %s stopped", board.key)

    # Upkeep: idle boards stopped, metrics exported --------------------------------------------
    async def _maintain(self) -> None:
        idle = self.settings.tensorboard_idle_minutes * 60
        tick = max(0.2, min(idle / 5, self.settings.tensorboard_reload_seconds, 5.0))
        while True:
            await asyncio.sleep(tick)
            try:
                await self._stop_idle(idle)
                now = time.monotonic()
                if now - self._last_export >= self.settings.tensorboard_reload_seconds:
                    self._last_export = now
                    runs = {r for b in self.running() for r in b.run_ids}
                    await self._export(tuple(sorted(runs)))
            except Exception:  # noqa: BLE001 - upkeep goes on; the next tick tries again
                log.exception("TensorBoard upkeep failed")

    async def _stop_idle(self, idle: float) -> None:
        async with self._lock:
            now = time.monotonic()
            stale = [b for b in self.boards.values() if now - b.last_used > idle]
            for board in stale:
                self.boards.pop(board.key)
        for board in stale:
            log.info("TensorBoard %s stopped: unused for %.0f s", board.key, idle)
            await self._terminate(board)

    async def _export(self, run_ids: tuple[str, ...]) -> None:
        for run_id in run_ids:
            folder = board_dir(self.settings, run_id)
            try:
                await asyncio.to_thread(scalars.export, self.db, run_id, folder)
            except OSError as exc:
                log.warning("run %s: metrics not written for TensorBoard: %s", run_id, exc)
