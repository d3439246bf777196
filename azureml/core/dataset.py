"""``azureml.core.dataset.Dataset``: trainhub's datasets (``Dataset.File.from_files``,
``Dataset.Tabular.from_delimited_files``, ``Dataset.get_by_name``...)."""

from trainhub.sdk.dataset import Dataset

from azureml._names import getattr_for

__all__ = ["Dataset"]
__getattr__ = getattr_for(__name__)
