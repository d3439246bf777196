"""Datastores on a real server: registering them (admins), moving files in and out of a ``server``
datastore through the API, the SDK and the CLI (checksummed, skipped when identical, resumed after
a break), and the refusals: read-only, paths that climb out, links out, shared datastores."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import TOKEN, Server
from tests.helpers import add_user, cli_for, raw_get
from trainhub.datastores import files
from trainhub.sdk import Datastore, DatastoreError, ServiceError, Workspace

DEFAULT = "workspaceblobstore"
MB = 1024 * 1024


def unique(prefix: str = "ds") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def tree_of(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (partial downloads would show up too)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


SAMPLE = {
    "train/part-0.csv": b"x,y\n" + b"1,2\n" * 1000,
    "train/nested/deeper/blob.bin": os.urandom(3 * MB + 17),
    "labels.txt": "ünïcode ✓\n".encode(),
    "empty.txt": b"",
    "with space/a file.txt": b"spaces in names",
}


def put(
    client: httpx.Client,
    path: str,
    data: bytes,
    *,
    size: int | None = None,
    digest: str | None = None,
    offset: int = 0,
    datastore: str = DEFAULT,
    overwrite: bool = False,
) -> httpx.Response:
    return client.put(
        f"/api/v1/datastores/{datastore}/files/{path}",
        params={
            "size": len(data) if size is None else size,
            "sha256": digest or sha(data),
            "offset": offset,
            "overwrite": str(overwrite).lower(),
        },
        content=data,
    )


def raw_request(server: Server, method: str, target: str, body: bytes = b"") -> httpx.Response:
    """``target`` sent byte for byte: no client folds ``..`` or ``//`` away before the server."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return httpx.Response(int(status_line.split()[1]), content=payload)


class CuttingProxy:
    """A TCP proxy in front of the server that breaks one connection once, after ``cut_after``
    bytes went through it towards the server (``up``) or towards the client (``down``): a
    network that fails in the middle of a transfer."""

    def __init__(self, port: int, cut_after: int, direction: str) -> None:
        self.upstream = port
        self.cut_after = cut_after
        self.direction = direction
        self.cuts = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, server, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "down"), daemon=True).start()

    def _pump(self, source: socket.socket, dest: socket.socket, direction: str) -> None:
        passed = 0
        try:
            while chunk := source.recv(65536):
                passed += len(chunk)
                if direction == self.direction and not self.cuts and passed > self.cut_after:
                    self.cuts += 1
                    for sock in (source, dest):
                        sock.shutdown(socket.SHUT_RDWR)
                    return
                dest.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, dest):
                sock.close()

    def close(self) -> None:
        self.listener.close()


def names(client: httpx.Client) -> list[str]:
    return [d["name"] for d in client.get("/api/v1/datastores").json()["datastores"]]


@pytest.fixture
def ws(server: Server) -> Workspace:
    return Workspace(server.url, TOKEN)


def in_store(server: Server, relative: str, datastore: str = DEFAULT) -> Path:
    return server.data / "datastores" / datastore / relative


# The registry ----------------------------------------------------------------------------------
def test_workspaceblobstore_is_the_default_and_cannot_be_removed(
    client: httpx.Client, ws: Workspace
) -> None:
    found = client.get(f"/api/v1/datastores/{DEFAULT}").json()
    assert (found["kind"], found["isDefault"], found["readOnly"]) == ("server", True, False)
    assert ws.get_default_datastore().name == DEFAULT
    assert Datastore.get_default(ws).kind == "server"
    assert DEFAULT in ws.datastores
    refused = client.delete(f"/api/v1/datastores/{DEFAULT}")
    assert refused.status_code == 422
    assert refused.json()["field"] == "name" and "cannot be removed" in refused.json()["error"]
    assert DEFAULT in names(client)


def test_an_admin_registers_changes_and_removes_datastores(
    server: Server, client: httpx.Client, ws: Workspace
) -> None:
    served, nfs = unique("raw"), unique("nfs")
    made = client.post("/api/v1/datastores", json={"name": served, "description": " images "})
    assert made.status_code == 201, made.text
    assert made.json() | {"createdUtc": 0} == {
        "name": served,
        "kind": "server",
        "paths": {},
        "readOnly": False,
        "description": "images",
        "createdBy": "admin",
        "createdUtc": 0,
        "isDefault": False,
    }
    assert in_store(server, "", served).is_dir()
    shared = Datastore.register_shared(
        ws, nfs, "/mnt/nfs/data/", node_paths={"n2": "/srv/data"}, read_only=True
    )
    assert (shared.kind, shared.paths, shared.read_only) == (
        "shared",
        {"*": "/mnt/nfs/data", "n2": "/srv/data"},
        True,
    )
    assert {served, nfs} <= set(names(client))
    # Azure ML's names are case-insensitive: one datastore, whatever the case.
    assert Datastore.get(ws, nfs.upper()).name == nfs
    again = client.post("/api/v1/datastores", json={"name": served.upper()})
    assert again.status_code == 409 and served in again.json()["error"]

    changed = client.patch(
        f"/api/v1/datastores/{nfs}", json={"readOnly": False, "paths": {"*": "/x"}}
    )
    assert changed.status_code == 200
    assert (changed.json()["readOnly"], changed.json()["paths"]) == (False, {"*": "/x"})
    kind_change = client.patch(f"/api/v1/datastores/{nfs}", json={"kind": "server"})
    assert kind_change.status_code == 422

    assert client.delete(f"/api/v1/datastores/{served}").json() == {"removed": served}
    shared.unregister()
    assert not {served, nfs} & set(names(client))
    assert client.get(f"/api/v1/datastores/{nfs}").status_code == 404
    assert client.delete(f"/api/v1/datastores/{nfs}").status_code == 404


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"name": "my-data"}, "name", "letters, digits or '_'"),
        ({"name": "x" * 256}, "name", "1 to 255"),
        ({"name": "ok_1", "kind": "blob"}, "kind", "server, shared"),
        ({"name": "ok_2", "kind": "shared"}, "paths", "needs the folder"),
        ({"name": "ok_3", "paths": {"*": "/mnt/x"}}, "paths", "takes no paths"),
        ({"name": "ok_4", "kind": "shared", "paths": {"*": "data"}}, "paths.*", "not an absolute"),
        (
            {"name": "ok_5", "kind": "shared", "paths": {"n1": "/mnt/../etc"}},
            "paths.n1",
            "'..'",
        ),
        ({"name": "ok_6", "kind": "shared", "paths": {"bad node": "/m"}}, "paths.bad node", "node"),
        ({"name": "ok_7", "kind": "shared", "paths": {"*": "/"}}, "paths.*", "whole file system"),
        ({"name": "ok_8", "description": "d" * 1001}, "description", "1000"),
    ],
)
def test_a_bad_registration_is_a_422_naming_the_field(
    client: httpx.Client, body: dict[str, object], field: str, words: str
) -> None:
    refused = client.post("/api/v1/datastores", json=body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == field
    assert words in refused.json()["error"]
    assert str(body["name"]) not in names(client)


def test_an_unknown_field_in_a_registration_is_refused(client: httpx.Client) -> None:
    refused = client.post("/api/v1/datastores", json={"name": unique(), "container": "x"})
    assert refused.status_code == 422 and "container" in refused.json()["error"]


def test_members_read_datastores_but_only_admins_change_them(
    server: Server, client: httpx.Client
) -> None:
    member = server.client(add_user(client, unique("mia")))
    assert DEFAULT in names(member)
    assert member.get(f"/api/v1/datastores/{DEFAULT}").status_code == 200
    name = unique()
    refused = member.post("/api/v1/datastores", json={"name": name})
    assert refused.status_code == 403 and "admin" in refused.json()["error"]
    assert name not in names(client)
    assert member.patch(f"/api/v1/datastores/{DEFAULT}", json={"readOnly": True}).status_code == 403
    assert member.delete(f"/api/v1/datastores/{DEFAULT}").status_code == 403
    assert client.get(f"/api/v1/datastores/{DEFAULT}").json()["readOnly"] is False


# Transfers ---------------------------------------------------------------------------------------
def test_a_folder_uploaded_with_the_sdk_downloads_back_byte_identical(
    ws: Workspace, tmp_path: Path
) -> None:
    source = make_tree(tmp_path / "src", SAMPLE)
    target = unique("run")
    ds = ws.get_default_datastore()
    ref = ds.upload(str(source), target_path=target, show_progress=False)
    assert ref.path_on_datastore == target and ref.mode == "mount"
    listed = {f["path"]: f for f in ds.list_files(f"{target}/")}
    assert {p: (f["size"], f["sha256"]) for p, f in listed.items()} == {
        f"{target}/{p}": (len(d), sha(d)) for p, d in SAMPLE.items()
    }
    count = ds.download(str(tmp_path / "back"), prefix=target, show_progress=False)
    assert count == len(SAMPLE)
    assert tree_of(tmp_path / "back" / target) == SAMPLE
    # upload_files: each file at its path under the folder they share (Azure ML's default).
    chosen = [source / "train/part-0.csv", source / "train/nested/deeper/blob.bin"]
    ref = ds.upload_files(
        [str(p) for p in chosen], target_path=f"{target}/some", show_progress=False
    )
    assert str(ref) != str(ds.as_mount()) and ref.path_on_datastore == f"{target}/some"
    assert [f["path"] for f in ds.list_files(f"{target}/some/")] == [
        f"{target}/some/nested/deeper/blob.bin",
        f"{target}/some/part-0.csv",
    ]
    with pytest.raises(DatastoreError, match="not under relative_root"):
        ds.upload_files(chosen, relative_root=source / "train/nested", show_progress=False)


def test_uploading_again_skips_identical_files_and_refuses_changed_ones_unless_overwrite(
    ws: Workspace, tmp_path: Path
) -> None:
    source = make_tree(tmp_path / "src", SAMPLE)
    target = unique("again")
    ds = ws.get_default_datastore()
    first = ds.upload_tree(source, target, show_progress=False)
    assert (first.done, first.skipped) == (len(SAMPLE), 0)
    second = ds.upload_tree(source, target, show_progress=False)
    assert (second.done, second.skipped, second.bytes) == (0, len(SAMPLE), 0)

    (source / "labels.txt").write_bytes(b"changed")
    (source / "new.txt").write_bytes(b"new")
    with pytest.raises(DatastoreError) as refused:
        ds.upload_tree(source, target, show_progress=False)
    assert f"{target}/labels.txt" in str(refused.value) and "overwrite=True" in str(refused.value)
    remote = {f["path"]: f["sha256"] for f in ds.list_files(target)}
    assert remote[f"{target}/labels.txt"] == sha(SAMPLE["labels.txt"])
    assert f"{target}/new.txt" not in remote  # nothing was sent

    third = ds.upload_tree(source, target, overwrite=True, show_progress=False)
    assert (third.done, third.skipped, third.bytes) == (2, len(SAMPLE) - 1, len(b"changed") + 3)
    remote = {f["path"]: f["sha256"] for f in ds.list_files(target)}
    assert remote[f"{target}/labels.txt"] == sha(b"changed")


def test_a_broken_upload_resumes_from_what_the_server_holds(
    server: Server, client: httpx.Client, ws: Workspace, tmp_path: Path
) -> None:
    data = os.urandom(5 * MB + 3)
    source = make_tree(tmp_path / "src", {"big.bin": data})
    target = unique("resume")
    path = f"{target}/big.bin"
    query = f"size={len(data)}&sha256={sha(data)}"
    # The connection breaks after 2 MB of the body: the server keeps what arrived.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            f"PUT /api/v1/datastores/{DEFAULT}/files/{path}?{query} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data[: 2 * MB]
        )
        time.sleep(0.3)
    held = 0
    deadline = time.monotonic() + 10
    while held < 2 * MB and time.monotonic() < deadline:
        state = client.get(f"/api/v1/datastores/{DEFAULT}/uploads/{path}?{query}")
        held = state.json()["received"]
    assert held == 2 * MB
    assert not in_store(server, path).exists()  # never half a file in the datastore
    assert (
        client.get(f"/api/v1/datastores/{DEFAULT}/files", params={"prefix": target}).json()["files"]
        == []
    )
    # Resuming from elsewhere than what the server holds is refused.
    wrong = put(client, path, data[5:], size=len(data), digest=sha(data), offset=5)
    assert wrong.status_code == 409 and f"from byte {2 * MB}" in wrong.json()["error"]

    summary = ws.get_default_datastore().upload_tree(source, target, show_progress=False)
    assert (summary.done, summary.resumed, summary.bytes) == (1, 1, len(data) - 2 * MB)
    assert in_store(server, path).read_bytes() == data


def test_the_sdk_resumes_by_itself_when_the_connection_breaks(
    server: Server, tmp_path: Path
) -> None:
    data = os.urandom(6 * MB)
    source = make_tree(tmp_path / "src", {"big.bin": data})
    target = unique("broken")
    up = CuttingProxy(server.port, cut_after=2 * MB, direction="up")
    try:
        ds = Datastore.get(Workspace(up.url, TOKEN), DEFAULT)
        sent = ds.upload_tree(source, target, show_progress=False)
    finally:
        up.close()
    assert up.cuts == 1
    assert (sent.done, sent.resumed) == (1, 1)
    assert MB < len(data) - sent.bytes <= 2 * MB  # what arrived before the break was not sent again
    assert in_store(server, f"{target}/big.bin").read_bytes() == data

    down = CuttingProxy(server.port, cut_after=3 * MB, direction="down")
    try:
        ds = Datastore.get(Workspace(down.url, TOKEN), DEFAULT)
        got = ds.download_tree(tmp_path / "back", prefix=target, show_progress=False)
    finally:
        down.close()
    assert down.cuts == 1
    assert (got.done, got.resumed) == (1, 1)
    assert got.bytes == len(data)  # the bytes before the break were kept, not fetched again
    assert tree_of(tmp_path / "back") == {f"{target}/big.bin": data}


def test_a_wrong_checksum_is_refused_and_leaves_no_file(
    server: Server, client: httpx.Client
) -> None:
    path = f"{unique('bad')}/data.bin"
    data = os.urandom(200_000)
    refused = put(client, path, data, digest=sha(b"other bytes"))
    assert refused.status_code == 422
    assert refused.json()["field"] == "sha256" and path in refused.json()["error"]
    assert not in_store(server, path).exists()
    state = client.get(
        f"/api/v1/datastores/{DEFAULT}/uploads/{path}",
        params={"size": len(data), "sha256": sha(b"other bytes")},
    )
    assert state.json()["received"] == 0  # the bytes that did not match are gone too
    root = in_store(server, "")
    assert not files.partial_path(root, path, len(data), sha(b"other bytes")).exists()
    too_many = put(client, path, data, size=10)
    assert too_many.status_code == 422 and too_many.json()["field"] == "size"
    assert not in_store(server, path).exists()


def test_a_file_with_other_bytes_is_replaced_only_with_overwrite(
    server: Server, client: httpx.Client
) -> None:
    path = f"{unique('over')}/f.txt"
    assert put(client, path, b"one").status_code == 201
    assert put(client, path, b"one").json()["stored"] is False  # the same bytes: nothing to do
    conflict = put(client, path, b"two")
    assert conflict.status_code == 409 and "overwrite" in conflict.json()["error"]
    assert in_store(server, path).read_bytes() == b"one"
    assert put(client, path, b"two", overwrite=True).status_code == 201
    assert in_store(server, path).read_bytes() == b"two"
    under_a_file = put(client, f"{path}/inside.txt", b"x")
    assert under_a_file.status_code == 422 and under_a_file.json()["field"] == "path"


def test_a_download_resumes_with_a_byte_range(
    client: httpx.Client, ws: Workspace, tmp_path: Path
) -> None:
    data = os.urandom(3 * MB + 5)
    target = unique("range")
    path = f"{target}/big.bin"
    assert put(client, path, data).status_code == 201
    ranged = client.get(
        f"/api/v1/datastores/{DEFAULT}/files/{path}", headers={"Range": "bytes=100-"}
    )
    assert ranged.status_code == 206
    assert ranged.headers["content-range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    assert ranged.content == data[100:]
    past = client.get(
        f"/api/v1/datastores/{DEFAULT}/files/{path}", headers={"Range": f"bytes={len(data)}-"}
    )
    assert past.status_code == 416
    # A download that broke left the first megabyte: only the rest is fetched.
    dest = tmp_path / "dest"
    (dest / target).mkdir(parents=True)
    (dest / target / "big.bin.trainhub-partial").write_bytes(data[:MB])
    summary = ws.get_default_datastore().download_tree(dest, prefix=target, show_progress=False)
    assert (summary.done, summary.resumed, summary.bytes) == (1, 1, len(data) - MB)
    assert tree_of(dest) == {path: data}
    # A partial file with wrong bytes is caught by the checksum and not kept.
    (dest / target / "big.bin").unlink()
    (dest / target / "big.bin.trainhub-partial").write_bytes(b"\0" * MB)
    with pytest.raises(DatastoreError, match="another SHA-256"):
        ws.get_default_datastore().download(dest, prefix=target, show_progress=False)
    assert tree_of(dest) == {}


# Refusals ----------------------------------------------------------------------------------------
def test_a_read_only_datastore_refuses_a_members_upload_but_not_an_admins(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    name = unique("ro")
    assert (
        client.post("/api/v1/datastores", json={"name": name, "readOnly": True}).status_code == 201
    )
    token = add_user(client, unique("max"))
    source = make_tree(tmp_path / "src", {"a.txt": b"a", "b/c.txt": b"c"})
    member_ds = Datastore.get(Workspace(server.url, token), name)
    with pytest.raises(ServiceError) as refused:
        member_ds.upload(source, show_progress=False)
    assert refused.value.status == 403 and name in refused.value.message
    assert sorted(in_store(server, "", name).iterdir()) == []
    direct = put(server.client(token), "a.txt", b"a", datastore=name)
    assert direct.status_code == 403 and "read-only" in direct.json()["error"]
    # Members still read it; admins write to it.
    assert (
        Datastore.get(Workspace(server.url, TOKEN), name)
        .upload_tree(source, show_progress=False)
        .done
        == 2
    )
    assert member_ds.download(tmp_path / "back", show_progress=False) == 2


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("../escaped.txt", "'../escaped.txt' climbs out"),
        ("a/../../escaped.txt", "'a/../../escaped.txt' climbs out"),
        ("%2E%2E/escaped.txt", "'../escaped.txt' climbs out"),
        ("/etc/escaped.txt", "'/etc/escaped.txt' is absolute"),
        ("%2Fetc%2Fescaped.txt", "'/etc/escaped.txt' is absolute"),
        (".trainhub/sums/x", "is the server's own"),
    ],
)
def test_a_path_that_climbs_out_is_refused_naming_it_and_nothing_is_written(
    server: Server, target: str, shown: str
) -> None:
    before = sorted(p for p in server.data.rglob("*") if "escaped" in p.name)
    query = f"size=1&sha256={sha(b'x')}"
    for method, route in (("PUT", "files"), ("GET", "files"), ("GET", "uploads")):
        answer = raw_request(
            server, method, f"/api/v1/datastores/{DEFAULT}/{route}/{target}?{query}", b"x"
        )
        assert answer.status_code == 422, (method, route, answer.text)
        assert answer.json()["field"] == "path" and shown in answer.json()["error"]
    after = sorted(p for p in server.data.rglob("*") if "escaped" in p.name)
    assert after == before == []
    assert not Path("/etc/escaped.txt").exists()


def test_a_prefix_that_climbs_out_is_refused(server: Server) -> None:
    status, body = raw_get(server.url, f"/api/v1/datastores/{DEFAULT}/files?prefix=../", TOKEN)
    assert status == 422 and json.loads(body)["field"] == "prefix"


def test_a_link_inside_the_datastore_to_outside_is_never_followed(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    folder = unique("links")
    in_store(server, folder).mkdir(parents=True)
    in_store(server, f"{folder}/out").symlink_to(outside)
    in_store(server, f"{folder}/secret.txt").symlink_to(outside / "secret.txt")
    for path in (f"{folder}/out/secret.txt", f"{folder}/secret.txt"):
        read = client.get(f"/api/v1/datastores/{DEFAULT}/files/{path}")
        assert read.status_code == 422 and path in read.json()["error"], read.text
    written = put(client, f"{folder}/out/planted.txt", b"x")
    assert written.status_code == 422 and "leads out" in written.json()["error"]
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    listed = client.get(f"/api/v1/datastores/{DEFAULT}/files", params={"prefix": folder})
    assert listed.json()["files"] == []


def test_the_sdk_refuses_a_link_out_of_the_source_folder_and_a_target_that_climbs_out(
    ws: Workspace, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    source = make_tree(tmp_path / "src", {"ok.txt": b"ok"})
    (source / "leak.txt").symlink_to(tmp_path / "secret.txt")
    target = unique("leak")
    ds = ws.get_default_datastore()
    with pytest.raises(DatastoreError, match="'leak.txt' is a link to .*outside"):
        ds.upload(source, target, show_progress=False)
    assert ds.list_files(target) == []  # nothing at all was sent
    (source / "leak.txt").unlink()
    (source / "inside.txt").symlink_to(source / "ok.txt")  # a link that stays inside is a file
    assert ds.upload_tree(source, target, show_progress=False).done == 2
    for bad in ("../up", "/etc"):
        with pytest.raises(DatastoreError, match="target_path"):
            ds.upload(source, bad, show_progress=False)


def test_a_shared_datastore_has_no_files_on_the_server(
    server: Server, client: httpx.Client, ws: Workspace, tmp_path: Path
) -> None:
    name = unique("nfs")
    paths = {"*": "/mnt/nfs/data"}
    assert (
        client.post(
            "/api/v1/datastores", json={"name": name, "kind": "shared", "paths": paths}
        ).status_code
        == 201
    )
    answers = [
        put(client, "a.txt", b"a", datastore=name),
        client.get(f"/api/v1/datastores/{name}/files"),
        client.get(f"/api/v1/datastores/{name}/files/a.txt"),
    ]
    for answer in answers:
        assert answer.status_code == 422
        assert (
            "shared datastore" in answer.json()["error"]
            and "/mnt/nfs/data" in answer.json()["error"]
        )
    with pytest.raises(ServiceError, match="on the nodes"):
        Datastore.get(ws, name).upload(make_tree(tmp_path / "s", {"a": b"a"}), show_progress=False)
    assert not in_store(server, "", name).exists()


def test_an_unknown_datastore_is_a_404(client: httpx.Client, ws: Workspace) -> None:
    for answer in (
        client.get("/api/v1/datastores/nope_nope"),
        client.get("/api/v1/datastores/nope_nope/files"),
        put(client, "a.txt", b"a", datastore="nope_nope"),
    ):
        assert answer.status_code == 404 and "nope_nope" in answer.json()["error"]
    with pytest.raises(ServiceError, match="No datastore named 'nope_nope'"):
        Datastore.get(ws, "nope_nope")


# References --------------------------------------------------------------------------------------
def test_references_read_and_serialize_as_azure_ml_wrote_them(ws: Workspace) -> None:
    ds = ws.get_default_datastore()
    mount = ds.as_mount()
    assert str(mount) == f"$AZUREML_DATAREFERENCE_{DEFAULT}"
    assert mount.to_spec() == {
        "$data_reference": {
            "datastore": DEFAULT,
            "path": "",
            "mode": "mount",
            "path_on_compute": None,
            "name": DEFAULT,
            "overwrite": False,
        }
    }
    sub = ds.path("./mnist/train/").as_download(path_on_compute="data/mnist")
    spec = sub.to_spec()["$data_reference"]
    assert (spec["path"], spec["mode"], spec["path_on_compute"]) == (
        "mnist/train",
        "download",
        "data/mnist",
    )
    assert str(sub) == f"$AZUREML_DATAREFERENCE_{spec['name']}"  # Azure ML: a fresh name
    named = ds.path("out", data_reference_name="results").as_upload(overwrite=True)
    assert named.to_spec()["$data_reference"] | {"datastore": ""} == {
        "datastore": "",
        "path": "out",
        "mode": "upload",
        "path_on_compute": None,
        "name": "results",
        "overwrite": True,
    }
    assert str(named.path("epoch1")) != str(named)
    assert named.path("epoch1").path_on_datastore == "out/epoch1"
    assert ds.as_upload("o").to_spec()["$data_reference"]["mode"] == "upload"


# The CLI -----------------------------------------------------------------------------------------
Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_the_cli_lists_uploads_and_downloads(server: Server, tmp_path: Path) -> None:
    cli: Cli = cli_for(server.url, TOKEN)
    listed = cli("datastore", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert DEFAULT in [d["name"] for d in json.loads(listed.stdout)]
    source = make_tree(tmp_path / "src", SAMPLE)
    target = unique("cli")
    up = cli("datastore", "upload", str(source), "--target-path", target, "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout) | {"bytes": 0} == {
        "datastore": DEFAULT,
        "path": target,
        "transferred": len(SAMPLE),
        "skipped": 0,
        "resumed": 0,
        "bytes": 0,
    }
    assert json.loads(up.stdout)["bytes"] == sum(len(d) for d in SAMPLE.values())
    again = cli("datastore", "upload", str(source), "-t", target)
    assert again.returncode == 0 and f"{len(SAMPLE)} already there" in again.stdout
    one = cli("datastore", "upload", str(source / "labels.txt"), "-t", f"{target}/single", "--json")
    assert json.loads(one.stdout)["transferred"] == 1
    down = cli("datastore", "download", str(tmp_path / "back"), "--prefix", target, "--json")
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["transferred"] == len(SAMPLE) + 1
    assert tree_of(tmp_path / "back" / target) == {
        **SAMPLE,
        "single/labels.txt": SAMPLE["labels.txt"],
    }
    shown = cli("datastore", "show", DEFAULT, "--files", "--prefix", f"{target}/single", "--json")
    assert [f["path"] for f in json.loads(shown.stdout)["files"]] == [f"{target}/single/labels.txt"]


def test_the_cli_registers_and_removes_and_says_why_it_cannot(
    server: Server, tmp_path: Path
) -> None:
    cli: Cli = cli_for(server.url, TOKEN)
    name = unique("cli")
    added = cli(
        "datastore", "add", name, "--shared", "/mnt/x", "--node-path", "n2=/y", "--read-only"
    )
    assert added.returncode == 0, added.stderr
    assert f"Added shared datastore {name}" in added.stdout
    shown = json.loads(cli("datastore", "show", name, "--json").stdout)
    assert (shown["paths"], shown["readOnly"]) == ({"*": "/mnt/x", "n2": "/y"}, True)
    writable = cli("datastore", "update", name, "--writable")
    assert writable.returncode == 0 and "writable" in writable.stdout
    bad = cli("datastore", "add", "no-dashes")
    assert bad.returncode == 1 and "letters, digits or '_'" in bad.stderr
    upload = cli("datastore", "upload", str(tmp_path), "-d", name)
    assert upload.returncode == 1 and "shared datastore" in upload.stderr
    assert cli("datastore", "remove", name).returncode == 0
    assert name not in cli("datastore", "list").stdout
    helped = cli("datastore", "--help")
    assert helped.returncode == 0
    for verb in ("list", "show", "add", "update", "remove", "upload", "download"):
        assert verb in helped.stdout
