"""The datastore pages in a browser: an admin registers a shared datastore with the keyboard, a member
browses the default one folder by folder and downloads a file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ADMIN, MEMBER, Screenshots, Web, log_in
from trainhub.sdk import Datastore, Workspace

pytestmark = [pytest.mark.browser]


def test_an_admin_registers_a_shared_datastore_with_the_keyboard(page: Page, web: Web) -> None:
    log_in(page, ADMIN, then="/datastores")
    page.get_by_label("Name (letters").focus()
    page.keyboard.type("lab_nfs")
    page.get_by_label("Kind").select_option("shared")
    page.get_by_label("Paths on the nodes").fill("/mnt/nfs/lab\nn2=/data/lab")
    page.get_by_label("Description").fill("the lab's NFS share")
    page.get_by_label("Description").press("Tab")
    page.keyboard.press("Enter")  # the focused "Register datastore" button
    row = page.locator("#datastore-lab_nfs")
    expect(row).to_contain_text("shared")
    expect(row).to_contain_text("/mnt/nfs/lab")
    expect(row).to_contain_text("/data/lab")
    registered = web.api(ADMIN).get("/api/v1/datastores/lab_nfs").json()
    assert registered["paths"] == {"*": "/mnt/nfs/lab", "n2": "/data/lab"}


def test_a_member_browses_the_default_datastore_and_downloads_a_file(
    page: Page, web: Web, tmp_path: Path, screenshots: Screenshots
) -> None:
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "train" / "x.csv").write_text("1,2\n3,4\n")
    (data / "train" / "y.csv").write_text("0\n1\n")
    (data / "README.txt").write_text("the iris set\n")
    ws = Workspace(web.server.url, token=web.tokens[MEMBER])
    Datastore.get(ws, "workspaceblobstore").upload(
        str(data), target_path="iris", overwrite=True, show_progress=False
    )

    log_in(page, MEMBER, then="/datastores")
    expect(page.locator("#add-datastore")).to_have_count(0)  # members register nothing
    page.get_by_role("link", name="workspaceblobstore").first.click()
    page.get_by_role("link", name="iris/").click()
    expect(page).to_have_url(re.compile(r"prefix=iris"))
    page.get_by_role("link", name="train/").click()
    expect(page.locator("#listing tr.file")).to_have_count(2)
    expect(page.locator("#folder-crumbs")).to_contain_text("iris")
    screenshots.take(page, "datastores")
    with page.expect_download() as caught:
        page.get_by_role("link", name="x.csv").click()
    download = caught.value
    assert download.suggested_filename == "x.csv"
    assert Path(download.path()).read_text() == "1,2\n3,4\n"
