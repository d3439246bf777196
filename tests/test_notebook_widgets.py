"""A run in a Jupyter notebook: ``RunDetails(run).show()`` displays the run and keeps that display
up to date until the run ends, and a run as a cell's value is a table with a link to its page;
executed in a real IPython kernel (nbclient) against a real server and a real Docker run."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import TOKEN, Server
from tests.helpers import submit, wait_for_status
from tests.html import parse
from tests.test_azureml_compat import login
from tests.test_sdk import write_project

TRAIN = textwrap.dedent(
    """
    import time
    from trainhub import Run
    run = Run.get_context()
    for epoch in range(4):
        run.log("loss", 1.0 / (1 + epoch))
        time.sleep(1.5)
    """
)

CELLS = [
    """
    from azureml.core import Workspace, Experiment, Environment, ScriptRunConfig
    from azureml.widgets import RunDetails
    ws = Workspace.from_config()
    env = Environment("user-managed-env")
    env.python.user_managed_dependencies = True
    src = ScriptRunConfig(source_directory="./scripts", script="train.py", environment=env)
    run = Experiment(workspace=ws, name="widget-notebook").submit(src)
    """,
    "RunDetails(run).show()",
    """
    import threading
    run.wait_for_completion()
    for thread in threading.enumerate():
        if thread.name.startswith("trainhub-run-details"):
            thread.join(30)  # its last update, after it saw the run end
    """,
    "run",
]


class RecordingClient(NotebookClient):
    """nbclient, keeping every display message the kernel sent (first display, then updates)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.displays: list[tuple[str, str | None, str]] = []

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        if msg["msg_type"] in ("display_data", "update_display_data"):
            content = msg["content"]
            display_id = (content.get("transient") or {}).get("display_id")
            self.displays.append(
                (msg["msg_type"], display_id, content["data"].get("text/html", ""))
            )
        return super().process_message(msg, cell, cell_index)


@pytest.mark.docker
def test_run_details_shows_the_run_live_in_a_jupyter_kernel(server: Server, tmp_path: Path) -> None:
    write_project(tmp_path / "scripts", {"train.py": TRAIN})
    env = login(server, tmp_path, JUPYTER_PLATFORM_DIRS="1")
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in CELLS]
    )
    client = RecordingClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=env)

    shown = notebook.cells[1].outputs
    assert [o["output_type"] for o in shown] == ["display_data"]  # one view, updated in place
    final = shown[0]["data"]["text/html"]
    [run] = (
        server.client().get("/api/v1/runs", params={"experiment": "widget-notebook"}).json()["runs"]
    )
    final_rows = rows(final)
    assert re.fullmatch(r"0:00:\d\d", final_rows.pop("Duration"))
    assert final_rows == {
        "Experiment": "widget-notebook",
        "Run": run["runId"],
        "Status": "Completed",
        "Details Page": "Link to the run's page",
        "loss": "0.25",  # the last of 1, 1/2, 1/3, 1/4
    }
    [link] = parse(final).all(tag="a")
    assert link.attrs["href"] == f"{server.url}/runs/{run['runId']}"

    _, display_id, first = next(d for d in client.displays if d[0] == "display_data")
    updates = [d for d in client.displays if d[0] == "update_display_data"]
    assert display_id and rows(first)["Status"] != "Completed"  # shown while the run went on
    assert len(updates) >= 1 and all(d[1] == display_id for d in updates)
    assert updates[-1][2] == final

    table = parse(notebook.cells[3].outputs[0]["data"]["text/html"])  # the run as the value
    assert [td.text for td in table.all(tag="td")][2:4] == ["trainhub.scriptrun", "Completed"]
    assert table.all(tag="a")[0].attrs["href"] == link.attrs["href"]


def rows(html: str) -> dict[str, str]:
    """The view's rows, heading to value (the run's, then its metrics')."""
    return {
        tr.all(tag="th")[0].text: tr.all(tag="td")[0].text
        for tr in parse(html).all(tag="tr")
        if tr.all(tag="td")
    }


@pytest.mark.docker
def test_run_details_outside_a_notebook_prints_the_run_once(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    from azureml.widgets import RunDetails
    from trainhub.sdk import Run, Workspace

    with server.client() as admin:
        submitted = submit(admin, "from trainhub import Run\nRun.get_context().log('acc', 0.5)\n")
        wait_for_status(admin, submitted["runId"], "Completed", timeout=60)
    RunDetails(Run.get(Workspace(server.url, TOKEN), submitted["runId"])).show()
    assert capsys.readouterr().out.splitlines() == [
        f"Run {submitted['runId']} (tests): Completed",
        f"Web View: {server.url}/runs/{submitted['runId']}",
        "  acc: 0.5",
    ]
