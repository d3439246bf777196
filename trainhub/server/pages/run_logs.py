"""The run page's log viewer: the last screen of a log, older and newer blocks by byte range, a live
tail over server-sent events, a search done here, and the whole file as a download.

Every answer reads a bounded number of bytes (:mod:`trainhub.runs.logview`), whatever the size of
the log. A run's logs are its driver log, its environment's build log and, for an MPI run, each
process's own log; the ``log`` parameter picks one (``driver``, ``build`` or a rank log's path).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from litestar import Controller, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import Parameter
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import File, ServerSentEvent, Template
from litestar.response.sse import ServerSentEventMessage

from trainhub.runs import logview, service
from trainhub.runs.artifacts import BUILD_LOG, CHUNK, DRIVER_LOG
from trainhub.store import runs as run_store

FOLLOW_POLL_SECONDS = 0.25
STATUS_EVERY = 4  # polls between two looks at the run's status when the log is quiet
KEEP_ALIVE_SECONDS = 15.0


@dataclass(frozen=True)
class LogSource:
    key: str  # what the ``log`` parameter says
    label: str
    path: str  # relative to the run's folder


def log_sources(run_dir: Path) -> list[LogSource]:
    """The logs a run has: its driver log always, the build log and rank logs when they exist."""
    sources = [LogSource("driver", "Driver log", DRIVER_LOG)]
    if (run_dir / BUILD_LOG).is_file():
        sources.append(LogSource("build", "Environment build log", BUILD_LOG))
    for relative in logview.rank_logs(run_dir):
        parts = relative.split("/")
        if parts[1] == "mpi":  # logs/mpi/<job>/rank.<n>/<stream>
            label = f"Rank {parts[3].removeprefix('rank.')} ({parts[4]})"
        elif parts[1] in ("torchrun", "tensorflow"):  # logs/<launcher>/<kind>.<n>/<stream>
            kind, _, number = parts[2].partition(".")
            name = {"rank": "Rank", "worker": "Worker", "ps": "Parameter server"}.get(kind, kind)
            label = f"{name} {number} ({parts[3]})"
        else:
            label = f"Rank log {parts[-1].removesuffix('.txt')}"
        sources.append(LogSource(relative, label, relative))
    return sources


def pick_source(run_dir: Path, key: str | None) -> tuple[LogSource, list[LogSource]]:
    sources = log_sources(run_dir)
    wanted = key or "driver"
    for source in sources:
        if source.key == wanted:
            return source, sources
    raise NotFoundException(
        f"log: this run has no log '{wanted[:200]}' (it has: {', '.join(s.key for s in sources)})"
    )


async def _run_and_log(
    state: State, run_id: str, key: str | None
) -> tuple[run_store.RunRow, LogSource, list[LogSource], Path]:
    run = await service.get(state.db, run_id)
    run_dir: Path = state.settings.run_dir(run_id)
    source, sources = await asyncio.to_thread(pick_source, run_dir, key)
    return run, source, sources, run_dir / source.path


def _offset(name: str, value: int | None) -> int | None:
    if value is not None and value < 0:
        raise ValidationException(f"{name}: a byte offset is 0 or more, got {value}")
    return value


def _block_json(block: logview.Block) -> dict[str, Any]:
    return {"start": block.start, "end": block.end, "fileSize": block.size, "text": block.text}


class RunLogPages(Controller):
    include_in_schema = False
    path = "/runs/{run_id:str}/log"

    @get("/")
    async def viewer(
        self, request: HTMXRequest, state: State, run_id: str, log: str | None = None
    ) -> Template:
        """The viewer with the log's last screen (the run page loads it into ``#log``)."""
        run, source, sources, path = await _run_and_log(state, run_id, log)
        live = not run.status.is_terminal()
        block = await asyncio.to_thread(logview.tail, path, None, whole_lines=live)
        context = {
            "run": run,
            "source": source,
            "sources": sources,
            "block": block,
            "live": live,
            "log_query": quote(source.key, safe=""),
            "max_block": logview.MAX_BLOCK,
        }
        if request.htmx:
            return HTMXTemplate(template_name="runs/_log.html", context=context)
        return Template("runs/_log_page.html", context=context)

    @get("/range")
    async def byte_range(
        self,
        state: State,
        run_id: str,
        log: str | None = None,
        before: int | None = None,
        after: int | None = None,
        size: int | None = Parameter(default=None, ge=1, le=logview.MAX_BLOCK),
    ) -> dict[str, Any]:
        """``before=N``: the lines that end at byte N; ``after=N``: the lines from the line start at
        or after byte N; at most ``size`` bytes (default and limit ``MAX_BLOCK``)."""
        _, _, _, path = await _run_and_log(state, run_id, log)
        if (before is None) == (after is None):
            raise ValidationException("before/after: give exactly one of them (a byte offset)")
        if before is not None:
            start = _offset("before", before) or 0
            block = await asyncio.to_thread(logview.before, path, start, size)
        else:
            start = _offset("after", after) or 0
            block = await asyncio.to_thread(logview.after, path, start, size)
        return _block_json(block)

    @get("/search")
    async def search(
        self,
        request: HTMXRequest,
        state: State,
        run_id: str,
        q: str = Parameter(default="", max_length=logview.MAX_QUERY),
        log: str | None = None,
        start: int = Parameter(default=0, ge=0),
    ) -> Template:
        """Lines holding ``q`` from byte ``start`` on, scanned in bounded chunks; the answer says
        where to continue when the scan stopped before the end."""
        run, source, _, path = await _run_and_log(state, run_id, log)
        if not q.strip():
            raise ValidationException("q: type something to search for")
        found = await asyncio.to_thread(logview.search, path, q, start=start)
        context = {
            "run": run,
            "source": source,
            "found": found,
            "q": q,
            "log_query": quote(source.key, safe=""),
        }
        return HTMXTemplate(template_name="runs/_log_search.html", context=context)

    @get("/download")
    async def download(self, state: State, run_id: str, log: str | None = None) -> File:
        run, source, _, path = await _run_and_log(state, run_id, log)
        if not path.is_file():
            raise NotFoundException(f"Run {run_id} has no {source.label.lower()} yet")
        name = f"{run.id}-{source.path.replace('/', '_')}"
        return File(
            path=path,
            filename=name,
            media_type="text/plain; charset=utf-8",
            content_disposition_type="attachment",
            chunk_size=CHUNK,
        )

    @get("/stream")
    async def stream(
        self,
        request: HTMXRequest,
        state: State,
        run_id: str,
        log: str | None = None,
        offset: int | None = None,
    ) -> ServerSentEvent:
        """Server-sent events: ``log`` events with the new lines (``{start, end, text}`` as JSON,
        the event id is ``end``) as they are written, then one ``end`` event once the run has
        ended and the log is read to its end. A reconnecting browser resumes at ``Last-Event-ID``."""
        await _run_and_log(state, run_id, log)  # 404 before the stream starts
        resume = request.headers.get("last-event-id", "")
        if resume.isdigit():
            offset = int(resume)
        start = _offset("offset", offset)
        return ServerSentEvent(
            _follow(state, run_id, log, start),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


async def _follow(
    state: State, run_id: str, key: str | None, offset: int | None
) -> AsyncIterator[ServerSentEventMessage]:
    _, _, _, path = await _run_and_log(state, run_id, key)
    position = offset if offset is not None else logview.file_size(path)
    quiet = 0
    waited = 0.0
    while True:
        block = await asyncio.to_thread(logview.follow, path, position)
        if block.data or block.start != position:
            yield ServerSentEventMessage(
                data=json.dumps(_block_json(block)), event="log", id=block.end
            )
            position = block.end
            quiet = waited = 0
            continue
        quiet += 1
        if quiet % STATUS_EVERY == 1:
            run = await state.db.read(lambda db: run_store.get_run(db, run_id))
            if run is None or run.status.is_terminal():
                while True:  # the rest, the unfinished last line included
                    block = await asyncio.to_thread(logview.follow, path, position, final=True)
                    if not block.data and block.start == position:
                        break
                    yield ServerSentEventMessage(
                        data=json.dumps(_block_json(block)), event="log", id=block.end
                    )
                    position = block.end
                status = run.status.value if run else "gone"
                yield ServerSentEventMessage(
                    data=json.dumps({"status": status, "end": position}), event="end"
                )
                return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
        waited += FOLLOW_POLL_SECONDS
        if waited >= KEEP_ALIVE_SECONDS:  # proxies drop connections that say nothing
            waited = 0.0
            yield ServerSentEventMessage(data=None, comment="waiting")
