"""Datastore references in runs (``ds.as_mount()`` and the like, on the wire as
``{"$data_reference": {...}}``), on the real engine: the script gets the data at the path its
argument and ``AZUREML_DATAREFERENCE_<name>`` say, read-only for a mount, a writable copy for a
download; an upload's folder goes back into the datastore; a node keeps one copy per content; and
bad references are refused at submit (422, 403) or fail the run at Preparing with a sentence.

Data is put into a ``server`` datastore by writing into the server's data folder, as an admin
would (the upload API has tests of its own); other datastores are registered through the API."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests import testbed
from tests.conftest import TOKEN, Server, start_server
from tests.helpers import (
    add_user,
    make_snapshot,
    submit,
    submit_raw,
    wait_for_status,
    wait_until,
)
from trainhub.runs.datarefs import copy_volume, listing
from trainhub.sdk import Estimator, Experiment, Workspace

pytestmark = pytest.mark.docker

DEFAULT = "workspaceblobstore"
INSTANCE_LABEL = "org.trainhub.instance"

# The sum the scripts and the tests compute over a folder: every file's relative path and content.
CHECKSUM = """
import hashlib, os

def checksum(folder):
    digest = hashlib.sha256()
    for top, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(top, name)
            digest.update(os.path.relpath(path, folder).encode() + b"\\0")
            with open(path, "rb") as fh:
                digest.update(hashlib.sha256(fh.read()).digest())
    return digest.hexdigest()
"""
namespace: dict[str, Any] = {}
exec(CHECKSUM, namespace)  # the same function here as in the runs
checksum = namespace["checksum"]

# Reads every file of the folder its --data-folder argument names, says what it saw, and tries to
# write there.
READER = (
    CHECKSUM
    + """
import json, sys
folder = sys.argv[sys.argv.index("--data-folder") + 1]
seen = {"arg": folder, "checksum": checksum(folder),
        "env": {k: v for k, v in os.environ.items() if k.startswith("AZUREML_DATAREFERENCE_")}}
try:
    with open(os.path.join(folder, "written-by-the-run.txt"), "w") as fh:
        fh.write("run")
    seen["write"] = "ok"
except OSError as exc:
    seen["write"] = exc.strerror
os.makedirs("outputs", exist_ok=True)
json.dump(seen, open("outputs/seen.json", "w"))
if "AZUREML_DATAREFERENCE_results" in os.environ:  # an upload reference: what it saw goes there
    json.dump(seen, open(os.path.join(os.environ["AZUREML_DATAREFERENCE_results"], "seen.json"), "w"))
"""
)

# Writes two files into the folder of its upload reference (the variable only: an inputs element).
WRITER = """
import os
folder = os.environ["AZUREML_DATAREFERENCE_results"]
os.makedirs(os.path.join(folder, "deep"), exist_ok=True)
for name in ("keep.txt", "deep/new.txt"):
    with open(os.path.join(folder, name), "w") as fh:
        fh.write("from " + os.environ["TRAINHUB_RUN_ID"])
"""


def ref(**fields: Any) -> dict[str, Any]:
    return {"$data_reference": {"datastore": DEFAULT, **fields}}


def put_data(root: Path) -> None:
    """A small training set: text, binary, a subfolder and an empty folder."""
    (root / "images" / "cats").mkdir(parents=True, exist_ok=True)
    (root / "empty").mkdir(exist_ok=True)
    (root / "labels.csv").write_text("file,label\ncat1.bin,cat\n")
    (root / "images" / "cats" / "cat1.bin").write_bytes(os.urandom(300_000))
    (root / "images" / "readme.md").write_text("cats")


def add_datastore(client: httpx.Client, name: str, kind: str, **values: Any) -> None:
    """A datastore registered by an admin through the API."""
    body = {"name": name, "kind": kind, **values}
    response = client.post("/api/v1/datastores", json=body)
    assert response.status_code == 201, response.text


def copies(server: Server) -> list[dict[str, Any]]:
    with sqlite3.connect(server.data / "trainhub.db", timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("select * from datastore_copies order by node")]


def data_volumes(server: Server, socket: str | None = None) -> list[str]:
    """The cached copies of datastore folders this server keeps on an engine."""
    client = docker.DockerClient(base_url=f"unix://{socket}") if socket else docker.from_env()
    try:
        labels = [f"{INSTANCE_LABEL}={server.instance_id()}", "org.trainhub.kind=datastore-copy"]
        found = client.api.volumes(filters={"label": labels}).get("Volumes") or []
        return sorted(v["Name"] for v in found)
    finally:
        client.close()


def remove_volumes(server: Server, socket: str | None = None) -> None:
    """This server's volumes on an engine, once the containers of its last runs are gone (the
    server removes them just after a run's end is recorded)."""
    client = docker.DockerClient(base_url=f"unix://{socket}") if socket else docker.from_env()
    try:
        labels = [f"{INSTANCE_LABEL}={server.instance_id()}"]
        for volume in client.api.volumes(filters={"label": labels}).get("Volumes") or []:
            name = volume["Name"]

            def unused(name: str = name) -> bool:
                return not client.api.containers(all=True, filters={"volume": name})

            wait_until(unused, f"no container holds {name}", timeout=30)
            client.api.remove_volume(name, force=True)
    finally:
        client.close()


def run_to_end(client: httpx.Client, script: str, **estimator: Any) -> dict[str, Any]:
    run = submit(client, script, experiment="datastores", **estimator)
    return wait_for_status(client, run["runId"], timeout=120)


def completed(client: httpx.Client, script: str, **estimator: Any) -> dict[str, Any]:
    done = run_to_end(client, script, **estimator)
    assert done["status"] == "Completed", done["error"]
    return done


def seen(client: httpx.Client, run: dict[str, Any]) -> dict[str, Any]:
    found = client.get(f"/api/v1/runs/{run['runId']}/files/outputs/seen.json")
    assert found.status_code == 200, found.text
    result: dict[str, Any] = found.json()
    return result


def build_log(client: httpx.Client, run: dict[str, Any]) -> str:
    return client.get(f"/api/v1/runs/{run['runId']}/files/logs/build_log.txt").text


@pytest.fixture(scope="module")
def ds_server(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Server]:
    srv = start_server(tmp_path_factory, "datastore-data")
    put_data(srv.data / "datastores" / DEFAULT / "train")
    yield srv
    try:
        srv.cleanup()
    finally:
        remove_volumes(srv)


@pytest.fixture
def dclient(ds_server: Server) -> httpx.Client:
    return ds_server.client()


def test_a_mount_is_the_datastore_folder_read_only_at_the_argument_and_the_variable(
    ds_server: Server, dclient: httpx.Client
) -> None:
    expected = checksum(ds_server.data / "datastores" / DEFAULT / "train")
    run = completed(dclient, READER, script_params={"--data-folder": ref(path="train")})
    result = seen(dclient, run)
    assert result["checksum"] == expected
    assert result["arg"] == f"/trainhub/data/{DEFAULT}"
    assert result["env"] == {f"AZUREML_DATAREFERENCE_{DEFAULT}": f"/trainhub/data/{DEFAULT}"}
    assert result["write"] == "Read-only file system"
    # The run's definition shows the reference as Azure ML did.
    assert run["runDefinition"]["arguments"] == [
        "--data-folder",
        f"$AZUREML_DATAREFERENCE_{DEFAULT}",
    ]
    assert f"datastore {DEFAULT}/train: copied 3 files" in build_log(dclient, run)


def test_the_sdk_s_references_reach_the_run(
    ds_server: Server, dclient: httpx.Client, tmp_path: Path
) -> None:
    """Azure ML's way: ``ds.path('train').as_mount()`` in script_params, an upload in inputs."""
    (tmp_path / "train.py").write_text(READER)
    ws = Workspace(ds_server.url, token=TOKEN)
    ds = ws.get_default_datastore()
    estimator = Estimator(
        str(tmp_path),
        entry_script="train.py",
        script_params={"--data-folder": ds.path("train").as_mount(), "--regularization": 0.8},
        inputs=[ds.path("sdk-out").as_upload(path_on_compute="out")],
    )
    run = Experiment(ws, "datastores").submit(estimator)
    run.wait_for_completion()
    details = run.get_details()
    assert details["status"] == "Completed", details["error"]
    result = seen(dclient, {"runId": run.id})
    assert result["checksum"] == checksum(ds_server.data / "datastores" / DEFAULT / "train")
    # A sub-path's reference is named by the SDK (a uuid, as in Azure ML): its variable and the
    # argument give the same path.
    mount = next(k for k, v in result["env"].items() if v == result["arg"])
    assert result["arg"] == f"/trainhub/data/{mount.removeprefix('AZUREML_DATAREFERENCE_')}"
    assert sorted(result["env"].values()) == sorted([result["arg"], "/trainhub/wd/out"])
    assert (ds_server.data / "datastores" / DEFAULT / "sdk-out").is_dir()


def test_a_second_run_on_the_node_reuses_the_copy_and_transfers_nothing(
    ds_server: Server, dclient: httpx.Client
) -> None:
    reference = {"--data-folder": ref(path="train/images")}
    first = completed(dclient, READER, script_params=reference)
    volumes, records = data_volumes(ds_server), copies(ds_server)
    second = completed(dclient, READER, script_params=reference)
    assert seen(dclient, second)["checksum"] == seen(dclient, first)["checksum"]
    assert f"datastore {DEFAULT}/train/images: reused the copy on local" in build_log(
        dclient, second
    )
    assert "copied" not in build_log(dclient, second)
    # No new volume, no new record: the record of the one copy was only used again.
    assert data_volumes(ds_server) == volumes
    again = copies(ds_server)
    assert [(r["key"], r["created_at"]) for r in again] == [
        (r["key"], r["created_at"]) for r in records
    ]
    mine = next(r for r in again if r["path"] == "train/images")
    assert (mine["files"], mine["datastore"]) == (2, DEFAULT)
    assert mine["last_used_at"] > mine["created_at"]


def test_runs_wanting_the_same_new_copy_at_once_make_it_once(
    ds_server: Server, dclient: httpx.Client
) -> None:
    folder = ds_server.data / "datastores" / DEFAULT / "together"
    put_data(folder)
    reference = {"--data-folder": ref(path="together")}
    runs = [submit(dclient, READER, experiment="datastores", script_params=reference) for _ in "ab"]
    done = [wait_for_status(dclient, r["runId"], timeout=120) for r in runs]
    assert [d["status"] for d in done] == ["Completed", "Completed"]
    logs = [build_log(dclient, d) for d in done]
    assert sum("together: copied 3 files" in log for log in logs) == 1
    assert sum("together: reused the copy on local" in log for log in logs) == 1
    assert {seen(dclient, d)["checksum"] for d in done} == {checksum(folder)}


def test_a_copy_left_half_filled_is_never_used(ds_server: Server, dclient: httpx.Client) -> None:
    folder = ds_server.data / "datastores" / DEFAULT / "interrupted"
    put_data(folder)
    # What a server killed while filling the copy leaves: the volume, part of the data, no record.
    volume = copy_volume(ds_server.instance_id(), listing(folder).key)
    client = docker.from_env()
    try:
        client.volumes.create(volume, labels={INSTANCE_LABEL: ds_server.instance_id()})
        client.containers.run(
            "trainhub/base:cpu",
            ["sh", "-c", "echo partial > /v/labels.csv"],
            mounts=[docker.types.Mount("/v", volume, type="volume")],
            remove=True,
        )
    finally:
        client.close()
    run = completed(dclient, READER, script_params={"--data-folder": ref(path="interrupted")})
    assert seen(dclient, run)["checksum"] == checksum(folder)
    assert "interrupted: copied 3 files" in build_log(dclient, run)


def test_changed_data_is_a_new_copy(ds_server: Server, dclient: httpx.Client) -> None:
    folder = ds_server.data / "datastores" / DEFAULT / "changing"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.txt").write_text("one")
    reference = {"--data-folder": ref(path="changing")}
    completed(dclient, READER, script_params=reference)
    (folder / "a.txt").write_text("two, longer")
    second = completed(dclient, READER, script_params=reference)
    assert seen(dclient, second)["checksum"] == checksum(folder)
    assert "changing: copied 1 files" in build_log(dclient, second)


def test_a_download_of_a_sub_path_is_a_writable_copy_at_path_on_compute(
    ds_server: Server, dclient: httpx.Client
) -> None:
    folder = ds_server.data / "datastores" / DEFAULT / "train" / "images"
    expected = checksum(folder)
    run = completed(
        dclient,
        READER,
        script_params={
            "--data-folder": ref(path="train/images", mode="download", path_on_compute="data")
        },
    )
    result = seen(dclient, run)
    assert result["checksum"] == expected
    assert result["arg"] == "/trainhub/wd/data"
    assert result["write"] == "ok"
    # The copy was the run's own: the datastore is as it was.
    assert not (folder / "written-by-the-run.txt").exists()
    assert checksum(folder) == expected


def test_an_upload_goes_back_into_the_datastore_and_keeps_existing_files(
    ds_server: Server, dclient: httpx.Client
) -> None:
    target = ds_server.data / "datastores" / DEFAULT / "results"
    target.mkdir(parents=True, exist_ok=True)
    (target / "keep.txt").write_text("there before")
    upload = ref(mode="upload", path="results", name="results")
    run = completed(dclient, WRITER, inputs=[upload])
    assert (target / "deep" / "new.txt").read_text() == f"from {run['runId']}"
    assert (target / "keep.txt").read_text() == "there before"  # overwrite=False
    assert "1 existing files kept" in build_log(dclient, run)

    replaced = completed(
        dclient,
        WRITER,
        inputs=[{"$data_reference": {**upload["$data_reference"], "overwrite": True}}],
    )
    assert (target / "keep.txt").read_text() == f"from {replaced['runId']}"


HOSTILE_WRITER = """
import os
folder = os.environ["AZUREML_DATAREFERENCE_results"]
os.makedirs(os.path.join(folder, "escape"), exist_ok=True)
with open(os.path.join(folder, "escape", "evil.txt"), "w") as fh:
    fh.write("outside?")
os.symlink("/etc/passwd", os.path.join(folder, "passwd"))
os.symlink("fine.txt", os.path.join(folder, "inner"))
with open(os.path.join(folder, "fine.txt"), "w") as fh:
    fh.write("inside")
"""


def test_an_upload_never_writes_outside_the_datastore(
    ds_server: Server, dclient: httpx.Client, tmp_path: Path
) -> None:
    target = ds_server.data / "datastores" / DEFAULT / "hostile"
    target.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (target / "escape").symlink_to(outside)  # a link out, there before the run
    run = completed(
        dclient, HOSTILE_WRITER, inputs=[ref(mode="upload", path="hostile", name="results")]
    )
    assert (target / "fine.txt").read_text() == "inside", run["runId"]
    assert list(outside.iterdir()) == []
    # Files and folders only: no link of the run's comes back, whatever it points to.
    assert not (target / "passwd").is_symlink() and not (target / "inner").is_symlink()


def test_an_upload_of_a_failed_run_is_kept_too(ds_server: Server, dclient: httpx.Client) -> None:
    target = ds_server.data / "datastores" / DEFAULT / "failed"
    run = run_to_end(
        dclient,
        WRITER + "\nraise SystemExit(3)\n",
        inputs=[ref(mode="upload", path="failed", name="results")],
    )
    assert run["status"] == "Failed"
    assert (target / "keep.txt").read_text() == f"from {run['runId']}"


ROOT_WRITER = """
import os
root = os.environ["AZUREML_DATAREFERENCE_rooted"]
for name in (".trainhub/sums/labels.csv.sha256", ".trainhub/new.txt", "fine.txt"):
    os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
    with open(os.path.join(root, name), "w") as fh:
        fh.write("from the run")
"""


def test_the_datastores_own_folder_is_never_seen_nor_written_by_a_run(
    ds_server: Server, dclient: httpx.Client
) -> None:
    add_datastore(dclient, "rooted", "server")
    root = ds_server.data / "datastores" / "rooted"
    put_data(root)
    expected = checksum(root)
    (root / ".trainhub" / "sums").mkdir(parents=True)
    (root / ".trainhub" / "sums" / "labels.csv.sha256").write_text("the server's own")
    run = completed(dclient, READER, script_params={"--data-folder": ref(datastore="rooted")})
    assert seen(dclient, run)["checksum"] == expected
    completed(dclient, ROOT_WRITER, inputs=[ref(datastore="rooted", mode="upload")])
    assert (root / "fine.txt").read_text() == "from the run"
    assert (root / ".trainhub" / "sums" / "labels.csv.sha256").read_text() == "the server's own"
    assert not (root / ".trainhub" / "new.txt").exists()


def test_a_shared_datastore_is_mounted_from_the_nodes_folder(
    ds_server: Server, dclient: httpx.Client, tmp_path: Path
) -> None:
    put_data(tmp_path)
    add_datastore(dclient, "labshare", "shared", paths={"*": str(tmp_path)})
    run = completed(
        dclient,
        READER,
        script_params={"--data-folder": ref(datastore="labshare", path="images")},
    )
    result = seen(dclient, run)
    assert result["checksum"] == checksum(tmp_path / "images")
    assert result["write"] == "Read-only file system"
    assert result["env"] == {"AZUREML_DATAREFERENCE_labshare": "/trainhub/data/labshare"}


def test_a_shared_datastore_gives_a_writable_copy_and_takes_an_upload(
    ds_server: Server, dclient: httpx.Client, tmp_path: Path
) -> None:
    put_data(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "seen.json").write_text("there before")
    expected = checksum(tmp_path / "images")
    add_datastore(dclient, "scratch", "shared", paths={"local": str(tmp_path)})
    run = completed(
        dclient,
        READER,
        script_params={"--data-folder": ref(datastore="scratch", path="images", mode="download")},
        inputs=[ref(datastore="scratch", path="out/new", mode="upload", name="results")],
    )
    result = seen(dclient, run)
    assert (result["checksum"], result["write"]) == (expected, "ok")
    assert not (tmp_path / "images" / "written-by-the-run.txt").exists()
    assert json.loads((tmp_path / "out" / "new" / "seen.json").read_text()) == result
    # overwrite=False keeps what is there.
    completed(
        dclient,
        READER,
        script_params={"--data-folder": ref(datastore="scratch", path="images")},
        inputs=[ref(datastore="scratch", path="out", mode="upload", name="results")],
    )
    assert (tmp_path / "out" / "seen.json").read_text() == "there before"


def test_an_upload_folder_named_like_a_command_is_only_a_name(
    ds_server: Server, dclient: httpx.Client, tmp_path: Path
) -> None:
    add_datastore(dclient, "oddnames", "shared", paths={"*": str(tmp_path)})
    odd = "a b;touch $(echo pwned)"
    completed(
        dclient, WRITER, inputs=[ref(datastore="oddnames", path=odd, mode="upload", name="results")]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [odd]
    assert (tmp_path / odd / "keep.txt").exists()


def test_a_shared_path_missing_on_the_node_fails_the_run_at_preparing(
    ds_server: Server, dclient: httpx.Client, tmp_path: Path
) -> None:
    missing = tmp_path / "not-mounted-here"
    add_datastore(dclient, "nfs", "shared", paths={"local": str(missing)})
    run = run_to_end(
        dclient, READER, script_params={"--data-folder": ref(datastore="nfs", mode="download")}
    )
    assert run["status"] == "Failed"
    assert run["properties"]["reason"] == "data_unavailable"
    assert run["error"]["code"] == "UserError"
    assert f"datastore nfs: {missing} does not exist on node local" in run["error"]["message"]
    assert [e["status"] for e in run["statusHistory"]] == ["Queued", "Preparing", "Failed"]


SUBMIT_REFUSALS = {
    "unknown datastore": (
        {"script_params": {"--data": ref(datastore="nosuchstore")}},
        "script_params",
        "there is no datastore 'nosuchstore' on this server",
    ),
    "path climbing out": (
        {"inputs": [ref(path="train/../../../etc")]},
        "inputs",
        "inputs[0].path: 'train/../../../etc' must be a folder inside the datastore",
    ),
    "absolute path": (
        {"script_params": {"--data": ref(path="/etc")}},
        "script_params",
        "must be a folder inside the datastore",
    ),
    "the datastore's own folder": (
        {"inputs": [ref(path=".trainhub/sums", mode="upload")]},
        "inputs",
        "inputs[0].path: '.trainhub' is the datastore's own folder",
    ),
    "missing folder": (
        {"script_params": {"--data": ref(path="no/such/folder")}},
        "script_params",
        f"datastore '{DEFAULT}' has no folder 'no/such/folder'",
    ),
    "reference in a field that cannot take one": (
        {"environment_variables": {"DATA": ref()}},
        "environment_variables",
        "a data reference can only be a value of script_params or an element of inputs",
    ),
    "reference inside a list": (
        {"script_params": {"--data": [ref()]}},
        "script_params",
        "a data reference can only be a value of script_params or an element of inputs",
    ),
    "without containers": (
        {"use_docker": False, "inputs": [ref()]},
        "use_docker",
        "data references (datastores) need use_docker=True for now",
    ),
}


@pytest.mark.parametrize("case", list(SUBMIT_REFUSALS))
def test_bad_references_are_refused_at_submit_naming_the_field(
    dclient: httpx.Client, case: str
) -> None:
    estimator, field, message = SUBMIT_REFUSALS[case]
    before = dclient.get("/api/v1/runs", params={"experiment": "refused"}).json()
    response = submit_raw(
        dclient,
        {"entry_script": "train.py", **estimator},
        make_snapshot({"train.py": "print(1)"}),
        "refused",
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert message in response.json()["error"]
    assert dclient.get("/api/v1/runs", params={"experiment": "refused"}).json() == before


def test_members_cannot_upload_into_a_read_only_datastore(
    ds_server: Server, dclient: httpx.Client
) -> None:
    add_datastore(dclient, "curated", "server", readOnly=True)
    member = ds_server.client(add_user(dclient, "datauser"))
    upload = {"inputs": [ref(datastore="curated", mode="upload", name="results")]}
    refused = submit_raw(
        member, {"entry_script": "train.py", **upload}, make_snapshot({"train.py": WRITER})
    )
    assert refused.status_code == 403, refused.text
    assert "datastore 'curated' is read-only" in refused.json()["error"]
    # Reading it is fine for them, and an admin may write into it.
    completed(member, READER, script_params={"--data-folder": ref(datastore="curated")})
    run = completed(dclient, WRITER, **upload)
    assert (ds_server.data / "datastores" / "curated" / "keep.txt").exists(), run["runId"]


# A remote node (the test bed, under the flock) -----------------------------------------------------
MPI_READER = (
    CHECKSUM
    + """
import json, sys
from mpi4py import MPI
folder = sys.argv[sys.argv.index("--data-folder") + 1]
mine = {"node": os.environ["TRAINHUB_NODE"], "checksum": checksum(folder)}
world = MPI.COMM_WORLD.gather(mine, root=0)
if MPI.COMM_WORLD.Get_rank() == 0:
    os.makedirs("outputs", exist_ok=True)
    json.dump({"world": world}, open("outputs/seen.json", "w"))
"""
)


@pytest.fixture
def remote_data(cluster: Server) -> Iterator[Path]:
    folder = cluster.data / "datastores" / DEFAULT / "remote"
    put_data(folder)
    yield folder
    for node in ("n1", "n2"):
        remove_volumes(cluster, f"/run/docker-th{node}.sock")


@pytest.mark.slow
def test_a_remote_node_gets_the_data_once_and_every_node_of_a_run_gets_it(
    cluster: Server, nclient: httpx.Client, bed: dict[str, testbed.Node], remote_data: Path
) -> None:
    nclient.post("/api/v1/targets", json={"name": "only-n2", "nodes": ["n2"]})
    reference = {"--data-folder": ref(path="remote")}
    first = completed(nclient, READER, script_params=reference, compute_target="only-n2")
    assert first["properties"]["node"] == "n2"
    assert seen(nclient, first)["checksum"] == checksum(remote_data)
    assert f"datastore {DEFAULT}/remote: copied 3 files" in build_log(nclient, first)
    socket = bed["n2"].docker_socket
    assert len(data_volumes(cluster, socket)) == 1

    # Again, with an upload: what the run wrote on n2 comes back into the datastore.
    second = completed(
        nclient,
        READER,
        script_params=reference,
        inputs=[ref(mode="upload", path="from-n2", name="results")],
        compute_target="only-n2",
    )
    assert f"datastore {DEFAULT}/remote: reused the copy on n2" in build_log(nclient, second)
    back = json.loads((remote_data.parent / "from-n2" / "seen.json").read_text())
    assert back == seen(nclient, second)
    assert len(data_volumes(cluster, socket)) == 1
    assert [r["node"] for r in copies(cluster)] == ["n2"]

    # A two-node run: both nodes have the data at the same path (n1 gets its copy now).
    both = completed(
        nclient,
        MPI_READER,
        script_params=reference,
        compute_target="gpu-cluster",
        node_count=2,
        distributed_training={"type": "mpi"},
    )
    world = seen(nclient, both)["world"]
    assert sorted(w["node"] for w in world) == ["n1", "n2"]
    assert {w["checksum"] for w in world} == {checksum(remote_data)}
    log = build_log(nclient, both)
    assert "reused the copy on n2" in log and "copied 3 files" in log and "to n1" in log
    assert sorted(r["node"] for r in copies(cluster)) == ["n1", "n2"]


def test_the_volumes_of_a_run_are_removed_after_it(
    ds_server: Server, dclient: httpx.Client
) -> None:
    completed(
        dclient,
        READER,
        script_params={"--data-folder": ref(path="train", mode="download")},
        inputs=[ref(mode="upload", path="gone", name="results")],
    )
    client = docker.from_env()
    labels = [f"{INSTANCE_LABEL}={ds_server.instance_id()}", "org.trainhub.kind=run-data"]
    try:
        wait_until(  # removed with the run's container, just after its end is recorded
            lambda: not client.api.volumes(filters={"label": labels}).get("Volumes"),
            "the run's own volumes are gone",
        )
    finally:
        client.close()


def test_a_node_back_from_an_outage_loses_the_data_volumes_of_runs_that_ended_meanwhile(
    cluster: Server, nclient: httpx.Client, bed: dict[str, testbed.Node]
) -> None:
    """A run's own data volume left on a node (the node was away when the run ended, or the
    server died): removed when the node is Ready again; a volume of another server stays."""
    n2 = bed["n2"]
    engine = docker.DockerClient(base_url=f"unix://{n2.docker_socket}")
    mine = {INSTANCE_LABEL: cluster.instance_id(), "org.trainhub.kind": "run-data"}
    try:
        engine.api.create_volume(
            "th-test-leftover", labels={**mine, "org.trainhub.run_id": "ended_1_abc"}
        )
        engine.api.create_volume(
            "th-test-other-server",
            labels={**mine, INSTANCE_LABEL: "another", "org.trainhub.run_id": "x"},
        )
        testbed.restart_sshd(n2)  # the connection drops; the node comes back Ready
        wait_until(
            lambda: not engine.api.volumes(filters={"name": "th-test-leftover"})["Volumes"],
            "the leftover volume is removed",
            timeout=60,
        )
        assert nclient.get("/api/v1/nodes/n2").json()["state"] == "Ready"
        assert engine.api.volumes(filters={"name": "th-test-other-server"})["Volumes"]
    finally:
        for name in ("th-test-leftover", "th-test-other-server"):
            with contextlib.suppress(docker.errors.NotFound):
                engine.api.remove_volume(name, force=True)
        engine.close()
