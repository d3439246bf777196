"""The queue and nodes pages through a real server: who may see and do what (anonymous, member,
admin), the queue in the scheduler's order with each run's position and wait reason, every node
with its GPUs, what each does now (the test bed's stand-in nvidia-smi) and the run holding it, and
drain/enable for admins only. Pages are read with an HTML parser, not by searching text."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests import testbed
from tests.conftest import Server, start_server
from tests.helpers import (
    TERMINAL,
    add_user,
    get_run,
    login,
    make_snapshot,
    submit,
    wait_for_status,
    wait_until,
)
from tests.html import Element, parse
from trainhub.nodes.telemetry import Reading
from trainhub.server.pages.cluster import actions_for, gpu_views, waited

SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(300)\n"
HOLD = """
import os, time
print("holding", flush=True)
while not os.path.exists("/tmp/release"):
    time.sleep(0.1)
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def htmx(target: str, current: str = "/") -> dict[str, str]:
    return {
        "HX-Request": "true",
        "HX-Target": target,
        "HX-Current-URL": f"http://127.0.0.1{current}",
    }


@dataclass
class People:
    admin_api: httpx.Client  # the suite's admin token
    member: httpx.Client  # logged in through the form
    boss: httpx.Client  # an admin, logged in
    anonymous: httpx.Client


def people_of(server: Server) -> People:
    admin_api = server.client()
    member, boss = unique("cl-mia"), unique("cl-boss")
    add_user(admin_api, member)
    add_user(admin_api, boss, role="admin")
    anonymous = httpx.Client(base_url=server.url, timeout=30)
    return People(admin_api, login(server.url, member), login(server.url, boss), anonymous)


def close(people: People) -> None:
    for c in (people.member, people.boss, people.anonymous):
        c.close()


def csrf_form(client: httpx.Client, **fields: str) -> dict[str, str]:
    return {"_csrf_token": str(client.headers["x-csrftoken"]), **fields}


# Pure parts ----------------------------------------------------------------------------------
def test_admins_get_drain_for_a_node_taking_runs_and_enable_for_one_that_is_not() -> None:
    assert actions_for("n1", "Ready", enabled=True, draining=False) == ["drain"]
    assert actions_for("n1", "Unreachable", enabled=True, draining=False) == ["drain"]
    assert actions_for("n1", "Draining", enabled=True, draining=True) == ["enable"]
    assert actions_for("n1", "Disabled", enabled=False, draining=False) == ["enable"]
    assert actions_for("n1", "Untrusted", enabled=True, draining=False) == []
    assert actions_for("local", "Ready", enabled=True, draining=False) == []


def test_gpu_views_join_the_inventory_the_readings_and_the_holders() -> None:
    inventory = [
        {"index": 0, "uuid": "GPU-a", "name": "H200", "memory_mib": 143771},
        {"index": 1, "uuid": "GPU-b", "name": "H200", "memory_mib": 143771},
    ]
    views = gpu_views(inventory, {1: "run-x"}, {0: Reading(0, 7.0, 1000.0)})
    assert [(v.index, v.utilization, v.memory_used, v.run_id) for v in views] == [
        (0, 7.0, 1000.0, None),
        (1, None, None, "run-x"),
    ]
    assert views[0].memory_share == pytest.approx(100 * 1000 / 143771)
    assert views[1].memory_share is None


def test_waited_reads_like_a_person_would_say_it() -> None:
    now = time.time()
    assert waited(now - 5) == "5 s"
    assert waited(now - 125) == "2 min"
    assert waited(now - 3 * 3600 - 300) == "3 h 5 min"
    assert waited(now - 3 * 86400 - 4 * 3600 - 10) == "3 d 4 h"


# Without nodes: a server of its own running one run at a time, so others queue -----------------
@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Server]:
    srv = start_server(tmp_path_factory, "cluster-pages-data", max_concurrent_runs="1")
    try:
        yield srv
    finally:
        srv.cleanup()


@pytest.fixture(scope="module")
def people(single: Server) -> Iterator[People]:
    found = people_of(single)
    yield found
    close(found)


def test_anonymous_is_sent_to_log_in_and_back_from_the_queue_and_nodes_pages(
    people: People,
) -> None:
    for path in ("/queue", "/nodes", "/nodes/local", "/nodes/nothing-here"):
        response = people.anonymous.get(path)
        assert response.status_code == 303, (path, response.status_code)
        assert response.headers["location"] == f"/login?next={path}"
    # A POST without a session (nor its CSRF token) changes nothing and never reaches the action.
    refused = people.anonymous.post("/nodes/local/drain")
    assert refused.status_code in (303, 401, 403), refused.status_code
    assert "location" not in refused.headers or refused.headers["location"].startswith("/login")


def test_an_empty_queue_says_no_runs_are_waiting(people: People) -> None:
    page = people.member.get("/queue")
    assert page.status_code == 200
    dom = parse(page)
    assert "No runs are waiting" in dom.find("queue-empty").text
    assert dom.by_id("queue") is None
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


def _submit_with_priority(client: httpx.Client, priority: int) -> str:
    spec = json.dumps({"entry_script": "train.py"})
    response = client.post(
        "/api/v1/experiments/queue-page/runs",
        files={
            "estimator": (None, spec),
            "snapshot": ("s.tar.gz", make_snapshot({"train.py": SLEEPER})),
            "priority": (None, str(priority)),
        },
    )
    assert response.status_code == 201, response.text
    run_id: str = response.json()["runId"]
    return run_id


def test_the_queue_lists_waiting_runs_in_order_with_their_position_and_wait_reason(
    people: People,
) -> None:
    api = people.admin_api
    running = submit(api, SLEEPER, experiment="queue-page")["runId"]
    waiting: list[str] = []
    try:
        wait_for_status(api, running, "Running", timeout=60)
        # Submitted oldest first; the scheduler considers priority first, then age.
        low, high, later = (_submit_with_priority(api, p) for p in (0, 5, 0))
        waiting = [low, high, later]
        wait_until(
            lambda: all(get_run(api, r)["properties"]["waitReason"] for r in waiting),
            "the scheduler to say why each run waits",
        )
        dom = parse(people.member.get("/queue"))
        rows = dom.all("queued", "tr")
        assert [r.attrs["id"] for r in rows] == [f"queued-{r}" for r in (high, low, later)]
        for row in rows:
            run = get_run(api, row.attrs["id"].removeprefix("queued-"))
            assert row.attrs["data-position"] == str(run["properties"]["queuePosition"])
            assert row.one("position").text == row.attrs["data-position"]
            assert row.one("wait-reason").text == run["properties"]["waitReason"]
            (link,) = [e for e in row.iter() if e.tag == "a"]
            assert link.attrs["href"] == f"/runs/{run['runId']}"
            assert link.text == f"queue-page #{run['number']}"
        assert [r.one("position").text for r in rows] == ["1", "2", "3"]
        assert dom.find("queue-count").text == "3 runs waiting"
        assert dom.by_id("queue-empty") is None
        # The table's poll gets the table only, the same rows.
        partial = people.member.get("/queue", headers=htmx("queue-body", "/queue"))
        assert partial.status_code == 200 and "<html" not in partial.text
        body = parse(partial).find("queue-body")
        assert body.attrs["hx-get"] == "/queue" and body.attrs["hx-trigger"].startswith("every ")
        assert [r.attrs["id"] for r in body.all("queued", "tr")] == [r.attrs["id"] for r in rows]
    finally:
        for run_id in [*waiting, running]:
            api.post(f"/api/v1/runs/{run_id}/cancel")
        for run_id in [*waiting, running]:
            wait_for_status(api, run_id)
    assert parse(people.member.get("/queue")).by_id("queue-empty") is not None


def test_the_nodes_page_shows_the_server_itself_and_how_to_add_a_node(people: People) -> None:
    dom = parse(people.member.get("/nodes"))
    local = dom.find("node-local")
    assert local.attrs["data-state"] == "Ready"
    assert local.one("node-state").text == "Ready"
    empty = dom.find("nodes-empty").text
    assert empty.startswith("No nodes yet") and "trainhub node add" in empty
    body = dom.find("nodes-body")
    assert body.attrs["hx-get"] == "/nodes" and body.attrs["hx-trigger"].startswith("every ")
    assert not dom.all("node-action")  # nothing an admin could do to `local` either
    detail = people.member.get("/nodes/local")
    assert detail.status_code == 200
    assert parse(detail).find("node-host").text == "this server"


def test_a_missing_node_is_a_404_page(people: People) -> None:
    for who in (people.member, people.boss):
        response = who.get("/nodes/no-such-node")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert parse(response).find("error-message").text == "No node named 'no-such-node'"


def test_a_member_gets_403_on_drain_and_enable_and_an_admin_gets_answers(
    people: People,
) -> None:
    for action in ("drain", "enable"):
        refused = people.member.post(f"/nodes/no-such-node/{action}", data=csrf_form(people.member))
        assert refused.status_code == 403
        assert (
            "Only an admin may drain or enable nodes" in parse(refused).find("error-message").text
        )
    missing = people.boss.post("/nodes/no-such-node/drain", data=csrf_form(people.boss))
    assert missing.status_code == 404
    assert "No node named 'no-such-node'" in parse(missing).find("error-message").text
    fixed = people.boss.post("/nodes/local/drain", data=csrf_form(people.boss))
    assert fixed.status_code == 400
    assert "is the server itself" in parse(fixed).find("error-message").text
    unknown = people.boss.post("/nodes/local/disable", data=csrf_form(people.boss))
    assert unknown.status_code == 404


# On the test bed: nodes with (stand-in) GPUs ----------------------------------------------------
@pytest.fixture(scope="module")
def crew(cluster: Server) -> Iterator[People]:
    found = people_of(cluster)
    for node in ("n1", "n2"):
        found.admin_api.post("/api/v1/targets", json={"name": f"only-{node}", "nodes": [node]})
    yield found
    close(found)


@pytest.fixture
def held(crew: People) -> Iterator[list[str]]:
    runs: list[str] = []
    yield runs
    for run_id in runs:
        if get_run(crew.admin_api, run_id)["status"] not in TERMINAL:
            crew.admin_api.post(f"/api/v1/runs/{run_id}/cancel")
            wait_for_status(crew.admin_api, run_id)


def _gpu_cells(dom: Element, node: str, index: int) -> dict[str, Any]:
    row = dom.find(f"gpu-{node}-{index}")
    links = [e.attrs["href"] for e in row.one("gpu-run").iter() if e.tag == "a"]
    return {
        "name": row.one("gpu-name").text,
        "util": row.one("gpu-util").text,
        "mem": row.one("gpu-mem").text,
        "run": links[0] if links else row.one("gpu-run").text,
    }


def test_each_gpu_shows_what_it_does_now_and_the_run_holding_it(
    crew: People, bed: dict[str, testbed.Node], held: list[str]
) -> None:
    n1, n2 = bed["n1"], bed["n2"]
    n1.set_gpu_usage({0: (11, 1100), 1: (0, 0), 2: (33, 3300), 3: (44, 4400)})
    n2.set_gpu_usage({0: (0, 0), 1: (0, 0)})
    run = submit(crew.admin_api, HOLD, compute_target="only-n1", use_gpu=True)["runId"]
    held.append(run)
    wait_for_status(crew.admin_api, run, "Running", timeout=60)
    (allocation,) = get_run(crew.admin_api, run)["properties"]["allocation"]
    (taken,) = allocation["gpus"]

    def page() -> Element:
        return parse(crew.member.get("/nodes"))

    wait_until(lambda: _gpu_cells(page(), "n1", 3)["util"] == "44%", "n1's readings on the page")
    dom = page()
    card = dom.find("node-n1")
    assert card.attrs["data-state"] == "Ready"
    assert [r.attrs["data-index"] for r in card.all("gpu", "tr")] == ["0", "1", "2", "3"]
    cells = _gpu_cells(dom, "n1", taken)
    assert cells["run"] == f"/runs/{run}"
    assert cells["name"] == "NVIDIA A100-SXM4-40GB"
    expected = {0: ("11%", "1100"), 1: ("0%", "0"), 2: ("33%", "3300"), 3: ("44%", "4400")}
    for index, (util, mem) in expected.items():
        shown = _gpu_cells(dom, "n1", index)
        assert shown["util"] == util
        assert shown["mem"] == f"{mem} / 40960 MiB"
        if index != taken:
            assert shown["run"] == "free"
    assert [r.attrs["data-index"] for r in dom.find("node-n2").all("gpu", "tr")] == ["0", "1"]
    assert _gpu_cells(dom, "n2", 1) == {
        "name": "NVIDIA A100-SXM4-40GB",
        "util": "0%",
        "mem": "0 / 40960 MiB",
        "run": "free",
    }
    assert dom.by_id("nodes-empty") is None

    # The cards' poll: the same cards with what the GPUs do by then, on a node where a run holds
    # GPUs (sampled anyway) and on one where none does (asked for the page).
    n1.set_gpu_usage({0: (11, 1100), 1: (0, 0), 2: (33, 3300), 3: (97, 39999)})
    n2.set_gpu_usage({1: (66, 6000)})

    def polled() -> Element:
        response = crew.member.get("/nodes", headers=htmx("nodes-body", "/nodes"))
        assert response.status_code == 200 and "<html" not in response.text
        return parse(response)

    wait_until(lambda: _gpu_cells(polled(), "n1", 3)["util"] == "97%", "the new reading polled")
    assert _gpu_cells(polled(), "n1", 3)["mem"] == "39999 / 40960 MiB"
    wait_until(lambda: _gpu_cells(polled(), "n2", 1)["util"] == "66%", "n2's new reading polled")
    assert _gpu_cells(polled(), "n2", 1)["mem"] == "6000 / 40960 MiB"

    # One node's page: its facts and its GPUs, polled the same way.
    detail = parse(crew.member.get("/nodes/n1"))
    assert detail.find("node-host").text == n1.address
    assert detail.find("node-gpu-support").text == "yes"
    assert _gpu_cells(detail, "n1", taken)["run"] == f"/runs/{run}"
    assert detail.find("nodes-body").attrs["hx-get"] == "/nodes/n1"
    assert detail.by_id("node-n2") is None


def _state(api: httpx.Client, node: str) -> str:
    state: str = api.get(f"/api/v1/nodes/{node}").json()["state"]
    return state


def test_an_admin_drains_and_enables_a_node_and_a_member_may_not(crew: People) -> None:
    api = crew.admin_api
    assert _state(api, "n2") == "Ready"
    try:
        # A member sees no buttons, and the server refuses the POST anyway.
        as_member = parse(crew.member.get("/nodes"))
        assert as_member.by_id("drain-n2") is None and not as_member.all("node-action")
        refused = crew.member.post("/nodes/n2/drain", data=csrf_form(crew.member))
        assert refused.status_code == 403
        assert _state(api, "n2") == "Ready"

        as_admin = parse(crew.boss.get("/nodes"))
        assert as_admin.find("drain-n2").text == "Drain"
        assert as_admin.by_id("enable-n2") is None
        assert as_admin.by_id("drain-local") is None
        drained = crew.boss.post("/nodes/n2/drain", data=csrf_form(crew.boss))
        assert drained.status_code == 303 and drained.headers["location"] == "/nodes"
        assert _state(api, "n2") == "Draining"
        card = parse(crew.boss.get("/nodes")).find("node-n2")
        assert card.attrs["data-state"] == "Draining"
        assert card.by_id("enable-n2") is not None and card.by_id("drain-n2") is None

        refused = crew.member.post("/nodes/n2/enable", data=csrf_form(crew.member))
        assert refused.status_code == 403
        assert _state(api, "n2") == "Draining"
        # From the node's own page, back to it.
        assert parse(crew.boss.get("/nodes/n2")).by_id("enable-n2") is not None
        enabled = crew.boss.post("/nodes/n2/enable", data=csrf_form(crew.boss, back="node"))
        assert enabled.status_code == 303 and enabled.headers["location"] == "/nodes/n2"
        assert _state(api, "n2") == "Ready"
    finally:
        api.post("/api/v1/nodes/n2/enable")
