"""``azureml.data``: ``OutputFileDatasetConfig``, ``FileDataset``, ``TabularDataset`` and the
``datapath``, ``data_reference``, ``dataset_consumption_config`` and ``output_dataset_config``
modules, on trainhub's datasets."""

from azureml._names import getattr_for

_LAZY = {
    "FileDataset": "azureml.data.file_dataset",
    "OutputFileDatasetConfig": "azureml.data.output_dataset_config",
    "TabularDataset": "azureml.data.tabular_dataset",
}
__all__ = sorted(_LAZY)
__getattr__ = getattr_for(__name__, _LAZY)
