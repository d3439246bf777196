"""``azureml.data.dataset_consumption_config.DatasetConsumptionConfig``: a dataset as a
run's named input."""

from trainhub.sdk.dataset import DatasetConsumptionConfig

from azureml._names import getattr_for

__all__ = ["DatasetConsumptionConfig"]
__getattr__ = getattr_for(__name__)
