"""``azureml.train.estimator``: trainhub's ``Estimator`` and distributed-training configs."""

from azureml._names import getattr_for
from trainhub.sdk import Estimator, Gloo, Mpi, Nccl, ParameterServer

__all__ = ["Estimator", "Gloo", "Mpi", "Nccl", "ParameterServer"]
__getattr__ = getattr_for(__name__)
