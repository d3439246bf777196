"""``azureml.train.hyperdrive.policy``: trainhub's early termination policies."""

from azureml._names import getattr_for
from trainhub.hyperdrive.policy import (
    BanditPolicy,
    EarlyTerminationPolicy,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    TruncationSelectionPolicy,
)

__all__ = [
    "BanditPolicy",
    "EarlyTerminationPolicy",
    "MedianStoppingPolicy",
    "NoTerminationPolicy",
    "TruncationSelectionPolicy",
]
__getattr__ = getattr_for(__name__)
