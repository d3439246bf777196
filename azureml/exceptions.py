"""``azureml.exceptions``: the exceptions Azure ML code catches, as trainhub raises them."""

from azureml._names import getattr_for
from trainhub.sdk.errors import ActivityFailedException
from trainhub.sdk.errors import TrainhubError as AzureMLException

__all__ = ["ActivityFailedException", "AzureMLException", "ComputeTargetException"]
__getattr__ = getattr_for(__name__)


class ComputeTargetException(AzureMLException):
    """A compute target that is not on the server, or one that trainhub cannot create."""
