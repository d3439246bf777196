"""The nodes page on the test bed's two GPU nodes: which run holds each GPU, and what it does.

Uses the session's ``cluster`` (run under ``flock /tmp/trainhub-testbed.lock``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests import testbed
from tests.browser.conftest import ADMIN, PASSWORD, Screenshots, log_in
from tests.conftest import TOKEN, Server
from tests.helpers import submit, wait_for_status

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.slow]

HOLD = "import time\nprint('holding the GPUs', flush=True)\ntime.sleep(300)\n"


@pytest.fixture
def cluster_admin(cluster: Server) -> httpx.Client:
    """An admin of the cluster's server who logs in with a password (made once per server)."""
    admin = cluster.client(TOKEN)
    made = admin.post("/api/v1/users", json={"name": ADMIN, "password": PASSWORD, "role": "admin"})
    assert made.status_code in (201, 409), made.text
    return admin


@pytest.fixture
def holding(cluster_admin: httpx.Client) -> Iterator[dict[str, Any]]:
    run = submit(
        cluster_admin,
        HOLD,
        experiment="browser-gpus",
        compute_target="gpu-cluster",
        use_gpu=True,
        distributed_training={"type": "mpi", "process_count_per_node": 2},
    )
    try:
        yield wait_for_status(cluster_admin, run["runId"], "Running", timeout=120)
    finally:
        cluster_admin.post(f"/api/v1/runs/{run['runId']}/cancel")
        wait_for_status(cluster_admin, run["runId"], "Canceled", timeout=60)


def test_the_nodes_page_shows_which_run_holds_each_gpu_and_its_use(
    page: Page,
    cluster: Server,
    bed: dict[str, testbed.Node],
    holding: dict[str, Any],
    screenshots: Screenshots,
) -> None:
    run_id = str(holding["runId"])
    allocation: list[dict[str, Any]] = holding["properties"]["allocation"]
    held = {(a["node"], gpu) for a in allocation for gpu in a["gpus"]}
    assert len(held) == 2
    node, index = sorted(held)[0]
    bed[node].set_gpu_usage({index: (87, 30000)})
    log_in(page, ADMIN, base=cluster.url, then="/nodes")
    expect(page).to_have_url(re.compile(r"/nodes$"))
    for name, gpu in held:
        row = page.locator(f"#gpu-{name}-{gpu}")
        expect(row).to_have_class(re.compile(r"\bheld\b"))
        expect(row.locator(".gpu-run")).to_have_text(run_id)
    expect(page.locator(f"#gpu-{node}-{index} .gpu-util .value")).to_have_text("87%")
    free = page.locator("tr.gpu:not(.held)")
    expect(free).to_have_count(sum(n.gpus for n in bed.values()) - 2)
    screenshots.take(page, "nodes")
