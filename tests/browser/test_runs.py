"""Runs in the browser: live badges and logs, charts, artifacts, clone and cancel, on real runs."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Screenshots, Web, assert_not_reloaded, log_in, mark_page
from tests.helpers import submit, wait_for_log, wait_for_status

pytestmark = [pytest.mark.browser, pytest.mark.docker]

# A finished run with a curve, a value printed from its parameter and a file in ./outputs.
TRAIN = textwrap.dedent(
    """
    import argparse, os
    from trainhub import Run

    parser = argparse.ArgumentParser()
    parser.add_argument("--greeting", default="hello")
    args = parser.parse_args()
    run = Run.get_context()
    for step in range(25):
        loss = round(1.0 / (1 + step), 4)
        run.log("loss", loss, step=step)
        run.log("accuracy", round(1 - loss / 2, 4), step=step)
        print(f"step {step:2d}  loss {loss:.4f}")
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/result.txt", "w") as f:
        f.write("greeting was " + args.greeting + "\\n")
    print("greeting=" + args.greeting)
    """
)

# Prints a numbered line every half second for about two minutes (long enough to watch it live;
# the tests cancel it).
TICKER = textwrap.dedent(
    """
    import time
    for n in range(240):
        print(f"tick {n}", flush=True)
        time.sleep(0.5)
    """
)


@pytest.fixture(scope="module")
def finished(web: Web) -> dict[str, Any]:
    """One completed run of the member's, shared by the tests that only look at it."""
    api = web.api()
    run = submit(api, TRAIN, experiment="browser", script_params={"--greeting": "hello"})
    return wait_for_status(api, run["runId"], "Completed", timeout=120)


@pytest.fixture
def ticking(web: Web) -> Iterator[dict[str, Any]]:
    """A running run that prints a line every half second; canceled afterwards if still going."""
    api = web.api()
    run = submit(api, TICKER, experiment="browser-live")
    wait_for_log(api, run["runId"], "tick 0", timeout=120)
    yield run
    if api.get(f"/api/v1/runs/{run['runId']}").json()["status"] not in (
        "Completed",
        "Failed",
        "Canceled",
    ):
        api.post(f"/api/v1/runs/{run['runId']}/cancel")
        wait_for_status(api, run["runId"], "Canceled", timeout=60)


def test_the_runs_table_badge_turns_completed_without_a_reload(
    page: Page, web: Web, screenshots: Screenshots
) -> None:
    api = web.api()
    run = submit(api, "import time\ntime.sleep(4)\nprint('done')\n", experiment="browser-badge")
    log_in(page)
    page.goto("/runs?experiment=browser-badge")
    mark_page(page)
    badge = page.locator(f"#run-{run['runId']} .badge")
    expect(badge).to_be_visible()
    assert badge.inner_text() != "Completed"
    expect(badge).to_have_text("Completed", timeout=120_000)
    assert_not_reloaded(page)
    page.goto("/runs")
    screenshots.take(page, "runs")


def test_a_printed_line_appears_live_in_the_log_viewer(
    page: Page, web: Web, ticking: dict[str, Any]
) -> None:
    log_in(page)
    page.goto(f"/runs/{ticking['runId']}")
    lines = page.locator("#log-lines")
    expect(lines).to_contain_text("tick 0")
    expect(page.locator("#log-state")).to_contain_text("live")
    mark_page(page)
    first = lines.locator(".blk").first.inner_text()
    last = max(int(n) for n in re.findall(r"tick (\d+)", first))
    later = f"tick {last + 3}\n"
    expect(lines).to_contain_text(later)
    assert later not in first
    assert_not_reloaded(page)


def test_a_chart_draws_the_points_the_run_logged(
    page: Page, finished: dict[str, Any], screenshots: Screenshots
) -> None:
    log_in(page)
    page.goto(f"/runs/{finished['runId']}")
    expect(page.locator("#log-lines")).to_contain_text("greeting=hello")
    chart = page.locator('.chart[data-metric="loss"]')
    with page.expect_response(re.compile(r"/metrics/loss\.json")) as answered:
        chart.scroll_into_view_if_needed()
    assert answered.value.ok
    expect(chart).to_have_attribute("data-state", "drawn")
    expect(chart.locator("canvas")).to_have_count(1)
    xs, ys = chart.evaluate("c => [Array.from(c.uplot.data[0]), Array.from(c.uplot.data[1])]")
    assert xs == list(range(25))
    assert ys == [round(1.0 / (1 + step), 4) for step in range(25)]
    page.evaluate("window.scrollTo(0, 0)")
    screenshots.take(page, "run-page")


def test_an_artifact_downloads_with_its_content(
    page: Page, finished: dict[str, Any], tmp_path: Path
) -> None:
    log_in(page)
    page.goto(f"/runs/{finished['runId']}")
    link = page.locator("#artifacts a.file", has_text="result.txt")
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == "result.txt"
    saved = tmp_path / "result.txt"
    download.value.save_as(saved)
    assert saved.read_text() == "greeting was hello\n"


def test_a_clone_with_a_changed_parameter_runs_with_it(
    page: Page, web: Web, finished: dict[str, Any]
) -> None:
    log_in(page)
    page.goto(f"/runs/{finished['runId']}")
    page.locator("#clone").click()
    expect(page).to_have_url(re.compile(r"/clone$"))
    row = page.locator(".param-row", has=page.locator('input[value="--greeting"]'))
    value = row.locator("input[name=param_value]")
    expect(value).to_have_value("hello")
    value.fill("bonjour")
    page.locator("#submit-clone").click()
    expect(page).to_have_url(re.compile(r"/runs/(?!" + re.escape(finished["runId"]) + ")[^/]+$"))
    clone_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#run-status")).to_have_text("Completed", timeout=120_000)
    expect(page.locator("#arguments")).to_have_text("--greeting bonjour")
    expect(page.locator("#log-lines")).to_contain_text("greeting=bonjour")
    api = web.api()
    run = api.get(f"/api/v1/runs/{clone_id}").json()
    assert run["runDefinition"]["arguments"] == ["--greeting", "bonjour"]
    assert run["properties"]["snapshotId"] == finished["properties"]["snapshotId"]
    assert "greeting=bonjour" in api.get(f"/api/v1/runs/{clone_id}/logs").text


def test_cancel_a_running_run_from_its_page(page: Page, web: Web, ticking: dict[str, Any]) -> None:
    log_in(page)
    page.goto(f"/runs/{ticking['runId']}")
    expect(page.locator("#run-status")).to_have_text("Running")
    page.locator("#cancel").click()
    expect(page.locator("#run-status")).to_have_text("Canceled", timeout=60_000)
    expect(page.locator("#cancel")).to_have_count(0)
    assert web.api().get(f"/api/v1/runs/{ticking['runId']}").json()["status"] == "Canceled"
