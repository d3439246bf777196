"""Interactive runs (``experiment.start_logging()``) and child runs, against a real server: a notebook
logs straight to the server, a submitted script makes children inside its container, cancel and
abandonment end whole trees, and what the user sees (API, run page, charts, TensorBoard) shows them."""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import TOKEN, Server, ServerFactory
from tests.helpers import add_user, get_run, history, submit, wait_for_status, wait_until
from tests.html import parse
from tests.test_azureml_compat import run_notebook
from tests.test_pages_logs_charts import HTMX, png
from tests.test_sdk import write_project
from tests.test_tensorboard import member, wait_for_points
from trainhub import Experiment, ServiceError, Workspace

pytestmark = pytest.mark.docker

# A notebook of the Azure ML era that logs as it goes: only the workspace line is trainhub's.
NOTEBOOK = textwrap.dedent(
    """
    from azureml.core import Workspace, Experiment

    ws = Workspace.from_config()
    exp = Experiment(workspace=ws, name="nb-interactive")
    run = exp.start_logging(snapshot_directory="proj", display_name="exploring lr")
    for step, loss in enumerate([0.9, 0.5, 0.3]):
        run.log("loss", loss, step=step)
    run.log("final", 0.25)
    run.log_list("accs", [0.5, 0.75, 0.875])
    run.log_row("roc", fpr=0.0, tpr=0.0)
    run.log_row("roc", fpr=1.0, tpr=1.0)
    run.log_table("confusion", {"predicted": [0, 1], "count": [10, 3]})
    run.log_image("sample", path="pixel.png")
    run.tag("stage", "explore")
    run.set_tags({"owner": "ann"})
    run.upload_file("notes/readme.txt", "notes.txt")
    run.upload_folder("data", "data")

    sweep = run.create_children(tag_key="lr", tag_values=["0.1", "0.01"])
    for child in sweep:
        child.log("val_loss", 1.0 + float(child.get_tags()["lr"]))
        child.complete()
    fold = run.child_run(name="fold-0")
    inner = fold.child_run(name="fold-0-inner")
    inner.log("x", 1)
    left_open = run.child_run(name="left open")
    inner.complete()
    fold.complete()

    print("parent:", fold.parent.id == run.id, inner.parent.id == fold.id, run.parent)
    print("children:", [c.get_details()["displayName"] for c in run.get_children()])
    print("recursive:", len(list(run.get_children(recursive=True))))
    print("lr=0.1:", [c.id for c in run.get_children(tags={"lr": "0.1"})] == [sweep[0].id])
    print("running:", [c.id for c in run.get_children(status="Running")] == [left_open.id])
    run.complete()
    print("status:", run.get_status(), left_open.get_status())
    print("run:", run.id)
    try:
        run.log("late", 1.0)
    except Exception as exc:
        print("late:", type(exc).__name__, exc)
    """
)


def test_a_notebook_logs_an_interactive_run_with_children_and_reads_it_all_back(
    server: Server, tmp_path: Path
) -> None:
    write_project(
        tmp_path,
        {
            "proj/analysis.py": "print('the notebook's code')\n",
            "pixel.png": png(),
            "notes.txt": "first look\n",
            "data/a.csv": "1,2\n",
            "data/sub/b.csv": "3,4\n",
            "outputs/model.txt": "weights\n",
        },
    )
    result = run_notebook(server, tmp_path, NOTEBOOK, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    run_id = lines[6].removeprefix("run: ")
    assert lines[:6] == [
        "parent: True True None",
        "children: [None, None, 'fold-0', 'left open']",
        "recursive: 5",
        "lr=0.1: True",
        "running: True",
        "status: Completed Completed",
    ]
    assert lines[7] == (
        f"late: ServiceError Run {run_id} has ended (Completed): it cannot take metrics any "
        "more (HTTP 409)"
    )

    api = server.client()
    details = get_run(api, run_id)
    assert (details["kind"], details["status"], details["target"]) == (
        "interactive",
        "Completed",
        "local",
    )
    assert details["displayName"] == "exploring lr" and details["submittedBy"] == "admin"
    assert details["tags"] == {"stage": "explore", "owner": "ann"}
    assert history(details) == ["Running", "Completed"]
    snapshot = details["properties"]["snapshotId"]
    assert api.get(f"/api/v1/snapshots/{snapshot}").json()["fileCount"] == 1

    got = api.get(f"/api/v1/runs/{run_id}/metrics").json()
    assert got["metrics"] == {
        "loss": [0.9, 0.5, 0.3],
        "final": 0.25,
        "accs": [0.5, 0.75, 0.875],
        "roc": {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]},
        "confusion": {"predicted": [0, 1], "count": [10, 3]},
        "sample": "images/sample.png",
    }
    assert [p["step"] for p in got["series"]["loss"]] == [0, 1, 2]
    files = {f["path"] for f in api.get(f"/api/v1/runs/{run_id}/files").json()["files"]}
    assert files == {
        "images/sample.png",
        "notes/readme.txt",
        "data/a.csv",
        "data/sub/b.csv",
        "outputs/model.txt",  # ./outputs, uploaded when the run completed
    }
    assert api.get(f"/api/v1/runs/{run_id}/files/images/sample.png").content == png()
    assert api.get(f"/api/v1/runs/{run_id}/files/outputs/model.txt").text == "weights\n"

    children = api.get(f"/api/v1/runs/{run_id}/children").json()["runs"]
    assert [(c["displayName"], c["status"], c["tags"]) for c in children] == [
        (None, "Completed", {"lr": "0.1"}),
        (None, "Completed", {"lr": "0.01"}),
        ("fold-0", "Completed", {}),
        ("left open", "Completed", {}),  # ended with its parent, as its parent ended
    ]
    assert {c["parentRunId"] for c in children} == {run_id}
    assert api.get(f"/api/v1/runs/{children[0]['runId']}/metrics").json()["metrics"] == {
        "val_loss": 1.1
    }
    deep = api.get(f"/api/v1/runs/{run_id}/children", params={"recursive": "true"}).json()
    inner = [c for c in deep["runs"] if c["displayName"] == "fold-0-inner"]
    assert inner and inner[0]["parentRunId"] == children[2]["runId"]
    listed = api.get("/api/v1/runs", params={"experiment": "nb-interactive"}).json()["runs"]
    assert [r["runId"] for r in listed] == [run_id]  # children are listed only when asked for
    params = {"experiment": "nb-interactive", "include_children": "true"}
    listed = api.get("/api/v1/runs", params=params).json()["runs"]
    assert {r["runId"] for r in listed} == {run_id} | {c["runId"] for c in deep["runs"]}

    # What a person sees: the tree on the run page, the charts, TensorBoard.
    browser = member(server, "nb-viewer")
    page = parse(browser.get(f"/runs/{run_id}"))
    rows = page.find("child-runs").all("child-run")
    assert [r.attrs["data-run"] for r in rows] == [c["runId"] for c in children]
    assert [r.text.split()[-1] for r in rows] == ["Completed"] * 4
    assert "fold-0" in rows[2].text and "left open" in rows[3].text
    assert page.by_id("parent-run") is None and page.by_id("clone") is None
    child_page = parse(browser.get(f"/runs/{inner[0]['runId']}"))
    link = child_page.find("parent-run").all(tag="a")[0]
    assert link.attrs["href"] == f"/runs/{children[2]['runId']}" and link.text == "fold-0"
    charts = browser.get(f"/runs/{run_id}/charts", headers=HTMX).text
    assert re.search(r'class="chart" data-metric="loss"', charts)
    assert re.search(r'<img src="[^"]+" alt="sample"', charts)
    table = parse(browser.get("/runs?experiment=nb-interactive")).find("runs-body")
    row = table.find(f"run-{run_id}")
    assert row.one("badge").text == "Completed" and len(table.all(tag="tr")) == 6
    base = f"/runs/{run_id}/tensorboard/"
    points = wait_for_points(browser, base, "trainhub-metrics", "loss", at_least=3)
    assert [(p[1], round(p[2], 5)) for p in points] == [(0, 0.9), (1, 0.5), (2, 0.3)]


ABANDONING = textwrap.dedent(
    """
    from trainhub import Workspace, Experiment
    run = Experiment(Workspace.from_config(), "nb-abandoned").start_logging()
    child = run.child_run(name="child")
    run.log("loss", 0.5)
    print(run.id, child.id, flush=True)
    """
)


def test_a_run_whose_client_went_away_ends_abandoned_while_a_live_client_keeps_its_open(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(interactive_timeout_minutes="0.05")  # 3 s
    api = server.client()
    result = run_notebook(server, tmp_path, ABANDONING, timeout=60)  # ends without complete()
    assert result.returncode == 0, result.stderr
    gone, gone_child = result.stdout.split()

    live = Experiment(Workspace(server.url, TOKEN), "nb-live").start_logging()
    live_child = live.child_run(name="kept open by its parent's heartbeat")
    assert api.get("/healthz").json()["details"]["runsWithoutTask"] == 0

    ended = wait_for_status(api, gone, "Failed", timeout=30)
    assert ended["error"]["reason"] == "abandoned" and ended["error"]["code"] == "UserError"
    assert "TRAINHUB_INTERACTIVE_TIMEOUT_MINUTES" in ended["error"]["message"]
    assert history(ended) == ["Running", "Failed"]
    child = get_run(api, gone_child)
    assert child["status"] == "Failed" and child["error"]["reason"] == "abandoned"
    time.sleep(4)  # past the timeout: the live process's heartbeats keep its runs open
    assert get_run(api, live.id)["status"] == "Running"
    assert get_run(api, live_child.id)["status"] == "Running"
    live.complete()
    assert live_child.get_status() == "Completed"


def test_a_server_restart_leaves_interactive_runs_open_for_their_clients(
    make_server: ServerFactory,
) -> None:
    server = make_server(interactive_timeout_minutes="0.05")  # 3 s
    api = server.client()
    started = api.post(
        "/api/v1/experiments/nb-restart/interactive-runs", files={"tags": (None, "{}")}
    )
    assert started.status_code == 201, started.text
    run_id = started.json()["runId"]
    api.close()  # no idle connection holds up the server's stop
    server.stop()
    server.start()
    api = server.client()
    assert get_run(api, run_id)["status"] == "Running"  # not a lost container
    logged = api.post(
        f"/api/v1/runs/{run_id}/metrics", json={"metrics": [{"name": "a", "value": 1}]}
    )
    assert logged.status_code == 200, logged.text
    assert api.get("/healthz").json()["details"]["runsWithoutTask"] == 0
    ended = wait_for_status(api, run_id, "Failed", timeout=30)  # nobody calls any more
    assert ended["error"]["reason"] == "abandoned"


CHILDREN_SCRIPT = textwrap.dedent(
    """
    from trainhub import Run
    run = Run.get_context()
    fold = run.child_run(name="fold-a")
    fold.log("acc", 0.5)
    fold.log("acc", 0.75)
    fold.tag("fold", "a")
    with open("note.txt", "w") as f:
        f.write("written by fold-a")
    fold.upload_file("outputs/note.txt", "note.txt")
    inner = fold.child_run(name="inner")
    inner.log("x", 1)
    fold.complete()
    try:
        fold.log("late", 1)
    except RuntimeError as exc:
        print("refused:", exc)
    chosen = run.child_run(name="chosen id", run_id="chosen-" + run.id[-8:])
    chosen.log("acc", 0.9)
    bad, good = run.create_children(tag_key="lr", tag_values=["10", "0.1"])
    bad.fail("lr 10 diverged")
    try:
        good.register_model("m", "outputs/model.pkl")
    except RuntimeError as exc:
        print("no model:", exc)
    good.complete()
    run.log("best", 0.9)
    print("made", len(run.get_children(recursive=True)))
    """
)


def test_a_submitted_script_makes_child_runs_inside_its_container(
    server: Server, client: httpx.Client
) -> None:
    parent = submit(client, CHILDREN_SCRIPT, experiment="in-script-children")["runId"]
    assert wait_for_status(client, parent, timeout=90)["status"] == "Completed"
    log = client.get(f"/api/v1/runs/{parent}/logs").text
    assert "made 5" in log
    assert "no model: child run" in log and "register models on the script's own run" in log
    assert re.search(r"refused: Run \S+ has ended \(Completed\): it takes no more metrics", log)

    def children() -> list[dict[str, object]]:
        found: list[dict[str, object]] = client.get(
            f"/api/v1/runs/{parent}/children", params={"recursive": "true"}
        ).json()["runs"]
        return found

    made = children()
    assert len(made) == 5
    by_name = {c["displayName"]: c for c in made if c["displayName"]}
    fold, inner, chosen = by_name["fold-a"], by_name["inner"], by_name["chosen id"]
    assert fold["parentRunId"] == parent and inner["parentRunId"] == fold["runId"]
    assert chosen["runId"] == f"chosen-{parent[-8:]}"
    assert (fold["status"], fold["tags"], fold["kind"]) == (
        "Completed",
        {"fold": "a"},
        "interactive",
    )
    assert inner["status"] == "Completed"  # left open: it ended with fold-a
    assert chosen["status"] == "Completed"  # left open: it ended with the script's run
    swept = [c for c in made if c["tags"].get("lr")]  # type: ignore[union-attr]
    assert [(c["tags"], c["status"]) for c in swept] == [
        ({"lr": "10"}, "Failed"),
        ({"lr": "0.1"}, "Completed"),
    ]
    assert swept[0]["error"]["message"] == "lr 10 diverged"  # type: ignore[index]
    metrics = client.get(f"/api/v1/runs/{fold['runId']}/metrics").json()["metrics"]
    assert metrics == {"acc": [0.5, 0.75]}
    assert client.get(f"/api/v1/runs/{parent}/metrics").json()["metrics"] == {"best": 0.9}
    fold_files = client.get(f"/api/v1/runs/{fold['runId']}/files").json()["files"]
    assert [f["path"] for f in fold_files] == ["outputs/note.txt"]
    note = client.get(f"/api/v1/runs/{fold['runId']}/files/outputs/note.txt")
    assert note.text == "written by fold-a"
    parent_files = [f["path"] for f in client.get(f"/api/v1/runs/{parent}/files").json()["files"]]
    assert parent_files == ["logs/driver_log.txt"]  # the child's file is the child's only


SLEEPING_PARENT = textwrap.dedent(
    """
    import time
    from trainhub import Run
    run = Run.get_context()
    child = run.child_run(name="worker")
    child.child_run(name="worker's helper")
    print("children made", flush=True)
    time.sleep(300)
    """
)


def test_cancel_of_a_parent_cancels_its_children_and_theirs(
    server: Server, client: httpx.Client
) -> None:
    # An interactive tree, canceled from the API.
    top = client.post(
        "/api/v1/experiments/cancel-tree/interactive-runs", files={"tags": (None, "{}")}
    ).json()["runId"]
    (child,) = client.post(
        f"/api/v1/runs/{top}/children", json={"children": [{"name": "child"}]}
    ).json()["runs"]
    (grandchild,) = client.post(
        f"/api/v1/runs/{child['runId']}/children", json={"children": [{}]}
    ).json()["runs"]
    canceled = client.post(f"/api/v1/runs/{top}/cancel").json()
    assert canceled["status"] == "Canceled"
    for run_id in (child["runId"], grandchild["runId"]):
        ended = get_run(client, run_id)
        assert (ended["status"], ended["properties"]["reason"]) == ("Canceled", "canceled")
        assert ended["statusHistory"][-1]["detail"].startswith("its parent run")

    # A submitted script's children, made inside its container: canceled with the script.
    parent = submit(client, SLEEPING_PARENT, experiment="cancel-tree")["runId"]
    wait_for_status(client, parent, "Running", timeout=90)
    wait_until(
        lambda: (
            len(
                client.get(f"/api/v1/runs/{parent}/children", params={"recursive": "true"}).json()[
                    "runs"
                ]
            )
            == 2
        ),
        "the script's children are on the server",
        timeout=30,
    )
    assert client.post(f"/api/v1/runs/{parent}/cancel").status_code == 200
    assert wait_for_status(client, parent, timeout=60)["status"] == "Canceled"
    tree = client.get(f"/api/v1/runs/{parent}/children", params={"recursive": "true"}).json()
    assert [c["status"] for c in tree["runs"]] == ["Canceled", "Canceled"]


def test_bad_input_is_refused_with_the_field_or_the_run_named(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    start = "/api/v1/experiments/nb-bad/interactive-runs"

    def refused(response: httpx.Response, status: int, field: str | None = None) -> str:
        assert response.status_code == status, response.text
        body = response.json()
        assert body.get("field") == field, body
        message: str = body["error"]
        return message

    refused(client.post(start, files={"display_name": (None, "x" * 256)}), 422, "display_name")
    refused(client.post(start, files={"tags": (None, "[1]")}), 422, "tags")
    refused(client.post(start, files={"snapshot_id": (None, "0" * 64)}), 422, "snapshot_id")
    run_id = client.post(start, files={"tags": (None, "{}")}).json()["runId"]
    metrics = f"/api/v1/runs/{run_id}/metrics"
    for record, field in [
        ({"kind": "histogram", "name": "a", "value": 1}, "metrics[0].kind"),
        ({"name": "", "value": 1}, "metrics[0].name"),
        ({"name": "a", "value": {"x": 1}}, "metrics[0].value"),
        ({"name": "a", "value": 1, "step": -1}, "metrics[0].step"),
        ({"kind": "list", "name": "a", "value": [[1]]}, "metrics[0].value"),
        ({"kind": "image", "name": "a", "value": "../../etc/passwd"}, "metrics[0].value"),
        ({"name": "a", "value": 1, "colour": "red"}, "metrics[0]"),
    ]:
        refused(client.post(metrics, json={"metrics": [record]}), 422, field)
    too_many = [{"name": "a", "value": i} for i in range(1001)]
    assert "At most 1000" in refused(
        client.post(metrics, json={"metrics": too_many}), 422, "metrics"
    )
    huge = {"kind": "list", "name": "a", "value": [1.5] * 100_000}
    assert "over the limit of 262144" in refused(
        client.post(metrics, json={"metrics": [huge]}), 422, "metrics[0].value"
    )
    files = f"/api/v1/runs/{run_id}/files"
    for name in ("..%2F..%2Fescaped.txt", "tensorboard/x.txt", "logs/driver_log.txt", "a/.b.part"):
        refused(client.put(f"{files}/{name}", content=b"x"), 422, "name")
    assert not list(server.data.rglob("escaped.txt"))
    children = f"/api/v1/runs/{run_id}/children"
    refused(client.post(children, json={"children": [{"runId": "../x"}]}), 422, "children[0].runId")
    refused(
        client.post(children, json={"children": [{"tags": {"k": "v" * 6000}}]}),
        422,
        "children[0].tags",
    )
    refused(client.post(children, json={"children": [{}] * 1001}), 422, "children")
    refused(client.post(children, json={"children": [{"runId": run_id}]}), 409)
    refused(client.get(children, params={"status": "Sleeping"}), 422, "status")

    # Another member may not log to it; a script's run is not ended from a client.
    other = server.client(add_user(client, "nb-intruder"))
    assert other.post(metrics, json={"metrics": [{"name": "a", "value": 1}]}).status_code == 403
    assert other.put(f"{files}/x.txt", content=b"x").status_code == 403
    script = submit(client, "print('hi')\n", experiment="nb-bad")["runId"]
    assert "ends when its script does" in refused(
        client.post(f"/api/v1/runs/{script}/complete"), 409
    )

    # An ended run takes nothing more, and no child; each refusal names the run and its status.
    assert client.post(f"/api/v1/runs/{run_id}/fail", json={"error": "bad data"}).status_code == 200
    ended = get_run(client, run_id)
    assert (ended["status"], ended["error"]["message"]) == ("Failed", "bad data")
    said = f"Run {run_id} has ended (Failed)"
    assert said in refused(client.post(metrics, json={"metrics": [{"name": "a", "value": 1}]}), 409)
    assert said in refused(client.put(f"{files}/late.txt", content=b"x"), 409)
    assert said in refused(client.post(children, json={"children": [{}]}), 409)
    assert said in refused(client.post(f"/api/v1/runs/{run_id}/complete"), 409)
    assert said in refused(client.post(f"/api/v1/runs/{run_id}/heartbeat"), 409)
    assert not client.get(f"/api/v1/runs/{run_id}/children").json()["runs"]
    wait_for_status(client, script)

    # The SDK says the same before anything is sent, or with the server's sentence.
    run = Experiment(Workspace(server.url, TOKEN), "nb-bad").start_logging(outputs=False)
    with pytest.raises(TypeError, match="metric 'a': object is not a number or a string"):
        run.log("a", object())
    with pytest.raises(ValueError, match="must be a relative path without '..'"):
        run.upload_file("../x.txt", __file__)
    run.complete()
    with pytest.raises(ServiceError, match=rf"Run {run.id} has ended \(Completed\)"):
        run.child_run()
    with pytest.raises(ZeroDivisionError):
        with Experiment(run.experiment.workspace, "nb-bad").start_logging(outputs=False) as failed:
            failed.log("before", 1.0)
            print(1 / 0)
    ended = get_run(client, failed.id)
    assert (ended["status"], ended["error"]["message"]) == ("Failed", "division by zero")
