"""A registered model's page in a browser: its files, and where it came from (run, experiment,
parameters, final metrics)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import MEMBER, Screenshots, Web, log_in
from tests.helpers import submit, wait_for_status

pytestmark = [pytest.mark.browser, pytest.mark.docker]

TRAIN = (
    "import os\nfrom trainhub import Run\nrun = Run.get_context()\n"
    "run.log('accuracy', 0.93)\nos.makedirs('outputs', exist_ok=True)\n"
    "open('outputs/model.pkl', 'wb').write(b'weights')\n"
)


def test_a_model_page_shows_its_files_and_its_lineage(
    page: Page, web: Web, screenshots: Screenshots
) -> None:
    api = web.api(MEMBER)
    run = submit(api, TRAIN, experiment="iris", script_params={"--lr": 0.1})
    assert wait_for_status(api, run["runId"], timeout=120)["status"] == "Completed"
    made = api.post(
        f"/api/v1/runs/{run['runId']}/models",
        json={
            "name": "iris-classifier",
            "path": "outputs/model.pkl",
            "tags": {"stage": "candidate"},
        },
    )
    assert made.status_code == 201, made.text
    version = made.json()["version"]

    log_in(page, MEMBER, then="/models")
    page.get_by_role("link", name="iris-classifier").first.click()
    expect(page.locator("#model-id")).to_contain_text(f"version {version}")
    expect(page.locator("#lineage-run")).to_have_text(run["runId"])
    expect(page.locator("#lineage-params")).to_contain_text("--lr")
    expect(page.locator("#lineage-metrics")).to_contain_text("accuracy")
    expect(page.locator("#files")).to_contain_text("model.pkl")
    screenshots.take(page, "models")
