"""``ScriptRunConfig`` with ``Environment`` objects: a notebook of the later Azure ML v1 years runs on a
real server and Docker with only the workspace line changed; the spec it sends is the Estimator's."""

from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import msgspec
import pytest

from tests.conftest import TOKEN, Server
from tests.test_azureml_compat import compat_server, run_notebook  # noqa: F401 - a fixture
from tests.test_sdk import write_project
from trainhub.sdk import (
    CondaDependencies,
    Datastore,
    Environment,
    MpiConfiguration,
    PyTorchConfiguration,
    RunConfiguration,
    ScriptRunConfig,
    TensorflowConfiguration,
    Workspace,
)
from trainhub.spec import SpecError, parse_estimator

TRAIN = textwrap.dedent(
    """
    import argparse, os, sys
    from azureml.core.run import Run

    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--name")
    parser.add_argument("--data")
    parser.add_argument("--out")
    args = parser.parse_args()
    print("argv:", sys.argv[1:])
    text = open(os.path.join(args.data, "x.txt")).read()
    packages = []
    for module in ("thazml", "sklearn"):
        try:
            packages.append(__import__(module).VALUE)
        except ImportError:
            packages.append("none")
    run = Run.get_context()
    for epoch in range(args.epochs):
        run.log("loss", 1.0 / (1 + epoch))
    run.log("package", " + ".join(packages))
    os.makedirs("outputs", exist_ok=True)
    open("outputs/seen.txt", "w").write(f"{args.name} {text}")
    open("outputs/model.pkl", "wb").write(os.urandom(1000))
    if args.out:
        print("input datasets:", {k: v for k, v in run.input_datasets.items()})
        open(os.path.join(args.out, "pred.txt"), "w").write(text.upper())
    """
)

# Every line the issue lists, in its order, then a dataset run; only the workspace line changed.
NOTEBOOK = textwrap.dedent(
    """
    import azureml.core
    from azureml.core import Workspace, Experiment, Environment, ScriptRunConfig, Dataset, Model
    from azureml.core.conda_dependencies import CondaDependencies
    from azureml.data import OutputFileDatasetConfig
    from azureml.widgets import RunDetails

    print("SDK version:", azureml.core.VERSION)
    ws = Workspace.from_config()
    print("workspace:", ws.name, ws.resource_group, ws.location, ws.subscription_id)
    exp = Experiment(workspace=ws, name="src-notebook")
    ds = ws.get_default_datastore()
    ds.upload(src_dir="./data", target_path="x", overwrite=True, show_progress=False)

    env = Environment("user-managed-env")
    env.python.user_managed_dependencies = True
    src = ScriptRunConfig(source_directory="./scripts", script="train.py",
                          arguments=["--epochs", 3, "--name", "plain", "--data", ds.path("x").as_mount()],
                          environment=env)
    run = exp.submit(src)
    print("shown:", run._repr_html_())  # what a notebook cell showing `run` displays
    run.wait_for_completion(show_output=True)
    print("metrics:", run.get_metrics())
    print("files:", sorted(run.get_file_names()))

    cd = CondaDependencies.create(conda_packages=["scikit-learn"])
    cd.add_pip_package("thazml")
    conda_env = Environment("conda-env")
    conda_env.python.conda_dependencies = cd
    src.run_config.environment = conda_env
    conda_env.docker.enabled = True
    print("base image:", conda_env.docker.base_image)
    run = exp.submit(src)
    run.wait_for_completion(show_output=True)
    print("metrics:", run.get_metrics())
    print("files:", sorted(run.get_file_names()))
    model = run.register_model(model_name="src-model", model_path="./outputs/model.pkl")
    print("model:", model.name, model.version, model.url)
    run.download_file(name="outputs/model.pkl", output_file_path="run-model.pkl")
    Model(ws, "src-model").download(target_dir="./downloaded", exist_ok=True)

    files = Dataset.File.from_files(path=[(ds, "x/**")]).register(ws, "x-files", create_new_version=True)
    table = Dataset.Tabular.from_delimited_files(path=[(ds, "x/*.csv")])
    print("table:", table.to_pandas_dataframe().to_dict("list"))
    out = OutputFileDatasetConfig(destination=(ds, "preds/{run-id}")).as_upload()
    src = ScriptRunConfig(source_directory="./scripts", script="train.py", environment=env,
                          arguments=["--epochs", 1, "--name", "dataset",
                                     "--data", files.as_named_input("xfiles").as_mount(), "--out", out])
    run = exp.submit(src)
    run.wait_for_completion(show_output=True)
    ds.download("./preds", prefix=f"preds/{run.id}", show_progress=False)
    print("prediction:", open(f"./preds/preds/{run.id}/pred.txt").read())
    RunDetails(run).show()
    """
)


@pytest.mark.docker
@pytest.mark.slow  # an environment image is built
def test_a_script_run_config_notebook_runs_with_only_the_workspace_line_changed(
    compat_server: Server,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    write_project(tmp_path / "scripts", {"train.py": TRAIN})
    write_project(tmp_path / "data", {"x.txt": "from the datastore", "t.csv": "a,b\n1,x\n2,y\n"})
    result = run_notebook(compat_server, tmp_path, NOTEBOOK, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    lines = out.splitlines()
    assert lines[0].startswith("SDK version: 1.")
    host = compat_server.url.removeprefix("http://")
    assert lines[1] == f"workspace: {compat_server.url} trainhub {host} self-hosted"
    shown = next(ln for ln in lines if ln.startswith("shown: "))
    assert "<td>src-notebook</td>" in shown and f"{compat_server.url}/runs/" in shown
    argv = "argv: ['--epochs', '3', '--name', 'plain', '--data', '/trainhub/data/"
    assert out.count(argv) == 2, out  # show_output streamed each run's log, the path in it
    metrics = [ast.literal_eval(ln.removeprefix("metrics: ")) for ln in lines if "metrics:" in ln]
    loss = [1.0, 0.5, 1.0 / 3]
    assert metrics == [
        {"loss": loss, "package": "none + none"},
        {"loss": loss, "package": "from the wheel folder + from the local channel"},
    ]
    files = [ast.literal_eval(ln.removeprefix("files: ")) for ln in lines if "files: " in ln]
    expected = [
        "logs/build_log.txt",
        "logs/driver_log.txt",
        "outputs/model.pkl",
        "outputs/seen.txt",
    ]
    assert files == [expected, expected]
    assert "base image: None" in lines
    model = next(ln for ln in lines if ln.startswith("model: ")).split()
    assert model[1:3] == ["src-model", "1"]
    assert model[3] == f"{compat_server.url}/models/src-model/1"
    downloaded = (tmp_path / "downloaded" / "model.pkl").read_bytes()
    assert downloaded == (tmp_path / "run-model.pkl").read_bytes() and len(downloaded) == 1000
    assert "table: {'a': [1, 2], 'b': ['x', 'y']}" in lines
    assert "input datasets: {'xfiles': '/trainhub/data/xfiles'}" in out
    assert "prediction: FROM THE DATASTORE" in lines
    assert any(ln.startswith("Run ") and ": Completed" in ln for ln in lines)  # RunDetails


def test_a_script_run_config_sends_the_estimator_s_spec(tmp_path: Path) -> None:
    ds = Datastore.__new__(Datastore)
    ds.name = "workspaceblobstore"
    env = Environment("conda-env")
    cd = CondaDependencies.create(conda_packages=["numpy"], pip_packages=["six"])
    cd.add_channel("conda-forge")
    cd.add_conda_package("bioconda::pysam")
    env.python.conda_dependencies = cd
    env.docker.base_image = "python:3.11-slim"
    env.environment_variables = {"SEED": "1"}
    run_config = RunConfiguration()
    run_config.environment_variables = {"EXTRA": "2"}
    src = ScriptRunConfig(
        str(tmp_path),
        "train.py",
        arguments=["--lr", 0.1, ds.path("x").as_mount()],
        run_config=run_config,
        compute_target="local",
        environment=Environment("replaced"),
        max_run_duration_seconds=60,
    )
    src.run_config.environment = env  # set after the fact, as notebooks do
    spec = src.to_spec()
    ref = spec["arguments"][2]["$data_reference"]
    assert ref["datastore"] == "workspaceblobstore" and ref["path"] == "x"
    assert spec["arguments"][:2] == ["--lr", 0.1]
    assert spec["conda_packages"] == ["conda-forge::numpy", "bioconda::pysam"]
    assert spec["pip_packages"] == ["six"]
    assert spec["custom_docker_image"] == "python:3.11-slim"
    assert spec["environment_variables"] == {"SEED": "1", "EXTRA": "2"}
    assert spec["max_run_duration_seconds"] == 60
    parsed = parse_estimator(json.dumps(spec))  # the server takes it as any Estimator's
    name = ref["name"]
    assert parsed.command_arguments({name: "/data/x"}) == ["--lr", "0.1", "/data/x"]
    assert list(parsed.references()) == [name]

    user = Environment("um")
    user.python.user_managed_dependencies = True
    user.docker.enabled = False
    spec = ScriptRunConfig(str(tmp_path), "train.py", environment=user).to_spec()
    assert spec["user_managed"] is True and spec["use_docker"] is False


def test_distributed_job_configs_map_onto_distributed_training(tmp_path: Path) -> None:
    def spec_of(config: object) -> dict[str, object]:
        return ScriptRunConfig(str(tmp_path), "t.py", distributed_job_config=config).to_spec()  # type: ignore[arg-type]

    mpi = spec_of(MpiConfiguration(process_count_per_node=2, node_count=3))
    assert mpi["distributed_training"] == {"type": "mpi", "process_count_per_node": 2}
    assert mpi["node_count"] == 3
    torch = spec_of(PyTorchConfiguration(process_count=4, node_count=2))
    assert torch["distributed_training"] == {
        "type": "nccl",
        "communication_backend": "nccl",
        "process_count_per_node": 2,
    }
    tf = spec_of(TensorflowConfiguration(worker_count=2))
    assert tf["distributed_training"] == {
        "type": "ps",
        "worker_count": 2,
        "parameter_server_count": 1,
    }


def test_a_python_command_is_a_script_and_its_arguments_and_others_are_refused(
    tmp_path: Path,
) -> None:
    spec = ScriptRunConfig(str(tmp_path), command="python train.py --lr 0.1").to_spec()
    assert spec["entry_script"] == "train.py" and spec["arguments"] == ["--lr", "0.1"]
    with pytest.raises(ValueError, match="command=.*not supported by trainhub yet"):
        ScriptRunConfig(str(tmp_path), command=["bash", "run.sh"])


def test_environment_pieces_trainhub_lacks_say_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="interpreter_path .*not supported by trainhub yet"):
        Environment("d").python.interpreter_path = "/opt/conda/bin/python"


def test_from_conda_specification_reads_channels_packages_and_pip(tmp_path: Path) -> None:
    (tmp_path / "env.yml").write_text(
        "name: x\nchannels: [conda-forge]\ndependencies:\n  - numpy=1.26\n  - pip:\n    - six\n"
    )
    env = Environment.from_conda_specification("yml-env", str(tmp_path / "env.yml"))
    fields = env.to_spec_fields()
    assert fields["conda_packages"] == ["conda-forge::numpy=1.26"]
    assert fields["pip_packages"] == ["six"]


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ([1, 2], "arguments[1]: an argument is a string, a number, a boolean or a data reference"),
        ({"a": 1}, "arguments[1]: a value is a string, a number"),
        ({"$data_reference": {"path": "x"}}, "arguments[1].datastore: name a datastore"),
    ],
)
def test_a_bad_argument_is_an_error_naming_it(argument: object, message: str) -> None:
    raw = {"entry_script": "t.py", "arguments": ["--x", argument]}
    with pytest.raises(SpecError) as caught:
        parse_estimator(msgspec.json.encode(raw))
    assert caught.value.field == "arguments"
    assert message in caught.value.message


@pytest.mark.docker
def test_mpi_configuration_runs_two_ranks_on_the_local_node(server: Server, tmp_path: Path) -> None:
    from tests.test_mpi_local import MPI_SCRIPT

    write_project(tmp_path / "proj", {"train.py": MPI_SCRIPT})
    ws = Workspace(server.url, token=TOKEN)
    src = ScriptRunConfig(
        source_directory=str(tmp_path / "proj"),
        script="train.py",
        arguments=["--lr", 0.5],
        distributed_job_config=MpiConfiguration(process_count_per_node=2),
    )
    from trainhub.sdk import Experiment

    run = Experiment(ws, "src-mpi").submit(src)
    run.wait_for_completion(raise_on_error=True)
    assert run.get_metrics()["world_size"] == 2
    run.download_file("outputs/world.json", str(tmp_path / "world.json"))
    assert json.loads((tmp_path / "world.json").read_text())["total"] == 3


def test_a_tensorflow_configuration_runs_its_workers_and_parameter_server(
    server: Server, tmp_path: Path
) -> None:
    from trainhub.sdk import Experiment

    script = "import json, os\nprint('task', json.loads(os.environ['TF_CONFIG'])['task'])\n"
    write_project(tmp_path / "proj", {"train.py": script})
    ws = Workspace(server.url, token=TOKEN)
    src = ScriptRunConfig(
        source_directory=str(tmp_path / "proj"),
        script="train.py",
        distributed_job_config=TensorflowConfiguration(worker_count=2),
    )
    run = Experiment(ws, "src-tf").submit(src)
    run.wait_for_completion(raise_on_error=True)
    log = run.get_details_with_logs()["logFiles"]
    text = "".join(log.values())
    for kind, index in (("worker", 0), ("worker", 1), ("ps", 0)):
        assert f"[{kind} {index}] task {{'type': '{kind}', 'index': {index}}}" in text
