"""Azure ML v1's ``HyperDriveRun``: a sweep's parent run, its children and the best of them.

``experiment.submit(hyperdrive_config)`` answers one. The server ranks nothing here that a user
could not check: each child's best primary metric (its highest value when the goal is MAXIMIZE,
its lowest when MINIMIZE) comes from ``GET /api/v1/sweeps/{id}``, and the calls below sort those.
As in Azure ML, hyperparameters are given as JSON strings (``'{"--lr": 0.1}'``), keyed by child
run id.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from trainhub.sdk.run import Experiment, Run

if TYPE_CHECKING:
    from trainhub.hyperdrive.runconfig import HyperDriveConfig
    from trainhub.sdk.workspace import Workspace


class HyperDriveRun(Run):
    """A sweep (``HD_<id>``): ``get_children()``, ``get_best_run_by_primary_metric()``,
    ``get_children_sorted_by_primary_metric()``, ``get_hyperparameters()``, ``get_metrics()``,
    ``cancel()`` (every child with it), ``wait_for_completion()``; and, beyond Azure ML,
    ``set_limits()`` while it runs."""

    def __init__(
        self,
        experiment: Experiment,
        run_id: str,
        hyperdrive_config: HyperDriveConfig | None = None,
        _details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(experiment, run_id, _details=_details)
        self.hyperdrive_config = hyperdrive_config

    @classmethod
    def get(cls, workspace: Workspace, run_id: str) -> HyperDriveRun:
        details = workspace.client.json("GET", f"/api/v1/sweeps/{run_id}")
        return cls(Experiment(workspace, details["experiment"]), run_id, _details=details)

    def get_sweep(self) -> dict[str, Any]:
        """The server's view: spec, state, counts, and every child with its values, best primary
        metric and (when the sweep stopped it) why."""
        sweep: dict[str, Any] = self._client.json("GET", f"/api/v1/sweeps/{self.id}")
        self._details = sweep
        return dict(sweep["sweep"])

    def get_hyperparameters(self) -> dict[str, str]:
        """Each child's values as a JSON string, by child run id (Azure ML's shape)."""
        return {
            child["runId"]: json.dumps(child["hyperparameters"])
            for child in self.get_sweep()["children"]
        }

    def get_metrics(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Every child's metrics (as ``Run.get_metrics()`` gives them), by child run id."""
        return {
            child["runId"]: Run(self.experiment, child["runId"]).get_metrics(*args, **kwargs)
            for child in self.get_sweep()["children"]
        }

    def get_children_sorted_by_primary_metric(
        self, top: int = 0, reverse: bool = False, discard_no_metric: bool = False
    ) -> list[dict[str, Any]]:
        """The children best first (by the goal; ``reverse``: worst first), each as
        ``{"run_id", "hyperparameters", "best_primary_metric", "status"}``; those without a
        value come last (or not at all with ``discard_no_metric``); ``top``: only that many."""
        sweep = self.get_sweep()
        rows = [
            {
                "run_id": child["runId"],
                "hyperparameters": json.dumps(child["hyperparameters"]),
                "best_primary_metric": child["bestMetric"],
                "status": child["status"],
            }
            for child in sweep["children"]
        ]
        ranked = _ranked(rows, sweep["primaryMetricGoal"] == "MAXIMIZE", reverse)
        if not discard_no_metric:
            ranked += [row for row in rows if row not in ranked]
        return ranked[:top] if top > 0 else ranked

    def get_best_run_by_primary_metric(
        self,
        include_failed: bool = True,
        include_canceled: bool = True,
        include_resume_from_runs: bool = True,
    ) -> Run | None:
        """The child with the best primary metric (None when no child logged it); failed and
        canceled children (those a policy stopped are canceled) count unless told not to."""
        left_out = {"Failed"} if not include_failed else set()
        if not include_canceled:
            left_out.add("Canceled")
        rows = [
            row
            for row in self.get_children_sorted_by_primary_metric(discard_no_metric=True)
            if row["status"] not in left_out
        ]
        return Run.get(self.experiment.workspace, rows[0]["run_id"]) if rows else None

    def set_limits(
        self, max_concurrent_runs: int | None = None, max_total_runs: int | None = None
    ) -> None:
        """Change the sweep's limits while it runs (trainhub's own: Azure ML fixes them)."""
        data = {
            name: value
            for name, value in (
                ("max_concurrent_runs", max_concurrent_runs),
                ("max_total_runs", max_total_runs),
            )
            if value is not None
        }
        self._details = self._client.json("PATCH", f"/api/v1/sweeps/{self.id}", json=data)

    def __repr__(self) -> str:
        return f"HyperDriveRun(id={self.id!r}, status={self.status!r})"


def _ranked(rows: list[dict[str, Any]], maximize: bool, reverse: bool) -> list[dict[str, Any]]:
    """Rows with a finite value, best first (NaN: no value)."""
    valued = [
        row
        for row in rows
        if row["best_primary_metric"] is not None and math.isfinite(row["best_primary_metric"])
    ]
    return sorted(valued, key=lambda row: row["best_primary_metric"], reverse=maximize != reverse)
