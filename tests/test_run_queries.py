"""Run queries and details through the real server and engine, as an Azure ML v1 notebook uses
them: get_runs and Run.list with filters, set-once properties, tags removed, display name and
description, a run's logs, its snapshot as a zip, its environment."""

from __future__ import annotations

import secrets
import textwrap
import types
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import TOKEN, Server
from tests.helpers import add_user, login
from tests.html import parse
from trainhub import Experiment, Run, RunNotFoundError, ValidationError, Workspace
from trainhub.runs import queries
from trainhub.sdk import Environment, ScriptRunConfig

pytestmark = pytest.mark.docker

TRAIN = textwrap.dedent(
    """
    import os
    print("hello from the driver", os.environ.get("QUERY_FLAVOUR"))
    os.makedirs("logs", exist_ok=True)
    with open("logs/notes.txt", "w") as f:
        f.write("a note in ./logs")
    """
)
SOURCE = {"train.py": TRAIN, "data/labels.csv": "a,b\n1,2\n", "tools/run.sh": "#!/bin/sh\n"}


@dataclass
class Runs:
    ws: Workspace
    exp: Experiment
    vision: Run  # tags team=vision, an unregistered environment with a variable
    nlp: Run  # tags team=nlp, a registered environment
    env_name: str
    source: Path


@pytest.fixture(scope="module")
def runs(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """Two tiny runs of one experiment of its own, submitted once for the whole module."""
    ws = Workspace(server.url, token=TOKEN)
    source = tmp_path_factory.mktemp("queries-source")
    for name, content in SOURCE.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(content)
    (source / "tools/run.sh").chmod(0o755)
    exp = Experiment(ws, f"queries-{secrets.token_hex(3)}")
    env = Environment("queries-vars")
    env.python.user_managed_dependencies = True
    env.environment_variables = {"QUERY_FLAVOUR": "vanilla"}
    vision = exp.submit(
        ScriptRunConfig(str(source), script="train.py", environment=env), tags={"team": "vision"}
    )
    env_name = f"queries-env-{secrets.token_hex(3)}"
    registered = Environment(env_name)
    registered.python.user_managed_dependencies = True
    registered.environment_variables = {"QUERY_FLAVOUR": "registered"}
    registered.register(ws)
    nlp = exp.submit(
        ScriptRunConfig(str(source), script="train.py", environment=env_name),
        tags={"team": "nlp"},
    )
    for run in (vision, nlp):
        run.wait_for_completion()
    yield Runs(ws, exp, vision, nlp, env_name, source)


def ids(found: Iterator[Run]) -> list[str]:
    return [r.id for r in found]


def test_get_runs_filters_on_the_server_newest_first(runs: Runs, server: Server) -> None:
    exp, vision, nlp = runs.exp, runs.vision, runs.nlp
    vision.add_properties({"dataset": "mnist:v1"})
    everything = exp.get_runs()
    assert isinstance(everything, types.GeneratorType), "a generator, as in Azure ML"
    assert ids(everything) == [nlp.id, vision.id]
    assert ids(exp.get_runs(tags="team")) == [nlp.id, vision.id]
    assert ids(exp.get_runs(tags={"team": "vision"})) == [vision.id]
    assert ids(exp.get_runs(properties="dataset")) == [vision.id]
    assert ids(exp.get_runs(properties={"dataset": "mnist:v1"})) == [vision.id]
    assert ids(exp.get_runs(tags={"team": "nlp"}, properties="dataset")) == []
    assert ids(exp.get_runs(type="azureml.scriptrun")) == [nlp.id, vision.id]
    assert ids(exp.get_runs(type="interactive")) == []
    assert ids(exp.get_runs(include_children=True)) == [nlp.id, vision.id]
    assert ids(Run.list(exp, status="Completed", tags={"team": "nlp"})) == [nlp.id]
    assert ids(Run.list(exp, status="Failed")) == []
    # The filters are the server's: a page holds only what matched.
    api = server.client()
    page = api.get(
        "/api/v1/runs",
        params={"experiment": exp.name, "property": "dataset=mnist:v1", "kind": "script"},
    ).json()
    assert [r["runId"] for r in page["runs"]] == [vision.id]
    assert ids(exp.get_runs(properties={"dataset": "mnist:v2"})) == []


def test_unknown_filter_values_are_refused_naming_the_field(runs: Runs, server: Server) -> None:
    api = server.client()
    for params, field in (
        ({"kind": "azureml.pipelinerun"}, "kind"),
        ({"property": "=v1"}, "property"),
        ({"tag": "=x"}, "tag"),
    ):
        response = api.get("/api/v1/runs", params=params)
        assert response.status_code == 422, params
        assert response.json()["field"] == field
    response = api.get("/api/v1/runs", params={"include_children": "maybe"})
    assert response.status_code == 400
    assert "include_children" in response.text
    with pytest.raises(ValidationError) as refused:
        list(runs.exp.get_runs(type="azureml.PipelineRun"))
    assert refused.value.field == "kind" and "script, interactive" in str(refused.value)
    with pytest.raises(TypeError, match="tags is a key"):
        list(runs.exp.get_runs(tags=["team"]))  # type: ignore[arg-type]


def test_properties_are_set_once(runs: Runs, server: Server) -> None:
    run = Run.get(runs.ws, runs.nlp.id)
    run.add_properties({"commit": "1a2b3c", "epochs": 10})
    run.add_properties({"commit": "1a2b3c"})  # the same value again is fine
    with pytest.raises(ValidationError) as refused:
        run.add_properties({"commit": "ffffff", "seed": "7"})
    assert refused.value.field == "properties"
    assert "'commit'" in str(refused.value) and "'1a2b3c'" in str(refused.value)
    properties = run.get_properties()
    assert properties["commit"] == "1a2b3c" and properties["epochs"] == "10"
    assert "seed" not in properties, "a refused call changes nothing"
    assert properties["snapshotId"], "trainhub's own properties are there too"
    assert set(properties) - {"commit", "epochs"} <= queries.SYSTEM_PROPERTIES, "names reserved"
    api = server.client()
    for body, words in (
        ({"properties": {"node": "mine"}}, "trainhub sets this property itself"),
        ({"properties": {"config": {"lr": 1}}}, "a property is a string, not dict"),
        ({"properties": {"k": "x" * 5001}}, "longer than 5000 characters"),
        ({"properties": {}}, "at least one"),
    ):
        response = api.post(f"/api/v1/runs/{run.id}/properties", json=body)
        assert response.status_code == 422, body
        assert response.json()["field"] == "properties" and words in response.json()["error"]


def test_display_name_and_description_are_shown_and_checked(runs: Runs, server: Server) -> None:
    run = Run.get(runs.ws, runs.vision.id)
    assert run.display_name is None and run.description is None
    run.display_name = "baseline, lr 0.1"
    run.description = "First try.\nNo augmentation."
    again = Run.get(runs.ws, run.id)
    assert again.display_name == "baseline, lr 0.1"
    assert again.description == "First try.\nNo augmentation."
    details = again.get_details()
    assert (details["kind"], details["parentRunId"]) == ("script", None)
    listed = next(r for r in runs.exp.get_runs() if r.id == run.id)
    assert listed.display_name == "baseline, lr 0.1"
    api = server.client()
    for body, field in (
        ({"displayName": "x" * 257}, "displayName"),
        ({"displayName": 12}, "displayName"),
        ({"displayName": "two\nlines"}, "displayName"),
        ({"description": ["a"]}, "description"),
        ({"description": "d" * 5001}, "description"),
        ({"name": "x"}, "name"),
    ):
        response = api.patch(f"/api/v1/runs/{run.id}", json=body)
        assert response.status_code == 422, body
        assert response.json()["field"] == field, body
    assert Run.get(runs.ws, run.id).display_name == "baseline, lr 0.1", "nothing changed"
    add_user(api, "queries-viewer")
    viewer = login(server.url, "queries-viewer")
    page = parse(viewer.get(f"/runs/{run.id}"))
    assert page.find("display-name").text == "baseline, lr 0.1"
    assert page.find("description").text == "First try. No augmentation."
    table = viewer.get("/runs", params={"experiment": runs.exp.name}).text
    assert '<span class="display-name">baseline, lr 0.1</span>' in table
    forbidden = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {add_user(api, 'queries-other')}"}
    )
    response = forbidden.patch(f"/api/v1/runs/{run.id}", json={"displayName": "mine"})
    assert response.status_code == 403
    viewer.close()
    forbidden.close()


def test_remove_tags(runs: Runs) -> None:
    run = Run.get(runs.ws, runs.nlp.id)
    run.set_tags({"stage": "final", "note": "keep"})
    assert run.remove_tags(["stage", "never-set"]) == {"team": "nlp", "note": "keep"}
    assert run.get_tags() == {"team": "nlp", "note": "keep"}
    assert ids(runs.exp.get_runs(tags="stage")) == []
    assert ids(runs.exp.get_runs(tags={"note": "keep"})) == [run.id]


def test_details_with_logs_and_all_logs(
    runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = runs.vision
    details = run.get_details_with_logs()
    assert "hello from the driver vanilla" in details["logFiles"]["logs/driver_log.txt"]
    assert run.get_details()["logFiles"]["logs/driver_log.txt"].startswith("/api/v1/runs/")
    written = run.get_all_logs(tmp_path / "logs-here")
    assert sorted(Path(p).relative_to(tmp_path / "logs-here").as_posix() for p in written) == [
        "logs/driver_log.txt",
        "logs/notes.txt",
    ]
    assert (tmp_path / "logs-here/logs/notes.txt").read_text() == "a note in ./logs"
    monkeypatch.chdir(tmp_path)
    written = run.get_all_logs()
    assert (tmp_path / "assets" / run.id / "logs" / "notes.txt").is_file()
    assert len(written) == 2
    (tmp_path / "a-file").write_text("")
    with pytest.raises(Exception, match="not a directory"):
        run.get_all_logs(tmp_path / "a-file")


def test_restore_snapshot_gives_the_source_as_a_zip(
    runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = runs.vision
    snapshot = run.get_details()["properties"]["snapshotId"]
    monkeypatch.chdir(tmp_path)
    path = Path(run.restore_snapshot())
    assert path == tmp_path / f"{snapshot}.zip"
    with zipfile.ZipFile(path) as archive:
        files = {i.filename: i for i in archive.infolist() if not i.is_dir()}
        assert sorted(files) == sorted(SOURCE)
        for name, content in SOURCE.items():
            assert archive.read(name).decode() == content
        assert (files["tools/run.sh"].external_attr >> 16) & 0o111, "the script stays executable"
    named = run.restore_snapshot(path=str(tmp_path / "out" / "code.zip"))
    assert named == str(tmp_path / "out" / "code.zip") and zipfile.is_zipfile(named)
    by_id = runs.nlp.restore_snapshot(snapshot_id=snapshot, path=str(tmp_path / "folder"))
    assert by_id == str(tmp_path / "folder" / f"{snapshot}.zip")
    with pytest.raises(RunNotFoundError, match="no snapshot"):
        run.restore_snapshot(snapshot_id="0" * 64)


def test_get_environment(runs: Runs) -> None:
    env = runs.vision.get_environment()
    assert env.name == f"Experiment {runs.exp.name} Environment" and env.version is None
    assert env.environment_variables == {"QUERY_FLAVOUR": "vanilla"}
    assert env.python.user_managed_dependencies and env.docker.enabled
    registered = runs.nlp.get_environment()
    assert (registered.name, registered.version) == (runs.env_name, 1)
    assert registered.environment_variables == {"QUERY_FLAVOUR": "registered"}
    assert runs.nlp.get_portal_url().endswith(f"/runs/{runs.nlp.id}")
