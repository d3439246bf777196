"""The run page's log viewer and charts, served by a real server for real runs: the last screen of a
log, byte ranges back to its start, the live tail over server-sent events, search, rank logs of an
MPI run, big logs in bounded pieces; metric charts (downsampled), tables, rows, images and GPU
series; who may see them."""

from __future__ import annotations

import json
import re
import sqlite3
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from html import unescape
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.helpers import (
    TERMINAL,
    add_user,
    get_run,
    login,
    submit,
    wait_for_log,
    wait_for_status,
)

HTMX = {"HX-Request": "true"}

MANY_LINES = """
print("<script>alert('x')</script> & friends", flush=True)
for i in range(12000):
    print(f"line {i:05d} of the training log", flush=i % 1000 == 0)
"""


@pytest.fixture(scope="module")
def page(server: Server) -> Iterator[httpx.Client]:
    """A member's logged-in browser session (members see every run)."""
    name = f"viewer-{uuid.uuid4().hex[:8]}"
    add_user(server.client(), name)
    client = login(server.url, name)
    yield client
    client.close()


@pytest.fixture(scope="module")
def finished(server: Server) -> dict[str, Any]:
    """A finished run with a log of about 300 KB."""
    api = server.client()
    run = submit(api, MANY_LINES)
    done = wait_for_status(api, run["runId"], timeout=90)
    assert done["status"] == "Completed", done["error"]
    wait_for_log(api, run["runId"], "line 11999 of the training log\n")
    return done


def attr(html: str, element_id: str, name: str) -> str:
    tag = re.search(rf'<[^>]*\bid="{element_id}"[^>]*>', html, re.S)
    assert tag, f"no #{element_id} in {html[:500]}"
    found = re.search(rf'\b{name}="([^"]*)"', tag.group(0))
    assert found, f"#{element_id} has no {name}"
    return unescape(found.group(1))


def log_text(html: str) -> str:
    """The log text shown in #log-lines, unescaped."""
    found = re.search(r'<pre id="log-lines"[^>]*>(.*?)</pre>', html, re.S)
    assert found
    return unescape(re.sub(r"<[^>]+>", "", found.group(1)))


def full_log(server: Server, run_id: str, name: str = "logs/driver_log.txt") -> bytes:
    return (server.data / "runs" / run_id / name).read_bytes()


# Log viewer --------------------------------------------------------------------------------
def test_the_log_fragment_shows_the_tail_of_a_finished_runs_log(
    server: Server, page: httpx.Client, finished: dict[str, Any]
) -> None:
    run_id = finished["runId"]
    response = page.get(f"/runs/{run_id}/log", headers=HTMX)
    assert response.status_code == 200
    html = response.text
    assert "<html" not in html  # a fragment for the run page's #log
    whole = full_log(server, run_id)
    start, end = int(attr(html, "log-view", "data-start")), int(attr(html, "log-view", "data-end"))
    assert end == len(whole) and 0 < start and end - start <= 64 * 1024
    assert whole[start - 1 : start] == b"\n"  # cut at a line start
    shown = log_text(html)
    assert shown == whole[start:].decode()
    assert shown.endswith("line 11999 of the training log\n")
    assert "data-stream" not in html  # nothing live: the run has ended
    assert attr(html, "log-download", "href") == f"/runs/{run_id}/log/download?log=driver"
    for element in ("log-lines", "log-search", "rank-select", "log-view"):
        assert f'id="{element}"' in html
    download = page.get(f"/runs/{run_id}/log/download?log=driver")
    assert download.status_code == 200 and download.content == whole
    assert "attachment" in download.headers["content-disposition"]
    # Without htmx the same viewer comes as a page of its own.
    assert "<html" in page.get(f"/runs/{run_id}/log").text


def test_log_text_is_escaped_text(page: httpx.Client, finished: dict[str, Any]) -> None:
    run_id = finished["runId"]
    block = page.get(f"/runs/{run_id}/log/range", params={"after": 0, "size": 200}).json()
    assert block["text"].startswith("<script>alert('x')</script> & friends\n")
    found = page.get(f"/runs/{run_id}/log/search", params={"q": "alert("}).text
    assert "<script>alert" not in found
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; friends" in found


def test_range_reads_return_earlier_lines_back_to_offset_zero_without_overlap(
    server: Server, page: httpx.Client, finished: dict[str, Any]
) -> None:
    run_id = finished["runId"]
    whole = full_log(server, run_id)
    html = page.get(f"/runs/{run_id}/log", headers=HTMX).text
    offset = int(attr(html, "log-view", "data-start"))
    pieces = [whole[offset:]]
    steps = 0
    while offset > 0:
        block = page.get(
            f"/runs/{run_id}/log/range", params={"before": offset, "size": 16384}
        ).json()
        assert block["end"] == offset and block["start"] < offset
        assert block["start"] == 0 or whole[block["start"] - 1 : block["start"]] == b"\n"
        assert len(block["text"].encode()) <= 16384
        pieces.append(block["text"].encode())
        offset = block["start"]
        steps += 1
    assert steps > 10
    assert b"".join(reversed(pieces)) == whole
    bad = page.get(f"/runs/{run_id}/log/range", params={"before": 10, "size": 10**9})
    assert bad.status_code == 400 and "size" in bad.text
    both = page.get(f"/runs/{run_id}/log/range", params={"before": 10, "after": 0})
    assert both.status_code == 400 and "before/after" in unescape(both.text)


def test_search_finds_a_line_with_its_offset_and_caps_the_results(
    server: Server, page: httpx.Client, finished: dict[str, Any]
) -> None:
    run_id = finished["runId"]
    whole = full_log(server, run_id)
    html = page.get(f"/runs/{run_id}/log/search", params={"q": "LINE 04242"}).text
    offsets = [int(o) for o in re.findall(r'class="link log-jump" data-offset="(\d+)"', html)]
    assert len(offsets) == 1
    assert whole[offsets[0] :].startswith(b"line 04242 of the training log\n")
    jumped = page.get(f"/runs/{run_id}/log/range", params={"after": offsets[0]}).json()
    assert jumped["text"].startswith("line 04242 of the training log\n")
    many = page.get(f"/runs/{run_id}/log/search", params={"q": "training log"}).text
    assert len(re.findall(r'class="link log-jump"', many)) == 200
    assert "there may be more" in many
    nothing = page.get(f"/runs/{run_id}/log/search", params={"q": "not in this log"}).text
    assert "0 lines with" in nothing and "log-jump" not in nothing
    empty = page.get(f"/runs/{run_id}/log/search", params={"q": " "})
    assert empty.status_code == 400


def test_a_50_mb_log_is_served_in_bounded_pieces(
    server: Server, page: httpx.Client, finished: dict[str, Any]
) -> None:
    """The finished run's log replaced by a 50 MB one: every answer stays small."""
    api = server.client()
    run = submit(api, "print('small')")
    run_id = wait_for_status(api, run["runId"], timeout=90)["runId"]
    wait_for_log(api, run_id, "small")
    path = server.data / "runs" / run_id / "logs" / "driver_log.txt"
    megabyte = b"".join(b"%08d step of a very long training run\n" % i for i in range(26_000))
    with path.open("wb") as fh:
        for _ in range(50):
            fh.write(megabyte)
        fh.write(b"the last line\n")
    size = path.stat().st_size
    assert size > 50_000_000
    first = page.get(f"/runs/{run_id}/log", headers=HTMX)
    assert len(first.content) < 100 * 1024
    assert log_text(first.text).endswith("the last line\n")
    step = page.get(f"/runs/{run_id}/log/range", params={"before": size // 2})
    assert step.status_code == 200 and len(step.content) < 300 * 1024
    assert step.json()["fileSize"] == size
    found = page.get(f"/runs/{run_id}/log/search", params={"q": "the last line"})
    scanned = re.search(r"in bytes (\d+)–(\d+) of (\d+)", found.text)
    assert scanned and int(scanned.group(2)) - int(scanned.group(1)) <= 32 * 1024 * 1024
    assert "Search on from byte" in found.text and len(found.content) < 100 * 1024
    more = page.get(
        f"/runs/{run_id}/log/search", params={"q": "the last line", "start": scanned.group(2)}
    )
    assert len(re.findall(r"log-jump", more.text)) == 1


LIVE = """
import time
print("started", flush=True)
time.sleep(8)
print("printed while you watched", flush=True)
time.sleep(5)
"""


def sse_events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    event, data = "message", []
    for line in response.iter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def test_the_live_stream_delivers_a_line_printed_after_it_opened_and_ends_with_the_run(
    server: Server, page: httpx.Client
) -> None:
    api = server.client()
    run = submit(api, LIVE)
    run_id = run["runId"]
    wait_for_log(api, run_id, "started")
    html = page.get(f"/runs/{run_id}/log", headers=HTMX).text
    assert "printed while you watched" not in log_text(html)
    stream_url = attr(html, "log-view", "data-stream")
    end = int(attr(html, "log-view", "data-end"))
    assert stream_url.endswith(f"offset={end}")
    seen: list[str] = []
    status_when_seen = ""
    ended: dict[str, Any] = {}
    with page.stream("GET", stream_url, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "printed while you watched" not in full_log(server, run_id).decode()
        for event, data in sse_events(response):
            body = json.loads(data)
            if event == "log":
                assert body["start"] == end  # no gap, no overlap
                end = body["end"]
                seen.append(body["text"])
                if "printed while you watched" in body["text"]:
                    status_when_seen = get_run(api, run_id)["status"]
            elif event == "end":
                ended = body
                break
    assert "printed while you watched\n" in "".join(seen)
    assert status_when_seen not in TERMINAL  # it came live, not at the end
    assert ended == {"status": "Completed", "end": end}
    assert wait_for_status(api, run_id)["status"] == "Completed"
    # A finished run's viewer has no stream; asking for one anyway ends at once.
    with page.stream("GET", f"/runs/{run_id}/log/stream?offset=0", timeout=30) as response:
        events = list(sse_events(response))
    assert events[-1][0] == "end" and "".join(json.loads(d)["text"] for e, d in events[:-1]) == (
        full_log(server, run_id).decode()
    )


MPI_SCRIPT = """
from mpi4py import MPI
rank = MPI.COMM_WORLD.Get_rank()
print(f"hello from rank {rank}", flush=True)
"""


def test_the_rank_logs_of_an_mpi_run_are_selectable(server: Server, page: httpx.Client) -> None:
    api = server.client()
    run = submit(api, MPI_SCRIPT, distributed_training={"type": "mpi", "process_count_per_node": 2})
    run_id = run["runId"]
    assert wait_for_status(api, run_id, timeout=90)["status"] == "Completed"
    html = page.get(f"/runs/{run_id}/log", headers=HTMX).text
    select = re.search(r'<select id="rank-select".*?</select>', html, re.S)
    assert select
    options = dict(re.findall(r'<option value="([^"]+)"[^>]*>([^<]+)</option>', select.group(0)))
    assert options["driver"] == "Driver log"
    assert options["logs/mpi/1/rank.0/stdout"] == "Rank 0 (stdout)"
    assert options["logs/mpi/1/rank.1/stdout"] == "Rank 1 (stdout)"
    one = page.get(f"/runs/{run_id}/log", params={"log": "logs/mpi/1/rank.1/stdout"}, headers=HTMX)
    assert log_text(one.text) == "hello from rank 1\n"
    assert 'value="logs/mpi/1/rank.1/stdout" selected' in one.text
    found = page.get(
        f"/runs/{run_id}/log/search", params={"q": "hello", "log": "logs/mpi/1/rank.0/stdout"}
    ).text
    assert "hello from rank 0" in found and "hello from rank 1" not in found
    download = page.get(f"/runs/{run_id}/log/download", params={"log": "logs/mpi/1/rank.0/stdout"})
    assert download.text == "hello from rank 0\n"
    for wrong in ("../../trainhub.db", "logs/mpi/1/rank.9/stdout", "outputs/x"):
        assert page.get(f"/runs/{run_id}/log", params={"log": wrong}).status_code == 404


# Charts ------------------------------------------------------------------------------------
def png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


METRICS = """
from trainhub import Run
run = Run.get_context()
for step in range(10):
    run.log("loss", 1.0 / (step + 1), step=step)
run.log("lr", 0.01)
run.log("<b>bold</b>", 1.0)
run.log("<b>bold</b>", 2.0)
run.log_table("confusion", {"predicted": [0, 1], "count": [10, 3]})
run.log_row("roc", fpr=0.0, tpr=0.0)
run.log_row("roc", fpr=1.0, tpr=1.0)
run.log_image("sample", path="pixel.png")
"""


def test_logged_metrics_show_as_charts_tables_and_images(
    server: Server, page: httpx.Client
) -> None:
    api = server.client()
    run = submit(api, METRICS, extra_files={"pixel.png": png()})
    run_id = run["runId"]
    assert wait_for_status(api, run_id, timeout=90)["status"] == "Completed"
    html = page.get(f"/runs/{run_id}/charts", headers=HTMX).text
    charts = dict(re.findall(r'class="chart" data-metric="([^"]*)" data-src="([^"]*)"', html))
    assert set(charts) == {"loss", "&lt;b&gt;bold&lt;/b&gt;"}
    assert charts["loss"] == f"/runs/{run_id}/metrics/loss.json"
    assert "<b>bold</b>" not in html
    data = page.get(charts["loss"]).json()
    assert data["x"] == "step" and not data["sampled"]
    assert data["data"] == [list(range(10)), [1.0 / (s + 1) for s in range(10)]]
    bold = page.get(unescape(charts["&lt;b&gt;bold&lt;/b&gt;"])).json()
    assert bold["data"][1] == [1.0, 2.0]
    assert re.search(r'<tr data-metric="lr"><td>lr</td><td class="mono">0.01</td>', html)
    confusion = re.search(r'data-metric="confusion">(.*?)</table>', html, re.S)
    assert confusion
    assert re.findall(r"<th>(\w+)</th>", confusion.group(1)) == ["predicted", "count"]
    assert re.findall(r'<td class="mono">(\d+)</td>', confusion.group(1)) == ["0", "10", "1", "3"]
    roc = re.search(r'data-metric="roc">(.*?)</table>', html, re.S)
    assert roc and re.findall(r'<td class="mono">([\d.]+)</td>', roc.group(1)) == [
        "0.0",
        "0.0",
        "1.0",
        "1.0",
    ]
    image = re.search(r'<img src="([^"]+)" alt="sample"', html)
    assert image and image.group(1) == f"/runs/{run_id}/images/sample"
    served = page.get(image.group(1))
    assert served.status_code == 200 and served.content == png()
    assert served.headers["content-type"] == "image/png"
    assert page.get(f"/runs/{run_id}/images/nope").status_code == 404
    lr = page.get(f"/runs/{run_id}/metrics/lr.json").json()  # logged once, without a step
    assert (lr["x"], lr["data"]) == ("index", [[0], [0.01]])
    assert page.get(f"/runs/{run_id}/metrics/confusion.json").status_code == 404  # a table
    assert page.get(f"/runs/{run_id}/metrics/loss").status_code == 404
    assert "gpu-idle-hint" not in html and 'data-system="1"' not in html


BIG = """
from trainhub import Run
run = Run.get_context()
for step in range(100_000):
    run.log("big", (step % 1000) / 10 + (5000.5 if step == 31337 else 0) - (1000 if step == 77777 else 0), step=step)
"""


@pytest.mark.slow
def test_100000_points_reach_the_browser_as_at_most_2000_keeping_min_and_max(
    server: Server, page: httpx.Client
) -> None:
    api = server.client()
    run = submit(api, BIG)
    run_id = run["runId"]
    assert wait_for_status(api, run_id, timeout=180)["status"] == "Completed"
    deadline = time.monotonic() + 60
    while True:  # the last records arrive with the run's final sync
        data = page.get(f"/runs/{run_id}/metrics/big.json").json()
        if data["total"] == 100_000 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert data["total"] == 100_000 and data["sampled"]
    xs, ys = data["data"]
    assert len(xs) <= 2000 and xs == sorted(xs)
    assert max(ys) == pytest.approx(33.7 + 5000.5) and xs[ys.index(max(ys))] == 31337
    assert min(ys) == pytest.approx(77.7 - 1000) and xs[ys.index(min(ys))] == 77777


def test_gpu_series_and_the_idle_hint_show_when_a_run_has_samples(
    server: Server, page: httpx.Client, finished: dict[str, Any]
) -> None:
    """GPU samples of a run as the telemetry sampler stores them (written into the server's
    database here: this machine has no GPU)."""
    run_id = finished["runId"]
    with sqlite3.connect(server.data / "trainhub.db", timeout=30) as conn:
        conn.executemany(
            "insert into gpu_samples (run_id, node, gpu, step, at, utilization, memory_used) "
            "values (?, 'local', 0, ?, ?, ?, ?)",
            [(run_id, i, 1000.0 + i, 2.0 if i else 50.0, 1024.0 + i) for i in range(6)],
        )
    html = page.get(f"/runs/{run_id}/charts", headers=HTMX).text
    hint = re.search(r'<p id="gpu-idle-hint"[^>]*>([^<]+)</p>', html)
    assert hint and "GPU 0 was under 10% busy" in hint.group(1)
    systems = dict(re.findall(r'data-metric="([^"]+)" data-system="1" data-src="([^"]+)"', html))
    assert set(systems) == {"gpu/0/utilization", "gpu/0/memory_used"}
    util = page.get(unescape(systems["gpu/0/utilization"])).json()
    assert util["data"] == [[0, 1, 2, 3, 4, 5], [50.0, 2.0, 2.0, 2.0, 2.0, 2.0]]
    memory = page.get(unescape(systems["gpu/0/memory_used"])).json()
    assert memory["data"][1] == [1024.0 + i for i in range(6)]


# Who may look ------------------------------------------------------------------------------
def test_anonymous_visitors_go_to_login_and_a_missing_run_is_404(
    server: Server, page: httpx.Client, finished: dict[str, Any]
) -> None:
    run_id = finished["runId"]
    paths = [
        f"/runs/{run_id}/log",
        f"/runs/{run_id}/log/range?before=100",
        f"/runs/{run_id}/log/search?q=x",
        f"/runs/{run_id}/log/stream",
        f"/runs/{run_id}/log/download",
        f"/runs/{run_id}/charts",
        f"/runs/{run_id}/metrics/loss.json",
        f"/runs/{run_id}/images/sample",
    ]
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        for path in paths:
            response = anonymous.get(path)
            assert response.status_code in (302, 303), path
            assert response.headers["location"].startswith("/login?next="), path
        htmx = anonymous.get(paths[0], headers=HTMX)
        assert htmx.headers.get("hx-redirect", "").startswith("/login")
    # An API token is no session: the pages still ask to log in.
    assert server.client().get(paths[0]).status_code in (302, 303)
    for path in paths:
        missing = page.get(path.replace(run_id, "no-such-run"))
        assert missing.status_code == 404, path
        assert "no-such-run" in missing.text
