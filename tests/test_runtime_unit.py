"""The runtime layer: MPI layouts (counts, ports, per-run keys), the in-container launcher, and what
the engine is asked for (GPU device requests, the network)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from itertools import pairwise
from pathlib import Path

import msgspec
import pytest

from trainhub.runtime import mpi_launch
from trainhub.runtime.mpi import (
    PORT_BASE,
    PORT_SPAN,
    MpiLayout,
    head_environment,
    port_for,
    ssh_material,
    worker_command,
)
from trainhub.settings import Settings
from trainhub.spec import EstimatorSpec, is_mpi, processes_per_node


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_mpi_process_count_wins_over_the_estimators_own() -> None:
    assert processes_per_node(EstimatorSpec("a.py", process_count_per_node=3)) == 3
    spec = msgspec.convert(
        {
            "entry_script": "a.py",
            "process_count_per_node": 3,
            "distributed_training": {"type": "mpi", "process_count_per_node": 2},
        },
        EstimatorSpec,
    )
    assert processes_per_node(spec) == 2 and is_mpi(spec)
    assert is_mpi(EstimatorSpec("a.py", distributed_backend="mpi"))
    assert not is_mpi(EstimatorSpec("a.py"))


def test_ports_are_spread_by_run_and_stay_in_their_range() -> None:
    ports = {port_for(f"exp_1_{i:08x}") for i in range(200)}
    assert all(PORT_BASE <= p < PORT_BASE + PORT_SPAN for p in ports)
    assert len(ports) > 150
    assert port_for("exp_1_00000001") == port_for("exp_1_00000001")


def test_an_attempt_never_gets_the_port_of_the_attempt_before_it() -> None:
    # 2,000 runs of 20 attempts: with a port drawn at random per attempt about five retries here
    # would meet the sshd port of the attempt before them.
    for i in range(2000):
        run_id = f"exp_{i}_{i * 7919:08x}"
        ports = [port_for(run_id, attempt) for attempt in range(20)]
        assert all(PORT_BASE <= p < PORT_BASE + PORT_SPAN for p in ports)
        assert all(a != b for a, b in pairwise(ports)), (run_id, ports)
    # Past the end of the range the next attempt wraps to its start, still a different port.
    last = next(f"r{i}" for i in range(100_000) if port_for(f"r{i}") == PORT_BASE + PORT_SPAN - 1)
    assert port_for(last, 1) == PORT_BASE


def test_the_head_is_told_the_hosts_only_when_there_are_several() -> None:
    one = head_environment(MpiLayout((("", 4),), 41001))
    assert one["TRAINHUB_MPI_NP"] == "4" and "TRAINHUB_MPI_HOSTS" not in one
    two = head_environment(MpiLayout((("10.0.0.1", 2), ("10.0.0.2", 2)), 41001, "10.0.0.0/24"))
    assert two["TRAINHUB_MPI_NP"] == "4"
    assert two["TRAINHUB_MPI_HOSTS"] == "10.0.0.1:2,10.0.0.2:2"
    assert two["TRAINHUB_MPI_PORT"] == "41001"
    assert two["TRAINHUB_MPI_NETWORK"] == "10.0.0.0/24"


def test_the_run_keys_are_private_and_the_workers_host_key_is_pinned() -> None:
    layout = MpiLayout((("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1)), 41234)
    material = ssh_material(layout)
    head, worker = _members(material.head), _members(material.worker)
    assert head["trainhub/ssh"].mode == worker["trainhub/ssh"].mode == 0o700
    assert head["trainhub/ssh/id"].mode == 0o600
    assert worker["trainhub/ssh/host_key"].mode == 0o600
    assert "trainhub/ssh/host_key" not in head and "trainhub/ssh/id" not in worker
    with tarfile.open(fileobj=io.BytesIO(material.head)) as tar:
        member = tar.extractfile("trainhub/ssh/known_hosts")
        assert member is not None
        known = member.read().decode().splitlines()
    # Every node but the first, at the run's port, with the one host key made for this run.
    assert [line.split()[0] for line in known] == ["[10.0.0.2]:41234", "[10.0.0.3]:41234"]
    assert len({line.split(maxsplit=1)[1] for line in known}) == 1
    again = ssh_material(layout)
    assert again.head != material.head  # new keys for every run


def test_the_worker_runs_only_an_sshd_for_the_run_key() -> None:
    command = worker_command(41999)
    script = command[2]
    assert "exec /usr/sbin/sshd -D" in script and "PasswordAuthentication=no" in script
    assert command[-1] == "41999"


def test_a_bad_mpi_network_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINHUB_MPI_NETWORK", "not-a-network")
    with pytest.raises(ValueError, match="TRAINHUB_MPI_NETWORK must be a network"):
        Settings.load()
    monkeypatch.setenv("TRAINHUB_MPI_NETWORK", "10.77.0.0/24")
    assert Settings.load().mpi_network == "10.77.0.0/24"


def test_a_rank_gets_the_containers_environment_and_keeps_open_mpis(tmp_path: Path) -> None:
    """``rank`` as an SSH session would start it: a bare environment plus Open MPI's variables;
    the container's environment comes from the file the worker saved."""
    environ = tmp_path / "environ"
    environ.write_bytes(b"TRAINHUB_NODE=n7\0OMPI_COMM_WORLD_RANK=99\0PATH=/usr/bin:/bin\0")
    script = tmp_path / "show.py"
    script.write_text(
        "import os, sys\n"
        "print(os.environ['TRAINHUB_NODE'], os.environ['OMPI_COMM_WORLD_RANK'], sys.argv[1:])\n"
    )
    code = (
        "import sys; from trainhub.runtime import mpi_launch as m\n"
        f"m.ENVIRON_FILE = {str(environ)!r}\n"
        "m.rank(sys.argv[1], sys.argv[2:])\n"
    )
    env = {"OMPI_COMM_WORLD_RANK": "3", "PYTHONPATH": str(Path.cwd())}
    out = subprocess.run(
        [sys.executable, "-c", code, str(script), "--lr", "0.1"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.getcwd(),
    )
    assert out.stdout.strip() == "n7 3 ['--lr', '0.1']"
    assert mpi_launch.main(["bogus"]) == 2


def test_a_container_asks_the_engine_for_exactly_its_gpus(docker_ready: None) -> None:
    """What the NVIDIA runtime is handed (no GPU here: the request itself, as the real engine
    stores it). A multi-node MPI container also gets the node's network."""
    from trainhub.runtime.docker import DockerEngine

    engine = DockerEngine()
    uuids = ["GPU-aaaa-0000", "GPU-bbbb-0001"]
    container_id = engine.create_run_container(
        run_id="unit_1_00000000",
        instance="unit-test",
        image="trainhub/base:cpu",
        command=["true"],
        environment={},
        shm_size=None,
        gpu_uuids=uuids,
        host_network=True,
    )
    try:
        host_config = engine.client.api.inspect_container(container_id)["HostConfig"]
        (request,) = host_config["DeviceRequests"]
        assert request["DeviceIDs"] == uuids and request["Capabilities"] == [["gpu"]]
        assert host_config["NetworkMode"] == "host"
    finally:
        engine.remove(container_id)
        engine.close()


def test_the_log_holds_every_line_before_the_run_is_told_its_script_ended() -> None:
    """A run shown Completed has its whole driver log: the lines before the wrapper's exit line
    are written (and flushed) before the exit is reported."""
    from trainhub.runtime.incontainer import EXIT_SENTINEL, LogSink

    out = io.BytesIO()
    seen: list[bytes] = []
    sink = LogSink(out, lambda code, present: seen.append(out.getvalue()))
    sink.write(b"epoch 1\nlast line\n" + EXIT_SENTINEL + b"0:\n")
    assert seen == [b"epoch 1\nlast line\n"]


def test_the_first_failure_is_the_earliest_record_of_any_node() -> None:
    from trainhub.runs.gang import first_failure

    def record(time: float, rank: int) -> str:
        return json.dumps(
            {"time": time, "rank": rank, "local_rank": rank % 2, "code": 1, "tail": ""}
        )

    texts = {
        "n1": record(105.2, 0) + "\n" + record(105.3, 1) + "\n",  # peers failing after it
        "n2": "not json\n" + record(105.1, 3) + "\n" + '{"time": 1}\n',
        "n3": "",
    }
    first = first_failure(texts)
    assert first is not None and (first["node"], first["rank"]) == ("n2", 3)
    assert first_failure({"n1": "", "n2": "garbage\n"}) is None
