"""``azureml.train.dnn``: trainhub's ``PyTorch`` and ``TensorFlow`` estimators and the
distributed-training configs they take."""

from azureml._names import getattr_for
from trainhub.sdk import Gloo, Mpi, Nccl, ParameterServer, PyTorch, TensorFlow

__all__ = ["Gloo", "Mpi", "Nccl", "ParameterServer", "PyTorch", "TensorFlow"]
__getattr__ = getattr_for(__name__)
