"""Dockerfile environments (Azure ML's ``docker.base_dockerfile`` and ``Environment.from_dockerfile``)
on the real engine: the image is built from the Dockerfile once per content and reused, packages go on
top of it, a broken Dockerfile fails the run with Docker's error on the run's page, and bad input is a
422 naming ``custom_dockerfile``."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.conftest import TOKEN, Server, start_server
from tests.helpers import add_user, login, make_snapshot, submit, submit_raw, wait_for_status
from tests.html import parse
from tests.test_environments import HOST_CA, build_log, make_wheel
from tests.test_sdk import write_project
from trainhub.sdk import (
    ActivityFailedException,
    Environment,
    Estimator,
    Experiment,
    ScriptRunConfig,
    Workspace,
)
from trainhub.spec import parse_estimator
from trainhub.spec_dockerfile import MAX_DOCKERFILE_BYTES

# A session's own line makes its Dockerfiles new to the engine, whatever earlier sessions left there.
SESSION = uuid.uuid4().hex
DOCKERFILE = (
    "FROM trainhub/base:cpu\n"
    f"# session {SESSION}\n"
    "RUN echo 'written by the Dockerfile' > /etc/trainhub-dockerfile.txt\n"
)
READ_IT = "print('the image says:', open('/etc/trainhub-dockerfile.txt').read().strip())\n"


@pytest.fixture(scope="module")
def df_server(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Server]:
    wheels = tmp_path_factory.mktemp("df-wheels")
    make_wheel(wheels, "thlocal", "1.0", "from the wheel folder")
    (wheels / f"session-{SESSION}.txt").write_text("marker\n")
    srv = start_server(tmp_path_factory, "df-data", build_ca_bundle=HOST_CA, wheel_dir=str(wheels))
    yield srv
    srv.cleanup()
    with sqlite3.connect(srv.data / "trainhub.db") as conn:
        images = [row[0] for row in conn.execute("select image from env_images order by rowid")]
    engine = docker.from_env()
    for image in reversed(images):  # images built on a Dockerfile's image go first
        try:
            engine.images.remove(image, force=True)
        except docker.errors.ImageNotFound:
            pass
    engine.close()


@pytest.fixture
def ws(df_server: Server) -> Workspace:
    return Workspace(df_server.url, token=TOKEN)


@pytest.fixture
def api(df_server: Server) -> httpx.Client:
    return df_server.client()


def run_log(api: httpx.Client, run_id: str) -> str:
    return api.get(f"/api/v1/runs/{run_id}/logs").text


@pytest.mark.docker
def test_a_script_run_config_runs_in_the_image_its_dockerfile_builds_once(
    ws: Workspace, api: httpx.Client, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "proj", {"train.py": READ_IT})
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    env = Environment.from_dockerfile("df-env", str(tmp_path / "Dockerfile"))  # a path, read now
    assert env.docker.base_dockerfile == DOCKERFILE
    exp = Experiment(ws, "dockerfile")

    first = exp.submit(ScriptRunConfig(str(project), "train.py", environment=env))
    details = first.wait_for_completion()
    assert details["status"] == "Completed"
    assert "the image says: written by the Dockerfile" in run_log(api, first.id)
    log = build_log(api, first.id)
    assert "from the environment's Dockerfile" in log
    assert "Step 2/3 : RUN echo 'written by the Dockerfile'" in log  # 3: the engine's label
    image = details["runDefinition"]["image"]
    assert image.startswith("trainhub/env:")
    listed = {i["image"]: i for i in api.get("/api/v1/images").json()["images"]}
    assert listed[image]["baseImage"] == "Dockerfile (FROM trainhub/base:cpu)"

    again = Environment("df-env-again")
    again.docker.base_dockerfile = DOCKERFILE  # the text this time
    second = exp.submit(ScriptRunConfig(str(project), "train.py", environment=again))
    assert second.wait_for_completion()["runDefinition"]["image"] == image
    log = build_log(api, second.id)
    assert f"Environment image {image} is present on node local: reused, no build." in log
    assert "Step 1/" not in log

    changed = Environment.from_dockerfile("df-env-2", DOCKERFILE + "RUN echo changed\n")
    third = exp.submit(ScriptRunConfig(str(project), "train.py", environment=changed))
    assert third.wait_for_completion()["runDefinition"]["image"] != image
    assert "Step 3/4 : RUN echo changed" in build_log(api, third.id)


@pytest.mark.docker
def test_pip_packages_go_on_top_of_the_dockerfile_image(
    ws: Workspace, api: httpx.Client, tmp_path: Path
) -> None:
    project = write_project(
        tmp_path / "proj", {"train.py": READ_IT + "import thlocal\nprint(thlocal.VALUE)\n"}
    )
    (tmp_path / "requirements.txt").write_text("thlocal==1.0\n")
    env = Environment.from_dockerfile(
        "df-pip", DOCKERFILE, pip_requirements=str(tmp_path / "requirements.txt")
    )
    run = Experiment(ws, "dockerfile").submit(
        ScriptRunConfig(str(project), "train.py", environment=env)
    )
    details = run.wait_for_completion()
    log = run_log(api, run.id)
    assert "the image says: written by the Dockerfile" in log and "from the wheel folder" in log
    build = build_log(api, run.id)
    # The Dockerfile's image (built by the test above, or now), then the packages' image on it.
    found = re.search(
        r"image (trainhub/env:\w+) (?:is present on node local: reused|on node local from the "
        r"environment's Dockerfile)",
        build,
    )
    assert found is not None, build
    image = details["runDefinition"]["image"]
    assert image != found.group(1)
    assert f"Building environment image {image} on node local from {found.group(1)}" in build
    assert "Successfully installed thlocal-1.0" in build


@pytest.mark.docker
def test_a_registered_dockerfile_environment_comes_back_and_runs_by_name(
    ws: Workspace, api: httpx.Client, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "proj", {"train.py": READ_IT})
    Environment.from_dockerfile("df-registered", DOCKERFILE).register(ws)
    fetched = Environment.get(ws, "df-registered")
    assert fetched.docker.base_dockerfile == DOCKERFILE and fetched.docker.base_image is None
    assert Environment.list(ws)["df-registered"].docker.base_dockerfile == DOCKERFILE
    run = Experiment(ws, "dockerfile").submit(
        Estimator(str(project), entry_script="train.py", environment_definition="df-registered")
    )
    assert run.wait_for_completion()["status"] == "Completed"
    assert "the image says: written by the Dockerfile" in run_log(api, run.id)


@pytest.mark.docker
def test_a_broken_dockerfile_fails_the_run_with_dockers_error_on_its_page(
    df_server: Server, ws: Workspace, api: httpx.Client, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "proj", {"train.py": "print('never')\n"})
    env = Environment.from_dockerfile(
        "df-broken", f"FROM trainhub/base:cpu\nRUN echo {SESSION} && exit 3\n"
    )
    run = Experiment(ws, "dockerfile").submit(
        ScriptRunConfig(str(project), "train.py", environment=env)
    )
    with pytest.raises(ActivityFailedException):
        run.wait_for_completion()
    details = run.get_details()
    assert details["status"] == "Failed"
    assert details["properties"]["reason"] == "build_failed"
    message = details["error"]["message"]
    assert "The environment build failed on node local" in message
    assert "returned a non-zero code: 3" in message
    assert "returned a non-zero code: 3" in build_log(api, run.id)
    assert "never" not in run_log(api, run.id)

    add_user(df_server.client(), "df-viewer")
    browser = login(df_server.url, "df-viewer")
    page = parse(browser.get(f"/runs/{run.id}"))
    assert "returned a non-zero code: 3" in page.find("run-error").text
    assert "returned a non-zero code: 3" in page.find("build-log").text
    browser.close()


@pytest.mark.docker
def test_a_from_image_no_node_can_get_fails_and_says_how_to_load_it(
    df_server: Server,
) -> None:
    client = df_server.client()
    dockerfile = f"FROM 127.0.0.1:1/nowhere/base:{SESSION[:8]}\nRUN true\n"
    run = submit(client, "print('never')\n", custom_dockerfile=dockerfile)
    done = wait_for_status(client, run["runId"], timeout=60)
    assert done["status"] == "Failed"
    assert done["properties"]["reason"] == "image_missing"
    message = done["error"]["message"]
    assert "The Dockerfile starts FROM 127.0.0.1:1/nowhere/base" in message
    assert "not on node local" in message and "docker load" in message


def test_bad_dockerfile_input_is_a_422_naming_the_field(df_server: Server) -> None:
    client = df_server.client()
    snapshot = make_snapshot({"train.py": "print()\n"})

    def refused(**fields: object) -> str:
        response = submit_raw(client, {"entry_script": "train.py", **fields}, snapshot)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "custom_dockerfile", response.text
        return str(response.json()["error"])

    too_big = "FROM trainhub/base:cpu\n" + "# padding\n" * (MAX_DOCKERFILE_BYTES // 10)
    assert f"at most {MAX_DOCKERFILE_BYTES} bytes" in refused(custom_dockerfile=too_big)
    assert "not both" in refused(
        custom_dockerfile=DOCKERFILE, custom_docker_image="trainhub/base:cpu"
    )
    assert "starts with FROM" in refused(custom_dockerfile="RUN echo hi\n")
    assert "line 2: unknown instruction 'RUNN'" in refused(
        custom_dockerfile="FROM trainhub/base:cpu\nRUNN echo\n"
    )
    assert "build context" in refused(custom_dockerfile="FROM trainhub/base:cpu\nCOPY a.txt /a\n")
    assert "line 1: FROM 'Ubuntu' is not a Docker image reference" in refused(
        custom_dockerfile="FROM Ubuntu\n"
    )
    assert "needs use_docker=True" in refused(custom_dockerfile=DOCKERFILE, use_docker=False)

    both = client.post(
        "/api/v1/environments",
        json={"name": "df-both", "custom_dockerfile": DOCKERFILE, "custom_docker_image": "a:1"},
    )
    assert both.status_code == 422 and both.json()["field"] == "custom_dockerfile"
    big = client.post("/api/v1/environments", json={"name": "df-big", "custom_dockerfile": too_big})
    assert big.status_code == 422 and big.json()["field"] == "custom_dockerfile"
    assert client.get("/api/v1/environments/df-both").status_code == 404
    good = {"name": "df-good", "custom_dockerfile": DOCKERFILE}
    assert client.post("/api/v1/environments", json=good).status_code == 201
    spec = {"entry_script": "train.py", "environment_definition": "df-good", "use_docker": False}
    no_docker = submit_raw(client, spec, snapshot)
    assert no_docker.status_code == 422 and no_docker.json()["field"] == "use_docker"
    assert "built from a Dockerfile" in no_docker.json()["error"]


def test_from_dockerfile_sends_the_text_and_takes_one_package_file(tmp_path: Path) -> None:
    (tmp_path / "env.yml").write_text("dependencies:\n  - pip:\n    - six\n")
    (tmp_path / "req.txt").write_text("six\n")
    env = Environment.from_dockerfile(
        "d", DOCKERFILE, conda_specification=str(tmp_path / "env.yml")
    )
    spec = ScriptRunConfig(str(tmp_path), "train.py", environment=env).to_spec()
    assert spec["custom_dockerfile"] == DOCKERFILE and spec["pip_packages"] == ["six"]
    assert "custom_docker_image" not in spec and "user_managed" not in spec
    assert parse_estimator(json.dumps(spec)).custom_dockerfile == DOCKERFILE
    plain = Environment.from_dockerfile("d", DOCKERFILE)
    assert plain.python.user_managed_dependencies  # the image's Python, as in Azure ML
    with pytest.raises(ValueError, match="not both"):
        Environment.from_dockerfile(
            "d", DOCKERFILE, str(tmp_path / "env.yml"), str(tmp_path / "req.txt")
        )
    with_image = Environment("d")
    with_image.docker.base_image = "trainhub/base:cpu"
    with_image.docker.base_dockerfile = DOCKERFILE
    fields = with_image.to_spec_fields()
    assert fields["custom_dockerfile"] == DOCKERFILE  # the server refuses both, naming the field
