"""``azureml.data.file_dataset.FileDataset``."""

from trainhub.sdk.dataset import FileDataset

from azureml._names import getattr_for

__all__ = ["FileDataset"]
__getattr__ = getattr_for(__name__)
