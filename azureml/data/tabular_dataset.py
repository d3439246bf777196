"""``azureml.data.tabular_dataset.TabularDataset``."""

from trainhub.sdk.dataset import TabularDataset

from azureml._names import getattr_for

__all__ = ["TabularDataset"]
__getattr__ = getattr_for(__name__)
