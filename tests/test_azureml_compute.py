"""Compute the Azure ML way: a machine of the test bed attached from a notebook with
``RemoteCompute.attach_configuration`` and ``ComputeTarget.attach``, a script run there by the
attached name, ``get_status``, ``detach``; key files that cannot be used, an address that does not
answer; registered environments under Azure ML's curated names; ``ws.environments`` and
``ws.datastores``.

The machine is the test bed's n1 (tests/testbed.py), attached to a server of this module's own
under another name: the shared cluster's nodes and targets stay as its tests expect them. Run under
``flock /tmp/trainhub-testbed.lock``."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import testbed
from tests.conftest import TOKEN, Server, free_port, start_server
from tests.helpers import cli_for, submit, wait_for_status
from tests.test_azureml_compat import run_notebook
from tests.test_sdk import write_project

ATTACHED = "gpu-box"
CURATED_GPU = "AzureML-ACPT-pytorch-1.13-py38-cuda11.7-gpu"
PASSPHRASE = "correct horse battery"

TRAIN = """\
import os
print("node:", os.environ["TRAINHUB_NODE"])
print("gpus:", os.environ["NVIDIA_VISIBLE_DEVICES"])
"""
WAIT = """\
import time
print("waiting", flush=True)
time.sleep(600)
"""

# A user's notebook from the attach to the detach; only the workspace line is trainhub's.
NOTEBOOK = textwrap.dedent(
    """
    import json, time
    from azureml.core import Environment, Experiment, ScriptRunConfig, Workspace
    from azureml.core.compute import ComputeTarget, RemoteCompute
    from azureml.core.compute_target import ComputeTargetException

    ws = Workspace.from_config()
    attach_config = RemoteCompute.attach_configuration(
        address="{address}", ssh_port=22, username="root",
        private_key_file="{key}", private_key_passphrase="{passphrase}",
        docker_socket="{docker_socket}")  # the test bed's engines listen elsewhere
    compute = ComputeTarget.attach(ws, "gpu-box", attach_config)
    compute.wait_for_completion(show_output=True)
    print("targets:", sorted(ws.compute_targets))
    found = ComputeTarget(workspace=ws, name="gpu-box")
    print("found:", type(found).__name__, found.nodes)
    status = compute.get_status()
    print("status:", status.state, status.gpus, status.free_gpus, status.running_runs)
    print("node answer:", json.dumps(ws.client.json("GET", "/api/v1/nodes/gpu-box")))
    print("environments:", sorted(ws.environments))
    print("datastores:", sorted(ws.datastores))

    env = Environment.get(ws, "{curated}")
    experiment = Experiment(ws, "attached")
    src = ScriptRunConfig(source_directory="proj", script="train.py", compute_target="gpu-box",
                          environment=env)
    run = experiment.submit(src)
    run.wait_for_completion()
    print("run:", run.id, run.get_status(), run.get_details()["properties"]["node"])

    try:
        ComputeTarget.attach(ws, "gpu-box", attach_config)
    except ComputeTargetException as exc:
        print("again:", exc)

    waiting = experiment.submit(ScriptRunConfig(source_directory="proj", script="wait.py",
                                                compute_target=found, environment=env))
    while waiting.get_status() != "Running":
        time.sleep(0.5)
    print("busy:", compute.get_status().running_runs == [waiting.id])
    try:
        compute.detach()
    except ComputeTargetException as exc:
        print("refused:", exc)
    waiting.cancel()
    waiting.wait_for_completion(raise_on_error=False)
    compute.detach()
    compute.wait_for_completion(show_output=True, is_delete_operation=True)
    print("after detach:", sorted(ws.compute_targets))
    """
)


@pytest.fixture(scope="module")
def bed_server(
    tmp_path_factory: pytest.TempPathFactory, bed: dict[str, testbed.Node]
) -> Iterator[Server]:
    srv = start_server(tmp_path_factory, "attach-data", ssh_keepalive_seconds="1")
    yield srv
    srv.cleanup()


@pytest.fixture
def attach_server(bed_server: Server) -> Iterator[Server]:
    """The module's server, with only ``local`` again after each test, whatever the test left."""
    yield bed_server
    admin = bed_server.client()
    unended = "Queued,Preparing,Starting,Running,Finalizing,CancelRequested"
    for run in admin.get("/api/v1/runs", params={"status": unended}).json()["runs"]:
        admin.post(f"/api/v1/runs/{run['runId']}/cancel")
        wait_for_status(admin, run["runId"])
    for target in admin.get("/api/v1/targets").json()["targets"]:
        if target["name"] != "local":
            admin.delete(f"/api/v1/targets/{target['name']}")
    for node in admin.get("/api/v1/nodes").json()["nodes"]:
        if node["name"] != "local":
            admin.delete(f"/api/v1/nodes/{node['name']}")


def _encrypted_copy(key: Path, dest: Path, passphrase: str) -> Path:
    """The test bed's client key, encrypted with ``passphrase`` (OpenSSH's format, as
    ``ssh-keygen`` writes keys today)."""
    dest.write_bytes(key.read_bytes())
    dest.chmod(0o600)
    testbed.sh("ssh-keygen", "-q", "-p", "-P", "", "-N", passphrase, "-f", str(dest))
    return dest


def _key_body(key: Path) -> str:
    """The base64 lines of a private key file: what must never show up anywhere."""
    return "".join(line for line in key.read_text().splitlines() if "PRIVATE KEY" not in line)


def _stored_keys(server: Server) -> list[Path]:
    folder = server.data / "node-keys"
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.mark.docker
def test_a_notebook_attaches_a_machine_runs_on_it_by_name_and_detaches_it(
    attach_server: Server, bed: dict[str, testbed.Node], tmp_path: Path
) -> None:
    n1 = bed["n1"]
    admin = attach_server.client()
    curated = admin.post("/api/v1/environments", json={"name": CURATED_GPU, "use_gpu": True})
    assert curated.status_code == 201, curated.text
    write_project(tmp_path / "proj", {"train.py": TRAIN, "wait.py": WAIT})
    key = _encrypted_copy(n1.client_key, tmp_path / "id_ed25519", PASSPHRASE)
    source = NOTEBOOK.format(
        address=n1.address,
        key=key,
        passphrase=PASSPHRASE,
        docker_socket=n1.docker_socket,
        curated=CURATED_GPU,
    )

    result = run_notebook(attach_server, tmp_path, source, timeout=240)

    assert result.returncode == 0, result.stderr + result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{ATTACHED}: Ready, 4 GPU(s) (NVIDIA A100-SXM4-40GB), ")
    assert ", Docker " in lines[0]
    assert lines[1] == f"targets: ['{ATTACHED}', 'local']"
    assert lines[2] == f"found: RemoteCompute ['{ATTACHED}']"
    assert lines[3] == "status: Ready 4 4 []"
    node = json.loads(lines[4].removeprefix("node answer: "))
    pinned = " ".join(Path(f"{n1.host_key}.pub").read_text().split()[:2])
    assert node["host"] == n1.address and node["hostKey"] == pinned
    assert lines[5] == f"environments: ['{CURATED_GPU}']"
    assert lines[6] == "datastores: ['workspaceblobstore']"

    # The script ran on the attached machine: the node of that name, one of n1's GPUs.
    run_id = lines[7].split()[1]
    assert lines[7] == f"run: {run_id} Completed {ATTACHED}"
    log = admin.get(f"/api/v1/runs/{run_id}/logs").text
    assert f"node: {ATTACHED}" in log
    assert "gpus: GPU-n1-" in log
    assert admin.get(f"/api/v1/runs/{run_id}").json()["target"] == ATTACHED

    assert lines[8] == (
        f"again: {attach_server.url} has a compute target '{ATTACHED}' already (nodes: "
        f"{ATTACHED}): use ComputeTarget(workspace=ws, name='{ATTACHED}'), or detach() it first"
    )
    assert lines[9] == "busy: True"
    assert lines[10].startswith(
        f"refused: Compute target '{ATTACHED}' cannot be detached: 1 run(s) are active on it ("
    )
    assert lines[11:] == [f"{ATTACHED}: Detached", "after detach: ['local']"]
    assert admin.get(f"/api/v1/nodes/{ATTACHED}").status_code == 404

    # The key and its passphrase were never shown, logged or left behind.
    body = _key_body(n1.client_key)
    for seen in (result.stdout, result.stderr, attach_server.log_path.read_text()):
        assert body not in seen and PASSPHRASE not in seen
    assert _stored_keys(attach_server) == []


@pytest.mark.docker
def test_a_key_sent_with_a_node_is_kept_mode_600_and_deleted_with_it(
    attach_server: Server, bed: dict[str, testbed.Node]
) -> None:
    admin = attach_server.client()
    n2 = bed["n2"]
    body = {
        "name": "n2-sent",
        "host": n2.address,
        "user": "root",
        "docker_socket": n2.docker_socket,
        "private_key": n2.client_key.read_text(),
    }
    added = admin.post("/api/v1/nodes", json=body)
    assert added.status_code == 201, added.text
    try:
        assert added.json()["state"] == "Ready"
        (stored,) = _stored_keys(attach_server)
        assert stored.stat().st_mode & 0o777 == 0o600
        assert stored.parent.stat().st_mode & 0o777 == 0o700
        key_body = _key_body(n2.client_key)
        for answer in (added.text, admin.get("/api/v1/nodes").text):
            assert key_body not in answer and str(stored) not in answer

        # A target with a run waiting for it is not removed; without one it is, its node stays.
        assert admin.post("/api/v1/targets", json={"name": "sent", "nodes": ["n2-sent"]}).is_success
        assert admin.post("/api/v1/nodes/n2-sent/disable").json()["state"] == "Disabled"
        run = submit(admin, "print('hi')", compute_target="sent", experiment="attach")
        refused = admin.delete("/api/v1/targets/sent")
        assert refused.status_code == 409
        assert refused.json()["error"] == (
            f"Compute target sent has 1 queued or active run(s) ({run['runId']}); cancel them or "
            "wait for them to end"
        )
        admin.post(f"/api/v1/runs/{run['runId']}/cancel")
        assert wait_for_status(admin, run["runId"])["status"] == "Canceled"
        removed = cli_for(attach_server.url, TOKEN)("target", "remove", "sent")
        assert removed.returncode == 0 and removed.stdout.strip() == "removed target sent"
        assert "sent" not in [t["name"] for t in admin.get("/api/v1/targets").json()["targets"]]
        assert admin.get("/api/v1/nodes/n2-sent").status_code == 200
    finally:
        admin.delete("/api/v1/nodes/n2-sent")
    assert _stored_keys(attach_server) == []


@pytest.mark.docker
def test_an_address_that_does_not_answer_or_refuses_the_key_says_so_and_keeps_nothing(
    attach_server: Server, bed: dict[str, testbed.Node], tmp_path: Path
) -> None:
    from azureml.core import Workspace
    from azureml.core.compute import ComputeTarget, RemoteCompute
    from azureml.core.compute_target import ComputeTargetException

    ws = Workspace(attach_server.url, token=TOKEN)
    key = bed["n1"].client_key
    silent = RemoteCompute.attach_configuration(
        address="10.77.0.99", username="root", private_key_file=str(key)
    )
    with pytest.raises(ComputeTargetException) as unreachable:
        ComputeTarget.attach(ws, "nowhere", silent)
    assert str(unreachable.value).startswith(
        f"Cannot attach root@10.77.0.99:22 as 'nowhere' (key {key}): Cannot reach 10.77.0.99:22 "
        "over SSH: "
    )

    stranger = tmp_path / "stranger_key"
    testbed.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger))
    address = bed["n1"].address
    wrong = RemoteCompute.attach_configuration(
        address=address, username="root", private_key_file=str(stranger)
    )
    with pytest.raises(ComputeTargetException) as refused:
        ComputeTarget.attach(ws, "stranger", wrong)
    assert str(refused.value) == (
        f"Cannot attach root@{address}:22 as 'stranger' (key {stranger}): root@{address}:22 "
        "refused the key sent as private_key"
    )
    assert sorted(ws.compute_targets) == ["local"]
    names = [n["name"] for n in ws.client.json("GET", "/api/v1/nodes")["nodes"]]
    assert names == ["local"]
    assert _stored_keys(attach_server) == []


def _key_files(folder: Path) -> dict[str, tuple[Path, str | None]]:
    """Key files that cannot be used, each with the passphrase given for it."""
    plain = folder / "id_ed25519"
    testbed.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(plain))
    encrypted = _encrypted_copy(plain, folder / "id_encrypted", PASSPHRASE)
    (folder / "notes.txt").write_text("not a key\n")
    (folder / "big").write_bytes(b"x" * 100_000)
    (folder / "a-folder").mkdir()
    return {
        "missing": (folder / "missing_key", None),
        "a folder": (folder / "a-folder", None),
        "not a key": (folder / "notes.txt", None),
        "too big": (folder / "big", None),
        "the public key": (folder / "id_ed25519.pub", None),
        "encrypted, no passphrase": (encrypted, None),
        "encrypted, wrong passphrase": (encrypted, "wrong"),
    }


EXPECTED = {
    "missing": "cannot be read: No such file or directory",
    "a folder": "cannot be read: Is a directory",
    "not a key": "cannot be used as an SSH private key (OpenSSH or PEM format): Invalid private key",
    "too big": "is 100000 bytes, more than any SSH private key: not a private key",
    "the public key": "is a public key: give the private one (the file without .pub)",
    "encrypted, no passphrase": (
        "cannot be used as an SSH private key (OpenSSH or PEM format): Passphrase must be "
        "specified to import encrypted private keys"
    ),
    "encrypted, wrong passphrase": (
        "cannot be decrypted with private_key_passphrase: Incorrect passphrase"
    ),
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_a_key_file_that_cannot_be_used_is_refused_naming_it_before_anything_is_sent(
    tmp_path: Path, case: str
) -> None:
    from azureml.core import Workspace
    from azureml.core.compute import ComputeTarget, RemoteCompute
    from azureml.core.compute_target import ComputeTargetException

    path, passphrase = _key_files(tmp_path)[case]
    # Nothing listens there: a request sent before the key is checked would fail differently.
    ws = Workspace(f"http://127.0.0.1:{free_port()}", token=TOKEN)
    config = RemoteCompute.attach_configuration(
        address="10.0.0.5",
        username="me",
        private_key_file=str(path),
        private_key_passphrase=passphrase or "",
    )
    assert PASSPHRASE not in repr(config)
    with pytest.raises(ComputeTargetException) as caught:
        ComputeTarget.attach(ws, "box", config)
    assert str(caught.value) == f"private_key_file {path} {EXPECTED[case]}"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"resource_id": "/subscriptions/x/virtualMachines/vm"},
            "resource_id names an Azure virtual machine; trainhub attaches a machine by its SSH "
            "address: address='10.0.0.5'",
        ),
        (
            {"address": "10.0.0.5", "username": "me", "password": "hunter2"},
            "trainhub reaches machines with an SSH key, not a password: give private_key_file "
            "(and private_key_passphrase if the key has one)",
        ),
        (
            {"username": "me", "private_key_file": "k"},
            "RemoteCompute.attach_configuration needs address",
        ),
        (
            {"address": "10.0.0.5", "private_key_file": "k"},
            "RemoteCompute.attach_configuration needs username",
        ),
        (
            {"address": "10.0.0.5", "username": "me"},
            "RemoteCompute.attach_configuration needs private_key_file",
        ),
        (
            {"address": "10.0.0.5", "username": "me", "private_key_file": "k", "ssh_port": 70000},
            "ssh_port 70000 is not a TCP port (1-65535)",
        ),
    ],
)
def test_an_attach_configuration_trainhub_cannot_use_says_why(
    arguments: dict[str, object], message: str
) -> None:
    from azureml.core.compute import RemoteCompute
    from azureml.core.compute_target import ComputeTargetException

    with pytest.raises(ComputeTargetException) as caught:
        RemoteCompute.attach_configuration(**arguments)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_creating_a_cluster_says_trainhub_provisions_none_and_how_to_attach_one(
    server: Server,
) -> None:
    from azureml.core import Workspace
    from azureml.core.compute import AmlCompute, ComputeTarget
    from azureml.core.compute_target import ComputeTargetException

    ws = Workspace(server.url, token=TOKEN)
    config = AmlCompute.provisioning_configuration(vm_size="STANDARD_NC6", max_nodes=4)
    with pytest.raises(ComputeTargetException) as caught:
        ComputeTarget.create(ws, "gpu-cluster", config)
    assert str(caught.value) == (
        "trainhub does not provision machines, so compute target 'gpu-cluster' cannot be created "
        "here. Attach a machine you have (SSH with a key, Docker installed): "
        "ComputeTarget.attach(ws, 'gpu-cluster', RemoteCompute.attach_configuration("
        "address='10.0.0.5', username='me', private_key_file='~/.ssh/id_ed25519')); or an admin "
        "registers the lab's servers (`trainhub node add`) and groups them (`trainhub target "
        "create gpu-cluster --nodes n1,n2`)"
    )
    local = ComputeTarget(workspace=ws, name="local")
    assert type(local) is ComputeTarget and local.get_status().state == "Ready"
    with pytest.raises(ComputeTargetException, match="was not attached with ComputeTarget.attach"):
        local.detach()


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            {"key_path": "/keys/id", "private_key": "x"},
            "key_path",
            "A node needs one SSH private key: key_path (a file on the server's machine) or "
            "private_key (the key's text)",
        ),
        (
            {},
            "key_path",
            "A node needs one SSH private key: key_path (a file on the server's machine) or "
            "private_key (the key's text)",
        ),
        (
            {"private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0IHRleHQ=\n"},
            "private_key",
            "private_key is not an unencrypted SSH private key (OpenSSH or PEM format): Missing "
            "PEM footer",
        ),
        (
            {"private_key": "k" * 70_000},
            "private_key",
            "private_key is longer than 65536 characters: not an SSH key",
        ),
    ],
)
def test_a_node_s_key_given_twice_never_or_unusable_is_422_naming_it_and_stores_nothing(
    server: Server, body: dict[str, str], field: str, message: str
) -> None:
    client = server.client()
    node = {"name": "keyed", "host": "127.0.0.1", "port": free_port(), "user": "root", **body}
    response = client.post("/api/v1/nodes", json=node)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert response.json()["error"] == message
    assert "c2VjcmV0IHRleHQ" not in response.text
    assert client.get("/api/v1/nodes/keyed").status_code == 404
    assert _stored_keys(server) == []


def test_removing_a_target_that_is_not_there_or_is_local_says_so(client: httpx.Client) -> None:
    missing = client.delete("/api/v1/targets/no-such-target")
    assert missing.status_code == 404
    assert missing.json()["error"] == "No compute target named 'no-such-target'"
    local = client.delete("/api/v1/targets/local")
    assert local.status_code == 400
    assert "The target 'local' is the server itself" in local.json()["error"]


@pytest.mark.parametrize(
    "name",
    [
        "AzureML-sklearn-1.0-ubuntu20.04-py38-cpu",
        "AzureML-ACPT-pytorch-1.13-py38-cuda11.7-gpu",
        "AzureML-Minimal",
        "lab_env.v2",
    ],
)
def test_environments_registered_under_azure_ml_s_curated_names_are_found_by_them(
    server: Server, name: str
) -> None:
    from azureml.core import Environment, Workspace
    from azureml.core.conda_dependencies import CondaDependencies

    ws = Workspace(server.url, token=TOKEN)
    env = Environment(name)
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["scikit-learn"])
    env.register(ws)

    found = Environment.get(ws, name)
    assert (found.name, found.version) == (name, env.version)
    assert found.python.conda_dependencies.pip_packages == ["scikit-learn"]
    assert ws.environments[name].version == env.version
    assert isinstance(ws.datastores, dict) and "workspaceblobstore" in ws.datastores


def test_a_curated_name_nobody_registered_says_an_admin_can(server: Server) -> None:
    from azureml.core import Environment, Workspace
    from trainhub.sdk.errors import ServiceError

    ws = Workspace(server.url, token=TOKEN)
    with pytest.raises(ServiceError) as caught:
        Environment.get(ws, "AzureML-TensorFlow-2.3-GPU")
    assert caught.value.message == (
        "No environment 'AzureML-TensorFlow-2.3-GPU' is registered on this server: Azure ML's "
        "curated environments are not built into trainhub; an admin can register one under this "
        "name (POST /api/v1/environments, or Environment(name).register(ws))"
    )


@pytest.mark.parametrize(
    "name", [".hidden", "..", "-dash", "a/b", "a b", "env\n", "x" * 256, "AzureML-é"]
)
def test_environment_names_outside_the_rule_are_422_naming_the_field(
    client: httpx.Client, name: str
) -> None:
    response = client.post("/api/v1/environments", json={"name": name})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "name"
    assert response.json()["error"] == (
        "Environment names are 1-255 letters, digits, '-', '_' or '.', starting with a letter or "
        "digit"
    )
