"""``azureml.core.model.Model``: trainhub's registered models (``run.register_model(...)``,
``Model.register(ws, ...)``, ``Model(ws, name)``, ``Model.list(ws)``, ``model.download()``)."""

from trainhub.sdk.model import Model

from azureml._names import getattr_for

__all__ = ["Model"]
__getattr__ = getattr_for(__name__)
