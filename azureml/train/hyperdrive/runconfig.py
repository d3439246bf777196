"""``azureml.train.hyperdrive.runconfig.HyperDriveConfig``: trainhub's."""

from azureml._names import getattr_for
from trainhub.hyperdrive.runconfig import HyperDriveConfig

__all__ = ["HyperDriveConfig"]
__getattr__ = getattr_for(__name__)
