"""Submitting a run from the browser's form, through a real server and real runs: an uploaded
.tar.gz becomes a run of the logged-in user that completes with the form's parameters, tags and
registered environment; a bad field re-renders the form with the message beside that field, what
was typed kept, and no run made. Pages are read with an HTML parser, not by searching text."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.helpers import add_user, login, make_snapshot, wait_for_log, wait_for_status
from tests.test_pages_experiments import Element, parse

TRAIN = "import os, sys\nprint('args', sys.argv[1:], 'mode', os.environ.get('MODE'), flush=True)\n"


@pytest.fixture
def member(server: Server) -> tuple[str, httpx.Client, httpx.Client]:
    """A member's name, API client and logged-in browser client."""
    name = f"sam{uuid.uuid4().hex[:6]}"
    token = add_user(server.client(), name)
    return name, server.client(token=token), login(server.url, name)


def form(experiment: str, **fields: Any) -> dict[str, Any]:
    """The form's fields as a browser sends them (a list for the rows of a table)."""
    return {
        "experiment": experiment,
        "entry_script": "train.py",
        "param_name": ["--lr", "--verbose", ""],
        "param_value": ["0.5", "", ""],
        "pip_packages": "",
        "conda_packages": "",
        "compute_target": "local",
        "node_count": "1",
        "process_count_per_node": "1",
        "environment": "",
        "tag_name": ["team", ""],
        "tag_value": ["vision", ""],
        **fields,
    }


def post(
    page: httpx.Client,
    fields: dict[str, Any],
    archive: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    files = {"source_archive": ("proj.tar.gz", archive or b"", "application/gzip")}
    if archive is None:  # an empty file input: a part with no file name
        files = {"source_archive": ("", b"", "application/octet-stream")}
    return page.post("/submit", data=fields, files=files, headers=headers or {})


def runs_of(api: httpx.Client, experiment: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = api.get("/api/v1/runs", params={"experiment": experiment}).json()[
        "runs"
    ]
    return runs


def value_of(doc: Element, element_id: str) -> str:
    element = doc.find(element_id)
    return element.text if element.tag == "textarea" else element.attrs.get("value", "")


def test_the_form_offers_targets_environments_and_the_folder_picker(
    server: Server, member: tuple[str, httpx.Client, httpx.Client]
) -> None:
    _, _, page = member
    env = f"env{uuid.uuid4().hex[:6]}"
    admin = server.client()
    assert admin.post("/api/v1/environments", json={"name": env}).status_code == 201
    response = page.get("/submit")
    assert response.status_code == 200
    doc = parse(response.text)
    submit_form = doc.find("submit-form")
    assert submit_form.attrs["enctype"] == "multipart/form-data"
    assert doc.find("source-archive").attrs["name"] == "source_archive"
    assert "webkitdirectory" in doc.find("source-folder").attrs
    targets = [o.attrs["value"] for o in doc.find("compute_target").all(tag="option")]
    assert "local" in targets
    envs = [o.attrs["value"] for o in doc.find("environment").all(tag="option")]
    assert f"{env}:1" in envs
    assert any(i.attrs.get("name") == "_csrf_token" for i in submit_form.all(tag="input"))


def test_a_run_submitted_with_an_archive_is_the_users_and_completes(
    server: Server, member: tuple[str, httpx.Client, httpx.Client]
) -> None:
    user, api, page = member
    experiment = f"web-{uuid.uuid4().hex[:8]}"
    env = f"env{uuid.uuid4().hex[:6]}"
    definition = {"name": env, "environment_variables": {"MODE": "from-env"}}
    assert server.client().post("/api/v1/environments", json=definition).status_code == 201

    response = post(
        page,
        form(experiment, environment=f"{env}:1"),
        make_snapshot({"train.py": TRAIN}),
    )
    assert response.status_code == 303, response.text
    where = response.headers["location"]
    assert where.startswith("/runs/")
    run_id = where.removeprefix("/runs/")
    run = wait_for_status(api, run_id, "Completed")
    assert run["experiment"] == experiment
    assert run["submittedBy"] == user
    assert run["runDefinition"]["arguments"] == ["--lr", "0.5", "--verbose"]
    assert run["runDefinition"]["environment"]["environment_definition"] == {
        "name": env,
        "version": 1,
    }
    assert run["tags"] == {"team": "vision"}
    wait_for_log(api, run_id, "args ['--lr', '0.5', '--verbose'] mode from-env")
    assert page.get(where).status_code == 200

    # submit.js posts with fetch and is told where to go instead of being redirected.
    scripted = post(
        page, form(experiment), make_snapshot({"train.py": TRAIN}), {"HX-Request": "true"}
    )
    assert scripted.status_code == 200, scripted.text
    second = scripted.headers["HX-Redirect"].removeprefix("/runs/")
    assert wait_for_status(api, second, "Completed")["submittedBy"] == user
    assert [r["runId"] for r in runs_of(api, experiment)] == [second, run_id]


@pytest.mark.parametrize(
    ("fields", "archive", "field", "words"),
    [
        ({"entry_script": ""}, True, "entry_script", "entry_script"),
        ({"entry_script": "missing.py"}, True, "entry_script", "missing.py"),
        ({"node_count": "0"}, True, "node_count", "node_count"),
        ({"node_count": "two"}, True, "node_count", "node_count"),
        ({"process_count_per_node": "0"}, True, "process_count_per_node", "process_count"),
        (
            {"node_count": "2", "process_count_per_node": "0"},
            True,
            "process_count_per_node",
            "process_count_per_node",
        ),
        ({"pip_packages": "--index-url=http://evil"}, True, "pip_packages", "pip_packages"),
        ({"experiment": "no spaces"}, True, "experiment", "Experiment names"),
        ({"compute_target": "no-such-target"}, True, "compute_target", "no-such-target"),
        ({"tag_name": ["", ""], "tag_value": ["orphan", ""]}, True, "tags", "tag"),
        ({}, False, "source", "source folder"),
        ({}, b"not a tar.gz", "source", ".tar.gz"),
    ],
)
def test_a_bad_field_is_shown_beside_it_with_the_form_kept_and_no_run(
    server: Server,
    member: tuple[str, httpx.Client, httpx.Client],
    fields: dict[str, Any],
    archive: bool | bytes,
    field: str,
    words: str,
) -> None:
    _, api, page = member
    experiment = f"bad-{uuid.uuid4().hex[:8]}"
    sent = {**form(experiment), **fields}
    content = archive if isinstance(archive, bytes) else None
    if archive is True:
        content = make_snapshot({"train.py": TRAIN})
    response = post(page, sent, content)
    assert response.status_code in (400, 422), response.text
    doc = parse(response.text)
    message = doc.find(f"error-{field}").text
    assert words in message
    others = [e for e in doc.all("field-error") if e.text and e.attrs["id"] != f"error-{field}"]
    assert others == []
    invalid = [e for e in doc.iter() if e.attrs.get("aria-invalid") == "true"]
    assert invalid
    assert {e.attrs["aria-describedby"] for e in invalid} == {f"error-{field}"}
    # What was typed is kept.
    typed = sent
    assert value_of(doc, "experiment") == typed["experiment"]
    assert value_of(doc, "entry_script") == typed["entry_script"]
    assert value_of(doc, "node_count") == typed["node_count"]
    names = [
        i.attrs.get("value", "")
        for i in doc.all(tag="input")
        if i.attrs.get("name") == "param_name"
    ]
    assert names[:2] == ["--lr", "--verbose"]
    selected = [
        o.attrs["value"]
        for o in doc.find("compute_target").all(tag="option")
        if "selected" in o.attrs
    ]
    assert selected == [typed["compute_target"]]
    assert runs_of(api, sent["experiment"]) == []


def test_a_form_without_the_csrf_token_is_refused(
    server: Server, member: tuple[str, httpx.Client, httpx.Client]
) -> None:
    _, api, page = member
    experiment = f"csrf-{uuid.uuid4().hex[:8]}"
    token = page.headers.pop("x-csrftoken")
    try:
        response = post(page, form(experiment), make_snapshot({"train.py": TRAIN}))
        assert response.status_code == 403
    finally:
        page.headers["x-csrftoken"] = token
    assert runs_of(api, experiment) == []


def test_anonymous_visitors_are_sent_to_log_in(server: Server) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        response = anonymous.get("/submit")
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=/submit"


def test_the_experiment_can_be_given_in_the_link(
    server: Server, member: tuple[str, httpx.Client, httpx.Client]
) -> None:
    _, _, page = member
    doc = parse(page.get("/submit", params={"experiment": "from-link"}).text)
    assert value_of(doc, "experiment") == "from-link"
    assert "hidden" in doc.find("submit-error").attrs
