"""``azureml.train.hyperdrive.run``: ``PrimaryMetricGoal`` and ``HyperDriveRun``, trainhub's."""

from azureml._names import getattr_for
from trainhub.hyperdrive.runconfig import PrimaryMetricGoal
from trainhub.sdk.hyperdrive_run import HyperDriveRun

__all__ = ["HyperDriveRun", "PrimaryMetricGoal"]
__getattr__ = getattr_for(__name__)
