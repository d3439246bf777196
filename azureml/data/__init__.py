"""``azureml.data``: only ``azureml.data.data_reference`` is here; Azure ML's datasets are not in
trainhub yet."""

from azureml._names import getattr_for

__getattr__ = getattr_for(__name__)
