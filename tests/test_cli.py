"""Every CLI verb, as a person types it, against the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TOKEN, Server, ServerFactory
from tests.helpers import cli_for, get_run, wait_for_status
from trainhub.cli import script_params_from_args
from trainhub.spec import flatten_script_params


@pytest.fixture
def cli(server: Server, tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINHUB_")}
    env["TRAINHUB_CONFIG"] = str(tmp_path / "home" / "config.json")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "trainhub", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stderr + result.stdout
        return result

    run("login", server.url, "--token", TOKEN)
    project = tmp_path / "proj"
    project.mkdir()
    (project / "train.py").write_text(
        "import os, sys\nfrom trainhub import Run\nprint('args', sys.argv[1:])\n"
        "Run.get_context().log('score', 0.75)\nos.makedirs('outputs/sub')\n"
        "open('outputs/sub/m.bin','w').write('m')\nopen('outputs/a.txt','w').write('a')\n"
    )
    (project / "fail.py").write_text("import sys\nprint('bad')\nsys.exit(4)\n")
    (project / "ranks.py").write_text(
        "from mpi4py import MPI\nprint('rank', MPI.COMM_WORLD.Get_rank(), flush=True)\n"
    )
    (project / "slow.py").write_text("import time\nprint('slow', flush=True)\ntime.sleep(60)\n")
    return run


def test_login_writes_a_private_config(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "home" / "config.json"
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert json.loads(config.read_text())["token"] == TOKEN
    bad = cli("login", "http://127.0.0.1:9", "--token", "x", check=False)
    assert bad.returncode == 1 and "Cannot reach trainhub" in bad.stderr
    wrong = cli("login", json.loads(config.read_text())["url"], "--token", "wrong", check=False)
    assert wrong.returncode == 1 and "The API token is not valid" in wrong.stderr


def test_submit_wait_streams_the_log_and_exits_zero(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli(
        "submit",
        "proj",
        "-e",
        "cli",
        "--entry-script",
        "train.py",
        "--wait",
        "--",
        "--lr",
        "0.1",
        "--verbose",
        "data.csv",
    )
    assert "args ['--lr', '0.1', '--verbose', 'data.csv']" in result.stdout
    assert "Status: Completed" in result.stdout


def test_submit_wait_of_a_failing_run_exits_one(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("submit", "proj", "-e", "cli", "--entry-script", "fail.py", "--wait", check=False)
    assert result.returncode == 1
    assert "Status: Failed" in result.stdout and "exited with code 4" in result.stdout


def test_submit_an_mpi_run_and_see_gpu_requests_refused_where_there_are_none(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli(
        "submit",
        "proj",
        "-e",
        "cli-mpi",
        "--entry-script",
        "ranks.py",
        "--processes-per-node",
        "2",
        "--max-retries",
        "1",
        "--wait",
        "--json",
    )
    details = json.loads(result.stdout)
    assert details["status"] == "Completed"
    assert details["runDefinition"]["communicator"] == "Mpi"
    assert details["runDefinition"]["mpi"] == {"processCountPerNode": 2}
    assert details["properties"]["maxRetries"] == 1
    gpu = cli("submit", "proj", "-e", "cli-mpi", "--entry-script", "ranks.py", "--gpu", check=False)
    assert gpu.returncode == 1 and "largest node of target 'local' has 0" in gpu.stderr
    zero = cli(
        "submit", "proj", "-e", "x", "--entry-script", "ranks.py", "--node-count", "0", check=False
    )
    assert zero.returncode == 2 and "--node-count" in zero.stderr


def test_every_verb_on_one_run(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    submitted = json.loads(
        cli(
            "submit",
            "proj",
            "-e",
            "verbs",
            "--entry-script",
            "train.py",
            "--env",
            "A=1",
            "--tag",
            "team=nlp",
            "--json",
        ).stdout
    )
    run_id = submitted["runId"]
    assert submitted["tags"] == {"team": "nlp"}
    log = cli("logs", run_id, "-f").stdout
    assert "args []" in log
    shown = json.loads(cli("runs", "show", run_id, "--json").stdout)
    assert shown["status"] in {"Finalizing", "Completed"}
    human = cli("runs", "show", run_id).stdout
    assert f"Run:         {run_id}" in human and "Tags:        team=nlp" in human
    listed = json.loads(cli("runs", "list", "-e", "verbs", "--json").stdout)
    assert [r["runId"] for r in listed] == [run_id]
    assert run_id[:10] in cli("runs", "list", "-e", "verbs").stdout
    assert json.loads(cli("metrics", run_id, "--json").stdout) == {"score": 0.75}
    assert "score" in cli("metrics", run_id).stdout
    everything = json.loads(cli("download", run_id, "-o", "all", "--json").stdout)
    assert sorted(Path(p).relative_to(tmp_path / "all").as_posix() for p in everything) == [
        "logs/driver_log.txt",
        "outputs/a.txt",
        "outputs/sub/m.bin",
    ]
    one = cli("download", run_id, "outputs/a.txt", "-o", "one").stdout.strip()
    assert Path(one).read_text() == "a"
    folder = json.loads(cli("download", run_id, "outputs/sub/", "-o", "folder", "--json").stdout)
    assert [Path(p).read_text() for p in folder] == ["m"]
    missing = cli("download", run_id, "nothing/here", check=False)
    assert missing.returncode == 1 and "has no file or folder 'nothing/here'" in missing.stderr
    again = cli("runs", "cancel", run_id, check=False)
    assert again.returncode == 1 and "already ended" in again.stderr


def test_cancel_from_the_cli(cli) -> None:  # type: ignore[no-untyped-def]
    run_id = json.loads(
        cli("submit", "proj", "-e", "cli", "--entry-script", "slow.py", "--json").stdout
    )["runId"]
    out = cli("runs", "cancel", run_id).stdout
    assert out.startswith(f"{run_id}: Cancel")
    cli("logs", run_id, "-f")  # returns once the run has ended
    assert json.loads(cli("runs", "show", run_id, "--json").stdout)["status"] == "Canceled"


def test_priority_from_the_cli_puts_a_run_first_in_the_queue(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(max_concurrent_runs="1")
    client = server.client()
    cli = cli_for(server.url, TOKEN)
    project = tmp_path / "proj"
    project.mkdir()
    (project / "slow.py").write_text("import time\nprint('slow', flush=True)\ntime.sleep(120)\n")

    def submit_slow(*options: str) -> str:
        result = cli(
            "submit", str(project), "-e", "prio", "--entry-script", "slow.py", "--json", *options
        )
        assert result.returncode == 0, result.stderr
        return str(json.loads(result.stdout)["runId"])

    busy = submit_slow()
    wait_for_status(client, busy, "Running")
    low = submit_slow()
    high = submit_slow("--priority", "5")
    assert get_run(client, high)["properties"]["priority"] == 5
    assert get_run(client, low)["properties"]["priority"] == 0
    assert get_run(client, high)["properties"]["queuePosition"] == 1
    assert get_run(client, low)["properties"]["queuePosition"] == 2
    assert cli("runs", "cancel", busy).returncode == 0
    wait_for_status(client, high, "Running")  # the slot went to the later, higher-priority run
    assert get_run(client, low)["status"] == "Queued"
    for run_id in (low, high):
        assert cli("runs", "cancel", run_id).returncode == 0
        wait_for_status(client, run_id, "Canceled")


def test_errors_carry_the_servers_message(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli(
        "submit",
        "proj",
        "-e",
        "cli",
        "--entry-script",
        "train.py",
        "--compute-target",
        "gpu-cluster",
        check=False,
    )
    assert result.returncode == 1
    assert (
        "Unknown compute target 'gpu-cluster'" in result.stderr
        and "field 'compute_target'" in result.stderr
    )
    unknown = cli("runs", "show", "nope_1_deadbeef", check=False)
    assert unknown.returncode == 1 and "No run with id 'nope_1_deadbeef'" in unknown.stderr
    bad_env = cli(
        "submit",
        "proj",
        "-e",
        "cli",
        "--entry-script",
        "train.py",
        "--env",
        "NOEQUALS",
        check=False,
    )
    assert bad_env.returncode == 2 and "--env takes KEY=VALUE" in bad_env.stderr


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["login"],
        ["submit"],
        ["runs"],
        ["runs", "list"],
        ["runs", "show"],
        ["runs", "cancel"],
        ["logs"],
        ["download"],
        ["metrics"],
        ["images"],
        ["images", "build-base"],
    ],
)
def test_help_everywhere(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trainhub", *command, "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_script_args_round_trip_through_script_params() -> None:
    args = ["--lr", "0.1", "--verbose", "data.csv", "-n", "3", "--mode=fast"]
    assert flatten_script_params(script_params_from_args(args)) == args  # type: ignore[arg-type]
