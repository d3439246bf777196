"""The runs table, a run's page and the clone form, through a real server and real runs: who sees
what, who may change what, and what each page shows."""

from __future__ import annotations

import html
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import Server
from tests.helpers import add_user, get_run, login, submit, wait_for_log, wait_for_status
from trainhub.runs import views
from trainhub.spec import SpecError

TRAIN = textwrap.dedent(
    """
    import os, sys
    from trainhub import Run
    run = Run.get_context()
    for step, loss in enumerate([0.9, 0.5, 0.7]):
        run.log("loss", loss, step=step)
    run.log("accuracy", 0.25)
    print("args", sys.argv[1:])
    os.makedirs("outputs/sub", exist_ok=True)
    with open("outputs/model.txt", "w") as f:
        f.write("weights " + sys.argv[2])
    with open("outputs/sub/notes.txt", "w") as f:
        f.write("notes")
    """
)
SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(120)\n"
QUICK = "print('quick')\n"


@dataclass
class People:
    ann: httpx.Client  # a member, owner of run ``a``
    bob: httpx.Client  # a member, owner of run ``b``
    boss: httpx.Client  # an admin
    ann_api: httpx.Client
    bob_api: httpx.Client
    a: str
    b: str


@pytest.fixture(scope="module")
def people(server: Server) -> Iterator[People]:
    admin = server.client()
    ann_token = add_user(admin, "rp-ann")
    bob_token = add_user(admin, "rp-bob")
    add_user(admin, "rp-boss", role="admin")
    ann_api, bob_api = server.client(ann_token), server.client(bob_token)
    a = submit(ann_api, TRAIN, experiment="rp-table", script_params={"--lr": 0.5})["runId"]
    b = submit(bob_api, QUICK, experiment="rp-other")["runId"]
    for run_id in (a, b):
        assert wait_for_status(admin, run_id)["status"] == "Completed"
    clients = [login(server.url, name) for name in ("rp-ann", "rp-bob", "rp-boss")]
    yield People(*clients, ann_api, bob_api, a, b)
    for c in clients:
        c.close()


def table_rows(page: str) -> dict[str, list[str]]:
    """The runs table's rows: run id -> the text of each cell."""
    rows = {}
    for run_id, body in re.findall(r'<tr id="run-([^"]+)"[^>]*>(.*?)</tr>', page, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)
        rows[html.unescape(run_id)] = [
            html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells
        ]
    return rows


def ids_on(client: httpx.Client, url: str) -> list[str]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return list(table_rows(response.text))


def link(page: str, element_id: str) -> str | None:
    found = re.search(rf'<a id="{element_id}" href="([^"]+)"', page)
    return html.unescape(found.group(1)) if found else None


def test_every_run_page_sends_the_anonymous_to_login(server: Server, people: People) -> None:
    anonymous = httpx.Client(base_url=server.url, timeout=30)
    for path in (
        "/runs",
        f"/runs/{people.a}",
        f"/runs/{people.a}/clone",
        f"/runs/{people.a}/files/outputs/model.txt",
    ):
        response = anonymous.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=/runs"), path
    anonymous.close()


def test_runs_table_lists_everyones_runs_with_user_and_status(people: People) -> None:
    for viewer in (people.ann, people.bob, people.boss):
        response = viewer.get("/runs")
        assert response.status_code == 200
        assert 'id="runs-table"' in response.text
        rows = table_rows(response.text)
        experiment, number, status, user, target, nodes, gpus, started, took = rows[people.a]
        assert (experiment, status, user, target, nodes, gpus) == (
            "rp-table",
            "Completed",
            "rp-ann",
            "local",
            "local",
            "0",
        )
        assert number.isdigit() and started and took
        assert rows[people.b][2:4] == ["Completed", "rp-bob"]
        # every run on the page has ended: the table body does not poll
        assert 'hx-trigger="every' not in response.text.split('id="runs-body"')[1].split(">")[0]


def test_filters_narrow_the_rows(people: People) -> None:
    ann, a, b = people.ann, people.a, people.b
    assert (
        ann.post(f"/runs/{a}/tags", data={"key": "rp-team", "value": "vision"}).status_code == 303
    )

    assert ids_on(ann, "/runs?experiment=rp-table") == [a]
    assert ids_on(ann, "/runs?experiment=rp-other") == [b]
    by_bob = ids_on(ann, "/runs?user=rp-bob")
    assert b in by_bob and a not in by_bob
    completed = ids_on(ann, "/runs?status=Completed")
    assert a in completed and b in completed
    assert a not in ids_on(ann, "/runs?status=Queued")
    assert ids_on(ann, "/runs?tag=rp-team") == [a]
    assert ids_on(ann, "/runs?tag=rp-team%3Dvision") == [a]
    assert ids_on(ann, "/runs?tag=rp-team%3Daudio") == []
    assert ids_on(ann, "/runs?experiment=rp-table&user=rp-bob") == []
    # an htmx request (the filter form) gets the filtered table without the page around it
    part = ann.get("/runs?experiment=rp-other", headers={"HX-Request": "true"})
    assert "<html" not in part.text and list(table_rows(part.text)) == [b]

    empty = ann.get("/runs?experiment=rp-nothing-here")
    assert "No runs match these filters" in empty.text
    bad = ann.get("/runs?status=Sleeping")
    assert bad.status_code == 422 and "Unknown status" in bad.text


def test_keyset_paging_returns_the_next_page_without_overlap(people: People) -> None:
    made = [submit(people.ann_api, QUICK, experiment="rp-paging")["runId"] for _ in range(5)]
    newest_first = list(reversed(made))
    first = people.ann.get("/runs?experiment=rp-paging&limit=2")
    assert list(table_rows(first.text)) == newest_first[:2]
    assert link(first.text, "newer") is None
    older = link(first.text, "older")
    assert older is not None and "before=" in older and "offset" not in older

    second = people.ann.get(older)
    assert list(table_rows(second.text)) == newest_first[2:4]
    third_url = link(second.text, "older")
    assert third_url is not None
    third = people.ann.get(third_url)
    assert list(table_rows(third.text)) == newest_first[4:]
    assert link(third.text, "older") is None

    # and back: "Newer" from the second page is the first page again
    newer = link(second.text, "newer")
    assert newer is not None and "after=" in newer
    assert list(table_rows(people.ann.get(newer).text)) == newest_first[:2]
    for run_id in made:
        wait_for_status(people.ann_api, run_id)


def test_metric_columns_show_last_min_and_max_of_what_a_run_logged(people: People) -> None:
    plain = people.bob.get("/runs?experiment=rp-table")
    # the picker lists the page's metric names; no metric column is shown unless asked for
    assert 'value="loss:last"' in plain.text and 'value="accuracy:max"' in plain.text
    assert len(table_rows(plain.text)[people.a]) == 9

    page = people.bob.get(
        "/runs?experiment=rp-table&metric=loss:last&metric=loss:min&metric=loss:max&metric=accuracy"
    )
    assert page.status_code == 200
    assert table_rows(page.text)[people.a][9:] == ["0.7", "0.5", "0.9", "0.25"]
    assert re.search(r'value="loss:min"[^>]*checked', page.text)
    assert not re.search(r'value="accuracy:min"[^>]*checked', page.text)

    bad = people.bob.get("/runs?metric=loss:average")
    assert bad.status_code == 422 and "metric" in bad.text


def test_run_page_shows_details_timeline_spec_and_artifacts(people: People) -> None:
    response = people.bob.get(f"/runs/{people.a}")  # a member sees another's run
    assert response.status_code == 200
    page = response.text
    assert 'id="run-status" class="badge Completed"' in page
    assert '<dd id="submitted-by">rp-ann</dd>' in page
    assert '<dd id="exit-code">0</dd>' in page
    timeline = page.split('id="timeline"')[1].split("</ol>")[0]
    assert re.findall(r'class="badge (\w+)"', timeline) == [
        "Queued",
        "Preparing",
        "Starting",
        "Running",
        "Finalizing",
        "Completed",
    ]
    assert '"entry_script": "train.py"' in html.unescape(page)
    assert 'id="arguments">--lr 0.5</code>' in page
    assert f'href="/runs/{people.a}/files/outputs/model.txt"' in page
    assert f'href="/runs/{people.a}/files/outputs/sub/notes.txt"' in page
    assert f'hx-get="/runs/{people.a}/log"' in page and f'hx-get="/runs/{people.a}/charts"' in page
    assert f'href="/runs/{people.a}/tensorboard/"' in page
    # the run has ended: its live part does not poll
    assert 'hx-trigger="every' not in page
    # not bob's run: no cancel, clone or tag form
    for element in ('id="cancel"', 'id="clone"', 'id="tag-form"'):
        assert element not in page
    owner_view = people.ann.get(f"/runs/{people.a}").text
    assert 'id="clone"' in owner_view and 'id="tag-form"' in owner_view

    download = people.bob.get(f"/runs/{people.a}/files/outputs/model.txt")
    assert download.status_code == 200
    assert download.text == "weights 0.5"
    assert "attachment" in download.headers["content-disposition"]
    assert people.bob.get(f"/runs/{people.a}/files/../../trainhub.db").status_code == 404
    assert people.bob.get(f"/runs/{people.a}/files/outputs/none.txt").status_code == 404


def test_member_cannot_tag_or_cancel_anothers_run_but_admin_can_tag(people: People) -> None:
    refused = people.bob.post(f"/runs/{people.a}/tags", data={"key": "by", "value": "bob"})
    assert refused.status_code == 403
    assert "rp-bob is a member" in refused.text
    assert people.bob.post(f"/runs/{people.a}/cancel").status_code == 403
    assert "by" not in get_run(people.ann_api, people.a)["tags"]

    assert (
        people.boss.post(f"/runs/{people.a}/tags", data={"key": "by", "value": "boss"}).status_code
        == 303
    )
    assert get_run(people.ann_api, people.a)["tags"]["by"] == "boss"
    assert (
        people.bob.post(f"/runs/{people.a}/tags", data={"key": " ", "value": "x"}).status_code
        == 422
    )


def test_a_member_cancels_their_own_running_run_and_the_page_follows_it(people: People) -> None:
    run_id = submit(people.bob_api, SLEEPER, experiment="rp-cancel")["runId"]
    wait_for_log(people.bob_api, run_id, "sleeping")
    page = people.bob.get(f"/runs/{run_id}").text
    assert 'id="cancel"' in page and 'hx-trigger="every 2s"' in page
    # the table polls its whole body (one request per tick) while the run is on it
    body = people.bob.get(
        "/runs?experiment=rp-cancel", headers={"HX-Request": "true", "HX-Target": "runs-body"}
    )
    assert body.status_code == 200 and body.text.lstrip().startswith('<tbody id="runs-body"')
    assert 'hx-trigger="every 2s"' in body.text and "Running" in body.text
    assert people.ann.post(f"/runs/{run_id}/cancel").status_code == 403

    canceled = people.bob.post(f"/runs/{run_id}/cancel")
    assert canceled.status_code == 303 and canceled.headers["location"] == f"/runs/{run_id}"
    assert wait_for_status(people.bob_api, run_id, "Canceled")["status"] == "Canceled"

    live = people.bob.get(
        f"/runs/{run_id}", headers={"HX-Request": "true", "HX-Target": "run-live"}
    )
    assert live.status_code == 286  # htmx stops polling, with the final content
    assert 'id="run-status" class="badge Canceled"' in live.text
    assert 'hx-trigger="every' not in live.text and 'id="artifacts" hx-swap-oob="true"' in live.text
    body = people.bob.get(
        "/runs?experiment=rp-cancel", headers={"HX-Request": "true", "HX-Target": "runs-body"}
    )
    assert body.status_code == 286 and "Canceled" in body.text


def test_html_in_a_tag_value_is_shown_as_text(people: People) -> None:
    evil = '<script>alert("x")</script><b>bold</b>'
    assert (
        people.ann.post(
            f"/runs/{people.a}/tags", data={"key": "<i>k</i>", "value": evil}
        ).status_code
        == 303
    )
    page = people.ann.get(f"/runs/{people.a}").text
    assert evil not in page and "<i>k</i>" not in page
    assert html.escape(evil) in page.replace("&#34;", "&quot;")


def test_a_missing_run_is_a_404_page(people: People) -> None:
    for path in (
        "/runs/rp-no-such-run",
        "/runs/rp-no-such-run/clone",
        "/runs/rp-no-such-run/files/outputs/x",
    ):
        response = people.ann.get(path)
        assert response.status_code == 404, path
        assert "text/html" in response.headers["content-type"]
        assert "No run with id" in response.text and 'id="error-message"' in response.text
    assert people.ann.post("/runs/rp-no-such-run/cancel").status_code == 404


def test_clone_with_a_changed_parameter_runs_it_on_the_same_snapshot(people: People) -> None:
    form = people.ann.get(f"/runs/{people.a}/clone")
    assert form.status_code == 200
    assert (
        'name="param_name" value="--lr"' in form.text
        and 'name="param_value" value="0.5"' in form.text
    )
    assert people.bob.get(f"/runs/{people.a}/clone").status_code == 403

    bad = people.ann.post(
        f"/runs/{people.a}/clone",
        data={
            "param_name": ["--lr"],
            "param_value": ["0.9"],
            "compute_target": "local",
            "node_count": "0",
            "process_count_per_node": "1",
        },
    )
    assert bad.status_code == 422
    assert re.search(r'id="error-node_count">node_count must be at least 1', bad.text)
    assert 'name="param_value" value="0.9"' in bad.text  # the form keeps what was typed

    response = people.ann.post(
        f"/runs/{people.a}/clone",
        data={
            "param_name": ["--lr", ""],
            "param_value": ["0.9", ""],
            "environment_variables": "CLONED=yes",
            "pip_packages": "",
            "conda_packages": "",
            "image": "",
            "compute_target": "local",
            "node_count": "1",
            "process_count_per_node": "1",
        },
    )
    assert response.status_code == 303
    new_id = response.headers["location"].removeprefix("/runs/")
    assert new_id != people.a
    done = wait_for_status(people.ann_api, new_id)
    assert done["status"] == "Completed", done["error"]
    assert done["experiment"] == "rp-table" and done["submittedBy"] == "rp-ann"
    assert done["properties"]["snapshotUploaded"] is False
    assert (
        done["properties"]["snapshotId"]
        == get_run(people.ann_api, people.a)["properties"]["snapshotId"]
    )
    assert done["runDefinition"]["arguments"] == ["--lr", "0.9"]
    assert done["runDefinition"]["environmentVariables"] == {"CLONED": "yes"}
    assert "args ['--lr', '0.9']" in people.ann_api.get(f"/api/v1/runs/{new_id}/logs").text
    model = people.ann.get(f"/runs/{new_id}/files/outputs/model.txt")
    assert model.text == "weights 0.9"


def test_a_registry_password_never_reaches_the_run_page_or_the_clone_form(people: People) -> None:
    run_id = submit(
        people.ann_api,
        QUICK,
        experiment="rp-secret",
        custom_docker_image="127.0.0.1:9/rp/none:1",
        image_registry_details={
            "address": "127.0.0.1:9",
            "username": "rp",
            "password": "rp-hunter2-secret",
        },
    )["runId"]
    wait_for_status(people.ann_api, run_id)
    page = people.ann.get(f"/runs/{run_id}")
    assert page.status_code == 200
    assert "127.0.0.1:9/rp/none:1" in page.text
    assert "rp-hunter2-secret" not in page.text and "***" in page.text
    form = people.ann.get(f"/runs/{run_id}/clone")
    assert form.status_code == 200 and 'value="127.0.0.1:9/rp/none:1"' in form.text
    assert "rp-hunter2-secret" not in form.text


# Pure logic behind the pages (no server). ------------------------------------------------------------
def test_artifacts_tree_nests_folders_and_leaves_out_files_beyond_its_cap() -> None:
    found = [("logs/driver_log.txt", 5), ("outputs/a/b.bin", 7), ("outputs/m.txt", 1), ("z.txt", 2)]
    tree = views.artifact_tree(found, limit=3)
    assert sorted(tree.folders) == ["logs", "outputs"] and tree.files == []
    outputs = tree.folders["outputs"]
    assert outputs.files == [("m.txt", "outputs/m.txt", 1)]
    assert outputs.folders["a"].files == [("b.bin", "outputs/a/b.bin", 7)]
    assert outputs.size() == 8 and tree.left_out == 1


def test_clone_form_round_trip_keeps_types_and_reports_the_field() -> None:
    stored = {
        "entry_script": "train.py",
        "script_params": {"--lr": 0.5, "--verbose": None, "--name": "x"},
        "environment_definition": {"name": "torch", "version": 2},
        "pip_packages": ["numpy"],
        "distributed_training": {"type": "mpi", "process_count_per_node": 2},
        "node_count": 2,
    }
    form = views.clone_form(stored)
    assert form.params == [("--lr", "0.5"), ("--verbose", ""), ("--name", "x")]
    assert form.process_count_per_node == "2"
    unchanged = views.spec_from_form(stored, form)
    assert unchanged["script_params"] == stored["script_params"]  # 0.5 stays a number
    assert unchanged["environment_definition"] == {"name": "torch", "version": 2}

    form.params = [("--lr", "0.9")]
    form.pip_packages = "numpy\npandas"
    form.process_count_per_node = "4"
    edited = views.spec_from_form(stored, form)
    assert edited["script_params"] == {"--lr": "0.9"}
    assert edited["pip_packages"] == ["numpy", "pandas"]
    assert "environment_definition" not in edited  # the environment is now the form's
    assert edited["distributed_training"] == {"type": "mpi", "process_count_per_node": 4}

    form.environment_variables = "NO_EQUALS_SIGN"
    with pytest.raises(SpecError) as caught:
        views.spec_from_form(stored, form)
    assert caught.value.field == "environment_variables"
    with pytest.raises(SpecError) as caught:
        views.parse_metric_columns([f"m{i}:max" for i in range(views.MAX_METRIC_COLUMNS + 1)])
    assert caught.value.field == "metric"
