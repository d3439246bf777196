"""Azure ML v1's early termination policies (``azureml.train.hyperdrive.policy``): they describe
when to stop children; :mod:`trainhub.hyperdrive.policies` applies them."""

from __future__ import annotations

from typing import Any


class EarlyTerminationPolicy:
    POLICY_NAME = ""

    def __init__(self, evaluation_interval: int = 1, delay_evaluation: int = 0) -> None:
        self.evaluation_interval = evaluation_interval
        self.delay_evaluation = delay_evaluation

    def to_spec(self) -> dict[str, Any]:
        """The wire format (``trainhub.hyperdrive.spec.PolicySpec``)."""
        fields = {k: v for k, v in vars(self).items() if v is not None}
        return {"type": self.POLICY_NAME, **fields}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class BanditPolicy(EarlyTerminationPolicy):
    """Stops a child whose best value is not within ``slack_factor`` (a ratio) or ``slack_amount``
    (a distance) of the best child's."""

    POLICY_NAME = "bandit"

    def __init__(
        self,
        evaluation_interval: int = 1,
        slack_factor: float | None = None,
        slack_amount: float | None = None,
        delay_evaluation: int = 0,
    ) -> None:
        super().__init__(evaluation_interval, delay_evaluation)
        self.slack_factor = slack_factor
        self.slack_amount = slack_amount


class MedianStoppingPolicy(EarlyTerminationPolicy):
    """Stops a child whose best value is worse than the median of every child's running average."""

    POLICY_NAME = "median_stopping"


class TruncationSelectionPolicy(EarlyTerminationPolicy):
    """Stops the lowest ``truncation_percentage`` percent of children at each evaluation."""

    POLICY_NAME = "truncation_selection"

    def __init__(
        self,
        truncation_percentage: int,
        evaluation_interval: int = 1,
        delay_evaluation: int = 0,
        exclude_finished_jobs: bool = False,
    ) -> None:
        super().__init__(evaluation_interval, delay_evaluation)
        self.truncation_percentage = truncation_percentage
        self.exclude_finished_jobs = exclude_finished_jobs


class NoTerminationPolicy(EarlyTerminationPolicy):
    """Every child runs to its end (the same as ``policy=None``)."""

    POLICY_NAME = "no_termination"

    def __init__(self) -> None:
        super().__init__()

    def to_spec(self) -> dict[str, Any]:
        return {"type": self.POLICY_NAME}
