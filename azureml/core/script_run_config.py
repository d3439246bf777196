"""``azureml.core.script_run_config.ScriptRunConfig``: trainhub's."""

from azureml._names import getattr_for
from trainhub.sdk import ScriptRunConfig

__all__ = ["ScriptRunConfig"]
__getattr__ = getattr_for(__name__)
