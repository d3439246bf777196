"""``azureml.core.experiment.Experiment``: trainhub's (``Experiment(workspace, name).submit(est)``)."""

from azureml._names import getattr_for
from trainhub.sdk import Experiment

__all__ = ["Experiment"]
__getattr__ = getattr_for(__name__)
