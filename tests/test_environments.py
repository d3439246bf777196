"""Environments on the real engine: packages from the index and a wheel folder, builds cached by
content and done once, failing builds, custom images, user_managed."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import sqlite3
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.conftest import Server, start_server
from tests.helpers import cli_for, make_snapshot, submit, submit_raw, wait_for_status

HOST_CA = "/etc/ssl/certs/ca-certificates.crt"


def make_wheel(folder: Path, name: str, version: str, value: str) -> Path:
    """A real, minimal pure-Python wheel."""
    files = {
        f"{name}/__init__.py": f"VALUE = {value!r}\n".encode(),
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: trainhub-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


@pytest.fixture(scope="module")
def env_server(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Server]:
    wheels = tmp_path_factory.mktemp("wheels")
    make_wheel(wheels, "thlocal", "1.0", "from the wheel folder")
    # The wheel folder is part of every image's hash: a fresh marker makes this session's images new,
    # whatever earlier sessions left on the engine.
    (wheels / f"session-{uuid.uuid4().hex}.txt").write_text("marker\n")
    srv = start_server(tmp_path_factory, "env-data", build_ca_bundle=HOST_CA, wheel_dir=str(wheels))
    yield srv
    srv.cleanup()
    remove_env_images(srv)


def remove_env_images(server: Server) -> None:
    """Remove the environment images a test server built (the engine is shared by sessions)."""
    with sqlite3.connect(server.data / "trainhub.db") as conn:
        images = [row[0] for row in conn.execute("select image from env_images")]
    engine = docker.from_env()
    for image in images:
        try:
            engine.images.remove(image, force=True)
        except docker.errors.ImageNotFound:
            pass
    engine.close()


@pytest.fixture
def eclient(env_server: Server) -> httpx.Client:
    return env_server.client()


def build_log(client: httpx.Client, run_id: str) -> str:
    return client.get(f"/api/v1/runs/{run_id}/files/logs/build_log.txt").text


def test_pip_packages_from_the_index(eclient: httpx.Client) -> None:
    run = submit(
        eclient, "import six\nprint('six', six.__version__)\n", pip_packages=["six==1.16.0"]
    )
    done = wait_for_status(eclient, run["runId"], timeout=240)
    assert done["status"] == "Completed", done["error"]
    assert "six 1.16.0" in eclient.get(f"/api/v1/runs/{run['runId']}/logs").text
    assert done["runDefinition"]["image"].startswith("trainhub/env:")
    assert "Successfully installed six-1.16.0" in build_log(eclient, run["runId"])


def test_requirements_file_from_the_snapshot(eclient: httpx.Client) -> None:
    run = submit(
        eclient,
        "import six\nprint('req six', six.__version__)\n",
        extra_files={"requirements.txt": "six==1.16.0\n"},
        pip_requirements_file="requirements.txt",
    )
    done = wait_for_status(eclient, run["runId"], timeout=240)
    assert done["status"] == "Completed", done["error"]
    assert "req six 1.16.0" in eclient.get(f"/api/v1/runs/{run['runId']}/logs").text


def test_a_wheel_from_the_local_wheel_folder(eclient: httpx.Client) -> None:
    run = submit(eclient, "import thlocal\nprint(thlocal.VALUE)\n", pip_packages=["thlocal==1.0"])
    done = wait_for_status(eclient, run["runId"], timeout=240)
    assert done["status"] == "Completed", done["error"]
    assert "from the wheel folder" in eclient.get(f"/api/v1/runs/{run['runId']}/logs").text


def test_same_environment_is_reused_and_a_change_rebuilds(eclient: httpx.Client) -> None:
    script = "import thlocal\nprint('ok')\n"
    first = wait_for_status(
        eclient, submit(eclient, script, pip_packages=["thlocal"])["runId"], timeout=240
    )
    second = wait_for_status(
        eclient, submit(eclient, script, pip_packages=["thlocal"])["runId"], timeout=240
    )
    assert first["status"] == second["status"] == "Completed"
    assert first["runDefinition"]["image"] == second["runDefinition"]["image"]
    assert "reused, no build" in build_log(eclient, second["runId"])
    assert "Step 1/" not in build_log(eclient, second["runId"])
    changed = wait_for_status(
        eclient,
        submit(eclient, script, pip_packages=["thlocal", "six==1.16.0"])["runId"],
        timeout=240,
    )
    assert changed["status"] == "Completed"
    assert changed["runDefinition"]["image"] != first["runDefinition"]["image"]
    assert "Building environment image" in build_log(eclient, changed["runId"])


def test_concurrent_identical_submissions_build_once(eclient: httpx.Client) -> None:
    script = "import thlocal\nprint('concurrent')\n"
    # A marker that never applies keeps this environment distinct from the other tests' ones.
    spec = {
        "entry_script": "train.py",
        "pip_packages": ["thlocal==1.0", "trainhub-no-such-marker; python_version < '3'"],
    }
    snap = make_snapshot({"train.py": script})
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(lambda _: submit_raw(eclient, spec, snap), range(3)))
    ids = [r.json()["runId"] for r in responses]
    runs = [wait_for_status(eclient, run_id, timeout=240) for run_id in ids]
    assert [r["status"] for r in runs] == ["Completed"] * 3
    assert len({r["runDefinition"]["image"] for r in runs}) == 1
    logs = [build_log(eclient, run_id) for run_id in ids]
    assert sum("Building environment image" in log for log in logs) == 1
    assert sum("reused, no build" in log for log in logs) == 2


def test_a_failing_build_fails_the_run_with_its_log(eclient: httpx.Client) -> None:
    run = submit(
        eclient, "print('never')\n", pip_packages=["trainhub-surely-no-such-package==9.9.9"]
    )
    done = wait_for_status(eclient, run["runId"], timeout=240)
    assert done["status"] == "Failed"
    assert done["properties"]["reason"] == "build_failed"
    assert "The environment build failed" in done["error"]["message"]
    assert "trainhub-surely-no-such-package" in done["error"]["message"]
    assert "No matching distribution" in build_log(eclient, run["runId"])
    assert "never" not in eclient.get(f"/api/v1/runs/{run['runId']}/logs").text


def test_custom_image_on_the_engine_and_user_managed(eclient: httpx.Client) -> None:
    engine = docker.from_env()
    engine.images.get("trainhub/base:cpu").tag("local/custom", "py")
    engine.close()
    script = "import sys\nprint('python at', sys.executable)\n"
    run = submit(eclient, script, custom_docker_image="local/custom:py", user_managed=True)
    done = wait_for_status(eclient, run["runId"], timeout=60)
    assert done["status"] == "Completed", done["error"]
    assert done["runDefinition"]["image"] == "local/custom:py"
    assert "python at /usr/bin/python3" in eclient.get(f"/api/v1/runs/{run['runId']}/logs").text
    refused = submit_raw(
        eclient,
        {
            "entry_script": "train.py",
            "custom_docker_image": "local/custom:py",
            "user_managed": True,
            "pip_packages": ["six"],
        },
        make_snapshot({"train.py": script}),
    )
    assert refused.status_code == 422 and refused.json()["field"] == "pip_packages"


def test_an_image_that_cannot_be_pulled_fails_clearly(eclient: httpx.Client) -> None:
    run = submit(eclient, "print()", custom_docker_image="127.0.0.1:1/nowhere/image:1")
    done = wait_for_status(eclient, run["runId"], timeout=60)
    assert done["status"] == "Failed"
    assert done["properties"]["reason"] == "image_missing"
    assert (
        "127.0.0.1:1/nowhere/image:1 is not on node local and could not pull"
        in done["error"]["message"]
    )


def test_a_registered_environment_is_used_by_name(env_server: Server, tmp_path: Path) -> None:
    from tests.conftest import TOKEN
    from trainhub import (
        CondaDependencies,
        ContainerRegistry,
        Environment,
        Estimator,
        Experiment,
        ValidationError,
        Workspace,
    )

    ws = Workspace(env_server.url, token=TOKEN)
    env = Environment("wheel-env")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["thlocal==1.0"])
    env.environment_variables = {"GREETING": "hello from the environment"}
    assert env.register(ws).version == 1
    assert env.register(ws).version == 2
    (tmp_path / "t.py").write_text(
        "import os, thlocal\nprint(thlocal.VALUE, '|', os.environ['GREETING'])\n"
    )
    run = Experiment(ws, "registered").submit(
        Estimator(str(tmp_path), entry_script="t.py", environment_definition=env)
    )
    details = run.wait_for_completion()
    assert (
        "from the wheel folder | hello from the environment"
        in ws.client.request("GET", f"/api/v1/runs/{run.id}/logs").text
    )
    assert details["runDefinition"]["environment"]["environment_definition"] == {
        "name": "wheel-env",
        "version": 2,
    }
    fetched = Environment.get(ws, "wheel-env", version=1)
    assert fetched.version == 1 and fetched.python.conda_dependencies is not None
    assert fetched.python.conda_dependencies.pip_packages == ["thlocal==1.0"]
    by_name = Experiment(ws, "registered").submit(
        Estimator(str(tmp_path), entry_script="t.py", environment_definition="wheel-env")
    )
    assert by_name.wait_for_completion()["status"] == "Completed"
    with pytest.raises(ValidationError) as missing:
        Experiment(ws, "registered").submit(
            Estimator(str(tmp_path), entry_script="t.py", environment_definition="nope")
        )
    assert missing.value.field == "environment_definition"

    private = Environment("private-env")
    private.docker.base_image = "127.0.0.1:1/team/img:1"
    private.docker.base_image_registry = ContainerRegistry(
        "127.0.0.1:1", "me", "environment-password"
    )
    private.register(ws)
    listed = ws.client.request("GET", "/api/v1/environments").text
    assert "private-env" in listed and "environment-password" not in listed
    one = ws.client.json("GET", "/api/v1/environments/private-env")
    assert one["definition"]["image_registry_details"]["password"] == "***"


def test_images_list_and_prune_from_the_cli(env_server: Server, tmp_path: Path) -> None:
    import json

    from tests.conftest import TOKEN

    cli = cli_for(env_server.url, TOKEN)
    client = env_server.client()
    built = submit(
        client, "import thlocal\n", pip_packages=["thlocal==1.0", "six; python_version < '3'"]
    )
    assert wait_for_status(client, built["runId"], timeout=240)["status"] == "Completed"

    listed = json.loads(cli("images", "list", "--json").stdout)
    images = {img["image"]: img for img in listed}
    assert images and all(img["present"] for img in images.values())
    assert all(name.startswith("trainhub/env:") for name in images)
    assert "trainhub/env:" in cli("images", "list").stdout
    kept = json.loads(cli("images", "prune", "--days", "30", "--json").stdout)
    assert kept["removed"] == [] and set(kept["kept"]) == set(images)
    pruned = json.loads(cli("images", "prune", "--days", "0", "--json").stdout)
    assert set(pruned["removed"]) == set(images)
    engine = docker.from_env()
    for image in images:
        with pytest.raises(docker.errors.ImageNotFound):
            engine.images.get(image)
    engine.close()
    assert json.loads(cli("images", "list", "--json").stdout) == []
    rebuilt = wait_for_status(
        client, submit(client, "import thlocal\n", pip_packages=["thlocal"])["runId"], timeout=240
    )
    assert rebuilt["status"] == "Completed"
    assert "Building environment image" in build_log(client, rebuilt["runId"])


def test_gpu_base_image_needs_a_registry_and_says_so() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainhub",
            "images",
            "build-base",
            "--gpu",
            "--tag",
            "trainhub/test-gpu:never",
            "--cuda-image",
            "127.0.0.1:1/nvidia/cuda:12-runtime",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "needs a registry that serves it" in result.stderr and "--cuda-image" in result.stderr
