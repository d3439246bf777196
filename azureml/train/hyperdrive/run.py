"""``azureml.train.hyperdrive.run``: ``PrimaryMetricGoal`` (``HyperDriveRun`` is not in trainhub
yet)."""

from azureml._names import getattr_for
from trainhub.hyperdrive.runconfig import PrimaryMetricGoal

__all__ = ["PrimaryMetricGoal"]
__getattr__ = getattr_for(__name__)
