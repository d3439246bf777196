"""Azure ML v1's ``HyperDriveConfig`` and ``PrimaryMetricGoal``: a sweep's description, sent by
``Experiment.submit`` as the wire format that :func:`trainhub.hyperdrive.spec.parse_sweep` checks."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from trainhub.hyperdrive.policy import EarlyTerminationPolicy
from trainhub.hyperdrive.sampling import HyperParameterSampling
from trainhub.sdk.estimator import Estimator
from trainhub.sdk.script_run_config import ScriptRunConfig

DEFAULT_MAX_DURATION_MINUTES = 10080  # Azure ML's default: seven days


class PrimaryMetricGoal(StrEnum):
    """Whether the primary metric is to be maximized or minimized (Azure ML's values)."""

    MAXIMIZE = "MAXIMIZE"
    MINIMIZE = "MINIMIZE"


class HyperDriveConfig:
    """Azure ML v1's ``HyperDriveConfig``, with its argument names, order and defaults: children run
    ``run_config`` (or ``estimator``) with the sampled values added to its arguments.

    ``resume_from`` (earlier sweeps, as runs or run ids) warm-starts the sweep from their children.
    Azure ML's ``resume_child_runs``, ``pipeline`` and ``custom_run_id`` are refused: trainhub does
    not have them."""

    def __init__(
        self,
        hyperparameter_sampling: HyperParameterSampling,
        primary_metric_name: str,
        primary_metric_goal: PrimaryMetricGoal | str,
        max_total_runs: int,
        max_concurrent_runs: int | None = None,
        max_duration_minutes: int = DEFAULT_MAX_DURATION_MINUTES,
        policy: EarlyTerminationPolicy | None = None,
        estimator: Estimator | None = None,
        run_config: ScriptRunConfig | Estimator | None = None,
        resume_from: Any = None,
        resume_child_runs: Any = None,
        pipeline: Any = None,
        debug_flag: Any = None,
        custom_run_id: str | None = None,
    ) -> None:
        for name, value in (
            ("resume_child_runs", resume_child_runs),
            ("pipeline", pipeline),
            ("debug_flag", debug_flag),
            ("custom_run_id", custom_run_id),
        ):
            if value is not None:
                raise ValueError(f"HyperDriveConfig({name}=...) is not supported by trainhub")
        if (estimator is None) == (run_config is None):
            raise ValueError("HyperDriveConfig needs one of run_config or estimator")
        config = run_config if run_config is not None else estimator
        if not isinstance(config, (Estimator, ScriptRunConfig)):
            raise TypeError("run_config must be a ScriptRunConfig or an Estimator")
        self.run_config: Estimator | ScriptRunConfig = config
        self.hyperparameter_sampling = hyperparameter_sampling
        self.primary_metric_name = primary_metric_name
        self.primary_metric_goal = primary_metric_goal
        self.max_total_runs = max_total_runs
        self.max_concurrent_runs = max_concurrent_runs
        self.max_duration_minutes = max_duration_minutes
        self.policy = policy
        self.resume_from = _run_ids(resume_from)

    @property
    def source_directory(self) -> str:
        return str(self.run_config.source_directory)

    def to_spec(self) -> dict[str, Any]:
        """The wire format the server takes (``trainhub.hyperdrive.spec.SweepSpec``)."""
        goal = self.primary_metric_goal
        spec: dict[str, Any] = {
            "run_config": self.run_config.to_spec(),
            "hyperparameter_sampling": self.hyperparameter_sampling.to_spec(),
            "primary_metric_name": self.primary_metric_name,
            "primary_metric_goal": goal.value if isinstance(goal, PrimaryMetricGoal) else goal,
            "max_total_runs": self.max_total_runs,
            "max_duration_minutes": self.max_duration_minutes,
        }
        if self.max_concurrent_runs is not None:
            spec["max_concurrent_runs"] = self.max_concurrent_runs
        if self.policy is not None:
            spec["policy"] = self.policy.to_spec()
        if self.resume_from:
            spec["resume_from"] = self.resume_from
        return spec

    def __repr__(self) -> str:
        return (
            f"HyperDriveConfig({self.hyperparameter_sampling!r}, "
            f"primary_metric_name={self.primary_metric_name!r}, "
            f"max_total_runs={self.max_total_runs!r})"
        )


def _run_ids(runs: Any) -> list[str]:
    """A run, a run id, or a list of them, as run ids."""
    if runs is None:
        return []
    items = runs if isinstance(runs, Sequence) and not isinstance(runs, str) else [runs]
    return [item if isinstance(item, str) else str(getattr(item, "id", item)) for item in items]
