"""``azureml.tensorboard.Tensorboard``: trainhub's, one TensorBoard over runs served by the server
(``Tensorboard([run]).start()`` returns its URL; nothing is copied or started locally)."""

from azureml._names import getattr_for
from trainhub.tensorboard import Tensorboard

__all__ = ["Tensorboard"]
__getattr__ = getattr_for(__name__)
