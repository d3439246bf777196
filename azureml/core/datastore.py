"""``azureml.core.datastore.Datastore``: trainhub's (``Datastore.get(ws, 'name')``)."""

from trainhub.sdk.datastore import Datastore

from azureml._names import getattr_for

__all__ = ["Datastore"]
__getattr__ = getattr_for(__name__)
