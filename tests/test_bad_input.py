"""Hostile spec values, as a user with a token would send them: a 422 naming the field, and nothing
stored (no run, no snapshot, no environment, no image build, no container)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TOKEN, Server
from tests.helpers import make_snapshot, submit_raw, wait_for_status
from trainhub import Environment, Estimator, Experiment, ValidationError, Workspace
from trainhub.sdk.environment import CondaDependencies

SNAP = make_snapshot({"train.py": "print('hi')\n"})
EXPERIMENT = "badinput"

HOSTILE_SPECS: dict[str, tuple[dict[str, Any], str, str]] = {
    "pip option": (
        {"pip_packages": ["six", "--index-url=http://evil.example/simple"]},
        "pip_packages",
        "pip_packages[1]: '--index-url=http://evil.example/simple' is not a requirement (PEP 508",
    ),
    "pip entry with a newline": (
        {"pip_packages": ["six\n-r /etc/passwd"]},
        "pip_packages",
        "pip_packages[0]: 'six\\n-r /etc/passwd' is not a requirement (PEP 508",
    ),
    "two requirements in one pip entry": (
        {"pip_packages": ["six -r /etc/passwd"]},
        "pip_packages",
        "pip_packages[0]: 'six -r /etc/passwd' is not a requirement (PEP 508",
    ),
    "conda option": (
        {"conda_packages": ["numpy", "--channel=http://evil.example"]},
        "conda_packages",
        "conda_packages[1]: '--channel=http://evil.example' is not a conda package spec",
    ),
    "image with a docker option": (
        {"custom_docker_image": "--privileged alpine"},
        "custom_docker_image",
        "custom_docker_image: '--privileged alpine' is not a Docker image reference",
    ),
    "image with a Dockerfile line": (
        {"custom_docker_base_image": "alpine\nRUN echo owned"},
        "custom_docker_base_image",
        "custom_docker_base_image: 'alpine\\nRUN echo owned' is not a Docker image reference",
    ),
    "uppercase repository": (
        {"custom_docker_image": "Alpine:3"},
        "custom_docker_image",
        "repository names are lowercase",
    ),
}


def _footprint(server: Server, client: httpx.Client) -> dict[str, Any]:
    """What a submit leaves behind: runs, stored files (snapshots, uploads), environment images and
    their builds, containers."""
    return {
        "runs": client.get("/api/v1/runs", params={"experiment": EXPERIMENT}).json()["runs"],
        "files": {
            p
            for p in server.data.rglob("*")
            if p.is_file() and not p.name.startswith("trainhub.db")
        },
        "images": [i["image"] for i in client.get("/api/v1/images").json()["images"]],
        "containers": set(server.containers()),
    }


def _submit(
    client: httpx.Client, spec: dict[str, Any], tags: Any = None, experiment: str = EXPERIMENT
) -> httpx.Response:
    files: dict[str, Any] = {
        "estimator": (None, json.dumps({"entry_script": "train.py", **spec}), "application/json"),
        "snapshot": ("snapshot.tar.gz", SNAP, "application/gzip"),
    }
    if tags is not None:
        files["tags"] = (None, json.dumps(tags), "application/json")
    return client.post(f"/api/v1/experiments/{experiment}/runs", files=files)


@pytest.mark.parametrize("case", list(HOSTILE_SPECS))
def test_hostile_spec_value_is_a_422_naming_the_field_and_nothing_is_stored(
    case: str, server: Server, client: httpx.Client
) -> None:
    spec, field, message = HOSTILE_SPECS[case]
    before = _footprint(server, client)
    response = submit_raw(client, {"entry_script": "train.py", **spec}, SNAP, EXPERIMENT)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert message in response.json()["error"]
    assert _footprint(server, client) == before
    assert before["runs"] == []


HOSTILE_TAGS: dict[str, tuple[dict[str, Any], str]] = {
    "50,000 tags": ({f"k{i}": "v" for i in range(50_000)}, "tags: at most 100 tags (got 50000)"),
    "long key": ({"k" * 257: "v"}, "key longer than 256 characters"),
    "long value": ({"notes": "x" * 5001}, "tags['notes']: value longer than 5000 characters"),
}


@pytest.mark.parametrize("case", list(HOSTILE_TAGS))
def test_tags_over_the_limits_are_a_422_naming_the_limit_and_nothing_is_stored(
    case: str, server: Server, client: httpx.Client
) -> None:
    tags, message = HOSTILE_TAGS[case]
    before = _footprint(server, client)
    response = _submit(client, {}, tags=tags)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "tags"
    assert message in response.json()["error"]
    assert _footprint(server, client) == before
    assert before["runs"] == []


def test_tags_at_the_limits_are_kept(client: httpx.Client) -> None:
    tags = {f"{i:03d}" + "k" * 253: "v" * 5000 for i in range(100)}
    response = _submit(client, {}, tags=tags, experiment="tagsatlimits")
    assert response.status_code == 201, response.text
    run = wait_for_status(client, response.json()["runId"], "Completed")
    assert run["tags"] == tags
    # Tags added later stay within the same limits: a 101st is refused, changing one is not.
    url = f"/api/v1/runs/{run['runId']}/tags"
    more = client.post(url, json={"tags": {"one-more": "x"}})
    assert more.status_code == 422, more.text[:300]
    assert more.json()["field"] == "tags"
    assert "tags: at most 100 tags (got 101)" in more.json()["error"]
    flood = client.post(url, json={"tags": {str(i): "" for i in range(50_000)}})
    assert flood.status_code == 422 and "at most 100 tags (got 50000)" in flood.json()["error"]
    too_long = client.post(url, json={"tags": {"notes": "x" * 5001}})
    assert too_long.status_code == 422 and "longer than 5000" in too_long.json()["error"]
    assert client.get(f"/api/v1/runs/{run['runId']}").json()["tags"] == tags
    first = next(iter(tags))
    changed = client.post(url, json={"tags": {first: "changed"}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["tags"] == {**tags, first: "changed"}


@pytest.mark.parametrize(
    ("definition", "field", "message"),
    [
        (
            {"pip_packages": ["--extra-index-url=http://evil.example"]},
            "pip_packages",
            "pip_packages[0]: '--extra-index-url=http://evil.example' is not a requirement",
        ),
        (
            {"conda_packages": ["numpy; rm -rf /"]},
            "conda_packages",
            "conda_packages[0]: 'numpy; rm -rf /' is not a conda package spec",
        ),
        (
            {"custom_docker_image": "--privileged alpine"},
            "custom_docker_image",
            "'--privileged alpine' is not a Docker image reference",
        ),
    ],
)
def test_hostile_environment_definition_is_a_422_and_not_registered(
    client: httpx.Client, definition: dict[str, Any], field: str, message: str
) -> None:
    response = client.post("/api/v1/environments", json={"name": "hostile-env", **definition})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert message in response.json()["error"]
    assert client.get("/api/v1/environments/hostile-env").status_code == 404


def test_sdk_surfaces_the_refusals_with_the_field(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    (tmp_path / "t.py").write_text("print(1)\n")
    ws = Workspace(server.url, token=TOKEN)
    before = _footprint(server, client)
    experiment = Experiment(ws, EXPERIMENT)
    with pytest.raises(ValidationError) as pip:
        experiment.submit(
            Estimator(str(tmp_path), entry_script="t.py", pip_packages=["six\n-r /etc/passwd"])
        )
    assert pip.value.field == "pip_packages" and "pip_packages[0]" in pip.value.message
    with pytest.raises(ValidationError) as image:
        experiment.submit(
            Estimator(str(tmp_path), entry_script="t.py", custom_docker_image="--privileged alpine")
        )
    assert image.value.field == "custom_docker_image"
    with pytest.raises(ValidationError) as tags:
        experiment.submit(
            Estimator(str(tmp_path), entry_script="t.py"),
            tags={str(i): "" for i in range(50_000)},
        )
    assert tags.value.field == "tags" and "at most 100 tags" in tags.value.message
    env = Environment("hostile-sdk-env")
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["--index-url=http://x"])
    with pytest.raises(ValidationError) as definition:
        env.register(ws)
    assert definition.value.field == "pip_packages"
    assert _footprint(server, client) == before
