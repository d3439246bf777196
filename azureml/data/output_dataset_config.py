"""``azureml.data.output_dataset_config.OutputFileDatasetConfig``: a folder a run writes
into a datastore."""

from trainhub.sdk.dataset import OutputFileDatasetConfig

from azureml._names import getattr_for

__all__ = ["OutputFileDatasetConfig"]
__getattr__ = getattr_for(__name__)
