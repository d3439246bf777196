"""``azureml.core.environment``: trainhub's ``Environment`` and its sections, and
``CondaDependencies`` (Azure ML's module made it reachable from here too)."""

from azureml._names import getattr_for
from trainhub.sdk import CondaDependencies, Environment
from trainhub.sdk.environment import DockerSection, PythonSection

__all__ = ["CondaDependencies", "DockerSection", "Environment", "PythonSection"]
__getattr__ = getattr_for(__name__)
