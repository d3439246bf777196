"""The Python SDK against the real server and engine, as an Azure ML v1 user would use it."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import tarfile
import textwrap
import time
import zlib
from pathlib import Path

import pytest

from tests.conftest import TOKEN, Server, ServerFactory
from tests.helpers import wait_until
from trainhub import (
    ActivityFailedException,
    AuthenticationError,
    Estimator,
    Experiment,
    PyTorch,
    Run,
    RunNotFoundError,
    ValidationError,
    Workspace,
)

SKLEARN_LIKE = textwrap.dedent(
    """
    import argparse, os, pickle
    from trainhub import Run

    parser = argparse.ArgumentParser()
    parser.add_argument("--regularization", type=float, default=0.01)
    args = parser.parse_args()
    run = Run.get_context()
    weights = [args.regularization * i for i in range(4)]
    for epoch, w in enumerate(weights):
        run.log("loss", 1.0 / (1 + w), step=epoch)
    run.log("regularization", args.regularization)
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/model.pkl", "wb") as f:
        pickle.dump({"weights": weights}, f)
    print("trained with regularization", args.regularization)
    """
)


def write_project(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def test_the_azure_ml_snippet_runs_with_only_imports_and_workspace_changed(
    server: Server, tmp_path: Path
) -> None:
    write_project(tmp_path / "my-sklearn-proj", {"train.py": SKLEARN_LIKE})
    snippet = textwrap.dedent(
        f"""
        from trainhub import Workspace, Experiment, Estimator
        ws = Workspace("{server.url}", token="{TOKEN}")
        est = Estimator(source_directory="./my-sklearn-proj", entry_script="train.py",
                        script_params={{"--regularization": 0.8}}, compute_target="local")
        run = Experiment(ws, "sklearn-demo").submit(est)
        print(run.get_details()["status"])
        run.wait_for_completion(show_output=True)
        run.download_file(name="outputs/model.pkl", output_file_path="model.pkl")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] in {"Queued", "Preparing", "Starting", "Running"}
    assert "trained with regularization 0.8" in result.stdout
    assert "Execution Summary" in result.stdout and "Status: Completed" in result.stdout
    assert result.stderr == ""  # no progress bars when not on a terminal
    with (tmp_path / "model.pkl").open("rb") as f:
        assert pickle.load(f) == {"weights": [0.0, 0.8, 1.6, 2.4000000000000004]}


@pytest.fixture
def ws(server: Server) -> Workspace:
    return Workspace(server.url, token=TOKEN)


def test_metrics_logged_in_a_loop_are_visible_while_the_run_goes(
    ws: Workspace, tmp_path: Path
) -> None:
    script = textwrap.dedent(
        """
        import time
        from trainhub import Run
        run = Run.get_context()
        for i in range(5):
            run.log("accuracy", i / 10)
        print("logged", flush=True)
        time.sleep(60)
        """
    )
    run = Experiment(ws, "metrics").submit(
        Estimator(str(write_project(tmp_path, {"t.py": script})), entry_script="t.py")
    )
    deadline = time.monotonic() + 30
    while run.get_metrics().get("accuracy") != [0.0, 0.1, 0.2, 0.3, 0.4]:
        assert time.monotonic() < deadline, run.get_metrics()
        time.sleep(0.2)
    assert run.get_status() == "Running"
    assert ws.client.json("GET", f"/api/v1/runs/{run.id}/metrics")["metrics"]["accuracy"][-1] == 0.4
    run.cancel()
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Canceled"
    assert run.get_metrics("accuracy") == {"accuracy": [0.0, 0.1, 0.2, 0.3, 0.4]}


def _png() -> bytes:
    raw = b"\x00\xff\x00\x00"

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_every_logging_call_reaches_run_history(ws: Workspace, tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        from trainhub import Run
        run = Run.get_context()
        run.log("lr", 0.1, description="learning rate")
        run.log_list("accuracies", [0.5, 0.7, 0.9])
        run.log_row("roc", fpr=0.0, tpr=0.0)
        run.log_row("roc", fpr=1.0, tpr=1.0)
        run.log_table("confusion", {"predicted": [0, 1], "count": [10, 3]})
        run.log_image("sample", path="pixel.png")
        run.tag("stage", "trained")
        run.set_tags({"owner": "ana"})
        run.upload_file("outputs/notes.txt", "notes.txt")
        run.complete()
        print(repr(run))
        """
    )
    project = write_project(
        tmp_path, {"t.py": script, "pixel.png": _png(), "notes.txt": "remember"}
    )
    run = Experiment(ws, "logging").submit(
        Estimator(str(project), entry_script="t.py"), tags={"team": "vision"}
    )
    details = run.wait_for_completion()
    assert details["status"] == "Completed"
    assert run.get_metrics() == {
        "lr": 0.1,
        "accuracies": [0.5, 0.7, 0.9],
        "roc": {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]},
        "confusion": {"predicted": [0, 1], "count": [10, 3]},
        "sample": "images/sample.png",
    }
    assert run.get_tags() == {"team": "vision", "stage": "trained", "owner": "ana"}
    names = run.get_file_names()
    assert "images/sample.png" in names and "outputs/notes.txt" in names
    run.download_file("images/sample.png", tmp_path / "got.png")
    assert (tmp_path / "got.png").read_bytes() == _png()
    series = ws.client.json("GET", f"/api/v1/runs/{run.id}/metrics")["series"]["lr"][0]
    assert series["kind"] == "scalar" and series["value"] == 0.1


def test_offline_run_keeps_working_and_says_so(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        from trainhub import Run
        run = Run.get_context()
        run.log("loss", 0.5)
        run.log("loss", 0.25)
        run.tag("k", "v")
        print(run.id.startswith("OfflineRun_"), run.get_metrics(), run.get_tags())
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINHUB_")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True {'loss': [0.5, 0.25]} {'k': 'v'}"
    assert "offline run" in result.stderr


def test_azure_ml_scripts_run_unchanged_with_the_compat_setting(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    script = "from azureml.core.run import Run\nrun = Run.get_context()\nrun.log('acc', 0.93)\nprint('azureml ok')\n"
    project = write_project(tmp_path, {"score.py": script})
    on = make_server(azureml_compat="true")
    ws_on = Workspace(on.url, token=TOKEN)
    run = Experiment(ws_on, "compat").submit(Estimator(str(project), entry_script="score.py"))
    assert run.wait_for_completion()["status"] == "Completed"
    assert run.get_metrics() == {"acc": 0.93}
    off = make_server()
    run = Experiment(Workspace(off.url, token=TOKEN), "compat").submit(
        Estimator(str(project), entry_script="score.py")
    )
    with pytest.raises(ActivityFailedException) as failed:
        run.wait_for_completion()
    assert "No module named 'azureml'" in str(failed.value)


def test_ignore_files_choose_what_is_uploaded(ws: Workspace, tmp_path: Path) -> None:
    script = "import os\nfor d, _, fs in sorted(os.walk('.')):\n    for f in sorted(fs):\n        print(os.path.join(d, f))\n"
    project = write_project(
        tmp_path,
        {
            "list.py": script,
            ".amlignore": "data/\n*.ckpt\n",
            ".gitignore": "keep_me_out_by_git.txt\n",
            "data/big.bin": "x" * 100,
            "model.ckpt": "c",
            "keep_me_out_by_git.txt": "in: .amlignore takes precedence over .gitignore",
            "src/util.py": "pass",
            ".git/HEAD": "ref: refs/heads/main",
        },
    )
    run = Experiment(ws, "ignore").submit(Estimator(str(project), entry_script="list.py"))
    run.wait_for_completion()
    listed = ws.client.request("GET", f"/api/v1/runs/{run.id}/logs").text.split()
    assert (
        "./list.py" in listed and "./src/util.py" in listed and "./keep_me_out_by_git.txt" in listed
    )
    assert "./data/big.bin" not in listed and "./model.ckpt" not in listed
    assert not any(p.startswith("./.git/") for p in listed)


def test_an_unchanged_folder_is_never_uploaded_twice(ws: Workspace, tmp_path: Path) -> None:
    project = write_project(tmp_path, {"t.py": "print('same')\n", "data.txt": "a" * 5000})
    exp = Experiment(ws, "dedupe-sdk")
    first = exp.submit(Estimator(str(project), entry_script="t.py"))
    os.utime(project / "data.txt", (1, 1))  # a new mtime alone does not change the snapshot
    second = exp.submit(Estimator(str(project), entry_script="t.py"))
    (project / "data.txt").write_text("b" * 5000)
    third = exp.submit(Estimator(str(project), entry_script="t.py"))
    props = [r.get_details()["properties"] for r in (first, second, third)]
    assert props[0]["snapshotId"] == props[1]["snapshotId"] != props[2]["snapshotId"]
    assert [p["snapshotUploaded"] for p in props] == [True, False, True]
    for run in (first, second, third):
        assert run.wait_for_completion()["status"] == "Completed"


def test_server_errors_surface_as_typed_exceptions(
    server: Server, ws: Workspace, tmp_path: Path
) -> None:
    project = write_project(tmp_path, {"t.py": "print(1)\n"})
    with pytest.raises(ValidationError) as bad:
        Experiment(ws, "errors").submit(Estimator(str(project), entry_script="t.py", use_gpu=True))
    assert bad.value.field == "use_gpu" and "has 0" in bad.value.message
    with pytest.raises(ValidationError) as missing:
        Experiment(ws, "errors").submit(Estimator(str(project), entry_script="missing.py"))
    assert "'missing.py' is not in the snapshot" in str(missing.value)
    with pytest.raises(AuthenticationError):
        Experiment(Workspace(server.url, token="nope"), "errors").submit(
            Estimator(str(project), entry_script="t.py")
        )
    with pytest.raises(RunNotFoundError):
        Run.get(ws, "errors_1_deadbeef")
    with pytest.raises(ValidationError) as framework:
        Experiment(ws, "errors").submit(PyTorch(str(project), entry_script="t.py"))
    assert framework.value.field == "framework"


def test_priority_from_the_sdk_puts_a_run_first_in_the_queue(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(max_concurrent_runs="1")
    exp = Experiment(Workspace(server.url, token=TOKEN), "prio")
    project = write_project(
        tmp_path, {"t.py": "import time\nprint('slow', flush=True)\ntime.sleep(120)\n"}
    )
    busy = exp.submit(Estimator(str(project), entry_script="t.py"))
    wait_until(lambda: busy.get_status() == "Running", "the first run is Running", timeout=60)
    low = exp.submit(Estimator(str(project), entry_script="t.py"))
    high = exp.submit(Estimator(str(project), entry_script="t.py"), priority=5)
    assert high.get_details()["properties"]["priority"] == 5
    assert low.get_details()["properties"]["priority"] == 0
    assert high.get_details()["properties"]["queuePosition"] == 1
    busy.cancel()
    wait_until(lambda: high.get_status() == "Running", "the priority run is Running", timeout=60)
    assert low.get_status() == "Queued"  # the slot went to the later, higher-priority run
    for run in (low, high):
        run.cancel()
        assert run.wait_for_completion(raise_on_error=False)["status"] == "Canceled"


def test_failed_run_raises_with_the_scripts_error(ws: Workspace, tmp_path: Path) -> None:
    project = write_project(tmp_path, {"t.py": "raise RuntimeError('diverged at epoch 3')\n"})
    run = Experiment(ws, "failing").submit(Estimator(str(project), entry_script="t.py"))
    with pytest.raises(ActivityFailedException) as failed:
        run.wait_for_completion()
    assert "diverged at epoch 3" in str(failed.value)
    assert failed.value.status == "Failed"
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Failed"


def test_downloads_and_listing(ws: Workspace, tmp_path: Path) -> None:
    script = "import os\nos.makedirs('outputs/ckpt')\nfor n in 'ab':\n    open(f'outputs/ckpt/{n}.pt','w').write(n)\nopen('outputs/final.pt','w').write('f')\nimport tarfile\nwith tarfile.open('outputs/archive.tar.gz','w:gz') as t: t.add('outputs/ckpt/a.pt')\n"
    project = write_project(tmp_path / "p", {"t.py": script})
    exp = Experiment(ws, "downloads")
    run = exp.submit(Estimator(str(project), entry_script="t.py"))
    run.wait_for_completion()
    assert run.get_file_names() == [
        "logs/driver_log.txt",
        "outputs/archive.tar.gz",
        "outputs/ckpt/a.pt",
        "outputs/ckpt/b.pt",
        "outputs/final.pt",
    ]
    written = run.download_files(prefix="outputs/ckpt", output_directory=tmp_path / "out")
    assert sorted(Path(p).read_text() for p in written) == ["a", "b"]
    assert (tmp_path / "out" / "outputs" / "ckpt" / "a.pt").exists()
    (tmp_path / "dir").mkdir()
    run.download_file("outputs/final.pt", tmp_path / "dir")
    assert (tmp_path / "dir" / "final.pt").read_text() == "f"
    # A compressed artifact comes back as the bytes the run wrote, not decompressed on the way.
    run.download_file("outputs/archive.tar.gz", tmp_path / "archive.tar.gz")
    with tarfile.open(tmp_path / "archive.tar.gz", "r:gz") as tar:
        assert tar.getnames() == ["outputs/ckpt/a.pt"]
    assert run.id in [r.id for r in exp.get_runs()]
    run.tag("best")
    assert run.get_tags() == {"best": ""}


def test_workspace_from_config_and_env(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRAINHUB_URL", raising=False)
    monkeypatch.setenv("TRAINHUB_CONFIG", str(tmp_path / "cfg" / "config.json"))
    written = Workspace(server.url, token=TOKEN).write_config()
    assert oct(written.stat().st_mode & 0o777) == "0o600"
    assert Workspace.from_config().url == server.url
    monkeypatch.setenv("TRAINHUB_URL", "http://example.invalid:1")
    monkeypatch.setenv("TRAINHUB_TOKEN", "t")
    assert Workspace.from_config().url == "http://example.invalid:1"
    assert Workspace.from_config(tmp_path / "cfg").url == server.url
