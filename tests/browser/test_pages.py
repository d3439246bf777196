"""Submitting from the browser, the experiments' comparison, and the queue and nodes pages."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import (
    ADMIN,
    MEMBER,
    Screenshots,
    Web,
    assert_not_reloaded,
    log_in,
    mark_page,
)
from tests.helpers import submit, wait_for_status

pytestmark = [pytest.mark.browser, pytest.mark.docker]


def nav(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="main").get_by_role("link", name=name)


def source_folder(root: Path) -> Path:
    """A project folder as a person has it: a package beside the script, and a .git to leave out."""
    folder = root / "project"
    (folder / "lib").mkdir(parents=True)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "lib" / "__init__.py").write_text("")
    (folder / "lib" / "words.py").write_text("GREETING = 'packed in the browser'\n")
    (folder / "train.py").write_text(
        textwrap.dedent(
            """
            import argparse, os, time
            from lib.words import GREETING

            parser = argparse.ArgumentParser()
            parser.add_argument("--epochs", type=int)
            args = parser.parse_args()
            time.sleep(4)
            print(GREETING, "for", args.epochs, "epochs;", ".git" in os.listdir("."))
            """
        )
    )
    return folder


def test_submit_a_folder_and_watch_the_badge_turn_completed_without_a_reload(
    page: Page, web: Web, tmp_path: Path, screenshots: Screenshots
) -> None:
    log_in(page, MEMBER)
    nav(page, "Submit").click()
    expect(page).to_have_url(re.compile(r"/submit$"))
    page.locator("#experiment").fill("browser-submit")
    page.locator("#source-folder").set_input_files(source_folder(tmp_path))
    expect(page.locator("#source-folder-summary")).to_contain_text("3 files to pack")
    page.locator("#entry_script").fill("train.py")
    page.get_by_label("Parameter name 1").fill("--epochs")
    page.get_by_label("Parameter value 1").fill("3")
    screenshots.take(page, "submit")
    page.locator("#submit-button").click()
    page.wait_for_url(re.compile(r"/runs/browser-submit_[^/]+$"))
    mark_page(page)
    badge = page.locator("#run-status")
    assert badge.inner_text() != "Completed"
    expect(badge).to_have_text("Completed", timeout=120_000)
    assert_not_reloaded(page)
    expect(page.locator("#submitted-by")).to_have_text(MEMBER)
    expect(page.locator("#log-lines")).to_contain_text("packed in the browser for 3 epochs; False")
    run_id = page.url.rsplit("/", 1)[1]
    run = web.api().get(f"/api/v1/runs/{run_id}").json()
    assert run["runDefinition"]["arguments"] == ["--epochs", "3"]


def test_compare_runs_of_an_experiment_side_by_side(
    page: Page, web: Web, screenshots: Screenshots
) -> None:
    api = web.api()
    script = textwrap.dedent(
        """
        import sys
        from trainhub import Run
        lr = float(sys.argv[2])
        run = Run.get_context()
        for step in range(20):
            run.log("loss", round(1 / (1 + lr * step), 4), step=step)
        """
    )
    runs = [
        submit(api, script, experiment="browser-compare", script_params={"--lr": lr})
        for lr in (0.5, 2.0)
    ]
    for run in runs:
        wait_for_status(api, run["runId"], "Completed", timeout=120)
    log_in(page, MEMBER)
    page.goto("/experiments")
    page.get_by_role("link", name="browser-compare").click()
    for run in runs:
        page.locator(f"#choose-{run['runId']}").check()
    with page.expect_response(re.compile(r"/compare/metrics\?")) as answered:
        page.locator("#compare-button").click()
    assert answered.value.ok
    expect(page).to_have_url(re.compile(r"/experiments/browser-compare/compare\?"))
    for lr in ("0.5", "2"):
        expect(page.get_by_role("cell", name=lr, exact=True)).to_have_count(1)
    curves = page.locator('figure[data-metric="loss"]')
    expect(curves).to_have_attribute("data-loaded", "true")
    expect(curves).to_have_attribute("data-runs", "2")
    expect(curves).to_have_attribute("data-points", "40")
    expect(curves.locator("canvas")).to_have_count(1)
    screenshots.take(page, "compare")


def test_the_queue_and_the_nodes_pages_show_the_servers_own_node(
    page: Page, screenshots: Screenshots
) -> None:
    log_in(page, ADMIN)
    nav(page, "Queue").click()
    expect(page).to_have_url(re.compile(r"/queue$"))
    screenshots.take(page, "queue")
    nav(page, "Nodes").click()
    expect(page).to_have_url(re.compile(r"/nodes$"))
    node = page.locator("#node-local")
    expect(node).to_have_attribute("data-state", "Ready")
    screenshots.take(page, "nodes-without-gpus")
