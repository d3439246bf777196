"""The experiments pages through a real server and real runs: the list with counts by status and
the last run, an experiment's runs, comparing chosen runs (parameters and final metrics side by
side, differing values marked, overlaid curves as JSON), and the SDK's and CLI's Web View link to a
run's page. Pages are read with an HTML parser, not by searching text."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import TOKEN, Server
from tests.helpers import add_user, cli_for, login, submit, wait_for_status
from tests.html import Element, parse

# Logs a curve and a final value that depend on --lr, and one value that does not.
TRAIN = """
import sys
from trainhub import Run
args = sys.argv[1:]
lr = float(args[args.index("--lr") + 1])
run = Run.get_context()
for step in range(STEPS):
    run.log("loss", lr * 10 / (step + 1), step=step)
run.log("accuracy", 0.5 + lr)
run.log("batches", 7)
print("trained with", lr, flush=True)
"""


# Helpers --------------------------------------------------------------------------------------
def experiment_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def train(api: httpx.Client, experiment: str, lr: float, steps: int = 5) -> dict[str, Any]:
    return submit(
        api,
        TRAIN.replace("STEPS", str(steps)),
        experiment=experiment,
        script_params={"--lr": lr, "--epochs": 3},
    )


@pytest.fixture
def alice(server: Server) -> tuple[httpx.Client, httpx.Client]:
    """A member's API client and logged-in browser client."""
    name = f"alice{uuid.uuid4().hex[:6]}"
    token = add_user(server.client(), name)
    page = login(server.url, name)
    return server.client(token=token), page


# The list -------------------------------------------------------------------------------------
def test_experiments_list_counts_runs_by_status_and_names_the_last_run(
    server: Server, alice: tuple[httpx.Client, httpx.Client]
) -> None:
    api, page = alice
    name = experiment_name("counts")
    done = [submit(api, "print('ok')", experiment=name) for _ in range(2)]
    failed = submit(api, "import sys; sys.exit(3)", experiment=name)
    sleeper = submit(api, "import time; time.sleep(300)", experiment=name)
    for run in [*done, failed]:
        wait_for_status(api, run["runId"])
    assert api.post(f"/api/v1/runs/{sleeper['runId']}/cancel").status_code == 200
    wait_for_status(api, sleeper["runId"], "Canceled")

    response = page.get("/experiments")
    assert response.status_code == 200
    rows = [
        r
        for r in parse(response.text).all("experiment-row", "tr")
        if r.attrs["data-experiment"] == name
    ]
    assert len(rows) == 1
    row = rows[0]
    counts = {
        b.attrs["data-status"]: int(b.all(tag="b")[0].text)
        for b in row.all("badge")
        if "data-status" in b.attrs
    }
    assert counts == {"Completed": 2, "Failed": 1, "Canceled": 1}
    total = next(e for e in row.iter() if e.attrs.get("data-count") == "total")
    assert total.text == "4"
    links = [a.attrs["href"] for a in row.all(tag="a")]
    assert f"/experiments/{name}" in links
    assert f"/runs/{sleeper['runId']}" in links  # the last run submitted


def test_an_experiment_lists_its_runs_newest_first_with_a_checkbox_each(
    server: Server, alice: tuple[httpx.Client, httpx.Client]
) -> None:
    api, page = alice
    name = experiment_name("runs")
    ids = [submit(api, "print('ok')", experiment=name)["runId"] for _ in range(3)]
    for run_id in ids:
        wait_for_status(api, run_id)
    doc = parse(page.get(f"/experiments/{name}").text)
    rows = doc.find("experiment-runs").all("run-row", "tr")
    assert [r.attrs["data-run"] for r in rows] == ids[::-1]
    boxes = [i for i in doc.find("compare-form").all(tag="input") if i.attrs.get("name") == "runs"]
    assert [b.attrs["value"] for b in boxes] == ids[::-1]
    assert doc.find("compare-form").attrs["action"] == f"/experiments/{name}/compare"


# Comparing ------------------------------------------------------------------------------------
def test_compare_shows_parameters_and_final_metrics_with_differences_marked(
    server: Server, alice: tuple[httpx.Client, httpx.Client]
) -> None:
    api, page = alice
    name = experiment_name("compare")
    runs = [train(api, name, lr) for lr in (0.1, 0.2)]
    other = submit(api, "print('no params')", experiment=name)  # not chosen
    for run in [*runs, other]:
        wait_for_status(api, run["runId"], "Completed")
    ids = [r["runId"] for r in runs]

    response = page.get(f"/experiments/{name}/compare", params={"runs": ",".join(ids)})
    assert response.status_code == 200, response.text
    doc = parse(response.text)
    table = doc.find("compare-table")
    headers = {th.attrs["data-key"]: th for th in table.all(tag="th") if "data-key" in th.attrs}
    assert set(headers) == {"--lr", "--epochs", "loss", "accuracy", "batches"}
    assert {k for k, th in headers.items() if "diff" in th.classes} == {"--lr", "loss", "accuracy"}
    assert headers["--lr"].attrs["data-kind"] == "param"
    assert headers["accuracy"].attrs["data-kind"] == "metric"

    rows = {r.attrs["data-run"]: r for r in table.all("compare-row", "tr")}
    assert list(rows) == ids

    def cell(run_id: str, key: str) -> Element:
        return next(td for td in rows[run_id].all(tag="td") if td.attrs.get("data-key") == key)

    assert cell(ids[0], "--lr").text == "0.1"
    assert cell(ids[1], "--lr").text == "0.2"
    assert cell(ids[0], "--epochs").text == cell(ids[1], "--epochs").text == "3"
    assert "diff" in cell(ids[0], "--lr").classes
    assert "diff" not in cell(ids[0], "--epochs").classes
    # The final value of each scalar: the last logged.
    assert float(cell(ids[0], "loss").text) == pytest.approx(0.1 * 10 / 5)
    assert float(cell(ids[1], "loss").text) == pytest.approx(0.2 * 10 / 5)
    assert float(cell(ids[1], "accuracy").text) == pytest.approx(0.7)
    assert cell(ids[0], "batches").text == "7"

    link = doc.find("tensorboard-link").attrs["href"]
    assert link == f"/experiments/{name}/tensorboard?runs={','.join(ids)}"
    charts = [f.attrs["data-metric"] for f in doc.all("compare-chart", "figure")]
    assert charts == ["accuracy", "batches", "loss"]


def test_the_overlay_chart_data_has_each_runs_series_downsampled(
    server: Server, alice: tuple[httpx.Client, httpx.Client]
) -> None:
    api, page = alice
    name = experiment_name("curves")
    long_run = train(api, name, 0.1, steps=2500)
    short_run = train(api, name, 0.3, steps=4)
    for run in (long_run, short_run):
        wait_for_status(api, run["runId"], "Completed", timeout=120)
    ids = [long_run["runId"], short_run["runId"]]
    src = parse(page.get(f"/experiments/{name}/compare", params={"runs": ",".join(ids)}).text)
    url = src.find("compare-chart").attrs["data-src"]

    response = page.get(url + "&metric=loss")  # as compare.js asks
    assert response.status_code == 200, response.text
    assert response.json()["pointsPerRun"] == 2000
    series = response.json()["metrics"]["loss"]
    assert [s["runId"] for s in series] == ids
    long_series, short_series = series
    assert short_series["x"] == [0, 1, 2, 3]
    assert short_series["y"] == pytest.approx([0.3 * 10 / (s + 1) for s in range(4)])
    # 2,500 points logged, at most 2,000 sent: the first and the last kept, in step order.
    assert len(long_series["x"]) == 2000
    assert long_series["x"][0] == 0 and long_series["x"][-1] == 2499
    assert long_series["x"] == sorted(long_series["x"])
    assert long_series["y"][-1] == pytest.approx(0.1 * 10 / 2500)

    everything = page.get(url).json()["metrics"]
    assert set(everything) == {"loss", "accuracy", "batches"}
    assert [s["y"] for s in everything["accuracy"]] == [[pytest.approx(0.6)], [pytest.approx(0.8)]]


def test_compare_refuses_more_than_fifty_runs_and_runs_of_other_experiments(
    server: Server, alice: tuple[httpx.Client, httpx.Client]
) -> None:
    api, page = alice
    name = experiment_name("limits")
    run = submit(api, "print('ok')", experiment=name)
    elsewhere = submit(api, "print('ok')", experiment=experiment_name("elsewhere"))
    for r in (run, elsewhere):
        wait_for_status(api, r["runId"])
    too_many = ",".join(f"{name}_{i}" for i in range(51))
    response = page.get(f"/experiments/{name}/compare", params={"runs": too_many})
    assert response.status_code == 400
    assert "at most 50" in parse(response.text).find("error-message").text
    response = page.get(
        f"/experiments/{name}/compare", params={"runs": f"{run['runId']},{elsewhere['runId']}"}
    )
    assert response.status_code == 404
    assert elsewhere["runId"] in parse(response.text).find("error-message").text
    empty = parse(page.get(f"/experiments/{name}/compare").text)
    assert empty.by_id("compare-empty") is not None


# Missing, anonymous, empty --------------------------------------------------------------------
def test_a_missing_experiment_is_a_404_page(
    server: Server, alice: tuple[httpx.Client, httpx.Client]
) -> None:
    _, page = alice
    for path in (
        "/experiments/no-such-thing",
        "/experiments/no-such-thing/compare",
        "/experiments/no-such-thing/compare/metrics?runs=a",
    ):
        response = page.get(path)
        assert response.status_code == 404
        assert "no-such-thing" in parse(response.text).find("error-message").text


def test_anonymous_visitors_are_sent_to_log_in(server: Server) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        for path in ("/experiments", "/experiments/x", "/experiments/x/compare?runs=a,b"):
            response = anonymous.get(path)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/login?next=/experiments")


def test_an_experiment_list_with_no_experiments_says_how_to_start(
    make_server: Any,
) -> None:
    fresh = make_server()
    add_user(fresh.client(), "newbie")
    page = login(fresh.url, "newbie")
    doc = parse(page.get("/experiments").text)
    assert doc.by_id("experiments-empty") is not None
    assert doc.by_id("experiments-table") is None


# The Web View link ----------------------------------------------------------------------------
def test_the_sdk_and_cli_web_view_link_opens_the_runs_page(
    server: Server, alice: tuple[httpx.Client, httpx.Client], tmp_path: Any
) -> None:
    from trainhub.sdk.run import Run
    from trainhub.sdk.workspace import Workspace

    api, page = alice
    token = api.headers["Authorization"].removeprefix("Bearer ")
    name = experiment_name("webview")
    details = submit(api, "print('ok')", experiment=name)
    wait_for_status(api, details["runId"])
    run = Run.get(Workspace(server.url, token), details["runId"])
    url = run.get_portal_url()
    assert url == f"{server.url}/runs/{details['runId']}"
    assert f'href="{url}"' in run._repr_html_()
    assert page.get(url).status_code == 200

    cli = cli_for(server.url, token)
    shown = cli("runs", "show", details["runId"])
    assert shown.returncode == 0, shown.stderr
    assert f"Web View:    {url}" in shown.stdout.splitlines()
    project = tmp_path / "proj"
    project.mkdir()
    (project / "train.py").write_text("print('from the cli')\n")
    submitted = cli("submit", str(project), "-e", name, "--entry-script", "train.py")
    assert submitted.returncode == 0, submitted.stderr
    lines = [line for line in submitted.stdout.splitlines() if line.startswith("Web View: ")]
    assert len(lines) == 1
    assert lines[0].removeprefix("Web View: ").startswith(f"{server.url}/runs/{name}_")
    new_id = lines[0].rsplit("/", 1)[1]
    assert page.get(f"/runs/{new_id}").status_code == 200
    wait_for_status(api, new_id)


# The counts table the list can read instead of counting ----------------------------------------
def test_counts_kept_by_triggers_match_counting_the_runs(tmp_path: Any) -> None:
    """``experiment_counts`` (migration 0009) stays equal to counting the runs through
    inserts, status moves, a status written directly and a deleted run; the list reads it."""
    from trainhub.store import Database, lifecycle
    from trainhub.store import experiments as ex
    from trainhub.store import runs as q
    from trainhub.store.lifecycle import RunStatus

    db = Database(tmp_path / "trainhub.db")
    try:

        def add(conn: Any, experiment: str) -> str:
            spec = {"entry_script": "train.py"}
            return q.insert_run(
                conn, experiment=experiment, spec=spec, snapshot="x", target="local"
            ).id

        early = [db.write_sync(lambda conn: add(conn, "early")) for _ in range(2)]
        late = [db.write_sync(lambda conn, e=e: add(conn, e)) for e in ("early", "late", "late")]
        assert db.write_sync(
            lambda conn: lifecycle.move(conn, early[0], RunStatus.CANCELED, detail="canceled")
        )
        db.write_sync(
            lambda conn: conn.execute("update runs set status = 'Failed' where id = ?", [late[1]])
        )
        db.write_sync(lambda conn: conn.execute("delete from runs where id = ?", [late[2]]))

        def counted(conn: Any) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for experiment, status, n in conn.execute(
                "select experiment, status, count(*) from runs group by experiment, status"
            ):
                out.setdefault(experiment, {})[status] = n
            return out

        expected = db.read_sync(counted)
        assert expected == {"early": {"Canceled": 1, "Queued": 2}, "late": {"Failed": 1}}
        listed = {e.name: e.counts for e in db.read_sync(ex.list_experiments)}
        assert listed == expected
        assert {e.name: e.total for e in db.read_sync(ex.list_experiments)} == {
            "early": 3,
            "late": 1,
        }
    finally:
        db.close()


def test_a_chart_of_many_runs_gives_each_fewer_points() -> None:
    from trainhub.store import experiments as ex

    assert [ex.points_per_run(n) for n in (1, 5, 10, 20, 50)] == [2000, 2000, 1000, 500, 200]
    assert ex.stride(10, 2000) == list(range(10))
    picked = ex.stride(20_000, 200)
    assert len(picked) == 200 and picked[0] == 0 and picked[-1] == 19_999
    assert picked == sorted(set(picked))


def test_the_web_view_link_uses_the_public_url_the_admin_set(make_server: Any) -> None:
    """Behind a reverse proxy the browser's address is not the one the SDK used."""
    from trainhub.sdk.run import Run
    from trainhub.sdk.workspace import Workspace

    server = make_server(public_url="https://lab.example/trainhub/")
    api = server.client()
    details = submit(api, "print('ok')", experiment=experiment_name("public"))
    assert details["portalUrl"] == f"https://lab.example/trainhub/runs/{details['runId']}"
    run = Run.get(Workspace(server.url, TOKEN), details["runId"])
    assert run.get_portal_url() == details["portalUrl"]
    wait_for_status(api, details["runId"])
