"""Datasets in a browser: the empty list says how to register one; the name filter swaps the table
in place as one types; a dataset's page shows its files, its versions and the run that read it."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import MEMBER, Screenshots, Web, assert_not_reloaded, log_in, mark_page
from tests.helpers import make_snapshot, submit_raw, wait_for_status
from tests.test_pages_datastores import put

pytestmark = [pytest.mark.browser, pytest.mark.docker]

IRIS = "sepal_length,sepal_width,species\n5.1,3.5,setosa\n6.2,2.9,versicolor\n"
READER = "import os, sys\nprint(sorted(os.listdir(sys.argv[1])))\n"


def test_a_dataset_page_shows_its_files_versions_and_runs(
    page: Page, web: Web, screenshots: Screenshots
) -> None:
    log_in(page, MEMBER, then="/datasets")
    expect(page.locator("#datasets-empty")).to_contain_text("No datasets are registered yet")
    expect(page.locator("#datasets-empty")).to_contain_text("Dataset.File.from_files")

    api = web.api(MEMBER)
    for path, text in {
        "iris/train.csv": IRIS * 20,
        "iris/test.csv": IRIS,
        "iris/README.md": "The iris flowers.",
    }.items():
        put(api, "workspaceblobstore", path, text.encode())
    store = {"kind": "file", "datastore": "workspaceblobstore", "name": "iris"}
    first = api.post("/api/v1/datasets", json={**store, "paths": ["iris/**"]})
    assert first.status_code == 201, first.text
    latest = api.post(
        "/api/v1/datasets",
        json={
            **store,
            "paths": ["iris/*.csv"],
            "createNewVersion": True,
            "description": "Fisher's iris measurements, without the README",
            "tags": {"source": "uci", "split": "train+test"},
        },
    )
    assert latest.status_code == 201, latest.text
    reference = {"name": "iris", "mode": "mount", "dataset": {"id": latest.json()["id"]}}
    spec = {"entry_script": "train.py", "arguments": [{"$data_reference": reference}]}
    run = submit_raw(api, spec, make_snapshot({"train.py": READER}), "iris")
    assert run.status_code == 201, run.text
    run_id = run.json()["runId"]
    assert wait_for_status(api, run_id, timeout=120)["status"] == "Completed"

    page.reload()
    mark_page(page)
    page.get_by_label("Name").fill("ir")  # the table follows what is typed, the page stays
    expect(page).to_have_url(re.compile(r"/datasets\?contains=ir$"))
    expect(page.locator(".dataset-row")).to_have_count(1)
    expect(page.locator("#datasets-filter")).to_have_count(1)  # the table alone was swapped
    assert_not_reloaded(page)
    page.get_by_label("Name").fill("nothing-like-it")
    expect(page.locator("#datasets-empty")).to_contain_text("No dataset's name contains")
    page.get_by_label("Name").fill("iris")
    expect(page.locator(".dataset-row")).to_have_count(1)
    screenshots.take(page, "datasets-list")
    page.get_by_role("link", name="iris", exact=True).click()

    expect(page.locator("#dataset-title")).to_contain_text("version 2 (latest)")
    expect(page.locator("#dataset-files")).to_contain_text("train.csv")
    expect(page.locator("#dataset-runs")).to_contain_text(run_id)
    expect(page.locator("#versions")).to_contain_text("version 1")
    screenshots.take(page, "datasets")
    page.get_by_role("link", name=run_id).click()
    expect(page.locator("#run-datasets")).to_contain_text("iris version 2")
    screenshots.take(page, "run-datasets")
