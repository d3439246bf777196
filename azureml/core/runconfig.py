"""``azureml.core.runconfig``: ``RunConfiguration`` and the distributed-job configurations of a
``ScriptRunConfig`` (``MpiConfiguration`` also goes to an Estimator as ``distributed_training``),
``DockerConfiguration``, and ``CondaDependencies``."""

from azureml._names import getattr_for
from trainhub.sdk import (
    CondaDependencies,
    DockerConfiguration,
    MpiConfiguration,
    PyTorchConfiguration,
    RunConfiguration,
    TensorflowConfiguration,
)

__all__ = [
    "CondaDependencies",
    "DockerConfiguration",
    "MpiConfiguration",
    "PyTorchConfiguration",
    "RunConfiguration",
    "TensorflowConfiguration",
]
__getattr__ = getattr_for(__name__)
