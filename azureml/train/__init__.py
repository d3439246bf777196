"""``azureml.train``: ``azureml.train.estimator``, ``azureml.train.dnn`` and
``azureml.train.hyperdrive`` (its configs; sweeps run once the server's controller lands)."""

from azureml._names import getattr_for

__getattr__ = getattr_for(__name__)
