"""Hyperparameter sweeps with Azure ML v1's HyperDrive surface.

The SDK side (``HyperDriveConfig``, the samplings, the policies, the parameter expressions) only
describes a sweep and sends it as plain JSON; the server side checks it (:mod:`.spec`), draws each
child's values (:mod:`.samplers`) and decides which children to stop (:mod:`.policies`), all as
pure functions that the server's controller (:mod:`.controller`, its state in
:mod:`trainhub.store.sweeps`) calls; :mod:`.service` is what the API does with a sweep. The SDK's
``HyperDriveRun`` is :mod:`trainhub.sdk.hyperdrive_run`.
"""

from trainhub.hyperdrive.parameter_expressions import (
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
from trainhub.hyperdrive.policy import (
    BanditPolicy,
    EarlyTerminationPolicy,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    TruncationSelectionPolicy,
)
from trainhub.hyperdrive.runconfig import HyperDriveConfig, PrimaryMetricGoal
from trainhub.hyperdrive.sampling import (
    BayesianParameterSampling,
    GridParameterSampling,
    HyperParameterSampling,
    RandomParameterSampling,
)

__all__ = [
    "BanditPolicy",
    "BayesianParameterSampling",
    "EarlyTerminationPolicy",
    "GridParameterSampling",
    "HyperDriveConfig",
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
