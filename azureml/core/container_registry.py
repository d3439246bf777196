"""``azureml.core.container_registry.ContainerRegistry``: trainhub's (a private image's registry)."""

from azureml._names import getattr_for
from trainhub.sdk import ContainerRegistry

__all__ = ["ContainerRegistry"]
__getattr__ = getattr_for(__name__)
