"""Hostile snapshots and paths: refused with a clear 4xx, nothing written outside its place."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import TOKEN, Server
from tests.helpers import make_snapshot, raw_get, submit, submit_raw, wait_for_status

SPEC = {"entry_script": "train.py"}
OK_SCRIPT = b"print('hi')\n"


def _tar(add: Callable[[tarfile.TarFile], None], *, with_entry: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        if with_entry:
            info = tarfile.TarInfo("train.py")
            info.size = len(OK_SCRIPT)
            tar.addfile(info, io.BytesIO(OK_SCRIPT))
        add(tar)
    return buf.getvalue()


def _file(name: str, data: bytes = b"x") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    return add


def _special(name: str, kind: bytes, linkname: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = 1, 3
        tar.addfile(info)

    return add


def _many(count: int) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        for i in range(count):
            _file(f"data/{i}.txt")(tar)

    return add


def _zeros(size: int) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("big.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))

    return add


ESCAPE = f"/tmp/trainhub-escape-{uuid.uuid4().hex}"

CASES = {
    "absolute path": (_tar(_file(ESCAPE)), 422, "absolute path"),
    "dot-dot path": (_tar(_file("../../escape.txt")), 422, "'..'"),
    "dot-dot inside a path": (_tar(_file("src/../../escape.txt")), 422, "'..'"),
    "absolute symlink": (
        _tar(_special("link", tarfile.SYMTYPE, "/etc/passwd")),
        422,
        "points outside",
    ),
    "relative symlink out": (
        _tar(_special("a/link", tarfile.SYMTYPE, "../../etc")),
        422,
        "points outside",
    ),
    "hard link out": (_tar(_special("hard", tarfile.LNKTYPE, "../outside")), 422, "points outside"),
    "character device": (_tar(_special("dev/null", tarfile.CHRTYPE)), 422, "device file"),
    "block device": (_tar(_special("dev/sda", tarfile.BLKTYPE)), 422, "device file"),
    "fifo": (_tar(_special("pipe", tarfile.FIFOTYPE)), 422, "special file"),
    "too many files": (_tar(_many(60)), 413, "more than 50 files (the limit)"),
    "expands too far": (_tar(_zeros(9 * 1024 * 1024)), 413, "expands to more than 8 MB"),
    "not gzip": (b"just some bytes, not an archive", 400, "not a valid .tar.gz"),
    "gzip but not tar": (gzip.compress(b"hello" * 1000), 400, "not a valid .tar.gz"),
    "missing entry script": (
        _tar(_file("other.py"), with_entry=False),
        422,
        "'train.py' is not in the snapshot",
    ),
}


def _data_files(server: Server) -> set[Path]:
    return {
        p for p in server.data.rglob("*") if p.is_file() and not p.name.startswith("trainhub.db")
    }


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_snapshot_is_refused_and_nothing_is_written(
    case: str, client: httpx.Client, server: Server
) -> None:
    snapshot, status, message = CASES[case]
    before = _data_files(server)
    runs_before = client.get("/api/v1/runs", params={"experiment": "hostile"}).json()["runs"]
    response = submit_raw(client, SPEC, snapshot, experiment="hostile")
    assert response.status_code == status, response.text
    body = response.json()
    assert message in body["error"]
    assert "Traceback" not in response.text
    assert _data_files(server) == before  # no snapshot stored, no upload left behind
    assert (
        client.get("/api/v1/runs", params={"experiment": "hostile"}).json()["runs"] == runs_before
    )
    assert not os.path.exists(ESCAPE)


def test_upload_over_the_size_limit_is_413_with_the_limit(
    client: httpx.Client, server: Server
) -> None:
    before = _data_files(server)
    snapshot = _tar(_file("noise.bin", os.urandom(3 * 1024 * 1024)))
    response = submit_raw(client, SPEC, snapshot, experiment="hostile")
    assert response.status_code == 413
    assert "snapshot limit of 2 MB" in response.json()["error"]
    assert _data_files(server) == before


@pytest.fixture(scope="module")
def finished_run(server: Server) -> str:
    client = server.client()
    run = submit(
        client, "import os\nos.makedirs('outputs')\nopen('outputs/a.txt','w').write('a')\n"
    )
    wait_for_status(client, run["runId"], "Completed")
    return str(run["runId"])


@pytest.mark.parametrize(
    "path",
    [
        "../../trainhub.db",
        "..%2F..%2Ftrainhub.db",
        "outputs/../../../trainhub.db",
        "%2E%2E/%2E%2E/trainhub.db",
        "outputs/..%2F..%2F..%2Ftrainhub.db",
        "/etc/passwd",
        "logs",
    ],
)
def test_downloads_resolve_inside_the_run_folder_only(
    server: Server, finished_run: str, path: str
) -> None:
    # Sent byte for byte: an HTTP client such as httpx would remove the dot segments itself, and
    # the request would never reach the file handler.
    status, body = raw_get(server.url, f"/api/v1/runs/{finished_run}/files/{path}", TOKEN)
    assert status in (400, 404), body
    assert b"SQLite format 3" not in body and b"root:" not in body
    ok, a = raw_get(server.url, f"/api/v1/runs/{finished_run}/files/outputs/a.txt", TOKEN)
    assert (ok, a) == (200, b"a")


def test_links_a_script_leaves_in_outputs_are_not_followed(
    client: httpx.Client, server: Server
) -> None:
    script = (
        "import os\nos.makedirs('outputs')\n"
        "os.symlink('/etc/passwd', 'outputs/passwd')\n"
        "os.symlink('../../../../../../tmp', 'outputs/tmp')\n"
        "open('outputs/real.txt', 'w').write('real')\n"
    )
    run = submit(client, script)
    done = wait_for_status(client, run["runId"])
    assert done["status"] == "Completed"
    paths = {f["path"] for f in client.get(f"/api/v1/runs/{run['runId']}/files").json()["files"]}
    assert "outputs/real.txt" in paths
    assert "outputs/passwd" not in paths
    assert client.get(f"/api/v1/runs/{run['runId']}/files/outputs/passwd").status_code == 404
    run_dir = server.data / "runs" / run["runId"] / "outputs"
    assert not (run_dir / "passwd").exists() and not (run_dir / "tmp").is_symlink()


def test_a_script_cannot_overwrite_the_driver_log(client: httpx.Client) -> None:
    script = "import os\nos.makedirs('logs')\nopen('logs/driver_log.txt','w').write('forged')\nprint('real output')\n"
    run = submit(client, script)
    wait_for_status(client, run["runId"], "Completed")
    log = client.get(f"/api/v1/runs/{run['runId']}/files/logs/driver_log.txt").text
    assert "real output" in log and "forged" not in log


def test_identical_snapshots_are_stored_once(client: httpx.Client, server: Server) -> None:
    files: dict[str, str | bytes] = {"train.py": "print('same')\n"}
    snap = make_snapshot(files)
    a = submit_raw(client, SPEC, snap, experiment="dedupe").json()
    b = submit_raw(client, SPEC, snap, experiment="dedupe").json()
    assert a["properties"]["snapshotId"] == b["properties"]["snapshotId"]
    stored = list((server.data / "snapshots").glob(f"{a['properties']['snapshotId']}*"))
    assert len(stored) == 1
    for run in (a, b):
        wait_for_status(client, run["runId"], "Completed")
