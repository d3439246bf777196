"""Reading a log of any size in bounded pieces: the last screen, a block before or after a byte
offset, new bytes since an offset, and a search scanned in chunks. Every function reads at most a
fixed number of bytes whatever the file's size, and every block it returns starts at a line start
(except a piece of one line longer than the block). Pure functions over a path; no HTTP here.

The run page's log viewer (``trainhub/server/pages/run_logs.py``) is built on them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

SCREEN = 64 * 1024  # the first screen: the log's last 64 KB
MAX_BLOCK = 256 * 1024  # the largest block one range read returns
SEARCH_CHUNK = 1024 * 1024  # a search reads this much at a time ...
SEARCH_BUDGET = 32 * 1024 * 1024  # ... and scans at most this much per request
MAX_MATCHES = 200  # matches one search request returns at most
MAX_MATCH_TEXT = 400  # characters of a matching line shown
MAX_QUERY = 200  # characters of a search query
MAX_FOLLOW = 256 * 1024  # new bytes one follow step reads
FOLLOW_BACKLOG = 1024 * 1024  # a follower further behind than this jumps to the last screen


@dataclass(frozen=True)
class Block:
    """Bytes ``start`` .. ``end`` of a file that was ``size`` bytes long when read."""

    start: int
    end: int
    size: int
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")

    def lines(self) -> list[str]:
        return self.text.splitlines()


@dataclass(frozen=True)
class Match:
    offset: int  # where the matching line starts
    line: str  # the line (its first MAX_MATCH_TEXT characters)


@dataclass(frozen=True)
class Found:
    """One search request's result: ``matches`` in ``start`` .. ``scanned_to``; ``done`` when that
    reached the end of the file (else continue from ``scanned_to``)."""

    matches: list[Match]
    start: int
    scanned_to: int
    size: int
    done: bool
    capped: bool  # stopped at the match limit


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read(path: Path, start: int, length: int) -> bytes:
    if length <= 0:
        return b""
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            return fh.read(length)
    except FileNotFoundError:
        return b""


def _clamp(size: int | None, default: int, limit: int = MAX_BLOCK) -> int:
    if size is None:
        return default
    return max(1, min(size, limit))


def tail(path: Path, size: int | None = None, *, whole_lines: bool = False) -> Block:
    """The last ``size`` bytes (at most ``MAX_BLOCK``, default ``SCREEN``), from a line start; with
    ``whole_lines`` an unfinished last line (a log being written) is left for later."""
    total = file_size(path)
    block = before(path, total, size if size is not None else SCREEN, total=total)
    return _whole_lines(block) if whole_lines else block


def _whole_lines(block: Block) -> Block:
    cut = block.data.rfind(b"\n")
    if cut < 0 or cut == len(block.data) - 1:
        return block if cut >= 0 or not block.data else replace(block, end=block.start, data=b"")
    return replace(block, end=block.start + cut + 1, data=block.data[: cut + 1])


def before(path: Path, offset: int, size: int | None = None, *, total: int | None = None) -> Block:
    """The lines that end at ``offset`` (a line start), at most ``size`` bytes of them: the block
    starts at the first line start inside it. A line longer than the block comes back cut, as the
    block's last ``size`` bytes."""
    total = file_size(path) if total is None else total
    end = max(0, min(offset, total))
    length = _clamp(size, MAX_BLOCK)
    start = max(0, end - length)
    data = _read(path, start, end - start)
    end = start + len(data)
    if start > 0:
        # The byte before ``start`` decides: a newline there means ``start`` is a line start.
        if _read(path, start - 1, 1) != b"\n":
            cut = data.find(b"\n")
            if 0 <= cut < len(data) - 1:
                data = data[cut + 1 :]
                start += cut + 1
    return Block(start=start, end=end, size=total, data=data)


def after(path: Path, offset: int, size: int | None = None) -> Block:
    """The lines from the line start at or after ``offset``, at most ``size`` bytes, ending at a
    line end (unless one line is longer than the block, or the file's last line is unfinished)."""
    total = file_size(path)
    start = max(0, min(offset, total))
    length = _clamp(size, MAX_BLOCK)
    if start > 0 and _read(path, start - 1, 1) != b"\n":
        head = _read(path, start, length)
        cut = head.find(b"\n")
        if cut < 0:
            return Block(start=start, end=start + len(head), size=total, data=head)
        start += cut + 1
    data = _read(path, start, min(length, total - start))
    if start + len(data) < total:
        cut = data.rfind(b"\n")
        if cut >= 0:
            data = data[: cut + 1]
    return Block(start=start, end=start + len(data), size=total, data=data)


def follow(path: Path, offset: int, *, final: bool = False) -> Block:
    """New bytes from ``offset``: whole lines only (the unfinished last line waits for its end,
    unless ``final``), at most ``MAX_FOLLOW``. A reader more than ``FOLLOW_BACKLOG`` behind skips
    to the log's last screen (the block's ``start`` then lies beyond ``offset``)."""
    total = file_size(path)
    if offset > total:  # the file was replaced by a shorter one: start over
        offset = 0
    if total - offset > FOLLOW_BACKLOG:
        return tail(path, whole_lines=not final)
    data = _read(path, offset, min(MAX_FOLLOW, total - offset))
    if not final or offset + len(data) < total:
        cut = data.rfind(b"\n")
        if cut >= 0:
            data = data[: cut + 1]
        elif len(data) < MAX_FOLLOW:
            data = b""  # one unfinished line: wait for the rest
    return Block(start=offset, end=offset + len(data), size=total, data=data)


def search(
    path: Path,
    query: str,
    *,
    start: int = 0,
    max_matches: int = MAX_MATCHES,
    budget: int = SEARCH_BUDGET,
    chunk: int = SEARCH_CHUNK,
) -> Found:
    """Lines holding ``query`` (ignoring ASCII case) from ``start`` on, reading ``chunk`` bytes at a
    time, at most ``budget`` bytes and ``max_matches`` matches per call."""
    needle = query.encode("utf-8").lower()
    if not needle:
        raise ValueError("q: the search text is empty")
    total = file_size(path)
    position = max(0, min(start, total))
    if position > 0 and _read(path, position - 1, 1) != b"\n":  # from the next line start
        head = _read(path, position, chunk)
        cut = head.find(b"\n")
        position = position + cut + 1 if cut >= 0 else position + len(head)
    begin = position
    matches: list[Match] = []
    stop = min(total, begin + max(budget, chunk))
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return Found([], begin, begin, total, True, False)
    with fh:
        fh.seek(position)
        while position < stop and len(matches) < max_matches:
            data = fh.read(min(chunk, stop - position))
            if not data:
                break
            if position + len(data) < total:
                cut = data.rfind(b"\n")
                if cut >= 0:  # keep whole lines; the rest is read again next time
                    data = data[: cut + 1]
                    fh.seek(position + len(data))
            position = _scan(data, position, needle, matches, max_matches)
    capped = len(matches) >= max_matches
    return Found(matches, begin, position, total, position >= total, capped)


def _scan(data: bytes, base: int, needle: bytes, matches: list[Match], limit: int) -> int:
    """Add the lines of ``data`` (starting at file offset ``base``) that hold ``needle``; returns
    the offset up to which ``data`` was scanned (its end, or after the line of the last match kept
    when the limit was reached)."""
    lowered = data.lower()
    at = lowered.find(needle)
    while at >= 0:
        line_start = data.rfind(b"\n", 0, at) + 1
        line_end = data.find(b"\n", at)
        line_end = len(data) if line_end < 0 else line_end
        text = data[line_start:line_end].decode("utf-8", errors="replace")
        matches.append(Match(base + line_start, text[:MAX_MATCH_TEXT]))
        next_line = min(len(data), line_end + 1)
        if len(matches) >= limit:
            return base + next_line
        at = lowered.find(needle, next_line)
    return base + len(data)


def rank_logs(run_dir: Path, limit: int = 512) -> list[str]:
    """The per-process logs of a distributed run, relative to ``run_dir``: Open MPI's
    ``logs/mpi/<job>/rank.<n>/stdout|stderr``, torchrun's ``logs/torchrun/rank.<n>/...``,
    TensorFlow's ``logs/tensorflow/<worker|ps>.<i>/...`` and ``logs/ranks/*.txt``, in rank order (at
    most ``limit`` of them; an empty stderr is left out)."""
    found: list[tuple[tuple[int, str], str]] = []
    mpi = run_dir / "logs" / "mpi"
    if mpi.is_dir():
        for job in sorted(os.scandir(mpi), key=lambda e: e.name):
            if not job.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(job.path):
                if not entry.is_dir(follow_symlinks=False) or not entry.name.startswith("rank."):
                    continue
                number = entry.name[5:]
                for stream in ("stdout", "stderr"):
                    file = Path(entry.path) / stream
                    if file.is_file() and not file.is_symlink():
                        if stream == "stderr" and file.stat().st_size == 0:
                            continue
                        relative = file.relative_to(run_dir).as_posix()
                        found.append(((_number(number), stream + job.name), relative))
                if len(found) >= limit:
                    break
    # torchrun's (logs/torchrun/rank.<n>/) and TensorFlow's (logs/tensorflow/worker|ps.<i>/):
    # a folder per process, after the MPI ranks; workers before parameter servers.
    for order, top in enumerate(("torchrun", "tensorflow"), start=1):
        folder = run_dir / "logs" / top
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            kind, dot, number = entry.name.partition(".")
            if not dot or not entry.is_dir(follow_symlinks=False):
                continue
            for stream in ("stdout", "stderr"):
                file = Path(entry.path) / stream
                if file.is_file() and not file.is_symlink():
                    if stream == "stderr" and file.stat().st_size == 0:
                        continue
                    key = (order << 20) + (kind == "ps") * (1 << 19) + min(_number(number), 1 << 18)
                    found.append(((key, stream), file.relative_to(run_dir).as_posix()))
    ranks = run_dir / "logs" / "ranks"
    if ranks.is_dir():
        for entry in os.scandir(ranks):
            if entry.name.endswith(".txt") and entry.is_file(follow_symlinks=False):
                stem = entry.name[:-4]
                found.append(
                    ((_number(stem.removeprefix("rank")), stem), f"logs/ranks/{entry.name}")
                )
    return [relative for _, relative in sorted(found)[:limit]]


def _number(text: str) -> int:
    return int(text) if text.isdigit() else 1 << 30
