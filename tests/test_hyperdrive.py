"""Hyperparameter sweeps end to end: Azure ML v1 sweep code against a real server, whose children
are process runs (``use_docker=False``: the point here is the sweep, not the container) that log
the primary metric per step with small sleeps."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tests.conftest import TOKEN, Server, start_server
from tests.helpers import add_user, login, make_snapshot, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TERMINAL = {"Completed", "Failed", "Canceled"}
# score = quality * layers * step, logged once a step: a child's best is its last value.
SCRIPT = textwrap.dedent(
    """
    import argparse, time
    from trainhub import Run
    parser = argparse.ArgumentParser()
    parser.add_argument("--quality", type=float, default=1.0)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--pause", type=float, default=0.2)
    args = parser.parse_args()
    run = Run.get_context()
    print("args", args.quality, args.layers, flush=True)
    for step in range(1, args.steps + 1):
        run.log("score", args.quality * args.layers * step, step=step)
        time.sleep(args.pause)
    """
)


@pytest.fixture(scope="module")
def sweep_server(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Server]:
    srv = start_server(tmp_path_factory, "sweep-data")
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sweep-src")
    (folder / "train.py").write_text(SCRIPT)
    return folder


def _run_config(steps: int = 3, pause: float = 0.2) -> dict[str, Any]:
    return {
        "entry_script": "train.py",
        "use_docker": False,
        "script_params": {"--steps": steps, "--pause": pause},
    }


def submit_sweep(client: httpx.Client, sweep: dict[str, Any]) -> httpx.Response:
    return client.post(
        "/api/v1/experiments/sweeps/sweeps",
        files={
            "sweep": (None, json.dumps(sweep), "application/json"),
            "snapshot": ("s.tar.gz", make_snapshot({"train.py": SCRIPT}), "application/gzip"),
        },
    )


def sweep_of(client: httpx.Client, sweep_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/sweeps/{sweep_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def wait_for_end(
    client: httpx.Client, sweep_id: str, timeout: float = 90, watch: Any = None
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        sweep = sweep_of(client, sweep_id)
        if watch is not None:
            watch(sweep)
        if sweep["status"] in TERMINAL:
            return sweep
        if time.monotonic() > deadline:
            raise AssertionError(f"sweep {sweep_id} is {sweep['status']} after {timeout} s")
        time.sleep(0.2)


def open_children(sweep: dict[str, Any]) -> int:
    return sum(child["status"] not in TERMINAL for child in sweep["sweep"]["children"])


@pytest.fixture(scope="module")
def long_sweep(sweep_server: Server) -> str:
    """A sweep that only max_duration_minutes (1, the least) ends: started first, checked last,
    so that its minute passes while the other tests run."""
    response = submit_sweep(
        sweep_server.client(),
        {
            "run_config": _run_config(steps=600, pause=0.5),
            "hyperparameter_sampling": {
                "type": "random",
                "parameter_space": {"--quality": ["uniform", [0.5, 1.0]]},
                "properties": {"seed": 3},
            },
            "primary_metric_name": "score",
            "primary_metric_goal": "MAXIMIZE",
            "max_total_runs": 5,
            "max_concurrent_runs": 1,
            "max_duration_minutes": 1,
        },
    )
    assert response.status_code == 201, response.text
    sweep_id: str = response.json()["runId"]
    return sweep_id


def test_grid_2x3_through_the_azure_ml_sdk(
    sweep_server: Server, source: Path, long_sweep: str
) -> None:
    """Six children with the right arguments, never more than max_concurrent_runs at once, the
    parent Completed; the best-run calls agree with a hand computation over the children."""
    from azureml.core import Experiment, Workspace
    from azureml.train.estimator import Estimator
    from azureml.train.hyperdrive import (
        GridParameterSampling,
        HyperDriveConfig,
        HyperDriveRun,
        PrimaryMetricGoal,
        choice,
    )

    ws = Workspace(sweep_server.url, token=TOKEN)
    estimator = Estimator(
        source_directory=str(source),
        entry_script="train.py",
        compute_target="local",
        use_docker=False,
        script_params={"--steps": 2, "--pause": 0.1, "--layers": 9},
    )
    config = HyperDriveConfig(
        estimator=estimator,
        hyperparameter_sampling=GridParameterSampling(
            {"--quality": choice(0.5, 2.0), "layers": choice(1, 2, 3)}
        ),
        primary_metric_name="score",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=10,
        max_concurrent_runs=2,
    )
    run = Experiment(ws, "grid").submit(config)
    assert isinstance(run, HyperDriveRun) and run.id.startswith("HD_")
    client = sweep_server.client()
    most = [0]

    def watch(sweep: dict[str, Any]) -> None:
        most[0] = max(most[0], open_children(sweep))
        assert open_children(sweep) <= 2, sweep["sweep"]["children"]

    done = wait_for_end(client, run.id, watch=watch)
    assert done["status"] == "Completed", done["error"]
    assert most[0] == 2  # it did run two at once
    assert done["sweep"]["endReason"] == "grid_exhausted"
    children = done["sweep"]["children"]
    assert [c["runId"] for c in children] == [f"{run.id}_{i}" for i in range(6)]
    expected = [(q, n) for q in (0.5, 2.0) for n in (1, 2, 3)]
    for child, (quality, layers) in zip(children, expected, strict=True):
        assert child["status"] == "Completed"
        assert child["hyperparameters"] == {"--quality": quality, "layers": layers}
        details = client.get(f"/api/v1/runs/{child['runId']}").json()
        assert details["parentRunId"] == run.id
        arguments = details["runDefinition"]["arguments"]
        assert arguments[arguments.index("--layers") + 1] == str(layers), arguments
        log = client.get(f"/api/v1/runs/{child['runId']}/logs").text
        assert f"args {quality} {layers}" in log  # the sampled layers replaced the given 9

    # By hand: each child's best score from its own metrics.
    best = {
        c["runId"]: max(client.get(f"/api/v1/runs/{c['runId']}/metrics").json()["metrics"]["score"])
        for c in children
    }
    order = sorted(best, key=best.__getitem__, reverse=True)
    assert run.get_best_run_by_primary_metric().id == order[0]  # type: ignore[union-attr]
    ranked = run.get_children_sorted_by_primary_metric()
    assert [r["run_id"] for r in ranked] == order
    assert [r["best_primary_metric"] for r in ranked] == [best[i] for i in order]
    worst_two = run.get_children_sorted_by_primary_metric(top=2, reverse=True)
    assert [r["run_id"] for r in worst_two] == order[::-1][:2]
    hyperparameters = run.get_hyperparameters()
    assert json.loads(hyperparameters[order[0]]) == {"--quality": 2.0, "layers": 3}
    assert sorted(run.get_metrics()) == sorted(best)
    assert [c.id for c in run.get_children()] == [c["runId"] for c in children]
    assert run.wait_for_completion()["status"] == "Completed"
    # The dashboard shows the parent as a run with its children (the sweep page is to come).
    add_user(client, "sweeper", role="admin")
    browser = login(sweep_server.url, "sweeper")
    page = browser.get(f"/runs/{run.id}")
    assert page.status_code == 200
    assert all(c["runId"] in page.text for c in children)
    assert browser.get("/runs").status_code == 200


def test_bandit_stops_the_bad_child_only(sweep_server: Server) -> None:
    client = sweep_server.client()
    response = submit_sweep(
        client,
        {
            "run_config": _run_config(steps=14, pause=0.4),
            "hyperparameter_sampling": {
                "type": "grid",
                "parameter_space": {"--quality": ["choice", [[1.0, 0.1, 1.0]]]},
            },
            "primary_metric_name": "score",
            "primary_metric_goal": "MAXIMIZE",
            "max_total_runs": 3,
            "max_concurrent_runs": 3,
            "policy": {"type": "bandit", "slack_factor": 0.2, "delay_evaluation": 2},
        },
    )
    assert response.status_code == 201, response.text
    done = wait_for_end(client, response.json()["runId"])
    assert done["status"] == "Completed", done["error"]
    good, bad, other = done["sweep"]["children"]
    assert [good["status"], other["status"]] == ["Completed", "Completed"]
    assert bad["status"] == "Canceled"
    assert bad["stopped"]["policy"] == "bandit"
    assert bad["stopped"]["best_child"] in (good["runId"], other["runId"])
    assert bad["stopped"]["value"] < bad["stopped"]["threshold"]
    assert bad["error"]["message"].startswith("Stopped by the bandit policy: best value")
    assert bad["bestMetric"] < 14 * 0.1  # it did not run to its end
    assert done["sweep"]["bestChildRunId"] in (good["runId"], other["runId"])


def test_sigkill_mid_sweep_then_restart_gives_exactly_max_total_runs(
    tmp_path_factory: pytest.TempPathFactory, docker_ready: None
) -> None:
    from trainhub.hyperdrive.samplers import sample
    from trainhub.hyperdrive.spec import SweepSpec

    server = start_server(tmp_path_factory, "sweep-restart")
    try:
        client = server.client()
        response = submit_sweep(
            client,
            {
                "run_config": _run_config(steps=4, pause=0.3),
                "hyperparameter_sampling": {
                    "type": "random",
                    "parameter_space": {"--quality": ["quniform", [1, 9, 1]]},
                    "properties": {"seed": 11},
                },
                "primary_metric_name": "score",
                "primary_metric_goal": "MAXIMIZE",
                "max_total_runs": 5,
                "max_concurrent_runs": 2,
            },
        )
        assert response.status_code == 201, response.text
        sweep_id = response.json()["runId"]
        wait_until(
            lambda: len(sweep_of(client, sweep_id)["sweep"]["children"]) >= 2,
            "two children started",
        )
        server.kill()
        time.sleep(1)
        server.start()
        client = server.client()
        done = wait_for_end(client, sweep_id)
        assert done["status"] == "Completed", done["error"]
        children = done["sweep"]["children"]
        assert [c["index"] for c in children] == [0, 1, 2, 3, 4]
        assert {c["status"] for c in children} == {"Completed"}
        listed = client.get("/api/v1/runs", params={"parent": sweep_id, "limit": 50}).json()
        assert len(listed["runs"]) == 5
        # The values the seed gives, whatever the restart: the sweep replays.
        spec = msgspec.convert(done["sweep"]["spec"], SweepSpec)
        assert [c["hyperparameters"] for c in children] == [sample(spec, i) for i in range(5)]
    finally:
        server.cleanup()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"max_total_runs": 0}, "max_total_runs"),
        ({"max_concurrent_runs": 101}, "max_concurrent_runs"),
        (
            {
                "hyperparameter_sampling": {
                    "type": "grid",
                    "parameter_space": {"--q": ["uniform", [0, 1]]},
                }
            },
            "hyperparameter_sampling.parameter_space.--q",
        ),
        (
            {
                "hyperparameter_sampling": {
                    "type": "bayesian",
                    "parameter_space": {"--q": ["uniform", [0, 1]]},
                },
                "policy": {"type": "bandit", "slack_factor": 0.1},
            },
            "policy",
        ),
        (
            {
                "hyperparameter_sampling": {
                    "type": "random",
                    "parameter_space": {"--q": ["choice", [[1, "a"]]]},
                }
            },
            "hyperparameter_sampling.parameter_space.--q",
        ),
        ({"run_config": {"entry_script": "missing.py"}}, "run_config.entry_script"),
        ({"resume_from": ["HD_nothere"]}, "resume_from[0]"),
        ({"primary_metric_goal": "UP"}, "primary_metric_goal"),
    ],
)
def test_invalid_sweeps_are_422_naming_the_field(
    sweep_server: Server, change: dict[str, Any], field: str
) -> None:
    sweep = {
        "run_config": _run_config(),
        "hyperparameter_sampling": {
            "type": "random",
            "parameter_space": {"--q": ["uniform", [0, 1]]},
        },
        "primary_metric_name": "score",
        "primary_metric_goal": "MAXIMIZE",
        "max_total_runs": 2,
        **change,
    }
    response = submit_sweep(sweep_server.client(), sweep)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_limits_change_while_it_runs_and_cancel_ends_every_child(sweep_server: Server) -> None:
    client = sweep_server.client()
    response = submit_sweep(
        client,
        {
            "run_config": _run_config(steps=300, pause=0.5),
            "hyperparameter_sampling": {
                "type": "random",
                "parameter_space": {"--quality": ["uniform", [0.5, 1.0]]},
            },
            "primary_metric_name": "score",
            "primary_metric_goal": "MAXIMIZE",
            "max_total_runs": 8,
            "max_concurrent_runs": 1,
        },
    )
    assert response.status_code == 201, response.text
    sweep_id = response.json()["runId"]
    wait_until(lambda: len(sweep_of(client, sweep_id)["sweep"]["children"]) == 1, "one child")
    changed = client.patch(f"/api/v1/sweeps/{sweep_id}", json={"max_concurrent_runs": 2})
    assert changed.status_code == 200, changed.text
    assert changed.json()["sweep"]["maxConcurrentRuns"] == 2
    wait_until(lambda: len(sweep_of(client, sweep_id)["sweep"]["children"]) == 2, "a second child")
    too_few = client.patch(f"/api/v1/sweeps/{sweep_id}", json={"max_total_runs": 1})
    assert too_few.status_code == 422 and too_few.json()["field"] == "max_total_runs"

    from azureml.core import Run, Workspace
    from azureml.train.hyperdrive import HyperDriveRun

    run = Run.get(Workspace(sweep_server.url, token=TOKEN), sweep_id)
    assert isinstance(run, HyperDriveRun)  # the run's own type, as Azure ML answers it
    run.cancel()
    done = wait_for_end(client, sweep_id, timeout=60)
    assert done["status"] == "Canceled"
    children = done["sweep"]["children"]
    assert len(children) == 2
    assert {c["status"] for c in children} == {"Canceled"}
    ended = client.patch(f"/api/v1/sweeps/{sweep_id}", json={"max_total_runs": 9})
    assert ended.status_code == 409


def test_max_duration_ends_the_sweep(sweep_server: Server, long_sweep: str) -> None:
    """Last in the module: the sweep started with it has had most of its minute."""
    client = sweep_server.client()
    done = wait_for_end(client, long_sweep, timeout=120)
    assert done["status"] == "Completed", done["error"]
    assert done["sweep"]["endReason"] == "max_duration_minutes"
    (child,) = done["sweep"]["children"]  # concurrency 1, and its child runs for 5 minutes
    assert child["status"] == "Canceled"
    assert child["stopped"] == {"policy": "max_duration_minutes", "max_duration_minutes": 1}
    assert "max_duration_minutes (1)" in child["error"]["message"]


def test_readme_curl_example_works(sweep_server: Server, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Hyperparameter sweeps", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the sweeps section has no bash block"
    (tmp_path / "train.py").write_text("import sys\nprint('training with', sys.argv[1:])\n")
    subprocess.run(["tar", "czf", "demo.tar.gz", "train.py"], cwd=tmp_path, check=True)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.group(1)],
        cwd=tmp_path,
        env={**os.environ, "TRAINHUB_URL": sweep_server.url, "TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout.splitlines()[-1] == (
        "Completed ({'--lr': 0.1}, 'Completed') ({'--lr': 0.01}, 'Completed')"
    )


def test_bayesian_learns_from_a_resumed_sweep(sweep_server: Server) -> None:
    """A sweep resumed from one of 10 children (optuna's TPE samples at random before that many)
    draws what the seeded sampler gives with those children and their best scores as history."""
    from trainhub.hyperdrive.samplers import Trial, sample
    from trainhub.hyperdrive.spec import SweepSpec

    client = sweep_server.client()
    sweep = {
        "run_config": _run_config(steps=1, pause=0.0),
        "hyperparameter_sampling": {
            "type": "bayesian",
            "parameter_space": {"--quality": ["uniform", [0.0, 4.0]]},
            "properties": {"seed": 5},
        },
        "primary_metric_name": "score",
        "primary_metric_goal": "MAXIMIZE",
        "max_total_runs": 10,
        "max_concurrent_runs": 4,
    }
    first = submit_sweep(client, sweep)
    assert first.status_code == 201, first.text
    done = wait_for_end(client, first.json()["runId"])
    assert done["status"] == "Completed", done["error"]
    trials = [
        Trial(c["index"], c["hyperparameters"], c["bestMetric"]) for c in done["sweep"]["children"]
    ]
    assert len(trials) == 10 and all(t.value is not None for t in trials)

    resumed = submit_sweep(client, {**sweep, "max_total_runs": 1, "resume_from": [done["runId"]]})
    assert resumed.status_code == 201, resumed.text
    again = wait_for_end(client, resumed.json()["runId"])
    (child,) = again["sweep"]["children"]
    spec = msgspec.convert(again["sweep"]["spec"], SweepSpec)
    assert child["hyperparameters"] == sample(spec, 0, trials)
    assert child["hyperparameters"] != sample(spec, 0, [])  # the history made the difference
