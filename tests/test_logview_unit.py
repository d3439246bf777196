"""Reading logs in bounded pieces (trainhub.runs.logview) and bucketing metric series
(trainhub.store.charts), on temporary files and an in-memory database: no server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlite_utils

from trainhub.runs import logview
from trainhub.store import charts
from trainhub.store.migrations import MIGRATIONS


def write_lines(path: Path, count: int, width: int = 0) -> list[bytes]:
    lines = [f"line {i:06d} {'x' * (width + i % 7)}\n".encode() for i in range(count)]
    path.write_bytes(b"".join(lines))
    return lines


def starts_of(lines: list[bytes]) -> set[int]:
    out, at = set(), 0
    for line in lines:
        out.add(at)
        at += len(line)
    return out


def test_the_tail_is_the_last_screen_from_a_line_start(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    lines = write_lines(log, 20_000)
    block = logview.tail(log)
    assert block.end == block.size == log.stat().st_size
    assert block.end - block.start <= logview.SCREEN
    assert block.start in starts_of(lines)
    assert block.data == log.read_bytes()[block.start :]
    assert block.lines()[-1] == lines[-1].decode().rstrip("\n")


def test_blocks_before_walk_back_to_offset_zero_without_gap_or_overlap(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    lines = write_lines(log, 5_000)
    starts = starts_of(lines)
    offset, pieces = log.stat().st_size, []
    while offset > 0:
        block = logview.before(log, offset, 4096)
        assert block.end == offset and block.start < offset
        assert block.start in starts
        assert len(block.data) <= 4096
        pieces.append(block.data)
        offset = block.start
    assert b"".join(reversed(pieces)) == log.read_bytes()


def test_blocks_after_walk_forward_to_the_end(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    lines = write_lines(log, 3_000)
    starts = starts_of(lines)
    offset, pieces = 0, []
    while offset < log.stat().st_size:
        block = logview.after(log, offset, 5000)
        assert block.start == offset and block.start in starts
        assert block.data.endswith(b"\n") and len(block.data) <= 5000
        pieces.append(block.data)
        offset = block.end
    assert b"".join(pieces) == log.read_bytes()
    middle = logview.after(log, 10, 100)  # mid-line: from the next line start
    assert middle.start == len(lines[0])


def test_a_line_longer_than_a_block_comes_back_in_pieces(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    log.write_bytes(b"short\n" + b"y" * 10_000 + b"\nend\n")
    block = logview.before(log, log.stat().st_size - 4, 1000)
    assert block.end == log.stat().st_size - 4 and len(block.data) == 1000
    assert set(block.data[:-1]) == {ord("y")}


def test_follow_sends_whole_lines_and_jumps_when_far_behind(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    log.write_bytes(b"one\ntwo\npart")
    block = logview.follow(log, 0)
    assert block.data == b"one\ntwo\n" and block.end == 8
    assert logview.follow(log, 8).data == b""  # the unfinished line waits
    assert logview.follow(log, 8, final=True).data == b"part"
    with log.open("ab") as fh:
        fh.write(b"\n" + (b"z" * 79 + b"\n") * (logview.FOLLOW_BACKLOG // 80 + 10))
    jumped = logview.follow(log, 12)
    assert jumped.start > 12 + logview.FOLLOW_BACKLOG - logview.SCREEN
    assert len(jumped.data) <= logview.SCREEN


def test_search_finds_lines_with_their_offsets_and_caps_matches(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    lines = write_lines(log, 10_000)
    data = log.read_bytes()
    found = logview.search(log, "LINE 004242", chunk=4096)
    assert [m.line for m in found.matches] == [lines[4242].decode().rstrip("\n")]
    assert data[found.matches[0].offset :].startswith(lines[4242])
    assert found.done and found.scanned_to == len(data)
    capped = logview.search(log, "line 00", max_matches=25, chunk=4096)
    assert len(capped.matches) == 25 and capped.capped and not capped.done
    again = logview.search(log, "line 00", start=capped.scanned_to, max_matches=25, chunk=4096)
    assert again.matches[0].line.startswith("line 000025")


def test_search_reads_at_most_its_budget_per_call(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    write_lines(log, 50_000, width=40)
    found = logview.search(log, "no such text", budget=100_000, chunk=8192)
    assert found.matches == [] and not found.done
    assert 90_000 < found.scanned_to <= 100_000
    rest = logview.search(log, "line 049999", start=found.scanned_to, budget=10**9)
    assert rest.done and len(rest.matches) == 1
    with pytest.raises(ValueError, match="q:"):
        logview.search(log, "")


def test_a_50_mb_log_is_read_in_bounded_pieces(tmp_path: Path) -> None:
    log = tmp_path / "big.txt"
    megabyte = b"".join(
        b"%08d the quick brown fox jumps over the lazy dog\n" % i for i in range(18_000)
    )
    with log.open("wb") as fh:
        for _ in range(50 * 1024 * 1024 // len(megabyte) + 1):
            fh.write(megabyte)
    size = log.stat().st_size
    assert size > 49 * 1024 * 1024
    assert len(logview.tail(log).data) <= logview.SCREEN
    assert len(logview.before(log, size // 2, 10**9).data) <= logview.MAX_BLOCK
    assert len(logview.after(log, size // 3).data) <= logview.MAX_BLOCK
    found = logview.search(log, "needle that is absent")
    assert found.scanned_to - found.start <= logview.SEARCH_BUDGET and not found.done


def test_rank_logs_are_found_in_rank_order(tmp_path: Path) -> None:
    for rank in (10, 2, 0):
        folder = tmp_path / "logs" / "mpi" / "1" / f"rank.{rank}"
        folder.mkdir(parents=True)
        (folder / "stdout").write_text(f"rank {rank}\n")
        (folder / "stderr").write_text("oops\n" if rank == 2 else "")
    assert logview.rank_logs(tmp_path) == [
        "logs/mpi/1/rank.0/stdout",
        "logs/mpi/1/rank.2/stderr",
        "logs/mpi/1/rank.2/stdout",
        "logs/mpi/1/rank.10/stdout",
    ]


def test_torchrun_and_tensorflow_process_logs_are_found_and_labelled(tmp_path: Path) -> None:
    from trainhub.server.pages.run_logs import log_sources

    for top, name in [("torchrun", "rank.1"), ("torchrun", "rank.0"), ("tensorflow", "ps.0")]:
        folder = tmp_path / "logs" / top / name
        folder.mkdir(parents=True)
        (folder / "stdout").write_text(f"{name}\n")
        (folder / "stderr").write_text("")
    (tmp_path / "logs" / "tensorflow" / "worker.1").mkdir()
    (tmp_path / "logs" / "tensorflow" / "worker.1" / "stderr").write_text("Traceback\n")
    assert logview.rank_logs(tmp_path) == [
        "logs/torchrun/rank.0/stdout",
        "logs/torchrun/rank.1/stdout",
        "logs/tensorflow/worker.1/stderr",
        "logs/tensorflow/ps.0/stdout",
    ]
    labels = [source.label for source in log_sources(tmp_path)][1:]  # after the driver log
    assert labels == [
        "Rank 0 (stdout)",
        "Rank 1 (stdout)",
        "Worker 1 (stderr)",
        "Parameter server 0 (stdout)",
    ]


# Metric series -----------------------------------------------------------------------------
@pytest.fixture
def db() -> sqlite_utils.Database:
    database = sqlite_utils.Database(memory=True)
    MIGRATIONS.apply(database)
    return database


def add(db: sqlite_utils.Database, name: str, values: list[object], kind: str = "scalar") -> None:
    db.table("metrics").insert_all(
        {
            "run_id": "r1",
            "name": name,
            "kind": kind,
            "step": i if kind == "scalar" else None,
            "value": json.dumps(v),
            "description": "",
            "at": 0.0,
        }
        for i, v in enumerate(values)
    )


def test_100000_points_become_at_most_2000_keeping_min_and_max(db: sqlite_utils.Database) -> None:
    values: list[object] = [float(i % 1000) / 10 for i in range(100_000)]
    values[31_337] = 9999.5
    values[77_777] = -42.25
    add(db, "loss", values)
    series = charts.scalar_series(db, "r1", "loss")
    assert series.sampled and series.total == 100_000
    assert len(series.xs) <= charts.MAX_POINTS
    assert max(series.ys) == 9999.5 and series.xs[series.ys.index(9999.5)] == 31_337
    assert min(series.ys) == -42.25 and series.xs[series.ys.index(-42.25)] == 77_777
    assert series.xs == sorted(series.xs)


def test_few_points_come_back_as_logged_skipping_what_is_not_a_number(
    db: sqlite_utils.Database,
) -> None:
    add(db, "acc", [0.5, "n/a", 0.75, True, 0.875])
    series = charts.scalar_series(db, "r1", "acc")
    assert (series.xs, series.ys, series.sampled) == ([0, 2, 4], [0.5, 0.75, 0.875], False)


def test_metric_names_say_kind_and_whether_logged_more_than_once(
    db: sqlite_utils.Database,
) -> None:
    add(db, "loss", [1.0, 0.5])
    add(db, "lr", [0.1])
    add(db, "scores", [{"a": 1, "b": 2}, {"a": 3, "c": 4}], kind="row")
    infos = charts.metric_names(db, "r1")
    assert [(i.name, i.kind, i.several) for i in infos] == [
        ("loss", "scalar", True),
        ("lr", "scalar", False),
        ("scores", "row", True),
    ]
    table = charts.table_of(db, "r1", "scores", "row")
    assert table.columns == ["a", "b", "c"]
    assert table.rows == [[1, 2, None], [3, None, 4]]
