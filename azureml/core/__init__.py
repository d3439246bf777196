"""Azure ML's ``azureml.core`` on trainhub: ``Workspace``, ``Experiment``, ``Run``, ``Environment``,
``Datastore``, ``Dataset``, ``Model``, ``ComputeTarget``, ``ContainerRegistry``, ``ScriptRunConfig``,
``RunConfiguration``; ``VERSION`` is the Azure ML v1 SDK release whose API trainhub follows.

Each name is imported from its submodule on first use. Inside a run only ``Run`` is needed, and there
the launcher's small in-run ``trainhub`` package (no SDK) comes first on ``PYTHONPATH``: ``from
azureml.core import Run`` must not pull in the rest.
"""

from azureml._names import getattr_for

_LAZY = {
    "ComputeTarget": "azureml.core.compute",
    "ContainerRegistry": "azureml.core.container_registry",
    "Dataset": "azureml.core.dataset",
    "Datastore": "azureml.core.datastore",
    "Environment": "azureml.core.environment",
    "Experiment": "azureml.core.experiment",
    "Model": "azureml.core.model",
    "Run": "azureml.core.run",
    "RunConfiguration": "azureml.core.runconfig",
    "ScriptRunConfig": "azureml.core.script_run_config",
    "Workspace": "azureml.core.workspace",
}
# The last Azure ML v1 SDK (azureml-core) release: notebooks print it, and some compare it.
VERSION = "1.60.0"
__all__ = [*sorted(_LAZY), "VERSION"]
__getattr__ = getattr_for(__name__, _LAZY)


def __dir__() -> list[str]:
    return [*__all__, "__all__", "__doc__", "__name__"]
