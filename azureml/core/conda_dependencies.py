"""``azureml.core.conda_dependencies.CondaDependencies``: trainhub's."""

from azureml._names import getattr_for
from trainhub.sdk import CondaDependencies

__all__ = ["CondaDependencies"]
__getattr__ = getattr_for(__name__)
