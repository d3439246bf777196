"""The dataset pages through a real server: the list (each name's latest version, kind, datastore,
paths, versions and runs; a name filter that htmx swaps and that works as a plain form; the empty
state), one version's page (its paths and options, its versions, its first files with download
links, the runs that read or wrote it), the run page's datasets, and the 404 pages. Datasets are
made through the API over files uploaded to ``workspaceblobstore``; pages are read with an HTML
parser."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.helpers import add_user, login, make_snapshot, submit_raw, wait_for_status
from tests.html import Element, parse
from tests.test_pages_datastores import put
from trainhub.server.pages.datasets import FILES_SHOWN

DEFAULT = "workspaceblobstore"
FILES = {
    "train/a.csv": b"x;y\n1;2\n",
    "train/b.csv": b"x;y\n3;4\n",
    "train/sub/c.bin": bytes(range(256)) * 4,
    "other/skip.txt": b"not in the dataset",
}


def make_dataset(client: httpx.Client, **body: Any) -> dict[str, Any]:
    """A dataset created through the API, as the SDK's ``register`` does."""
    made = client.post("/api/v1/datasets", json={"datastore": DEFAULT, **body})
    assert made.status_code == 201, made.text
    found: dict[str, Any] = made.json()
    return found


@dataclass
class Data:
    key: str  # in every name and folder of this module
    folder: str  # in workspaceblobstore
    images: str  # a file dataset with two versions
    table: str  # a tabular dataset
    v1: dict[str, Any]
    v2: dict[str, Any]
    api: httpx.Client  # the suite's admin
    viewer: httpx.Client  # a member, logged in through the form


@pytest.fixture(scope="module")
def data(server: Server) -> Iterator[Data]:
    api = server.client()
    key = uuid.uuid4().hex[:8]
    folder = f"pages-{key}"
    for path, content in FILES.items():
        put(api, DEFAULT, f"{folder}/{path}", content)
    images, table = f"images-{key}", f"table-{key}"
    v1 = make_dataset(
        api,
        kind="file",
        paths=[f"{folder}/train/**"],
        name=images,
        description="cat pictures",
        tags={"team": "vision"},
    )
    v2 = make_dataset(
        api, kind="file", paths=[f"{folder}/train/*.csv"], name=images, createNewVersion=True
    )
    make_dataset(
        api,
        kind="tabular",
        paths=[f"{folder}/train/*.csv"],
        options={"separator": ";"},
        name=table,
    )
    viewer_name = f"ds-viewer-{key}"
    add_user(api, viewer_name)
    viewer = login(server.url, viewer_name)
    yield Data(key, folder, images, table, v1, v2, api, viewer)
    viewer.close()
    api.close()


def row_of(page: Element, name: str) -> Element:
    (row,) = [r for r in page.all("dataset-row") if r.attrs["data-name"] == name]
    return row


def cells(row: Element) -> list[str]:
    return [c.text for c in row.children if isinstance(c, Element) and c.tag in {"td", "th"}]


def test_the_list_shows_each_names_latest_version(data: Data) -> None:
    page = parse(data.viewer.get("/datasets", params={"contains": data.key}))
    assert sorted(r.attrs["data-name"] for r in page.all("dataset-row")) == sorted(
        [data.images, data.table]
    )
    images = row_of(page, data.images)
    assert cells(images)[:7] == [
        data.images,
        "2",
        "file",
        DEFAULT,
        f"{data.folder}/train/*.csv",
        "2",
        "0",
    ]
    (link,) = images.all("dataset-name")
    assert link.attrs["href"] == f"/datasets/{data.images}"
    assert cells(row_of(page, data.table))[2] == "tabular"
    nav = [a for a in page.all(tag="a") if a.text == "Datasets"]
    assert nav and nav[0].attrs.get("aria-current") == "page"


def test_the_filter_works_with_and_without_htmx(data: Data) -> None:
    # Without script: a plain GET form whose page keeps what was typed.
    page = parse(data.viewer.get("/datasets", params={"contains": f"TABLE-{data.key}"}))
    form = page.find("datasets-filter")
    assert form.attrs["method"] == "get" and form.attrs["action"] == "/datasets"
    assert page.find("dataset-filter").attrs["value"] == f"TABLE-{data.key}"
    assert [r.attrs["data-name"] for r in page.all("dataset-row")] == [data.table]
    # htmx asks for the results alone, to swap into #datasets-results.
    swapped = data.viewer.get(
        "/datasets",
        params={"contains": f"images-{data.key}"},
        headers={"HX-Request": "true", "HX-Target": "datasets-results"},
    )
    assert swapped.status_code == 200 and "<html" not in swapped.text
    piece = parse(swapped)
    assert piece.by_id("datasets-filter") is None
    assert [r.attrs["data-name"] for r in piece.all("dataset-row")] == [data.images]
    # Nothing matches: the empty state says how to make one.
    empty = parse(data.viewer.get("/datasets", params={"contains": f"nothing-{data.key}"}))
    assert not empty.all("dataset-row")
    text = empty.find("datasets-empty").text
    assert f"No dataset's name contains nothing-{data.key}" in text
    assert "Dataset.File.from_files(path=[(ds, 'folder/**')]).register(ws, 'name')" in text


def test_a_versions_page_shows_what_it_holds_and_its_files(data: Data) -> None:
    latest = parse(data.viewer.get(f"/datasets/{data.images}"))
    assert latest.find("dataset-title").text == f"{data.images} version 2 (latest)"
    assert latest.find("dataset-kind").text.startswith("file")
    (store_link,) = latest.find("dataset-datastore").all(tag="a")
    assert store_link.attrs["href"] == f"/datastores/{DEFAULT}"
    assert latest.find("dataset-paths").text == f"{data.folder}/train/*.csv"
    assert latest.find("dataset-registered").text.endswith("by admin")
    # Version 2 holds the two CSV files, named as a run sees them, with working downloads.
    files = latest.find("dataset-files").all("file")
    assert [f.attrs["data-path"] for f in files] == [
        f"{data.folder}/train/a.csv",
        f"{data.folder}/train/b.csv",
    ]
    assert [f.all(tag="a")[0].text for f in files] == ["a.csv", "b.csv"]
    got = data.viewer.get(files[1].all(tag="a")[0].attrs["href"])
    assert got.content == FILES["train/b.csv"]
    assert latest.find("files-count").text.startswith("2 files, 16 bytes, below ")
    # Its versions, the one shown marked, the other a link.
    versions = latest.find("versions").all("version")
    assert [v.text.split(" ·")[0].split(" ")[:2] for v in versions] == [
        ["version", "2"],
        ["version", "1"],
    ]
    (older,) = versions[1].all(tag="a")
    assert older.attrs["href"] == f"/datasets/{data.images}?version=1"
    # Version 1: the whole folder, its description and tags.
    first = parse(data.viewer.get(older.attrs["href"]))
    assert first.find("dataset-title").text == f"{data.images} version 1 of 2"
    assert first.find("dataset-description").text == "cat pictures"
    assert first.find("dataset-tags").text == "team=vision"
    assert [f.all(tag="a")[0].text for f in first.find("dataset-files").all("file")] == [
        "a.csv",
        "b.csv",
        "sub/c.bin",
    ]
    assert "No run has read or written" in first.find("runs-none").text


def test_a_tabular_datasets_page_shows_its_reading_options(data: Data) -> None:
    page = parse(data.viewer.get(f"/datasets/{data.table}"))
    assert page.find("dataset-kind").text.startswith("tabular")
    options = page.find("dataset-options").text
    assert '";"' in options and "header line names the columns" in options and "utf8" in options


def test_a_big_dataset_lists_its_first_files_and_counts_the_rest(data: Data) -> None:
    many = FILES_SHOWN + 7
    for number in range(many):
        put(data.api, DEFAULT, f"{data.folder}/many/f{number:03}.txt", b"x" * number)
    name = f"many-{data.key}"
    make_dataset(data.api, kind="file", paths=[f"{data.folder}/many"], name=name)
    page = parse(data.viewer.get(f"/datasets/{name}"))
    assert len(page.find("dataset-files").all("file")) == FILES_SHOWN
    count = page.find("files-count").text
    assert f"{many} files" in count and f"the first {FILES_SHOWN} are listed" in count


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/datasets/no-such-dataset", 404),
        ("/datasets/{images}?version=9", 404),
        ("/datasets/{images}?version=0", 400),
    ],
)
def test_unknown_datasets_and_versions_are_the_sites_error_page(
    data: Data, path: str, status: int
) -> None:
    response = data.viewer.get(path.format(images=data.images))
    assert response.status_code == status
    page = parse(response)
    assert page.all(tag="main") and page.by_id("dataset-title") is None
    if status == 404:
        assert "Not found" in page.all(tag="main")[0].text


def test_the_pages_need_a_login(server: Server, data: Data) -> None:
    anonymous = httpx.Client(base_url=server.url, timeout=30)
    for path in ("/datasets", f"/datasets/{data.images}"):
        response = anonymous.get(path)
        assert response.status_code == 303, (path, response.status_code)
        assert response.headers["location"] == f"/login?next={path}"


READER = """
import os, sys
folder = sys.argv[1]
for top, dirs, files in sorted(os.walk(folder)):
    for name in sorted(files):
        print("read", os.path.relpath(os.path.join(top, name), folder), flush=True)
"""


@pytest.mark.docker
def test_the_runs_that_used_a_dataset_are_on_both_pages(server: Server, data: Data) -> None:
    argument = {
        "$data_reference": {"name": "pics", "mode": "mount", "dataset": {"id": data.v1["id"]}}
    }
    spec = {"entry_script": "train.py", "arguments": [argument]}
    snapshot = make_snapshot({"train.py": READER})
    used = submit_raw(data.api, spec, snapshot, f"lineage-{data.key}")
    assert used.status_code == 201, used.text
    plain = submit_raw(data.api, {"entry_script": "train.py"}, snapshot, f"lineage-{data.key}")
    run_id, plain_id = used.json()["runId"], plain.json()["runId"]
    done = wait_for_status(data.api, run_id, timeout=120)
    assert done["status"] == "Completed", done
    log = data.api.get(f"/api/v1/runs/{run_id}/files/logs/driver_log.txt")
    assert "read sub/c.bin" in log.text  # the run read the dataset's folder
    wait_for_status(data.api, plain_id, timeout=120)

    # The dataset's page: the run, its experiment and status, what it did, with which version.
    page = parse(data.viewer.get(f"/datasets/{data.images}"))
    (use,) = page.find("dataset-runs").all("dataset-use")
    assert use.attrs["data-run"] == run_id
    run_cell, experiment, status, direction, version, reference, _ = cells(use)
    assert (run_cell, experiment, status) == (run_id, f"lineage-{data.key}", "Completed")
    assert direction.startswith("read (input)") and reference == "pics"
    assert version == "version 1"  # a link from version 2's page
    links = [a.attrs["href"] for a in use.all(tag="a")]
    assert links == [
        f"/runs/{run_id}",
        f"/experiments/lineage-{data.key}",
        f"/datasets/{data.images}?version=1",
    ]
    listed = parse(data.viewer.get("/datasets", params={"contains": data.images}))
    assert cells(row_of(listed, data.images))[6] == "1"  # runs

    # The run's page: its input, linking to the dataset's page; a run without one has no section.
    run_page = parse(data.viewer.get(f"/runs/{run_id}"))
    (entry,) = run_page.find("run-datasets").all("run-dataset")
    assert entry.attrs["data-direction"] == "input"
    assert [a.attrs["href"] for a in entry.all(tag="a")] == [
        f"/datasets/{data.images}?version=1",
        f"/datastores/{DEFAULT}",
    ]
    assert f"{data.images} version 1" in entry.text
    assert parse(data.viewer.get(f"/runs/{plain_id}")).by_id("datasets") is None
