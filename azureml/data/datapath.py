"""``azureml.data.datapath.DataPath``: a path in a datastore, for datasets."""

from trainhub.sdk.dataset import DataPath

from azureml._names import getattr_for

__all__ = ["DataPath"]
__getattr__ = getattr_for(__name__)
