"""Datasets (Azure ML's ``Dataset.File`` / ``Dataset.Tabular``), through the SDK against a real
server and real Docker runs: a file dataset named as a run's input is the folder its argument
names, holding the dataset's files below their common folder, and ``input_datasets`` says so in
the script; a tabular dataset is read into pandas on the client; registering makes versions; an
``OutputFileDatasetConfig`` copies the run's folder into a datastore and registers it; the runs
that read or wrote a dataset are recorded; bad input is refused with the field named."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TOKEN, Server, start_server
from tests.helpers import make_snapshot, submit_raw
from trainhub.context import _InputDataset
from trainhub.sdk import Datastore, Experiment, ScriptRunConfig, TrainhubError, Workspace
from trainhub.sdk.dataset import DataPath, Dataset, OutputFileDatasetConfig
from trainhub.sdk.errors import ServiceError

pytestmark = pytest.mark.docker

DEFAULT = "workspaceblobstore"

# Lists the folder its --data argument names, what input_datasets says, and writes into --out.
LISTER = """
import json, os, sys
from trainhub import Run

def listed(folder):
    return sorted(os.path.relpath(os.path.join(top, name), folder)
                  for top, _, names in os.walk(folder) for name in names)

run = Run.get_context()
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
inputs = run.input_datasets
seen = {"args": args, "inputs": {}}
for name, value in inputs.items():
    if isinstance(value, str):
        seen["inputs"][name] = {"path": value, "files": listed(value)}
    else:
        seen["inputs"][name] = {"id": value.id, "name": value.name, "to_path": value.to_path()}
if "--out" in args:
    os.makedirs(os.path.join(args["--out"], "deep"), exist_ok=True)
    with open(os.path.join(args["--out"], "deep", "pred.txt"), "w") as fh:
        fh.write("predictions of " + os.environ["TRAINHUB_RUN_ID"])
os.makedirs("outputs", exist_ok=True)
json.dump(seen, open("outputs/seen.json", "w"))
"""


def put_data(root: Path) -> None:
    (root / "train" / "images" / "cats").mkdir(parents=True, exist_ok=True)
    (root / "train" / "labels.csv").write_text("file,label\ncat1.bin,cat\n")
    (root / "train" / "images" / "cats" / "cat1.bin").write_bytes(os.urandom(50_000))
    (root / "train" / "images" / "readme.md").write_text("cats")
    (root / "tables").mkdir(parents=True, exist_ok=True)
    (root / "tables" / "a.csv").write_text("x;y\n1;one\n2;two\n")
    (root / "tables" / "b.csv").write_text("x;y\n3;three\n")
    (root / "tables" / "notes.txt").write_text("not a table")


@pytest.fixture(scope="module")
def data_server(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Server]:
    srv = start_server(tmp_path_factory, "datasets")
    put_data(srv.data / "datastores" / DEFAULT)
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def ws(data_server: Server) -> Workspace:
    return Workspace(data_server.url, token=TOKEN)


def run_script(ws: Workspace, tmp: Path, arguments: list[Any], script: str = LISTER) -> Any:
    (tmp / "train.py").write_text(script)
    config = ScriptRunConfig(source_directory=str(tmp), script="train.py", arguments=arguments)
    run = Experiment(ws, "datasets").submit(config)
    run.wait_for_completion(show_output=False, raise_on_error=True)
    return run


def seen(run: Any, tmp: Path) -> dict[str, Any]:
    run.download_file("outputs/seen.json", str(tmp / "seen.json"))
    result: dict[str, Any] = json.loads((tmp / "seen.json").read_text())
    return result


def lineage(data_server: Server, run_id: str) -> list[dict[str, Any]]:
    found = data_server.client().get(f"/api/v1/runs/{run_id}/datasets")
    assert found.status_code == 200, found.text
    result: list[dict[str, Any]] = found.json()["datasets"]
    return result


def test_a_file_dataset_mounted_by_name_is_its_files_below_their_common_folder(
    data_server: Server, ws: Workspace, tmp_path: Path
) -> None:
    ds = ws.get_default_datastore()
    images = Dataset.File.from_files(path=[(ds, "train/images/**")]).register(ws, "cat-images")
    assert (images.name, images.version) == ("cat-images", 1)
    csvs = Dataset.File.from_files(path=(ds, "train/**/*.csv"))  # unregistered: saved for the run
    run = run_script(
        ws,
        tmp_path,
        [
            "--data",
            images.as_named_input("cats").as_mount(),
            "--labels",
            csvs.as_named_input("labels").as_download(),
        ],
    )
    result = seen(run, tmp_path)
    assert result["args"]["--data"] == "/trainhub/data/cats"
    assert result["inputs"]["cats"] == {
        "path": "/trainhub/data/cats",
        "files": ["cats/cat1.bin", "readme.md"],
    }
    assert result["inputs"]["labels"] == {"path": "/trainhub/data/labels", "files": ["labels.csv"]}
    used = {u["reference"]: u for u in lineage(data_server, run.id)}
    assert used["cats"]["dataset"] == {"id": images.id, "name": "cat-images", "version": 1}
    assert used["cats"]["direction"] == "input" and used["cats"]["mode"] == "mount"
    assert used["labels"]["dataset"]["name"] is None  # a saved, unregistered dataset
    assert used["labels"]["mode"] == "download"


def test_a_dataset_given_as_itself_is_its_id_in_the_arguments_and_an_object_in_the_run(
    ws: Workspace, tmp_path: Path
) -> None:
    ds = ws.get_default_datastore()
    images = Dataset.File.from_files(path=(ds, "train/images/cats/cat1.bin"))
    run = run_script(ws, tmp_path, ["--data", images.as_named_input("pics")])
    result = seen(run, tmp_path)
    assert result["args"]["--data"] == images.id
    assert result["inputs"]["pics"] == {"id": images.id, "name": None, "to_path": ["/cat1.bin"]}


def test_a_tabular_dataset_is_read_into_pandas_on_the_client(ws: Workspace) -> None:
    ds = ws.get_default_datastore()
    table = Dataset.Tabular.from_delimited_files(path=[(ds, "tables/*.csv")], separator=";")
    frame = table.to_pandas_dataframe()
    assert list(frame.columns) == ["x", "y"]
    assert frame["x"].tolist() == [1, 2, 3]
    assert frame["y"].tolist() == ["one", "two", "three"]
    registered = table.register(ws, "numbers", description="three rows")
    again = Dataset.get_by_name(ws, "numbers")
    assert again.id == registered.id and again.description == "three rows"
    assert again.to_pandas_dataframe().equals(frame)


def test_an_input_dataset_reads_its_mounted_files_in_the_run(tmp_path: Path) -> None:
    """What ``input_datasets[name]`` answers inside a run, for a tabular dataset given as itself
    (the run's image needs pandas for it, as on Azure ML; here it is the test's)."""
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "a.csv").write_text("1|one\n")
    (tmp_path / "b.csv").write_text("2|two\n")
    info = {
        "id": "abc",
        "kind": "tabular",
        "options": {"separator": "|", "header": False, "encoding": "utf8"},
        "path": str(tmp_path),
    }
    frame = _InputDataset(info).to_pandas_dataframe()
    assert frame.values.tolist() == [[2, "two"], [1, "one"]]  # b.csv, then part/a.csv
    assert _InputDataset(info).to_path() == ["/b.csv", "/part/a.csv"]


def test_a_file_dataset_downloads_below_its_folder_byte_for_byte(
    data_server: Server, ws: Workspace, tmp_path: Path
) -> None:
    ds = ws.get_default_datastore()
    images = Dataset.File.from_files(path=[DataPath(ds, "train/images")])
    assert sorted(images.to_path()) == ["/cats/cat1.bin", "/readme.md"]
    local = images.download(tmp_path / "got", show_progress=False)
    assert sorted(Path(p).relative_to(tmp_path / "got").as_posix() for p in local) == [
        "cats/cat1.bin",
        "readme.md",
    ]
    source = data_server.data / "datastores" / DEFAULT / "train" / "images" / "cats" / "cat1.bin"
    digest = hashlib.sha256((tmp_path / "got" / "cats" / "cat1.bin").read_bytes()).hexdigest()
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()


def test_registering_makes_versions_and_get_by_name_finds_them(ws: Workspace) -> None:
    ds = ws.get_default_datastore()
    first = Dataset.File.from_files(path=(ds, "train/labels.csv")).register(ws, "labels")
    same = Dataset.File.from_files(path=(ds, "train/labels.csv")).register(
        ws, "labels", create_new_version=True
    )
    assert (first.version, same.version) == (1, 1)  # the same data: the version that has it
    other = Dataset.File.from_files(path=(ds, "train/**"))
    with pytest.raises(ServiceError, match="create_new_version=True") as refused:
        other.register(ws, "labels")
    assert "HTTP 409" in str(refused.value)
    second = other.register(ws, "labels", create_new_version=True, tags={"stage": "all"})
    assert second.version == 2 and second.tags == {"stage": "all"}
    assert Dataset.get_by_name(ws, "labels").version == 2
    assert Dataset.get_by_name(ws, "LABELS", version=1).id == first.id  # names ignore case
    assert Dataset.get_by_id(ws, second.id).name == "labels"
    assert "labels" in Dataset.get_all(ws)
    assert '"registration"' in repr(second) and "train/**" in repr(second)


def test_an_output_dataset_uploads_the_run_s_folder_and_registers_it(
    data_server: Server, ws: Workspace, tmp_path: Path
) -> None:
    ds = ws.get_default_datastore()
    output = (
        OutputFileDatasetConfig(name="preds", destination=(ds, "predictions/{run-id}"))
        .as_upload()
        .register_on_complete("predictions")
    )
    run = run_script(ws, tmp_path, ["--out", output])
    assert seen(run, tmp_path)["args"]["--out"] == "/trainhub/data/preds"
    written = (
        data_server.data / "datastores" / DEFAULT / "predictions" / run.id / "deep" / "pred.txt"
    )
    assert written.read_text() == f"predictions of {run.id}"
    registered = Dataset.get_by_name(ws, "predictions")
    assert registered._paths == [f"predictions/{run.id}/**"]
    assert registered.to_path() == ["/deep/pred.txt"]
    out = lineage(data_server, run.id)
    assert [(u["reference"], u["direction"], u["dataset"]["name"]) for u in out] == [
        ("preds", "output", "predictions")
    ]
    # Without a destination: the default datastore's dataset/{run-id}/{output-name}.
    run = run_script(ws, tmp_path, ["--out", OutputFileDatasetConfig(name="plain")])
    plain = data_server.data / "datastores" / DEFAULT / "dataset" / run.id / "plain"
    assert (plain / "deep" / "pred.txt").is_file()


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"paths": ["train/nothing-here/**"]}, "paths", "no file of datastore"),
        ({"paths": ["../outside"]}, "paths[0]", "climbs out"),
        ({"paths": []}, "paths", "one or more paths"),
        ({"datastore": "nope"}, "datastore", "no datastore 'nope'"),
        ({"kind": "parquet"}, "kind", "one of file, tabular"),
        ({"options": {"separator": ";"}}, "options", "no reading options"),
        ({"kind": "tabular", "options": {"separator": ";;"}}, "options.separator", "one char"),
        ({"kind": "tabular", "options": {"sheet": 1}}, "options", "unknown option"),
        ({"name": "-bad"}, "name", "cannot be a dataset name"),
    ],
)
def test_a_bad_dataset_is_refused_naming_the_field(
    data_server: Server, body: dict[str, Any], field: str, message: str
) -> None:
    full = {"kind": "file", "datastore": DEFAULT, "paths": ["train/**"], **body}
    answer = data_server.client().post("/api/v1/datasets", json=full)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert message in answer.json()["error"]


def test_a_shared_datastore_s_dataset_is_a_whole_folder(data_server: Server) -> None:
    client = data_server.client()
    added = client.post(
        "/api/v1/datastores", json={"name": "nfs", "kind": "shared", "paths": {"*": "/srv/nfs"}}
    )
    assert added.status_code == 201, added.text
    body = {"kind": "file", "datastore": "nfs", "paths": ["folder/*.csv"]}
    refused = client.post("/api/v1/datasets", json=body)
    assert refused.status_code == 422 and "whole folder" in refused.json()["error"]
    body["paths"] = ["folder/**"]
    assert client.post("/api/v1/datasets", json=body).status_code == 201


def test_the_sdk_refuses_what_trainhub_cannot_read(ws: Workspace) -> None:
    ds = ws.get_default_datastore()
    with pytest.raises(TrainhubError, match="not URLs"):
        Dataset.File.from_files(path="https://example.com/data.csv")
    other = Datastore.register_server(ws, "second_store")
    with pytest.raises(TrainhubError, match="in one datastore"):
        Dataset.File.from_files(path=[(ds, "train/**"), (other, "train/**")])
    with pytest.raises(ServiceError, match="no file of datastore"):
        Dataset.File.from_files(path=(ds, "missing/**"))


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ({"name": "x", "dataset": {"id": "0" * 32}}, "no dataset with id"),
        ({"name": "x", "mode": "direct", "datastore": DEFAULT}, "'direct' is for datasets"),
        ({"name": "x", "mode": "mount", "datastore": DEFAULT, "register_as": "y"}, "for uploads"),
        ({"name": "x", "mode": "upload", "dataset": {"id": "0" * 32}}, "an output is an upload"),
    ],
)
def test_a_bad_dataset_reference_is_refused_at_submit(
    data_server: Server, reference: dict[str, Any], message: str
) -> None:
    spec = {"entry_script": "train.py", "arguments": [{"$data_reference": reference}]}
    answer = submit_raw(
        data_server.client(), spec, make_snapshot({"train.py": "print(1)"}), "datasets"
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "arguments"
    assert message in answer.json()["error"]


def test_datasets_need_a_login(data_server: Server) -> None:
    anonymous = httpx.Client(base_url=data_server.url)
    assert anonymous.get("/api/v1/datasets").status_code == 401
