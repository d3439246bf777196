"""``azureml.train.hyperdrive.sampling``: trainhub's parameter samplings."""

from azureml._names import getattr_for
from trainhub.hyperdrive.sampling import (
    BayesianParameterSampling,
    GridParameterSampling,
    HyperParameterSampling,
    RandomParameterSampling,
)

__all__ = [
    "BayesianParameterSampling",
    "GridParameterSampling",
    "HyperParameterSampling",
    "RandomParameterSampling",
]
__getattr__ = getattr_for(__name__)
