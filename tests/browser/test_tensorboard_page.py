"""TensorBoard of a run, opened from its page: the scalar chart of what the run logged, drawn by
TensorBoard's own frontend through the server's proxy (its POSTs included)."""

from __future__ import annotations

import re
import textwrap

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Screenshots, Web, log_in
from tests.helpers import submit, wait_for_status

pytestmark = [pytest.mark.browser, pytest.mark.docker]

SCRIPT = textwrap.dedent(
    """
    from trainhub import Run
    run = Run.get_context()
    for step in range(30):
        run.log("tb_loss", round(2.0 / (1 + step), 4), step=step)
    """
)


def test_the_tensorboard_of_a_run_charts_its_scalars(
    page: Page, web: Web, screenshots: Screenshots
) -> None:
    api = web.api()
    run = submit(api, SCRIPT, experiment="browser-tensorboard")
    wait_for_status(api, run["runId"], "Completed", timeout=120)
    log_in(page)
    page.goto(f"/runs/{run['runId']}")
    with page.expect_response(
        lambda r: r.request.method == "POST" and "/data/plugin/timeseries/timeSeries" in r.url
    ) as answered:
        page.locator("#tensorboard").click()
    expect(page).to_have_url(re.compile(rf"/runs/{run['runId']}/tensorboard/"))
    assert answered.value.status == 200, answered.value.status
    points = [
        point
        for series in answered.value.json()
        if series["tag"] == "tb_loss"
        for points in series["runToSeries"].values()
        for point in points
    ]
    assert [p["step"] for p in points] == list(range(30))
    card = page.locator("scalar-card", has_text="tb_loss")
    expect(card.locator("canvas")).to_have_count(1)
    # The card's data table shows the last point: step 29, value 2 / 30.
    expect(card).to_contain_text(re.compile(r"0\.0667\s+29"))
    screenshots.take(page, "tensorboard")
