"""``azureml.core.compute_target.ComputeTargetException``, where Azure ML code caught it."""

from azureml._names import getattr_for
from azureml.exceptions import ComputeTargetException

__all__ = ["ComputeTargetException"]
__getattr__ = getattr_for(__name__)
