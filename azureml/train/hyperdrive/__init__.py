"""``azureml.train.hyperdrive``: trainhub's HyperDrive configs, samplings, policies and parameter
expressions (:mod:`trainhub.hyperdrive`)."""

from azureml._names import getattr_for
from trainhub.hyperdrive import (
    BanditPolicy,
    BayesianParameterSampling,
    EarlyTerminationPolicy,
    GridParameterSampling,
    HyperDriveConfig,
    HyperParameterSampling,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    PrimaryMetricGoal,
    RandomParameterSampling,
    TruncationSelectionPolicy,
    choice,
    lognormal,
    loguniform,
    normal,
    qlognormal,
    qloguniform,
    qnormal,
    quniform,
    randint,
    uniform,
)
from trainhub.sdk.hyperdrive_run import HyperDriveRun

__all__ = [
    "BanditPolicy",
    "BayesianParameterSampling",
    "EarlyTerminationPolicy",
    "GridParameterSampling",
    "HyperDriveConfig",
    "HyperDriveRun",
    "HyperParameterSampling",
    "MedianStoppingPolicy",
    "NoTerminationPolicy",
    "PrimaryMetricGoal",
    "RandomParameterSampling",
    "TruncationSelectionPolicy",
    "choice",
    "lognormal",
    "loguniform",
    "normal",
    "qlognormal",
    "qloguniform",
    "qnormal",
    "quniform",
    "randint",
    "uniform",
]
__getattr__ = getattr_for(__name__)
