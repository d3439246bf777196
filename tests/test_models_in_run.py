"""``Run.get_context().register_model(...)`` inside a training script: the request travels with the
run's metrics, and the server registers the model once the run's outputs are stored, the run as its
lineage; a bad request is a line of the run's log, never a failed run or server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TOKEN, Server
from tests.helpers import submit, wait_for_status
from trainhub import context
from trainhub.sdk import Model, ModelNotFoundError, Run, Workspace

WEIGHTS = bytes(range(256)) * 64 + b"in-run"
TRAIN = f"""
import json, os
from trainhub import Run
run = Run.get_context()
run.log("accuracy", 0.91)
os.makedirs("outputs", exist_ok=True)
open("outputs/model.pkl", "wb").write({WEIGHTS!r})
model = run.register_model(model_name="in-run-model", model_path="outputs/model.pkl",
                           tags={{"stage": "dev"}}, properties={{"acc": 0.91}},
                           description="registered by the script")
print("in run:", model.name, model.version, model.path)
run.register_model(model_name="never-written", model_path="outputs/missing.pkl")
# A record no context would write (a script writing the records file itself): refused, told.
with open(os.path.join(os.environ["TRAINHUB_CONTEXT_DIR"], "metrics.jsonl"), "a") as f:
    f.write(json.dumps({{"t": "model", "name": "../escape", "path": "outputs/model.pkl"}}) + "\\n")
"""


@pytest.mark.docker
def test_a_model_registered_inside_a_run_is_there_when_the_run_has_ended(
    server: Server, tmp_path: Path
) -> None:
    with server.client() as admin:
        submitted = submit(admin, TRAIN, experiment="in-run-models")
        done = wait_for_status(admin, submitted["runId"], "Completed", timeout=120)
        log = admin.get(f"/api/v1/runs/{done['runId']}/logs").text
    assert "in run: in-run-model None outputs/model.pkl" in log
    assert "trainhub: registered model 'in-run-model' version 1 from outputs/model.pkl" in log
    assert (
        "trainhub: model 'never-written' was not registered: The run has no file or folder "
        "'outputs/missing.pkl' among its stored outputs" in log
    )
    assert (
        "trainhub: model '../escape' was not registered: '../escape' cannot be a model name" in log
    )

    ws = Workspace(server.url, TOKEN)
    model = Model(ws, "in-run-model")
    assert (model.version, model.run_id, model.experiment_name) == (
        1,
        done["runId"],
        "in-run-models",
    )
    assert model.tags == {"stage": "dev"} and model.properties == {"acc": "0.91"}
    assert model.description == "registered by the script" and model.created_by == "admin"
    path = model.download(tmp_path)
    assert Path(path).read_bytes() == WEIGHTS
    assert Run.get(ws, done["runId"]).get_metrics() == {"accuracy": 0.91}  # the records go on
    with pytest.raises(ModelNotFoundError):
        Model(ws, "never-written")


def _in_run(tmp_path: Path) -> Any:
    return context._InRun("run-1", "exp", 1, str(tmp_path))


def test_register_model_in_a_run_records_the_request_and_answers_a_pending_model(
    tmp_path: Path,
) -> None:
    run = _in_run(tmp_path)
    model = run.register_model("net", "./outputs/net", tags={"a": "b"}, description="d")
    assert (model.name, model.version, model.path, model.run_id) == (
        "net",
        None,
        "./outputs/net",
        "run-1",
    )
    [line] = (tmp_path / "metrics.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert {k: v for k, v in record.items() if k != "at"} == {
        "t": "model",
        "name": "net",
        "path": "./outputs/net",
        "tags": {"a": "b"},
        "properties": {},
        "description": "d",
    }


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("a/b", "outputs/m.pkl"), ValueError, "'a/b' cannot be a model name"),
        (("m", "/etc/passwd"), ValueError, "model_path '/etc/passwd' must be a path in the run"),
        (("m", "outputs/../../x"), ValueError, "without '..'"),
        (("m", "./"), ValueError, "must be a path in the run"),
        (("m", "outputs/m.pkl", "dev"), TypeError, "tags is a dict of strings"),
    ],
)
def test_a_bad_in_run_registration_is_an_error_in_the_script(
    tmp_path: Path, args: tuple[Any, ...], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        _in_run(tmp_path).register_model(*args)
    assert (tmp_path / "metrics.jsonl").read_text() == ""
