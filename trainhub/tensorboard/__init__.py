"""TensorBoard for trainhub runs, served by the server itself.

For the SDK, as Azure ML's ``azureml.tensorboard.Tensorboard``::

    from trainhub.tensorboard import Tensorboard
    tb = Tensorboard([run1, run2])
    url = tb.start()   # the server's URL of one TensorBoard over both runs; nothing runs locally
    tb.stop()

The server side (processes, proxy, metrics as event files) lives in the submodules, imported only
by the server, so that this stays light to import.
"""

from __future__ import annotations

import webbrowser
from collections.abc import Iterable
from typing import Any

__all__ = ["Tensorboard"]


class Tensorboard:
    """One TensorBoard over ``runs`` (SDK ``Run`` objects of one workspace), on the server."""

    def __init__(self, runs: Iterable[Any], local_root: str | None = None, port: int | None = None):
        # local_root and port are Azure ML's: files were copied to this machine and TensorBoard
        # ran here. With trainhub nothing is copied or run locally, so both are accepted and unused.
        self.runs = list(runs)
        if not self.runs:
            raise ValueError("Tensorboard needs at least one run")
        urls = {run.experiment.workspace.url for run in self.runs}
        if len(urls) != 1:
            raise ValueError(f"Tensorboard's runs must be on one server, got {sorted(urls)}")
        self.workspace = self.runs[0].experiment.workspace
        self.board_id: str | None = None
        self.url: str | None = None

    def start(self, start_browser: bool = False) -> str:
        """Start the TensorBoard on the server (if it is not running) and return its URL, which
        opens in a browser logged in to the server's dashboard."""
        details = self.workspace.client.json(
            "POST", "/api/v1/tensorboards", json={"runs": [run.id for run in self.runs]}
        )
        self.board_id = str(details["id"])
        self.url = f"{self.workspace.url}{details['url']}"
        if start_browser:
            webbrowser.open(self.url)
        return self.url

    def stop(self) -> None:
        """Stop it on the server now (it also stops by itself when nobody has used it for a while)."""
        if self.board_id is None:
            return
        from trainhub.sdk.errors import RunNotFoundError

        try:
            self.workspace.client.request("DELETE", f"/api/v1/tensorboards/{self.board_id}")
        except RunNotFoundError:
            pass  # already stopped (idle, or the server restarted)
        self.board_id = None

    def __repr__(self) -> str:
        return f"Tensorboard(runs={[run.id for run in self.runs]!r}, url={self.url!r})"
