"""TensorBoard for every run, through the server's proxy and behind its login: real TensorBoard
processes over real runs' synced ./logs, read through TensorBoard's own HTTP API."""

from __future__ import annotations

import inspect
import json
import os
import struct
import textwrap
from pathlib import Path

import docker
import httpx
import pytest

from tests.conftest import TOKEN, Server, ServerFactory
from tests.helpers import add_user, get_run, login, submit, wait_for_status, wait_until
from trainhub import Run, Workspace
from trainhub.runs import containers
from trainhub.runs.containers import OVERLAP
from trainhub.runs.process import _copy_tree
from trainhub.runtime.docker import DockerEngine
from trainhub.tensorboard import Tensorboard


# A pure-Python TensorBoard event writer for the runs' scripts (the base image has no tensorboard):
# TFRecord framing with masked CRC-32C, and the Event/Summary protobufs encoded by hand. The same
# functions are sent to the run as events.py.
def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


def masked_crc(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([byte])
        out += bytes([byte | 0x80])


def field(number: int, wire: int, payload: bytes) -> bytes:
    key = varint(number << 3 | wire)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)


def event(
    wall: float,
    step: int | None = None,
    version: str | None = None,
    tag: str | None = None,
    value: float = 0.0,
) -> bytes:
    body = field(1, 1, struct.pack("<d", wall))  # wall_time
    if step is not None:
        body += field(2, 0, varint(step))  # step
    if version is not None:
        body += field(3, 2, version.encode())  # file_version
    if tag is not None:  # summary { value { tag, simple_value } }
        summary_value = field(1, 2, tag.encode()) + field(2, 5, struct.pack("<f", value))
        body += field(5, 2, field(1, 2, summary_value))
    return body


def record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    crc = struct.pack("<I", masked_crc(header))
    return header + crc + data + struct.pack("<I", masked_crc(data))


CRC32C = _crc32c_table()
EVENT_WRITER = (
    "import struct\n\n"
    + "\n".join(
        inspect.getsource(f) for f in (_crc32c_table, masked_crc, varint, field, event, record)
    )
    + "\nCRC32C = _crc32c_table()\n"
)

TRAIN = textwrap.dedent(
    """
    import os, sys, time
    from events import event, record
    steps, pause = int(os.environ["STEPS"]), float(os.environ["PAUSE"])
    os.makedirs("logs/train", exist_ok=True)
    with open(f"logs/train/events.out.tfevents.{int(time.time())}.run", "wb") as f:
        f.write(record(event(time.time(), version="brain.Event:2")))
        for step in range(steps):
            f.write(record(event(time.time(), step=step, tag="loss", value=1.0 / (step + 1))))
            f.flush()
            print("step", step, flush=True)
            time.sleep(pause)
    """
)


def submit_events(client: httpx.Client, steps: int, pause: float, experiment: str) -> str:
    run = submit(
        client,
        TRAIN,
        experiment=experiment,
        extra_files={"events.py": EVENT_WRITER},
        environment_variables={"STEPS": str(steps), "PAUSE": str(pause)},
    )
    return str(run["runId"])


def member(server: Server, name: str) -> httpx.Client:
    """A logged-in member's browser-like client (members see everyone's runs)."""
    add_user(server.client(), name)
    client = login(server.url, name)
    server.clients.append(client)
    return client


def scalars(browser: httpx.Client, base: str, run: str, tag: str) -> list[list[float]]:
    """The points TensorBoard serves for ``run``/``tag`` through the proxy at ``base``."""
    response = browser.get(
        f"{base}data/plugin/scalars/scalars", params={"run": run, "tag": tag}, timeout=120
    )
    if response.status_code in (400, 404):  # TensorBoard has not loaded the run yet
        return []
    assert response.status_code == 200, response.text[:500]
    points: list[list[float]] = response.json()
    return points


def wait_for_points(
    browser: httpx.Client, base: str, run: str, tag: str, at_least: int, timeout: float = 60
) -> list[list[float]]:
    found: list[list[float]] = []

    def enough() -> bool:
        nonlocal found
        found = scalars(browser, base, run, tag)
        return len(found) >= at_least

    wait_until(enough, f"{at_least} points of {run}/{tag} at {base}", timeout=timeout)
    return found


def board_pids(prefix: str) -> list[int]:
    """TensorBoard processes serving under ``prefix`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--path_prefix" in args and prefix.encode() in args:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_event_files_stream_live_through_the_proxy_and_survive_a_restart(
    make_server: ServerFactory,
) -> None:
    server = make_server(tensorboard_reload_seconds="1")
    api = server.client()
    browser = member(server, "viewer")
    steps = 16
    run_id = submit_events(api, steps=steps, pause=1.5, experiment="tblive")
    base = f"/runs/{run_id}/tensorboard/"
    wait_for_status(api, run_id, "Running", timeout=120)

    first = wait_for_points(browser, base, "logs/train", "loss", at_least=1)
    assert get_run(api, run_id)["status"] == "Running"
    assert len(first) < steps
    later = wait_for_points(browser, base, "logs/train", "loss", at_least=len(first) + 2)
    assert get_run(api, run_id)["status"] == "Running"
    assert [p[1] for p in later] == list(range(len(later)))
    runs = browser.get(f"{base}data/runs").json()
    assert "logs/train" in runs

    assert wait_for_status(api, run_id, timeout=120)["status"] == "Completed"
    done = wait_for_points(browser, base, "logs/train", "loss", at_least=steps)
    assert [p[1] for p in done] == list(range(steps))
    assert [round(p[2], 5) for p in done] == [round(1.0 / (s + 1), 5) for s in range(steps)]

    server.stop()
    server.start()
    browser = login(server.url, "viewer")
    server.clients.append(browser)
    again = wait_for_points(browser, base, "logs/train", "loss", at_least=steps)
    assert [p[1] for p in again] == list(range(steps))


METRICS = textwrap.dedent(
    """
    from trainhub import Run
    run = Run.get_context()
    for epoch in range(5):
        run.log("accuracy", 0.5 + epoch / 10)
        run.log_row("timing", seconds=epoch * 2, epoch=epoch)
    run.log("final", 0.9)
    """
)


def test_run_log_metrics_appear_in_the_runs_tensorboard(
    server: Server, client: httpx.Client
) -> None:
    run_id = submit(client, METRICS, experiment="tbmetrics")["runId"]
    assert wait_for_status(client, run_id)["status"] == "Completed"
    browser = member(server, "metrics-viewer")
    base = f"/runs/{run_id}/tensorboard/"
    accuracy = wait_for_points(browser, base, "trainhub-metrics", "accuracy", at_least=5)
    assert [p[1] for p in accuracy] == [0, 1, 2, 3, 4]
    assert [round(p[2], 5) for p in accuracy] == [0.5, 0.6, 0.7, 0.8, 0.9]
    seconds = wait_for_points(browser, base, "trainhub-metrics", "timing/seconds", at_least=5)
    assert [p[2] for p in seconds] == [0, 2, 4, 6, 8]
    assert len(wait_for_points(browser, base, "trainhub-metrics", "final", at_least=1)) == 1
    # The event files the server wrote for itself are not the run's artifacts.
    files = [f["path"] for f in client.get(f"/api/v1/runs/{run_id}/files").json()["files"]]
    assert files and not [f for f in files if f.startswith("tensorboard/")], files


def test_several_runs_in_one_tensorboard_from_the_experiment_page_and_the_sdk(
    server: Server, client: httpx.Client
) -> None:
    first = submit_events(client, steps=3, pause=0, experiment="tbmulti")
    second = submit_events(client, steps=4, pause=0, experiment="tbmulti")
    other = submit_events(client, steps=1, pause=0, experiment="tbother")
    for run_id in (first, second, other):
        assert wait_for_status(client, run_id)["status"] == "Completed"
    browser = member(server, "comparer")

    chosen = browser.get(f"/experiments/tbmulti/tensorboard?runs={first},{second}")
    assert chosen.status_code == 303
    base = chosen.headers["location"]
    assert base.startswith("/tensorboard/") and base.endswith("/")
    as_a_form = browser.get(f"/experiments/tbmulti/tensorboard?runs={second}&runs={first}")
    assert as_a_form.headers["location"] == base
    assert [p[1] for p in wait_for_points(browser, base, f"{first}/logs/train", "loss", 3)] == [
        0,
        1,
        2,
    ]
    assert len(wait_for_points(browser, base, f"{second}/logs/train", "loss", 4)) == 4
    runs = browser.get(f"{base}data/runs").json()
    assert {f"{first}/logs/train", f"{second}/logs/train"} <= set(runs)
    assert not any(other in r for r in runs)

    # A run of another experiment, or one that does not exist, is refused.
    assert browser.get(f"/experiments/tbmulti/tensorboard?runs={first},{other}").status_code == 404
    assert browser.get(f"/experiments/tbmulti/tensorboard?runs={first},nope_1").status_code == 404
    assert browser.get("/tensorboard/0123456789abcdef/").status_code == 404

    # The SDK, as with Azure ML: the server's URL of the same TensorBoard; stop() stops it.
    workspace = Workspace(server.url, TOKEN)
    tb = Tensorboard([Run.get(workspace, second), Run.get(workspace, first)])
    assert tb.start() == f"{server.url}{base}"
    assert board_pids(base.rstrip("/"))
    tb.stop()
    wait_until(lambda: not board_pids(base.rstrip("/")), "the view's TensorBoard is stopped")
    single = Tensorboard([Run.get(workspace, other)])
    assert single.start() == f"{server.url}/runs/{other}/tensorboard/"
    single.stop()


def test_url_without_the_slash_redirects_and_responses_pass_through_compressed(
    server: Server, client: httpx.Client
) -> None:
    run_id = submit_events(client, steps=1, pause=0, experiment="tbslash")
    browser = member(server, "slash-viewer")
    answer = browser.get(f"/runs/{run_id}/tensorboard?x=1")
    assert answer.status_code == 307
    assert answer.headers["location"] == f"/runs/{run_id}/tensorboard/?x=1"

    pages: list[str] = []

    def tensorboard_page() -> bool:
        page = browser.get(
            f"/runs/{run_id}/tensorboard", follow_redirects=True, headers={"Accept": "text/html"}
        )
        assert page.status_code == 200
        pages.append(page.text)
        return "<tb-webapp>" in page.text

    wait_until(tensorboard_page, "TensorBoard's own page", timeout=60)
    for page in pages[:-1]:  # while it started: the page that reloads itself, with no script
        assert 'http-equiv="refresh"' in page and "<script" not in page
    asset = browser.get(f"/runs/{run_id}/tensorboard/index.js", headers={"Accept-Encoding": "gzip"})
    assert asset.status_code == 200
    assert asset.headers["content-encoding"] == "gzip"
    assert "javascript" in asset.headers["content-type"]
    # The dashboard's own queries are POSTs with a form body (the time series of a tag).
    wait_for_points(browser, f"/runs/{run_id}/tensorboard/", "logs/train", "loss", 1)
    series = browser.post(
        f"/runs/{run_id}/tensorboard/data/plugin/timeseries/timeSeries",
        data={"requests": json.dumps([{"plugin": "scalars", "tag": "loss", "run": "logs/train"}])},
    )
    assert series.status_code == 200, series.text
    assert [p["step"] for p in series.json()[0]["runToSeries"]["logs/train"]] == [0]
    wait_for_status(client, run_id)


def test_anonymous_and_disabled_users_are_sent_to_log_in_and_a_missing_run_is_404_starting_nothing(
    server: Server, client: httpx.Client
) -> None:
    run_id = submit_events(client, steps=1, pause=0, experiment="tbaccess")
    anonymous = httpx.Client(base_url=server.url, timeout=30)
    server.clients.append(anonymous)
    for path in (f"/runs/{run_id}/tensorboard/", f"/runs/{run_id}/tensorboard/data/runs"):
        answer = anonymous.get(path)
        assert answer.status_code in (302, 303), answer.text
        assert answer.headers["location"].startswith("/login")
    # The API's token is no way in either: TensorBoard is a page of the dashboard.
    assert server.client().get(f"/runs/{run_id}/tensorboard/data/runs").status_code in (302, 303)
    assert not board_pids(f"/runs/{run_id}/tensorboard")

    browser = member(server, "access-viewer")
    missing = "tbaccess_1_deadbeef"
    for path in (f"/runs/{missing}/tensorboard", f"/runs/{missing}/tensorboard/data/runs"):
        assert browser.get(path).status_code == 404
    assert not board_pids(f"/runs/{missing}/tensorboard")
    assert not (server.data / "runs" / missing).exists()
    assert browser.get(f"/runs/{run_id}/tensorboard/data/runs").status_code == 200
    # A member who is disabled is refused at once, though the run's TensorBoard is running.
    assert client.post("/api/v1/users/access-viewer/disable").status_code == 200
    refused = browser.get(f"/runs/{run_id}/tensorboard/data/runs")
    assert refused.status_code in (302, 303)
    assert refused.headers["location"].startswith("/login")
    wait_for_status(client, run_id)


@pytest.mark.slow
def test_idle_tensorboard_stops_and_starts_again_and_none_outlive_a_killed_server(
    make_server: ServerFactory,
) -> None:
    server = make_server(tensorboard_idle_minutes="0.05")  # 3 s
    api = server.client()
    run_id = submit_events(api, steps=2, pause=0, experiment="tbidle")
    assert wait_for_status(api, run_id)["status"] == "Completed"
    browser = member(server, "idle-viewer")
    base, prefix = f"/runs/{run_id}/tensorboard/", f"/runs/{run_id}/tensorboard"
    wait_for_points(browser, base, "logs/train", "loss", 2)
    assert len(board_pids(prefix)) >= 1
    wait_until(lambda: not board_pids(prefix), "the unused TensorBoard is stopped", timeout=30)
    assert len(wait_for_points(browser, base, "logs/train", "loss", 2)) == 2
    assert board_pids(prefix)
    server.kill()
    wait_until(lambda: not board_pids(prefix), "TensorBoard ends with the server", timeout=15)
    server.start()


@pytest.mark.slow
def test_least_recently_used_tensorboard_stops_beyond_the_limit(
    make_server: ServerFactory,
) -> None:
    server = make_server(tensorboard_max="1")
    api = server.client()
    first = submit_events(api, steps=2, pause=0, experiment="tblru")
    second = submit_events(api, steps=3, pause=0, experiment="tblru")
    for run_id in (first, second):
        assert wait_for_status(api, run_id)["status"] == "Completed"
    browser = member(server, "lru-viewer")
    wait_for_points(browser, f"/runs/{first}/tensorboard/", "logs/train", "loss", 2)
    assert board_pids(f"/runs/{first}/tensorboard")
    wait_for_points(browser, f"/runs/{second}/tensorboard/", "logs/train", "loss", 3)
    assert board_pids(f"/runs/{second}/tensorboard")
    wait_until(lambda: not board_pids(f"/runs/{first}/tensorboard"), "the older one is stopped")
    assert (
        len(wait_for_points(browser, f"/runs/{first}/tensorboard/", "logs/train", "loss", 2)) == 2
    )
    wait_until(lambda: not board_pids(f"/runs/{second}/tensorboard"), "then the other one")


def test_logs_sync_copies_only_new_and_changed_files_and_only_the_growth(
    docker_ready: None, tmp_path: Path
) -> None:
    engine = DockerEngine()
    client = docker.from_env()
    container = client.containers.run("trainhub/base:cpu", ["sleep", "120"], detach=True)
    logs = "/trainhub/wd/logs"

    def sh(command: str) -> None:
        code, output = container.exec_run(["sh", "-c", command])
        assert code == 0, output

    try:
        sh(
            f"mkdir -p {logs}/sub && head -c 3000000 /dev/urandom > {logs}/big.bin"
            f" && echo first > {logs}/sub/a.txt && ln -s /etc/passwd {logs}/link"
        )
        run_dir = tmp_path / "run"
        assert containers.collect(engine, container.id, run_dir, ("logs",)) == 3000006
        assert containers.collect(engine, container.id, run_dir, ("logs",)) == 0
        sh(f"head -c 1000 /dev/urandom >> {logs}/big.bin")
        assert containers.collect(engine, container.id, run_dir, ("logs",)) == 1000 + OVERLAP
        sh(f"echo second, longer > {logs}/sub/a.txt")
        assert containers.collect(engine, container.id, run_dir, ("logs",)) == 15
        # Rewritten with a new start: the check of the bytes before the growth fetches it whole.
        sh(f"(echo 123456789; cat {logs}/big.bin) > /tmp/x && mv /tmp/x {logs}/big.bin")
        assert containers.collect(engine, container.id, run_dir, ("logs",)) == (
            (OVERLAP + 10) + 3_001_010  # the check's bytes and the new bytes, then all of it
        )
        for name in ("big.bin", "sub/a.txt"):
            code, theirs = container.exec_run(["cat", f"{logs}/{name}"])
            assert (run_dir / "logs" / name).read_bytes() == theirs
        assert not (run_dir / "logs" / "link").exists()
        # An image without Python: the whole folder as an archive, as before.
        sh(f"rm /usr/bin/python3* && echo third >> {logs}/sub/a.txt")
        assert containers.collect(engine, container.id, run_dir, ("logs",)) > 3_001_010
        assert (run_dir / "logs" / "sub" / "a.txt").read_text() == "second, longer\nthird\n"
    finally:
        container.remove(force=True)
        client.close()
        engine.close()


def test_process_runs_logs_copy_only_the_growth(tmp_path: Path) -> None:
    source, run_dir = tmp_path / "wd" / "logs", tmp_path / "run"
    (source / "sub").mkdir(parents=True)
    (source / "big.bin").write_bytes(os.urandom(100_000))
    (source / "sub" / "a.txt").write_text("x" * 10)
    (source / "link").symlink_to("/etc/passwd")
    assert _copy_tree(source, run_dir / "logs", run_dir) == 100_010
    assert _copy_tree(source, run_dir / "logs", run_dir) == 0
    with (source / "big.bin").open("ab") as fh:
        fh.write(b"y" * 500)
    assert _copy_tree(source, run_dir / "logs", run_dir) == 500
    (source / "big.bin").write_bytes(os.urandom(100_600))
    assert _copy_tree(source, run_dir / "logs", run_dir) == 100_600
    assert (run_dir / "logs" / "big.bin").read_bytes() == (source / "big.bin").read_bytes()
    assert not (run_dir / "logs" / "link").exists()
