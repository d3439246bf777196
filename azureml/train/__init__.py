"""``azureml.train``: ``azureml.train.estimator`` and ``azureml.train.dnn`` (HyperDrive is not in
trainhub yet)."""

from azureml._names import getattr_for

__getattr__ = getattr_for(__name__)
