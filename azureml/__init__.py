"""Azure ML v1's module names (``azureml.core``, ``azureml.train.estimator``, ``azureml.train.dnn``...)
mapped onto trainhub's SDK, so that code written for Azure ML runs with only its workspace line
changed. Installed with trainhub (``pip install trainhub[azureml]``).

These modules take the place of Microsoft's: they cannot share an environment with a real
``azureml-core`` (both install files under ``azureml/``), and pip cannot refuse that at install time
for a wheel, so the first import refuses instead and says why.
"""

from __future__ import annotations

import sys
from importlib import metadata

from azureml._names import MissingModules

# The distributions that install the modules this package stands in for.
_REAL_DISTRIBUTIONS = ("azureml-core", "azureml-train-core", "azureml-sdk")


def _refuse_real_azureml() -> None:
    for name in _REAL_DISTRIBUTIONS:
        try:
            found = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        raise ImportError(
            f"{name} {found.version} (Microsoft's Azure ML SDK) is installed in this environment: "
            "trainhub's azureml modules cannot share an environment with it, as both install "
            "files under azureml/. Use a separate virtual environment for trainhub, or "
            f"`pip uninstall {name}` and then `pip install --force-reinstall trainhub[azureml]`.",
            name=__name__,
        )


_refuse_real_azureml()
if not any(isinstance(finder, MissingModules) for finder in sys.meta_path):
    sys.meta_path.append(MissingModules())
