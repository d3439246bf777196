"""``azureml.widgets.RunDetails``: Azure ML's notebook widget drew a live view of a run.

In Jupyter (an IPython kernel), ``RunDetails(run).show()`` displays a small HTML view of the run
(status, duration, the latest value of each metric, a link to its page) and a background thread
polls the server every few seconds, updating that view in place (``display_id``) until the run has
ended; the thread then stops. The cell returns at once, as Azure ML's did. Anywhere else (a script,
a terminal) it prints the same, once, as text.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime
from html import escape
from typing import Any

from azureml._names import getattr_for
from trainhub.sdk import Run
from trainhub.sdk.run import TERMINAL

__all__ = ["RunDetails"]
__getattr__ = getattr_for(__name__)

POLL_SECONDS = 3.0
# Polls in a row that may fail (the server restarting, the network away) before the view says so
# and stops following the run.
MAX_FAILED_POLLS = 20


class RunDetails:
    """``RunDetails(run).show()``: the run, live in a notebook, or once as text elsewhere."""

    def __init__(self, run_instance: Run, poll_seconds: float = POLL_SECONDS) -> None:
        self.run = run_instance
        self.poll_seconds = poll_seconds

    def show(self) -> None:
        details, metrics = self._fetch()
        display = _notebook_display()
        if display is None:
            print(f"Run {self.run.id} ({self.run.experiment.name}): {details['status']}")
            print(f"Web View: {self.run.get_portal_url()}")
            for name, value in sorted(metrics.items()):
                print(f"  {name}: {_latest(value)}")
            return
        html = display.HTML
        handle = display.display(html(self._html(details, metrics)), display_id=True)
        if details["status"] in TERMINAL:
            return
        threading.Thread(
            target=self._follow,
            args=(handle, html, details),
            name=f"trainhub-run-details-{self.run.id}",
            daemon=True,
        ).start()

    def _fetch(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return dict(self.run.get_details()), self.run.get_metrics()

    def _follow(self, handle: Any, html: Any, details: dict[str, Any]) -> None:
        """Update the view every ``poll_seconds`` until the run has ended (one last update)."""
        failed = 0
        while True:
            time.sleep(self.poll_seconds)
            try:
                latest, metrics = self._fetch()
            except Exception as exc:  # noqa: BLE001 - a failed poll is tried again
                failed += 1
                if failed >= MAX_FAILED_POLLS:
                    note = f"No answer from the server ({exc}): this view stopped following the run"
                    handle.update(html(self._html(details, {}, note)))
                    return
                continue
            failed, details = 0, latest
            handle.update(html(self._html(details, metrics)))
            if details["status"] in TERMINAL:
                return

    def _html(self, details: dict[str, Any], metrics: dict[str, Any], note: str = "") -> str:
        status = str(details.get("status", self.run.status))
        rows = [
            ("Experiment", escape(self.run.experiment.name)),
            ("Run", escape(self.run.id)),
            ("Status", f"<b>{escape(status)}</b>"),
            ("Duration", _duration(details)),
            (
                "Details Page",
                f'<a href="{escape(self.run.get_portal_url())}" target="_blank" '
                'rel="noopener">Link to the run\'s page</a>',
            ),
        ]
        error = details.get("error")
        if isinstance(error, dict) and error.get("message"):
            rows.append(("Error", f"<pre>{escape(str(error['message']))}</pre>"))
        if note:
            rows.append(("Note", escape(note)))
        table = "".join(
            f'<tr><th style="text-align:left">{k}</th><td>{v}</td></tr>' for k, v in rows
        )
        out = f'<div class="trainhub-run-details"><table>{table}</table>'
        if metrics:
            lines = "".join(
                f'<tr><th style="text-align:left">{escape(name)}</th>'
                f"<td>{escape(_shown(_latest(value)))}</td></tr>"
                for name, value in sorted(metrics.items())
            )
            out += f"<table><tr><th>Metric</th><th>Latest value</th></tr>{lines}</table>"
        return out + "</div>"


def _notebook_display() -> Any:
    """``IPython.display`` when this runs in a Jupyter kernel (never imported otherwise)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or getattr(shell, "kernel", None) is None:
        return None  # a script, or IPython in a terminal: text reads better there
    from IPython import display

    return display


def _latest(value: Any) -> Any:
    return value[-1] if isinstance(value, list) and value else value


def _shown(value: Any, limit: int = 80) -> str:
    if isinstance(value, dict):  # a table or rows: its columns
        return f"table ({', '.join(map(str, value))})"[:limit]
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _duration(details: dict[str, Any]) -> str:
    started = _when(details.get("startTimeUtc"))
    if started is None:
        return "not started"
    ended = _when(details.get("endTimeUtc")) or datetime.now(UTC)
    seconds = max(0, int((ended - started).total_seconds()))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _when(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
