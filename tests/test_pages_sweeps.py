"""The sweep page (``/sweeps/{id}``) through a real server and real sweeps whose children are
process runs (``use_docker=False``): children best first with the best pinned, why the policy
stopped one, the charts, the TensorBoard link, the limits form (CSRF, owner only, a 422 naming
the field) and the live refresh. Pages are read with an HTML parser, not by searching text."""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Server, start_server
from tests.helpers import add_user, login, make_snapshot, wait_until
from tests.html import Element, parse

pytestmark = [pytest.mark.docker]

TERMINAL = {"Completed", "Failed", "Canceled"}
# score = quality * step, once a step, after --delay seconds.
SCRIPT = textwrap.dedent(
    """
    import argparse, time
    from trainhub import Run
    parser = argparse.ArgumentParser()
    parser.add_argument("--quality", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--pause", type=float, default=0.2)
    parser.add_argument("--delay", type=float, default=0)
    args = parser.parse_args()
    run = Run.get_context()
    time.sleep(args.delay)
    for step in range(1, args.steps + 1):
        run.log("score", args.quality * step, step=step)
        time.sleep(args.pause)
    """
)


@pytest.fixture(scope="module")
def sweep_server(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Server]:
    srv = start_server(tmp_path_factory, "pages-sweep-data")
    yield srv
    srv.cleanup()


def member(server: Server) -> tuple[httpx.Client, httpx.Client]:
    """A new member's API client and logged-in browser client."""
    name = f"m{uuid.uuid4().hex[:6]}"
    token = add_user(server.client(), name)
    return server.client(token=token), login(server.url, name)


def submit_sweep(api: httpx.Client, sweep: dict[str, Any]) -> str:
    response = api.post(
        "/api/v1/experiments/page-sweeps/sweeps",
        files={
            "sweep": (None, json.dumps(sweep), "application/json"),
            "snapshot": ("s.tar.gz", make_snapshot({"train.py": SCRIPT}), "application/gzip"),
        },
    )
    assert response.status_code == 201, response.text
    run_id: str = response.json()["runId"]
    return run_id


def sweep_of(api: httpx.Client, sweep_id: str) -> dict[str, Any]:
    found: dict[str, Any] = api.get(f"/api/v1/sweeps/{sweep_id}").json()
    return found


def rows(page: Element) -> list[Element]:
    return page.find("children").all("child")


def test_ended_sweep_ranks_children_pins_the_best_and_says_why(sweep_server: Server) -> None:
    api, browser = member(sweep_server)
    sweep_id = submit_sweep(
        api,
        {
            "run_config": {
                "entry_script": "train.py",
                "use_docker": False,
                "script_params": {"--steps": 10, "--pause": 0.3},
            },
            "hyperparameter_sampling": {
                "type": "grid",
                "parameter_space": {"--quality": ["choice", [[1.9, 0.1, 2.0]]]},
            },
            "primary_metric_name": "score",
            "primary_metric_goal": "MAXIMIZE",
            "max_total_runs": 3,
            "max_concurrent_runs": 3,
            "policy": {"type": "bandit", "slack_factor": 0.2, "delay_evaluation": 2},
        },
    )
    wait_until(lambda: sweep_of(api, sweep_id)["status"] in TERMINAL, "the sweep", timeout=60)
    children = {
        c["hyperparameters"]["--quality"]: c for c in sweep_of(api, sweep_id)["sweep"]["children"]
    }

    response = browser.get(f"/sweeps/{sweep_id}")
    assert response.status_code == 200
    page = parse(response)
    live = page.find("sweep-live")
    assert "hx-get" not in live.attrs  # ended: nothing polls
    assert page.find("sweep-status").text == "Completed"
    counts = {c.attrs["data-status"]: c.text for c in page.find("sweep-counts").all("count")}
    assert counts == {"Canceled": "1 Canceled", "Completed": "2 Completed"}
    table = rows(page)
    # By hand: score = quality * step over ten steps; the 0.1 child was stopped early.
    assert [r.attrs["data-run"] for r in table] == [
        children[2.0]["runId"],
        children[1.9]["runId"],
        children[0.1]["runId"],
    ]
    assert "best" in table[0].classes and "best" not in table[1].classes
    assert [r.one("metric").text for r in table[:2]] == ["20", "19"]
    assert [r.one("param").text for r in table] == ["2.0", "1.9", "0.1"]
    assert table[0].one("why").text == ""
    assert table[2].one("why").text.startswith("Stopped by the bandit policy: best value")
    assert page.by_id("limits-form") is None  # ended
    assert page.find("time-limit").text == "10080 minutes after submission"  # Azure ML's default

    parallel = page.find("parallel-coordinates")
    assert [e.text for e in parallel.all("axis-name")] == ["--quality", "score"]
    assert sorted(e.attrs["data-run"] for e in parallel.all("child-line")) == sorted(
        c["runId"] for c in children.values()
    )
    curves = {e.attrs["data-run"]: e for e in page.find("metric-over-steps").all("child-curve")}
    assert len(curves[children[2.0]["runId"]].attrs["points"].split()) == 10
    assert len(curves[children[0.1]["runId"]].attrs["points"].split()) < 10

    board = page.find("sweep-tensorboard").attrs["href"]
    assert board.startswith("/experiments/page-sweeps/tensorboard?runs=")
    assert set(board.split("=", 1)[1].split(",")) == {c["runId"] for c in children.values()}
    to_board = browser.get(board, follow_redirects=False)  # the children are the experiment's
    assert to_board.status_code == 303 and to_board.headers["location"].startswith("/tensorboard/")
    parent = parse(browser.get(f"/runs/{sweep_id}"))
    assert parent.find("sweep-page").attrs["href"] == f"/sweeps/{sweep_id}"


def test_running_sweep_refreshes_and_its_owner_changes_the_limits(sweep_server: Server) -> None:
    api, browser = member(sweep_server)
    _, stranger = member(sweep_server)
    sweep_id = submit_sweep(
        api,
        {
            "run_config": {
                "entry_script": "train.py",
                "use_docker": False,
                "script_params": {"--delay": 60},
            },
            "hyperparameter_sampling": {
                "type": "random",
                "parameter_space": {"--quality": ["uniform", [0, 1]]},
                "properties": {"seed": 5},
            },
            "primary_metric_name": "loss",
            "primary_metric_goal": "MINIMIZE",
            "max_total_runs": 10,
            "max_concurrent_runs": 1,
        },
    )
    wait_until(lambda: len(sweep_of(api, sweep_id)["sweep"]["children"]) == 1, "a child")
    page = parse(browser.get(f"/sweeps/{sweep_id}"))
    assert page.find("sweep-live").attrs["hx-get"] == f"/sweeps/{sweep_id}"
    assert len(rows(page)) == 1 and "best" not in rows(page)[0].classes
    assert "No child has logged" in page.find("no-metric").text
    assert page.by_id("parallel-coordinates") is not None  # values known, metric not yet
    assert page.by_id("metric-over-steps") is None
    assert "at most 1 queued" in page.find("sweep-concurrency").text

    assert stranger.get(f"/sweeps/{sweep_id}").status_code == 200
    assert parse(stranger.get(f"/sweeps/{sweep_id}")).by_id("limits-form") is None
    denied = stranger.post(f"/sweeps/{sweep_id}/limits", data={"max_concurrent_runs": "3"})
    assert denied.status_code == 403

    form = page.find("limits-form")
    assert form.attrs["method"] == "post"
    changed = browser.post(
        f"/sweeps/{sweep_id}/limits",
        data={"max_concurrent_runs": "2", "max_total_runs": "4"},
        follow_redirects=False,
    )
    assert changed.status_code == 303 and changed.headers["location"] == f"/sweeps/{sweep_id}"
    wait_until(lambda: len(sweep_of(api, sweep_id)["sweep"]["children"]) == 2, "a second child")
    page = parse(browser.get(f"/sweeps/{sweep_id}"))
    assert "at most 2 queued" in page.find("sweep-concurrency").text
    assert page.find("sweep-counts").text.startswith("2 of at most 4")

    bad = browser.post(f"/sweeps/{sweep_id}/limits", data={"max_concurrent_runs": "500"})
    assert bad.status_code == 422
    error = parse(bad).find("limit-error").text
    assert error.startswith("max_concurrent_runs:") and "1 to 100" in error
    word = browser.post(f"/sweeps/{sweep_id}/limits", data={"max_total_runs": "many"})
    assert word.status_code == 422 and "max_total_runs" in parse(word).find("limit-error").text
    no_csrf = httpx.post(
        f"{sweep_server.url}/sweeps/{sweep_id}/limits",
        data={"max_concurrent_runs": "3"},
        cookies=browser.cookies,
    )
    assert no_csrf.status_code == 403
    assert sweep_of(api, sweep_id)["sweep"]["maxConcurrentRuns"] == 2

    partial = browser.get(
        f"/sweeps/{sweep_id}", headers={"HX-Request": "true", "HX-Target": "sweep-live"}
    )
    assert partial.status_code == 200 and "<html" not in partial.text
    assert api.post(f"/api/v1/runs/{sweep_id}/cancel").status_code == 200
    wait_until(lambda: sweep_of(api, sweep_id)["status"] == "Canceled", "the sweep canceled")
    time.sleep(0.2)
    last = browser.get(
        f"/sweeps/{sweep_id}", headers={"HX-Request": "true", "HX-Target": "sweep-live"}
    )
    assert last.status_code == 286  # stops the polling
    assert parse(last).find("sweep-status").text == "Canceled"


def test_unknown_sweep_is_a_404_page(sweep_server: Server) -> None:
    _, browser = member(sweep_server)
    assert browser.get("/sweeps/HD_0000").status_code == 404
