"""``trainhub sweep ...`` as a person types it, against a real server whose children are process
runs (``use_docker=False``: the point is the CLI, not the container)."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TOKEN, Server, start_server
from tests.helpers import cli_for, wait_until

pytestmark = [pytest.mark.docker]

Cli = Callable[..., subprocess.CompletedProcess[str]]
TERMINAL = {"Completed", "Failed", "Canceled"}
# score = quality * step, logged once a step: a child's best is its last value.
SCRIPT = textwrap.dedent(
    """
    import argparse, time
    from trainhub import Run
    parser = argparse.ArgumentParser()
    parser.add_argument("--quality", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--pause", type=float, default=0.2)
    args = parser.parse_args()
    run = Run.get_context()
    for step in range(1, args.steps + 1):
        run.log("score", args.quality * step, step=step)
        time.sleep(args.pause)
    """
)
# The YAML a person writes: HyperDriveConfig's fields beside the run config's, {kind: [args]}.
BANDIT_YAML = """
entry_script: train.py
use_docker: false
script_params: {--steps: 10, --pause: 0.3}
hyperparameter_sampling:
  type: grid
  parameter_space:
    --quality: {choice: [1.9, 0.1, 2.0]}
primary_metric_name: score
primary_metric_goal: MAXIMIZE
max_total_runs: 3
max_concurrent_runs: 3
policy: {type: bandit, slack_factor: 0.2, delay_evaluation: 2}
"""
SLOW_YAML = """
run_config:
  entry_script: train.py
  use_docker: false
  script_params: {--steps: 200, --pause: 0.5}
hyperparameter_sampling:
  type: random
  parameter_space:
    --quality: [uniform, [0, 1]]
  properties: {seed: 3}
primary_metric_name: score
primary_metric_goal: MINIMIZE
max_total_runs: 20
max_concurrent_runs: 1
"""


@pytest.fixture(scope="module")
def sweep_server(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Server]:
    srv = start_server(tmp_path_factory, "cli-sweep-data")
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def cli(sweep_server: Server) -> Cli:
    return cli_for(sweep_server.url, TOKEN)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli-sweep")
    (folder / "proj").mkdir()
    (folder / "proj" / "train.py").write_text(SCRIPT)
    (folder / "bandit.yml").write_text(BANDIT_YAML)
    (folder / "slow.yml").write_text(SLOW_YAML)
    return folder


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def shown(cli: Cli, sweep_id: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(ok(cli("sweep", "show", sweep_id, "--json")))
    return found


def test_submit_show_best_of_a_grid_with_bandit(cli: Cli, project: Path) -> None:
    submitted = json.loads(
        ok(
            cli(
                "sweep",
                "submit",
                str(project / "proj"),
                "--config",
                str(project / "bandit.yml"),
                "-e",
                "cli-sweeps",
                "--json",
            )
        )
    )
    sweep_id = submitted["runId"]
    assert sweep_id.startswith("HD_") and submitted["sweep"]["maxTotalRuns"] == 3
    wait_until(lambda: shown(cli, sweep_id)["status"] in TERMINAL, "the sweep ended", timeout=60)
    done = shown(cli, sweep_id)
    assert done["status"] == "Completed", done.get("error")
    children = {c["hyperparameters"]["--quality"]: c for c in done["sweep"]["children"]}
    assert children[0.1]["status"] == "Canceled" and children[0.1]["stopped"]["policy"] == "bandit"
    # By hand: score = quality * step, ten steps: the best child is quality 2.0 with 20.
    assert children[2.0]["bestMetric"] == 20.0

    text = ok(cli("sweep", "show", sweep_id))
    assert "Status:      Completed (max_total_runs)" in text
    assert "Limits:      3 children at most, 3 at a time" in text
    assert "3 (2 Completed, 1 Canceled)" in text
    lines = [line for line in text.splitlines() if sweep_id + "_" in line]
    order = [next(c for c in done["sweep"]["children"] if c["runId"] in line) for line in lines]
    assert [c["hyperparameters"]["--quality"] for c in order] == [2.0, 1.9, 0.1]
    assert f"{children[2.0]['runId']} *" in lines[0]  # the best one, marked
    assert "Stopped by the bandit" in text and "--quality" in text

    best = json.loads(ok(cli("sweep", "best", sweep_id, "--json")))
    assert best["runId"] == children[2.0]["runId"] and best["bestMetric"] == 20.0
    best_text = ok(cli("sweep", "best", sweep_id))
    assert f"Best:        {children[2.0]['runId']} (Completed)" in best_text
    assert "score: 20 (MAXIMIZE)" in best_text and "--quality = 2.0" in best_text


def test_set_limits_then_cancel(cli: Cli, project: Path) -> None:
    sweep_id = json.loads(
        ok(
            cli(
                "sweep",
                "submit",
                str(project / "proj"),
                "--config",
                str(project / "slow.yml"),
                "--json",
            )
        )
    )["runId"]
    assert "1 at a time" in ok(cli("sweep", "show", sweep_id))
    changed = ok(cli("sweep", "set", sweep_id, "--max-concurrent", "2", "--max-total", "4"))
    assert changed.strip() == f"{sweep_id}: 4 children at most, 2 at a time"
    wait_until(lambda: len(shown(cli, sweep_id)["sweep"]["children"]) == 2, "a second child")

    too_many = cli("sweep", "set", sweep_id, "--max-concurrent", "101")
    assert too_many.returncode == 1
    assert "max_concurrent_runs" in too_many.stderr and "1 to 100" in too_many.stderr
    nothing = cli("sweep", "set", sweep_id)
    assert nothing.returncode == 2 and "--max-concurrent" in nothing.stderr

    assert ok(cli("sweep", "cancel", sweep_id)).endswith("(its children with it)\n")
    wait_until(lambda: shown(cli, sweep_id)["status"] == "Canceled", "the sweep canceled")
    kids = shown(cli, sweep_id)["sweep"]["children"]
    assert len(kids) == 2 and {c["status"] for c in kids} == {"Canceled"}


def test_bad_config_names_the_field_before_any_upload(cli: Cli, project: Path) -> None:
    bad = project / "bad.yml"
    bad.write_text(BANDIT_YAML.replace("{choice: [1.9, 0.1, 2.0]}", "{uniform: [0, 1]}"))
    result = cli("sweep", "submit", str(project / "proj"), "--config", str(bad))
    assert result.returncode == 1
    assert "hyperparameter_sampling.parameter_space.--quality" in result.stderr
    assert "choice" in result.stderr
    misplaced = project / "misplaced.yml"
    misplaced.write_text(SLOW_YAML + "entry_script: other.py\n")
    result = cli("sweep", "submit", str(project / "proj"), "--config", str(misplaced))
    assert result.returncode == 1 and "'entry_script' belongs under run_config" in result.stderr
    gone = cli("sweep", "show", "HD_nope")
    assert gone.returncode == 1 and "HD_nope" in gone.stderr


def test_the_readme_sweep_yaml_is_a_valid_sweep() -> None:
    from trainhub.cli_sweeps import sweep_from_yaml

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Hyperparameter sweeps", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "the sweeps section has no YAML example"
    spec = sweep_from_yaml(block.group(1))
    assert spec["run_config"]["entry_script"] == "train.py"
    assert spec["hyperparameter_sampling"]["parameter_space"]["--layers"] == ["choice", [[1, 2, 3]]]
