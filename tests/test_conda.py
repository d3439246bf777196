"""Conda environments without conda in the image: solved and installed by the server with py-rattler
from real local channels, copied into the environment image (or used in place without Docker),
built once per content; unsolvable specs and unreachable channels fail ``Preparing``."""

from __future__ import annotations

import concurrent.futures
import re
import sqlite3
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests import testbed
from tests.conda_channel import PLACEHOLDER, Package, make_channel
from tests.conftest import Server, start_server
from tests.helpers import history, make_snapshot, submit, submit_raw, wait_for_status
from tests.test_environments import HOST_CA, make_wheel, remove_env_images
from trainhub.runs import conda

pytestmark = pytest.mark.docker

SITE = "lib/python3.11/site-packages"  # the base image's Python is 3.11
TINYPKG = Package(
    "tinypkg",
    files={
        f"{SITE}/tinypkg/__init__.py": "VALUE = 'tinypkg from the local channel'\n",
        "bin/tinytool": f"#!/bin/sh\necho tinytool installed in {PLACEHOLDER}\n",
    },
    executables=("bin/tinytool",),
)
FILEPKG = Package("filepkg", files={f"{SITE}/filepkg/__init__.py": "VALUE = 'filepkg'\n"})
# A package that cannot be installed: what it depends on is in no channel.
NEEDS_MISSING = Package("needsmissing", files={"share/x.txt": "x"}, depends=("nosuchpkg >=2",))
# An environment with a Python of its own: a launcher that marks the runs it starts.
LAUNCHER = '#!/bin/sh\nexport TINY_CONDA_PYTHON="$0"\nexec /usr/bin/python3 "$@"\n'
PYTHON = Package(
    "python",
    version="3.11.0",
    files={"bin/python": LAUNCHER, "bin/python3": LAUNCHER},
    executables=("bin/python", "bin/python3"),
)

SCRIPT = textwrap.dedent(
    """
    import subprocess, tinypkg
    print("imported:", tinypkg.VALUE)
    print(subprocess.run(["tinytool"], capture_output=True, text=True, check=True).stdout)
    """
)


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("conda-channels")
    return {
        "main": make_channel(root / "main", [TINYPKG, NEEDS_MISSING, PYTHON]),
        "second": make_channel(root / "second", [FILEPKG]),
    }


@pytest.fixture(scope="module")
def conda_server(
    tmp_path_factory: pytest.TempPathFactory, docker_ready: None, channels: dict[str, Path]
) -> Iterator[Server]:
    wheels = tmp_path_factory.mktemp("conda-wheels")
    make_wheel(wheels, "thcondapip", "1.0", "pip package beside conda")
    (wheels / f"session-{uuid.uuid4().hex}.txt").write_text("marker\n")  # fresh images
    srv = start_server(
        tmp_path_factory,
        "conda-data",
        build_ca_bundle=HOST_CA,
        wheel_dir=str(wheels),
        conda_channels=str(channels["main"]),  # a local folder as the server's channel
    )
    yield srv
    srv.cleanup()
    remove_env_images(srv)


@pytest.fixture
def cclient(conda_server: Server) -> httpx.Client:
    return conda_server.client()


def build_log(client: httpx.Client, run_id: str) -> str:
    return client.get(f"/api/v1/runs/{run_id}/files/logs/build_log.txt").text


def logs(client: httpx.Client, run_id: str) -> str:
    return client.get(f"/api/v1/runs/{run_id}/logs").text


def prefix_of(server: Server, log: str) -> Path:
    """The prefix on the server that a build log says it solved or reused."""
    key = re.search(r"Conda environment ([0-9a-f]{24})|conda environment ([0-9a-f]{24})", log)
    assert key, log
    return server.data / "conda" / (key.group(1) or key.group(2))


def completed(client: httpx.Client, run: dict[str, Any], timeout: float = 240) -> dict[str, Any]:
    done = wait_for_status(client, str(run["runId"]), timeout=timeout)
    assert done["status"] == "Completed", (done["error"], build_log(client, str(run["runId"])))
    return done


def test_conda_packages_from_a_local_channel_are_imported_and_their_tools_run(
    cclient: httpx.Client, conda_server: Server
) -> None:
    run = submit(cclient, SCRIPT, conda_packages=["tinypkg"])
    done = completed(cclient, run)
    build = build_log(cclient, run["runId"])
    assert "Solving conda environment" in build and "linked tinypkg" in build
    prefix = prefix_of(conda_server, build)
    out = logs(cclient, run["runId"])
    assert "imported: tinypkg from the local channel" in out
    # The prefix is in the image at the path it was installed for: no relocation needed.
    assert f"tinytool installed in {prefix}" in out
    assert (prefix / "bin" / "tinytool").read_text().endswith(f"{prefix}\n")
    assert str(done["runDefinition"]["image"]).startswith("trainhub/env:")


def test_an_environment_file_with_its_channels_and_a_pip_section(
    cclient: httpx.Client, channels: dict[str, Path]
) -> None:
    env_file = textwrap.dedent(
        f"""
        name: project-env
        channels:
          - {channels["second"].as_uri()}
        dependencies:
          - filepkg >=1.0
          - pip:
            - thcondapip==1.0
        """
    )
    script = "import filepkg, thcondapip\nprint('both:', filepkg.VALUE, '+', thcondapip.VALUE)\n"
    run = submit(
        cclient,
        script,
        extra_files={"environment.yml": env_file},
        conda_dependencies_file="environment.yml",
    )
    completed(cclient, run)
    assert "both: filepkg + pip package beside conda" in logs(cclient, run["runId"])
    build = build_log(cclient, run["runId"])
    assert f"channels: {channels['second'].as_uri()}" in build  # the file's, not the server's
    assert "Successfully installed thcondapip-1.0" in build


def test_the_prefix_and_the_image_are_built_once_per_content(
    cclient: httpx.Client, conda_server: Server
) -> None:
    spec: dict[str, Any] = {"conda_packages": ["tinypkg>=1"]}  # no other test asks for it
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        firsts = list(pool.map(lambda _: submit(conda_server.client(), SCRIPT, **spec), range(2)))
    for run in firsts:
        completed(cclient, run)
    builds = [build_log(cclient, run["runId"]) for run in firsts]
    assert sum(b.count("Solving conda environment") for b in builds) == 1, builds
    assert sum(b.count("Building environment image") for b in builds) == 1, builds

    again = submit(cclient, SCRIPT, **spec)
    done = completed(cclient, again)
    build = build_log(cclient, again["runId"])
    assert "reused, no build" in build and "Solving" not in build
    assert "imported: tinypkg" in logs(cclient, again["runId"])

    # The image gone (as on a node that never had it): the image is built again from the prefix
    # already on the server, with no new solve.
    engine = docker.from_env()
    engine.images.remove(str(done["runDefinition"]["image"]), force=True)
    engine.close()
    rebuilt = submit(cclient, SCRIPT, **spec)
    completed(cclient, rebuilt)
    build = build_log(cclient, rebuilt["runId"])
    assert "Building environment image" in build
    assert "is present: reused, no solve" in build and "Solving" not in build
    with sqlite3.connect(conda_server.data / "trainhub.db") as conn:
        assert conn.execute("select count(*) from env_images").fetchone()[0] >= 1


def test_an_environment_with_its_own_python_runs_the_script_with_it(
    cclient: httpx.Client, conda_server: Server
) -> None:
    script = "import os\nprint('launched by', os.environ.get('TINY_CONDA_PYTHON'))\n"
    run = submit(cclient, script, conda_packages=["python=3.11", "tinypkg"])
    completed(cclient, run)
    prefix = prefix_of(conda_server, build_log(cclient, run["runId"]))
    assert f"launched by {prefix}/bin/python" in logs(cclient, run["runId"])


def test_a_run_without_docker_uses_the_prefix_in_place(
    cclient: httpx.Client, conda_server: Server, channels: dict[str, Path]
) -> None:
    # filepkg is only in the second channel, named by the spec (channel::package).
    packages = ["tinypkg", f"{channels['second'].as_uri()}::filepkg"]
    script = SCRIPT + "import filepkg\nprint('and', filepkg.VALUE)\n"
    run = submit(cclient, script, use_docker=False, conda_packages=packages)
    completed(cclient, run, timeout=60)
    build = build_log(cclient, run["runId"])
    assert f"channels: {channels['main'].as_uri()}, {channels['second'].as_uri()}" in build
    prefix = prefix_of(conda_server, build)
    out = logs(cclient, run["runId"])
    assert "imported: tinypkg from the local channel" in out and "and filepkg" in out
    assert f"tinytool installed in {prefix}" in out


def test_an_unsolvable_spec_fails_preparing_with_the_solvers_message(
    cclient: httpx.Client,
) -> None:
    run = submit(cclient, "print('never')\n", conda_packages=["needsmissing"])
    done = wait_for_status(cclient, run["runId"], timeout=60)
    assert done["status"] == "Failed"
    assert history(done)[-2:] == ["Preparing", "Failed"]
    assert done["properties"]["reason"] == "build_failed"
    assert "The conda packages cannot be solved" in done["error"]["message"]
    assert "nosuchpkg >=2, for which no candidates were found" in done["error"]["message"]
    assert "nosuchpkg >=2, for which no candidates were found" in build_log(cclient, run["runId"])


def test_an_unreachable_channel_fails_preparing_with_a_clear_message(
    cclient: httpx.Client,
) -> None:
    env_file = "channels: ['http://127.0.0.1:9/']\ndependencies: [tinypkg]\n"
    run = submit(
        cclient,
        "print('never')\n",
        extra_files={"env.yml": env_file},
        conda_dependencies_file="env.yml",
    )
    done = wait_for_status(cclient, run["runId"], timeout=60)
    assert done["status"] == "Failed" and history(done)[-2:] == ["Preparing", "Failed"]
    assert done["properties"]["reason"] == "build_failed"
    assert "A conda channel could not be read" in done["error"]["message"]
    assert (
        "http://127.0.0.1:9/" in done["error"]["message"]
        and "Connection refused" in done["error"]["message"]
    )
    assert "Connection refused" in build_log(cclient, run["runId"])


@pytest.mark.parametrize(
    ("fields", "files", "field", "message"),
    [
        (
            {"conda_packages": ["numpy[[x"]},
            {},
            "conda_packages",
            "conda_packages[0]: 'numpy[[x' is not a conda match spec",
        ),
        (
            {"conda_dependencies_file": "env.yml"},
            {"env.yml": "dependencies: [numpy\n"},
            "conda_dependencies_file",
            "conda_dependencies_file: not valid YAML",
        ),
        (
            {"conda_dependencies_file": "env.yml"},
            {"env.yml": "channels: conda-forge\ndependencies: [numpy]\n"},
            "conda_dependencies_file",
            "Expected `array`, got `str` - at `$.channels`",
        ),
        (
            {"conda_dependencies_file": "env.yml"},
            {"env.yml": "channels: ['../up']\ndependencies: [numpy]\n"},
            "conda_dependencies_file",
            "'../up' is not a conda channel",
        ),
        (
            {"conda_dependencies_file": "env.yml"},
            {"env.yml": "dependencies: [numpy, {pip: ['--index-url=http://x']}]\n"},
            "conda_dependencies_file",
            "pip options are not accepted",
        ),
    ],
)
def test_a_conda_part_the_server_cannot_read_is_refused_at_submit(
    cclient: httpx.Client,
    fields: dict[str, object],
    files: dict[str, str],
    field: str,
    message: str,
) -> None:
    snapshot = make_snapshot({"train.py": "print(1)\n", **files})
    response = submit_raw(cclient, {"entry_script": "train.py", **fields}, snapshot, "conda-bad")
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert message in response.json()["error"]


@pytest.mark.slow
def test_a_remote_node_builds_the_image_from_the_prefix_the_server_made(
    cluster: Server, nclient: httpx.Client, bed: dict[str, testbed.Node], channels: dict[str, Path]
) -> None:
    nclient.post("/api/v1/targets", json={"name": "conda-n1", "nodes": ["n1"]})
    env_file = f"channels: ['{channels['main']}']\ndependencies: [tinypkg]\n"  # a folder channel
    run = submit(
        nclient,
        SCRIPT,
        compute_target="conda-n1",
        extra_files={"env.yml": env_file},
        conda_dependencies_file="env.yml",
    )
    done = completed(nclient, run)
    assert done["properties"]["node"] == "n1"
    build = build_log(nclient, run["runId"])
    assert "Building environment image" in build and "on node n1" in build
    prefix = prefix_of(cluster, build)
    out = logs(nclient, run["runId"])
    assert "imported: tinypkg from the local channel" in out
    assert f"tinytool installed in {prefix}" in out
    subprocess.run(
        [
            "docker",
            "-H",
            f"unix://{bed['n1'].docker_socket}",
            "rmi",
            "-f",
            done["runDefinition"]["image"],
        ],
        capture_output=True,
    )


@pytest.mark.parametrize(
    ("entry", "urls"),
    [
        ("conda-forge", ["https://conda.anaconda.org/conda-forge"]),
        ("pytorch/label/dev", ["https://conda.anaconda.org/pytorch/label/dev"]),
        ("https://mirror.lab/conda-forge/", ["https://mirror.lab/conda-forge"]),
        ("/srv/channel", ["file:///srv/channel"]),
        ("defaults", ["https://repo.anaconda.com/pkgs/main", "https://repo.anaconda.com/pkgs/r"]),
        ("nodefaults", []),
    ],
)
def test_a_channel_is_a_name_a_url_or_a_folder(entry: str, urls: list[str]) -> None:
    assert conda.channel_urls("conda_channels", entry) == urls


def test_the_prefix_key_is_the_content_and_the_file_s_channels_come_first() -> None:
    one = conda.request_for(["b", "a"], None, "conda-forge")
    assert one.key == conda.request_for(["a", "b"], None, "conda-forge").key
    assert one.key != conda.request_for(["a", "b"], None, "/srv/mirror").key
    from_file = conda.request_for(
        ["lab::c"], "channels: [/srv/x]\ndependencies: [a, {pip: [six]}]\n", "conda-forge"
    )
    assert from_file.channels == ("file:///srv/x", "https://conda.anaconda.org/lab")
    assert from_file.specs == ("a", "lab::c") and from_file.pip == ("six",)
    assert from_file.with_pip
