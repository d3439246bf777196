"""Registered models: from a run's outputs or from a client, versioned, listed, downloaded back
byte for byte, with their lineage (run, experiment, parameters, metrics) on the dashboard."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TOKEN, Server
from tests.helpers import add_user, cli_for, login, submit, wait_for_status
from tests.html import parse
from trainhub.sdk import Model, ModelNotFoundError, Run, TrainhubError, Workspace

pytestmark = pytest.mark.docker

PICKLE = bytes(range(256)) * 40 + b"\x00tail"
TRAIN = f"""
import os
from trainhub import context
run = context.get_context()
run.log("accuracy", 0.5)
run.log("accuracy", 0.93)
os.makedirs("outputs/model/weights", exist_ok=True)
open("outputs/model.pkl", "wb").write({PICKLE!r})
open("outputs/model/config.json", "w").write('{{"layers": 3}}')
open("outputs/model/weights/w.bin", "wb").write(bytes(range(200)) * 7)
os.symlink("../model.pkl", "outputs/model/link.pkl")
"""


@pytest.fixture(scope="module")
def run(server: Server) -> Iterator[dict[str, Any]]:
    """One finished run whose outputs hold a model file and a model folder."""
    with server.client() as admin:
        submitted = submit(
            admin, TRAIN, experiment="models-exp", script_params={"--lr": 0.01, "--epochs": 3}
        )
        done = wait_for_status(admin, submitted["runId"], "Completed", timeout=120)
    # A link in the run's folder that leads out of it (as a careless copy on the server might
    # leave): registering through it is refused.
    (server.data / "runs" / done["runId"] / "outputs" / "escape").symlink_to("/etc")
    yield done


def register(client: httpx.Client, run_id: str, **body: Any) -> httpx.Response:
    return client.post(f"/api/v1/runs/{run_id}/models", json=body)


def test_a_runs_file_registers_as_versions_and_downloads_byte_for_byte(
    client: httpx.Client, run: dict[str, Any]
) -> None:
    first = register(
        client,
        run["runId"],
        name="churn-model",
        path="./outputs/model.pkl",
        tags={"stage": "dev"},
        properties={"framework": "sklearn"},
        description="first try",
    )
    assert first.status_code == 201, first.text
    model = first.json()
    assert (model["name"], model["version"], model["id"]) == ("churn-model", 1, "churn-model:1")
    assert model["path"] == "outputs/model.pkl"
    assert model["sizeBytes"] == len(PICKLE) and model["files"] == 1
    import hashlib

    assert model["sha256"] == hashlib.sha256(PICKLE).hexdigest()
    assert model["tags"] == {"stage": "dev"} and model["properties"] == {"framework": "sklearn"}
    assert (model["runId"], model["experiment"]) == (run["runId"], "models-exp")
    assert model["createdBy"] == "admin"
    assert model["url"].startswith("http") and model["url"].endswith("/models/churn-model/1")

    second = register(client, run["runId"], name="churn-model", path="outputs/model.pkl")
    assert second.json()["version"] == 2
    assert client.get("/api/v1/models/churn-model").json()["version"] == 2

    listed = client.get("/api/v1/models/churn-model/versions/1/files").json()["files"]
    assert listed == [{"path": "model.pkl", "size": len(PICKLE)}]
    got = client.get("/api/v1/models/churn-model/versions/1/files/model.pkl")
    assert got.status_code == 200 and got.content == PICKLE
    part = client.get(
        "/api/v1/models/churn-model/versions/1/files/model.pkl", headers={"Range": "bytes=10-19"}
    )
    assert part.status_code == 206 and part.content == PICKLE[10:20]


def test_a_runs_folder_registers_without_links_that_leave_it(
    client: httpx.Client, run: dict[str, Any]
) -> None:
    response = register(client, run["runId"], name="folder-model", path="outputs/model/")
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["files"] == 2  # the link is not part of the model: only regular files
    listed = client.get("/api/v1/models/folder-model/versions/1/files").json()["files"]
    assert [f["path"] for f in listed] == ["model/config.json", "model/weights/w.bin"]
    got = client.get("/api/v1/models/folder-model/versions/1/files/model/weights/w.bin")
    assert got.content == bytes(range(200)) * 7


def test_the_model_stays_when_the_runs_files_go(
    server: Server, client: httpx.Client, run: dict[str, Any]
) -> None:
    """The files are copied: the model does not read the run's folder."""
    model = register(client, run["runId"], name="kept-model", path="outputs/model.pkl").json()
    stored = server.data / "models" / "kept-model" / "1" / "model.pkl"
    assert stored.read_bytes() == PICKLE
    assert not stored.samefile(server.data / "runs" / run["runId"] / "outputs" / "model.pkl")
    assert model["version"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "bad name!", "path": "outputs/model.pkl"}, "name"),
        ({"name": "-starts-with-dash", "path": "outputs/model.pkl"}, "name"),
        ({"name": "x" * 256, "path": "outputs/model.pkl"}, "name"),
        ({"name": "ok", "path": "outputs/missing.pkl"}, "path"),
        ({"name": "ok", "path": "../../trainhub.db"}, "path"),
        ({"name": "ok", "path": "/etc/passwd"}, "path"),
        ({"name": "ok", "path": "outputs/escape/passwd"}, "path"),
        ({"name": "ok", "path": "tensorboard"}, "path"),
        ({"name": "ok", "path": "outputs/model.pkl", "tags": {"k": "v" * 5001}}, "tags"),
        ({"name": "ok", "path": "outputs/model.pkl", "properties": {"k" * 300: "v"}}, "properties"),
    ],
)
def test_bad_registrations_are_422_naming_the_field(
    client: httpx.Client, run: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    response = register(client, run["runId"], **body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert client.get("/api/v1/models/ok").status_code == 404


def test_a_member_registers_from_own_runs_only(
    server: Server, client: httpx.Client, run: dict[str, Any]
) -> None:
    token = add_user(client, "model-member")
    with server.client(token) as member:
        refused = register(member, run["runId"], name="stolen", path="outputs/model.pkl")
        assert refused.status_code == 403, refused.text
        own = submit(member, TRAIN, experiment="member-exp")
        wait_for_status(member, own["runId"], "Completed", timeout=120)
        mine = register(member, own["runId"], name="member-model", path="outputs/model.pkl")
        assert mine.status_code == 201, mine.text
        assert mine.json()["createdBy"] == "model-member"
        # Its tags are the member's to change; deleting a version is for admins.
        changed = member.patch(
            "/api/v1/models/member-model/versions/1", json={"tags": {"stage": "prod"}}
        )
        assert changed.json()["tags"] == {"stage": "prod"}
        assert member.delete("/api/v1/models/member-model/versions/1").status_code == 403
    assert client.delete("/api/v1/models/member-model/versions/1").status_code == 200
    assert client.get("/api/v1/models/member-model").status_code == 404
    assert not (server.data / "models" / "member-model" / "1").exists()


def _tar(entry: str, files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_client_uploads_a_model_as_a_tar(client: httpx.Client) -> None:
    body = _tar("net", {"net/a.bin": b"A" * 1000, "net/sub/b.txt": b"bee"})
    response = client.post(
        "/api/v1/models/uploaded-net",
        params={"path": "net", "tags": json.dumps({"source": "laptop"}), "description": "hi"},
        content=body,
        headers={"Content-Type": "application/x-tar"},
    )
    assert response.status_code == 201, response.text
    model = response.json()
    assert (model["runId"], model["experiment"], model["files"]) == (None, None, 2)
    assert model["tags"] == {"source": "laptop"} and model["description"] == "hi"
    got = client.get("/api/v1/models/uploaded-net/versions/1/files/net/sub/b.txt")
    assert got.content == b"bee"

    climbing = _tar("net", {"net/../../escape.txt": b"x"})
    refused = client.post("/api/v1/models/uploaded-net", params={"path": "net"}, content=climbing)
    assert refused.status_code == 422 and refused.json()["field"] == "archive"
    other = client.post(
        "/api/v1/models/uploaded-net", params={"path": "net"}, content=_tar("x", {"x": b"1"})
    )
    assert other.status_code == 422 and other.json()["field"] == "archive"
    assert client.get("/api/v1/models/uploaded-net").json()["version"] == 1


def test_list_filters_by_name_and_tag(client: httpx.Client, run: dict[str, Any]) -> None:
    register(client, run["runId"], name="tagged-a", path="outputs/model.pkl", tags={"team": "x"})
    register(client, run["runId"], name="tagged-b", path="outputs/model.pkl", tags={"team": "y"})
    by_tag = client.get("/api/v1/models", params={"tag": "team=y"}).json()["models"]
    assert [m["id"] for m in by_tag] == ["tagged-b:1"]
    by_key = client.get("/api/v1/models", params={"tag": "team"}).json()["models"]
    assert [m["id"] for m in by_key] == ["tagged-b:1", "tagged-a:1"]  # newest first
    by_name = client.get("/api/v1/models", params={"name": "tagged-a"}).json()["models"]
    assert [m["id"] for m in by_name] == ["tagged-a:1"]
    assert client.get("/api/v1/models/nope/versions/1").status_code == 404


def test_the_pages_show_models_and_their_lineage(
    server: Server, client: httpx.Client, run: dict[str, Any]
) -> None:
    register(client, run["runId"], name="paged-model", path="outputs/model.pkl", tags={"k": "v"})
    add_user(client, "model-viewer")
    browser = login(server.url, "model-viewer")
    listing = parse(browser.get("/models", params={"name": "paged"}))
    rows = listing.all("model-row")
    assert [r.find("model-name-paged-model").text for r in rows] == ["paged-model"]
    assert "k=v" in rows[0].text
    detail = parse(browser.get("/models/paged-model/1"))
    lineage = detail.find("lineage")
    assert run["runId"] in lineage.text and "models-exp" in lineage.text
    assert "--lr" in lineage.text and "0.93" in lineage.text  # parameters and final metrics
    link = detail.find("model-file-model.pkl")
    assert browser.get(link.attrs["href"]).content == PICKLE
    latest = browser.get("/models/paged-model", follow_redirects=False)
    assert latest.headers["location"] == "/models/paged-model/1"
    empty = parse(browser.get("/models", params={"name": "no-such-model"}))
    assert "register_model" in empty.find("models-empty").text


def test_the_cli_lists_shows_and_downloads(
    server: Server, client: httpx.Client, run: dict[str, Any], tmp_path: Path
) -> None:
    register(client, run["runId"], name="cli-model", path="outputs/model/")
    cli = cli_for(server.url, TOKEN)
    listed = cli("models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "cli-model:1" in [m["id"] for m in json.loads(listed.stdout)]
    shown = cli("models", "show", "cli-model:1", "--json")
    assert json.loads(shown.stdout)["runId"] == run["runId"]
    got = cli("models", "download", "cli-model", "-o", str(tmp_path), "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["path"] == str(tmp_path / "model")
    assert (tmp_path / "model" / "weights" / "w.bin").read_bytes() == bytes(range(200)) * 7
    unknown = cli("models", "show", "no-such-model")
    assert unknown.returncode != 0 and "no-such-model" in unknown.stderr


@pytest.fixture
def ws(server: Server) -> Workspace:
    return Workspace(server.url, TOKEN)


def test_run_register_model_and_download_byte_for_byte(
    ws: Workspace, run: dict[str, Any], tmp_path: Path
) -> None:
    sdk_run = Run.get(ws, run["runId"])
    model = sdk_run.register_model(
        model_name="sdk-model", model_path="./outputs/model.pkl", tags={"area": "churn"}
    )
    again = sdk_run.register_model(model_name="sdk-model", model_path="outputs/model/")
    assert (model.name, model.version, again.version) == ("sdk-model", 1, 2)
    assert model.id == "sdk-model:1" and model.run_id == run["runId"]
    assert model.tags == {"area": "churn"} and model.created_time.year >= 2024
    assert httpx.get(model.url, follow_redirects=False).status_code in (200, 303)

    latest = Model(ws, "sdk-model")
    assert latest.version == 2
    path = Model(ws, "sdk-model", version=1).download(tmp_path)
    assert Path(path) == tmp_path / "model.pkl" and Path(path).read_bytes() == PICKLE
    with pytest.raises(TrainhubError, match="exist_ok"):
        Model(ws, "sdk-model", version=1).download(tmp_path)
    folder = latest.download(tmp_path / "f")
    assert (Path(folder) / "weights" / "w.bin").read_bytes() == bytes(range(200)) * 7
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        Model(ws, "no-such-model")


def test_model_register_from_this_machine_and_list_by_tag(ws: Workspace, tmp_path: Path) -> None:
    source = tmp_path / "net"
    (source / "sub").mkdir(parents=True)
    (source / "a.bin").write_bytes(b"\x00\x01" * 3000)
    (source / "sub" / "b.txt").write_text("bee")
    (source / "outside").symlink_to("/etc/passwd")  # never sent
    model = Model.register(
        ws, str(source), "laptop-net", tags={"origin": "laptop"}, description="from a laptop"
    )
    assert (model.version, model.run_id, model.description) == (1, None, "from a laptop")
    single = tmp_path / "w.pkl"
    single.write_bytes(PICKLE)
    Model.register(ws, single, "laptop-net")
    found = Model.list(ws, tags=[["origin", "laptop"]])
    assert [m.id for m in found] == ["laptop-net:1"]
    assert [m.version for m in Model.list(ws, name="laptop-net")] == [2, 1]
    back = Path(Model(ws, "laptop-net", version=1).download(tmp_path / "back"))
    assert (back / "a.bin").read_bytes() == b"\x00\x01" * 3000
    assert sorted(p.name for p in back.rglob("*")) == ["a.bin", "b.txt", "sub"]
    assert Path(Model(ws, id="laptop-net:2").download(tmp_path / "back")).read_bytes() == PICKLE


def test_azureml_core_model_is_trainhubs() -> None:
    from azureml.core import Model as AzureModel
    from azureml.core.model import Model as FromModule

    assert AzureModel is Model is FromModule
