"""Azure ML v1's samplings (``azureml.train.hyperdrive.sampling``): they describe a search space;
the server draws from it (:mod:`trainhub.hyperdrive.samplers`).

The seed: Azure ML v1 has no documented seed argument, only ``properties``, "a dictionary with
additional properties for the algorithm"; trainhub reads ``properties={"seed": n}`` there (Azure
ML v2 calls the same thing ``seed``). A sweep without one gets a seed drawn at submit time and
stored with it, so that it replays the same way after a server restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainhub.hyperdrive.parameter_expressions import Expression


class HyperParameterSampling:
    SAMPLING_NAME = ""

    def __init__(
        self, parameter_space: Mapping[str, Expression], properties: Mapping[str, Any] | None = None
    ) -> None:
        self.parameter_space = dict(parameter_space)
        self.properties = dict(properties or {})

    def to_spec(self) -> dict[str, Any]:
        """The wire format (``trainhub.hyperdrive.spec.SamplingSpec``)."""
        spec: dict[str, Any] = {
            "type": self.SAMPLING_NAME.lower(),
            "parameter_space": self.parameter_space,
        }
        if self.properties:
            spec["properties"] = self.properties
        return spec

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.parameter_space!r})"


class RandomParameterSampling(HyperParameterSampling):
    """Each child's values drawn at random from the space; any expression."""

    SAMPLING_NAME = "RANDOM"


class GridParameterSampling(HyperParameterSampling):
    """Every combination of ``choice`` values, once each, in a fixed order."""

    SAMPLING_NAME = "GRID"

    def __init__(self, parameter_space: Mapping[str, Expression]) -> None:
        super().__init__(parameter_space)


class BayesianParameterSampling(HyperParameterSampling):
    """Values picked from how the finished children did (optuna's TPE sampler, seeded);
    ``choice``, ``uniform`` and ``quniform`` only, and no early termination policy."""

    SAMPLING_NAME = "BAYESIAN"
