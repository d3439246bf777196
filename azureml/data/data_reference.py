"""``azureml.data.data_reference.DataReference``: trainhub's (what ``ds.as_mount()`` returns)."""

from trainhub.sdk.datastore import DataReference

from azureml._names import getattr_for

__all__ = ["DataReference"]
__getattr__ = getattr_for(__name__)
