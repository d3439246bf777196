"""The Estimator spec at submit: 422s that name the field; auth on everything but /healthz."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.helpers import make_snapshot, submit_raw

SNAP = make_snapshot({"train.py": "print('hi')\n", "requirements.txt": "numpy\n"})

REJECTED: list[tuple[dict[str, Any], str, str]] = [
    ({"entry_script": "train.py", "learning_rate": 1}, "learning_rate", "Unknown field"),
    ({}, "entry_script", "needs 'entry_script'"),
    ({"entry_script": "train.py", "node_count": "two"}, "node_count", "Expected `int`"),
    ({"entry_script": "train.py", "node_count": 2}, "node_count", "needs a distributed backend"),
    (
        {"entry_script": "train.py", "process_count_per_node": 2},
        "process_count_per_node",
        "needs a distributed backend",
    ),
    ({"entry_script": "train.py", "node_count": 0}, "node_count", "at least 1"),
    (
        {"entry_script": "train.py", "use_docker": False, "custom_docker_image": "x:1"},
        "custom_docker_image",
        "needs use_docker=True",
    ),
    (
        {"entry_script": "train.py", "environment_definition": "env1", "pip_packages": ["numpy"]},
        "pip_packages",
        "cannot be combined",
    ),
    (
        {
            "entry_script": "train.py",
            "custom_docker_image": "a:1",
            "custom_docker_base_image": "b:1",
        },
        "custom_docker_base_image",
        "give only one",
    ),
    (
        {
            "entry_script": "train.py",
            "distributed_backend": "mpi",
            "distributed_training": {"type": "mpi"},
        },
        "distributed_training",
        "not both",
    ),
    (
        {"entry_script": "train.py", "distributed_backend": "horovod"},
        "distributed_backend",
        "must be one of",
    ),
    (
        {"entry_script": "train.py", "environment_variables": {"1BAD": "x"}},
        "environment_variables",
        "not a valid environment variable name",
    ),
    (
        {"entry_script": "train.py", "environment_variables": {"A": 1}},
        "environment_variables",
        "Expected `str`",
    ),
    ({"entry_script": "train.py", "shm_size": "lots"}, "shm_size", "shm_size must look like"),
    (
        {"entry_script": "train.py", "max_run_duration_seconds": 0},
        "max_run_duration_seconds",
        "positive",
    ),
    ({"entry_script": "/abs/train.py"}, "entry_script", "relative path"),
    ({"entry_script": "../train.py"}, "entry_script", "'..'"),
    (
        {"entry_script": "train.py", "compute_target": "gpu-cluster"},
        "compute_target",
        "Unknown compute target 'gpu-cluster'",
    ),
    ({"entry_script": "train.py", "script_params": {"--lr": [1, 2]}}, "script_params", "Expected"),
    ({"entry_script": "train.py", "framework": "Caffe"}, "framework", "must be one of"),
    (
        {"entry_script": "train.py", "environment_definition": "env1"},
        "environment_definition",
        "No environment 'env1' is registered",
    ),
    (
        {"entry_script": "train.py", "pip_requirements_file": "missing.txt"},
        "pip_requirements_file",
        "'missing.txt' is not in the snapshot",
    ),
    # Valid Azure ML fields whose capability has not landed: refused, never ignored.
    (
        {"entry_script": "train.py", "use_gpu": True},
        "use_gpu",
        "largest node of target 'local' has 0",
    ),
    (
        {"entry_script": "train.py", "inputs": [{"datastore": "d"}]},
        "inputs",
        "is not a data reference",
    ),
    (
        {"entry_script": "train.py", "node_count": 2, "distributed_training": {"type": "mpi"}},
        "node_count",
        "node_count=2 needs 2 SSH nodes in compute target 'local'; it has 0",
    ),
    (
        {
            "entry_script": "train.py",
            "use_docker": False,
            "distributed_backend": "gloo",
            "node_count": 2,
        },
        "node_count",
        "distributed runs with use_docker=False run on the server's machine only",
    ),
    (
        {"entry_script": "train.py", "node_count": 2, "distributed_training": {"type": "ps"}},
        "distributed_training.worker_count",
        "worker_count=1 is less than node_count=2",
    ),
    (
        {
            "entry_script": "train.py",
            "distributed_training": {"type": "mpi", "process_count_per_node": 0},
        },
        "distributed_training.process_count_per_node",
        "must be at least 1",
    ),
    ({"entry_script": "train.py", "framework": "PyTorch"}, "framework", "not supported yet"),
]


@pytest.mark.parametrize(
    ("spec", "field", "message"), REJECTED, ids=[r[1] + ":" + r[2] for r in REJECTED]
)
def test_bad_estimator_is_a_422_naming_the_field(
    client: httpx.Client, spec: dict[str, Any], field: str, message: str
) -> None:
    response = submit_raw(client, spec, SNAP, experiment="specs")
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field
    assert message in body["error"]
    assert client.get("/api/v1/runs", params={"experiment": "specs"}).json()["runs"] == []


def test_estimator_that_is_not_json_is_a_422(client: httpx.Client) -> None:
    response = submit_raw(client, "{not json", SNAP, experiment="specs")
    assert response.status_code == 422
    assert response.json()["field"] == "estimator"


def test_bad_experiment_name_is_a_422(client: httpx.Client) -> None:
    response = submit_raw(client, {"entry_script": "train.py"}, SNAP, experiment="bad name!")
    assert response.status_code == 422
    assert response.json()["field"] == "experiment"


def test_missing_parts_are_named(client: httpx.Client) -> None:
    only_spec = client.post(
        "/api/v1/experiments/specs/runs",
        files={"estimator": (None, '{"entry_script": "train.py"}')},
    )
    assert only_spec.status_code == 422
    assert only_spec.json()["field"] == "snapshot"
    only_snap = client.post(
        "/api/v1/experiments/specs/runs", files={"snapshot": ("s.tar.gz", SNAP, "application/gzip")}
    )
    assert only_snap.status_code == 422
    assert only_snap.json()["field"] == "estimator"


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_requests_without_a_valid_token_are_401(server: Server, token: str | None) -> None:
    client = server.client(token=token)
    for method, path in [
        ("GET", "/api/v1/runs"),
        ("GET", "/api/v1/runs/x_1_deadbeef"),
        ("POST", "/api/v1/runs/x_1_deadbeef/cancel"),
        ("GET", "/api/v1/runs/x_1_deadbeef/logs"),
        ("GET", "/schema/openapi.json"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 401, (method, path, response.text)
        assert "token" in response.json()["error"]
    response = submit_raw(client, {"entry_script": "train.py"}, SNAP)
    assert response.status_code == 401


def test_healthz_needs_no_token(server: Server) -> None:
    response = server.client(token=None).get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_openapi_describes_the_api(client: httpx.Client) -> None:
    schema = client.get("/schema/openapi.json").json()
    assert "/api/v1/experiments/{experiment}/runs" in schema["paths"]
    assert "/api/v1/runs/{run_id}/files/{path}" in schema["paths"]
    assert schema["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
