"""Code written for Azure ML v1 (``azureml.core``, ``azureml.train``...) against a real trainhub
server, through trainhub's ``azureml`` modules: the imports stay as they were."""

from __future__ import annotations

import ast
import hashlib
import os
import pickle
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import trainhub.sdk
import trainhub.tensorboard
from tests.conda_channel import Package, make_channel
from tests.conftest import TOKEN, Server, start_server
from tests.test_environments import HOST_CA, make_wheel, remove_env_images
from tests.test_sdk import write_project

REPO = Path(__file__).resolve().parents[1]

# A training script of the Azure ML era: it imports Run from azureml.core.run and a package its
# environment installs, and reads the data folder it is given.
TRAIN = textwrap.dedent(
    """
    import argparse, os, pickle
    from azureml.core.run import Run
    import thazml

    parser = argparse.ArgumentParser()
    parser.add_argument("--data-folder", type=str, dest="data_folder")
    parser.add_argument("--regularization", type=float, default=0.01)
    args = parser.parse_args()
    data = {n: open(os.path.join(args.data_folder, n)).read() for n in sorted(os.listdir(args.data_folder))}
    run = Run.get_context()
    run.log("regularization", args.regularization)
    for epoch in range(3):
        run.log("loss", 1.0 / (1 + epoch * args.regularization))
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/model.pkl", "wb") as f:
        pickle.dump({"regularization": args.regularization, "package": thazml.VALUE, "data": data}, f)
    """
)

# The notebook of that era, as it was: Workspace.from_config() now reads trainhub's configuration.
NOTEBOOK = textwrap.dedent(
    """
    from azureml.core import Workspace, Experiment, Environment, Datastore
    from azureml.core.compute import ComputeTarget, AmlCompute
    from azureml.core.compute_target import ComputeTargetException
    from azureml.core.conda_dependencies import CondaDependencies
    from azureml.train.estimator import Estimator
    from azureml.train.dnn import PyTorch, TensorFlow, Mpi, Gloo, Nccl, ParameterServer
    from azureml.widgets import RunDetails

    ws = Workspace.from_config()

    cluster_name = "gpu-cluster"
    try:
        compute_target = ComputeTarget(workspace=ws, name=cluster_name)
        print("Found existing compute target")
    except ComputeTargetException:
        compute_config = AmlCompute.provisioning_configuration(vm_size="STANDARD_NC6", max_nodes=4)
        compute_target = ComputeTarget.create(ws, cluster_name, compute_config)
    compute_target.wait_for_completion(show_output=True)
    print("targets:", sorted(ws.compute_targets))

    env = Environment("sklearn-env")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["thazml"])
    env.register(workspace=ws)

    ds = ws.get_default_datastore()
    ds.upload(src_dir="./data", target_path="digits", overwrite=True, show_progress=False)

    script_params = {
        "--data-folder": Datastore.get(ws, "workspaceblobstore").path("digits").as_mount(),
        "--regularization": 0.8,
    }
    est = Estimator(source_directory="./my-sklearn-proj", script_params=script_params,
                    compute_target=compute_target, entry_script="train.py",
                    environment_definition=env)
    experiment = Experiment(workspace=ws, name="azureml-notebook")
    run = experiment.submit(est)
    run.wait_for_completion(show_output=False)
    print("status:", run.get_details()["status"])
    print("metrics:", run.get_metrics())
    run.download_file(name="outputs/model.pkl", output_file_path="model.pkl")
    RunDetails(run).show()
    """
)


# The seed's conda package, from the test's own channel (no conda channel can be reached here): a
# small noarch package of that name, solved and installed by the server as any other.
SCIKIT_LEARN = Package(
    "scikit-learn",
    files={
        "lib/python3.11/site-packages/sklearn/__init__.py": "VALUE = 'from the local channel'\n"
    },
)


def python_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's shell: no TRAINHUB_* variables, HOME of the test's own, the repository importable
    (as ``pip install trainhub[azureml]`` makes it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINHUB_")}
    env.update({"HOME": str(home), "PYTHONPATH": str(REPO), **extra})
    return env


def login(server: Server, home: Path, **extra: str) -> dict[str, str]:
    """``trainhub login`` in a user's shell (``home``), so that ``Workspace.from_config()`` is a
    notebook's only workspace line; answers that shell's environment."""
    env = python_env(home, **extra)
    done = subprocess.run(
        [sys.executable, "-m", "trainhub", "login", server.url, "--token", TOKEN],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return env


def run_notebook(
    server: Server, home: Path, source: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """A user's notebook as a script in ``home``, after :func:`login`."""
    return subprocess.run(
        [sys.executable, "-c", source],
        cwd=home,
        env=login(server, home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def compat_server(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Server]:
    """A server with the in-run ``azureml.core`` shim, a wheel folder holding the notebook's
    package, a conda channel of its own holding the seed's, and a compute target named as the
    notebook names it."""
    channel = make_channel(tmp_path_factory.mktemp("azureml-channel"), [SCIKIT_LEARN])
    wheels = tmp_path_factory.mktemp("azureml-wheels")
    make_wheel(wheels, "thazml", "1.0", "from the wheel folder")
    (wheels / f"session-{uuid.uuid4().hex}.txt").write_text("marker\n")  # this session's image
    srv = start_server(
        tmp_path_factory,
        "azureml-data",
        azureml_compat="true",
        build_ca_bundle=HOST_CA,
        wheel_dir=str(wheels),
        conda_channels=str(channel),
    )
    srv.client().post("/api/v1/targets", json={"name": "gpu-cluster", "nodes": ["local"]})
    yield srv
    srv.cleanup()
    remove_env_images(srv)


@pytest.mark.docker
@pytest.mark.slow  # an environment image is built
def test_an_azure_ml_notebook_runs_with_its_imports_unchanged(
    compat_server: Server, tmp_path: Path
) -> None:
    write_project(tmp_path / "my-sklearn-proj", {"train.py": TRAIN})
    write_project(tmp_path / "data", {"a.csv": "1,2\n", "b.csv": "3,4\n"})
    result = run_notebook(compat_server, tmp_path, NOTEBOOK, timeout=240)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "Found existing compute target",
        "targets: ['gpu-cluster', 'local']",
        "status: Completed",
    ]
    assert ast.literal_eval(lines[3].removeprefix("metrics: ")) == {
        "regularization": 0.8,
        "loss": [1.0 / (1 + epoch * 0.8) for epoch in range(3)],
    }
    with (tmp_path / "model.pkl").open("rb") as f:
        assert pickle.load(f) == {
            "regularization": 0.8,
            "package": "from the wheel folder",
            "data": {"a.csv": "1,2\n", "b.csv": "3,4\n"},
        }
    run_id = lines[4].split()[1]
    assert lines[4] == f"Run {run_id} (azureml-notebook): Completed"
    assert lines[5] == f"Web View: {compat_server.url}/runs/{run_id}"
    assert lines[6:] == [f"  loss: {1.0 / (1 + 2 * 0.8)}", "  regularization: 0.8"]
    details = compat_server.client().get(f"/api/v1/runs/{run_id}").json()
    assert details["target"] == "gpu-cluster"


def test_azure_ml_names_are_trainhub_s_own_objects() -> None:
    from azureml.core import ContainerRegistry, Datastore, Environment, Experiment, Run, Workspace
    from azureml.core.conda_dependencies import CondaDependencies
    from azureml.data.data_reference import DataReference
    from azureml.exceptions import ActivityFailedException
    from azureml.tensorboard import Tensorboard
    from azureml.train import dnn, estimator

    assert Experiment is trainhub.sdk.Experiment and Run is trainhub.sdk.Run
    assert (
        Environment is trainhub.sdk.Environment
        and ContainerRegistry is trainhub.sdk.ContainerRegistry
    )
    assert CondaDependencies is trainhub.sdk.CondaDependencies
    assert Datastore is trainhub.sdk.Datastore and DataReference is trainhub.sdk.DataReference
    assert estimator.Estimator is trainhub.sdk.Estimator
    for name in ("PyTorch", "TensorFlow", "Mpi", "Gloo", "Nccl", "ParameterServer"):
        assert getattr(dnn, name) is getattr(trainhub.sdk, name)
    assert ActivityFailedException is trainhub.sdk.ActivityFailedException
    assert Tensorboard is trainhub.tensorboard.Tensorboard
    assert issubclass(Workspace, trainhub.sdk.Workspace)  # Azure ML's ways in, same object inside
    import azureml.core
    from azureml.core import RunConfiguration, ScriptRunConfig, runconfig

    assert ScriptRunConfig is trainhub.sdk.ScriptRunConfig
    assert RunConfiguration is runconfig.RunConfiguration is trainhub.sdk.RunConfiguration
    for name in ("Mpi", "PyTorch", "Tensorflow", "Docker"):
        assert getattr(runconfig, f"{name}Configuration") is getattr(
            trainhub.sdk, f"{name}Configuration"
        )
    assert isinstance(azureml.core.VERSION, str) and azureml.core.VERSION.startswith("1.")


def test_names_trainhub_lacks_raise_an_import_error_naming_them() -> None:
    with pytest.raises(
        ImportError, match=r"^azureml\.core\.Keyvault is not available in trainhub yet"
    ):
        from azureml.core import Keyvault  # type: ignore[attr-defined] # noqa: F401
    with pytest.raises(
        ImportError, match=r"^azureml\.core\.runconfig\.SparkConfiguration is not available"
    ):
        from azureml.core.runconfig import SparkConfiguration  # type: ignore[attr-defined] # noqa: F401
    with pytest.raises(ImportError, match=r"^azureml\.train\.dnn\.Chainer is not available"):
        from azureml.train.dnn import Chainer  # noqa: F401
    with pytest.raises(
        ModuleNotFoundError, match=r"^azureml\.train\.automl is not available in trainhub yet"
    ):
        from azureml.train.automl import AutoMLConfig  # noqa: F401
    from azureml.train.hyperdrive.run import HyperDriveRun  # a sweep's run: there now

    assert HyperDriveRun.__module__ == "trainhub.sdk.hyperdrive_run"
    from azureml.core import runconfig  # a submodule is still a submodule

    assert runconfig.__name__ == "azureml.core.runconfig"


def test_an_azure_workspace_says_how_to_name_a_trainhub_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azureml.core import Workspace
    from azureml.exceptions import AzureMLException

    with pytest.raises(
        AzureMLException, match=r"names an Azure ML workspace.*Workspace\.from_config"
    ):
        Workspace(subscription_id="0000-1111", resource_group="lab", workspace_name="ws")
    with pytest.raises(
        AzureMLException, match=r"Workspace\('0000-1111', 'lab', 'ws'\) names an Azure"
    ):
        Workspace("0000-1111", "lab", "ws")
    with pytest.raises(
        AzureMLException, match=r"Workspace\.get\('ws'\) names an Azure ML workspace"
    ):
        Workspace.get("ws", subscription_id="0000-1111", resource_group="lab")

    # Azure ML's config.json where Azure ML looked for it (this folder or a parent), no trainhub one.
    (tmp_path / "config.json").write_text(
        '{"subscription_id": "0000-1111", "resource_group": "lab", "workspace_name": "ws"}'
    )
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    monkeypatch.delenv("TRAINHUB_URL", raising=False)
    monkeypatch.setenv("TRAINHUB_CONFIG", str(tmp_path / "no-trainhub-config.json"))
    with pytest.raises(AzureMLException) as found:
        Workspace.from_config()
    message = str(found.value)
    assert message.startswith(f"{tmp_path / 'config.json'} is an Azure ML configuration")
    assert "trainhub login URL --token T" in message and "TRAINHUB_URL" in message
    with pytest.raises(AzureMLException, match=r"config\.json is an Azure ML configuration"):
        Workspace.from_config(path=str(tmp_path))


def test_compute_targets_are_the_server_s_by_name(server: Server) -> None:
    from azureml.core import ComputeTarget, Workspace
    from azureml.core.compute import AmlCompute
    from azureml.core.compute_target import ComputeTargetException

    ws = Workspace(server.url, token=TOKEN)
    local = ws.compute_targets["local"]
    assert (local.name, local.nodes) == ("local", ["local"])
    assert ComputeTarget(workspace=ws, name="local").name == "local"
    with pytest.raises(ComputeTargetException, match=r"has no compute target 'gpu-cluster'"):
        ComputeTarget(ws, "gpu-cluster")
    config = AmlCompute.provisioning_configuration(vm_size="STANDARD_NC6", max_nodes=4)
    with pytest.raises(ComputeTargetException, match=r"does not provision machines.*target create"):
        ComputeTarget.create(ws, "gpu-cluster", config)


def test_datastores_by_azure_ml_names(server: Server, tmp_path: Path) -> None:
    from azureml.core import Datastore, Workspace
    from azureml.data.data_reference import DataReference

    ws = Workspace(server.url, token=TOKEN)
    ds = ws.get_default_datastore()
    assert ds.name == "workspaceblobstore" and "workspaceblobstore" in ws.datastores
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "a.csv").write_text("1,2\n")
    folder = f"azureml-{uuid.uuid4().hex[:8]}"
    ds.upload(src_dir=str(tmp_path / "up"), target_path=folder, show_progress=False)
    again = Datastore.get(ws, "workspaceblobstore")
    assert again.download(str(tmp_path / "down"), prefix=folder, show_progress=False) == 1
    assert (tmp_path / "down" / folder / "a.csv").read_text() == "1,2\n"
    ref = DataReference(again, path_on_datastore=folder, data_reference_name="digits")
    assert ref.as_download(path_on_compute="data").to_spec() == {
        "$data_reference": {
            "datastore": "workspaceblobstore",
            "path": folder,
            "mode": "download",
            "path_on_compute": "data",
            "name": "digits",
            "overwrite": False,
        }
    }


def test_mpi_configuration_is_trainhub_s_mpi_in_an_estimator(tmp_path: Path) -> None:
    from azureml.core.runconfig import MpiConfiguration
    from azureml.train.estimator import Estimator

    mpi = MpiConfiguration()
    mpi.process_count_per_node = 2
    est = Estimator(str(tmp_path), entry_script="t.py", node_count=2, distributed_training=mpi)
    spec = est.to_spec()
    assert spec["distributed_training"] == {"type": "mpi", "process_count_per_node": 2}
    assert spec["node_count"] == 2
    with pytest.raises(ValueError, match=r"give node_count to the Estimator"):
        Estimator(
            str(tmp_path), entry_script="t.py", distributed_training=MpiConfiguration(node_count=2)
        ).to_spec()


def test_run_get_context_offline_is_an_offline_run(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        from azureml.core import Run
        run = Run.get_context()
        run.log("loss", 0.5)
        print(run.id.startswith("OfflineRun_"), run.get_metrics())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=python_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True {'loss': 0.5}"
    assert "offline run" in result.stderr


def test_run_get_context_in_a_run_works_with_trainhub_azureml_installed(
    server: Server, tmp_path: Path
) -> None:
    """Without the server's shim: the script's Python has trainhub and these modules installed (the
    repository on PYTHONPATH), behind the launcher's small in-run ``trainhub`` package."""
    script = textwrap.dedent(
        """
        import azureml
        from azureml.core import Run
        run = Run.get_context()
        run.log("inside", 1)
        print("run", run.id, "azureml from", azureml.__file__)
        """
    )
    ws = trainhub.sdk.Workspace(server.url, token=TOKEN)
    est = trainhub.sdk.Estimator(
        str(write_project(tmp_path, {"t.py": script})),
        entry_script="t.py",
        use_docker=False,
        environment_variables={"PYTHONPATH": str(REPO)},
    )
    run = trainhub.sdk.Experiment(ws, "azureml-in-run").submit(est)
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Completed"
    log = server.client().get(f"/api/v1/runs/{run.id}/logs").text
    assert f"run {run.id} azureml from {REPO / 'azureml' / '__init__.py'}" in log
    assert run.get_metrics() == {"inside": 1}


def test_a_real_azureml_core_in_the_environment_is_refused(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist = site / "azureml_core-1.48.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: azureml-core\nVersion: 1.48.0\n")
    code = "import azureml.core"
    ok = subprocess.run(
        [sys.executable, "-c", code], env=python_env(tmp_path), capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(
        [sys.executable, "-c", code],
        env=python_env(tmp_path, PYTHONPATH=f"{REPO}:{site}"),
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "ImportError: azureml-core 1.48.0 (Microsoft's Azure ML SDK) is installed"
    )
    assert "cannot share an environment with it" in last


def test_every_azureml_module_ships_in_trainhub_s_wheel() -> None:
    """pyproject's package discovery (setuptools' find, not namespace find) reaches every folder of
    ``azureml``: one without an ``__init__.py`` would be left out of the wheel."""
    import tomllib

    import setuptools

    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    shipped = set(setuptools.find_packages(where=str(REPO), include=include))
    folders = {
        ".".join(p.relative_to(REPO).parts)
        for p in (REPO / "azureml").rglob("*")
        if p.is_dir() and any(p.glob("*.py"))
    }
    assert folders | {"azureml"} <= shipped, sorted(folders - shipped)


# The seed's training script: it reads every file of the data folder and writes their checksum.
SEED_TRAIN = textwrap.dedent(
    """
    import argparse, hashlib, os
    import sklearn

    parser = argparse.ArgumentParser()
    parser.add_argument("--data-folder", type=str, dest="data_folder")
    parser.add_argument("--regularization", type=float)
    args = parser.parse_args()
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(args.data_folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, args.data_folder).encode() + b"\\0")
            digest.update(open(path, "rb").read())
    os.makedirs("outputs", exist_ok=True)
    open("outputs/checksum.txt", "w").write(digest.hexdigest())
    print("data:", args.data_folder == os.environ["AZUREML_DATAREFERENCE_workspaceblobstore"])
    print("sklearn:", sklearn.VALUE, "regularization:", args.regularization)
    """
)

# The documentation's first example, verbatim from its imports to its last line; before it the
# workspace and compute lines, after it what the test checks.
SEED = textwrap.dedent(
    """
    from azureml.core import Workspace, Experiment
    ws = Workspace.from_config()
    compute_target = ws.compute_targets["gpu-cluster"]
    experiment = Experiment(workspace=ws, name="sklearn-seed")
    ds = ws.get_default_datastore()

    from azureml.train.estimator import Estimator

    script_params = {'--data-folder': ds.as_mount(), '--regularization': 0.8}
    sk_est = Estimator(source_directory='./my-sklearn-proj', script_params=script_params,
                       compute_target=compute_target, entry_script='train.py', conda_packages=['scikit-learn'])
    run = experiment.submit(sk_est)
    print(run.get_details().status)

    run.wait_for_completion(show_output=True)
    run.download_file("outputs/checksum.txt", "checksum.txt")
    ds.download("datastore-copy", show_progress=False)
    """
)


@pytest.mark.docker
@pytest.mark.slow  # a conda environment is solved, installed and built into an image
def test_the_seed_example_runs_verbatim(compat_server: Server, tmp_path: Path) -> None:
    write_project(tmp_path / "my-sklearn-proj", {"train.py": SEED_TRAIN})
    data = tmp_path / "data"
    write_project(data, {"train/x.csv": "1,2\n3,4\n", "train/y.csv": "0\n1\n", "README": "seed"})
    env = python_env(tmp_path, TRAINHUB_URL=compat_server.url, TRAINHUB_TOKEN=TOKEN)
    ws = trainhub.sdk.Workspace(compat_server.url, token=TOKEN)
    ws.get_default_datastore().upload(data, "seed", overwrite=True, show_progress=False)
    result = subprocess.run(
        [sys.executable, "-c", SEED],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    lines = result.stdout.splitlines()
    assert lines[0] in {"Queued", "Preparing", "Starting", "Running"}
    assert "data: True" in lines
    assert "sklearn: from the local channel regularization: 0.8" in lines
    assert "Status: Completed" in lines
    # The run saw exactly what the datastore holds (everything in it, as a download gets it).
    copy = tmp_path / "datastore-copy"
    assert (copy / "seed" / "train" / "x.csv").read_text() == "1,2\n3,4\n"
    expected = hashlib.sha256()
    for path in sorted(p for p in copy.rglob("*") if p.is_file()):
        expected.update(path.relative_to(copy).as_posix().encode() + b"\0")
        expected.update(path.read_bytes())
    assert (tmp_path / "checksum.txt").read_text() == expected.hexdigest()
