"""A sweep's page in a browser: it refreshes by itself until the sweep ends, then shows the best
child pinned, the child the Bandit policy stopped with why, and both charts."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import MEMBER, Screenshots, Web, log_in
from tests.helpers import make_snapshot

pytestmark = [pytest.mark.browser, pytest.mark.docker]

TRAIN = (
    "import sys, time\nfrom trainhub import Run\nargs = sys.argv[1:]\n"
    "lr = float(args[args.index('--lr') + 1])\nrun = Run.get_context()\n"
    "for step in range(1, 11):\n    run.log('accuracy', (1 - abs(lr - 0.03)) * step / 10, step=step)\n"
    "    time.sleep(0.3)\n"
)


def test_the_sweep_page_follows_the_sweep_to_its_end(
    page: Page, web: Web, screenshots: Screenshots
) -> None:
    api = web.api(MEMBER)
    sweep = {
        "run_config": {"entry_script": "train.py", "use_docker": False},
        "hyperparameter_sampling": {
            "type": "grid",
            "parameter_space": {"--lr": ["choice", [[0.01, 0.03, 0.1, 0.9]]]},
        },
        "primary_metric_name": "accuracy",
        "primary_metric_goal": "MAXIMIZE",
        "max_total_runs": 4,
        "max_concurrent_runs": 4,
        "policy": {"type": "bandit", "slack_factor": 0.2, "delay_evaluation": 2},
    }
    response = api.post(
        "/api/v1/experiments/tune/sweeps",
        files={
            "sweep": (None, json.dumps(sweep)),
            "snapshot": ("s.tar.gz", make_snapshot({"train.py": TRAIN}), "application/gzip"),
        },
    )
    assert response.status_code == 201, response.text
    sweep_id = response.json()["runId"]

    log_in(page, MEMBER, then=f"/sweeps/{sweep_id}")
    expect(page.locator("#sweep-status")).to_have_text("Completed")  # no reload: htmx polls
    rows = page.locator("#children tr.child")
    expect(rows).to_have_count(4)
    expect(rows.first).to_have_attribute("data-run", f"{sweep_id}_1")  # lr 0.03 is the best
    expect(rows.first).to_have_class("child best")
    expect(page.locator(f'tr[data-run="{sweep_id}_3"] td.why')).to_contain_text("bandit")
    expect(page.locator("#parallel-coordinates polyline")).to_have_count(4)
    expect(page.locator("#metric-over-steps polyline")).to_have_count(4)
    screenshots.take(page, "sweep")
