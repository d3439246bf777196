"""``azureml.core.run.Run``: trainhub's ``Run`` (the SDK's; inside a run, ``Run.get_context()`` is
the run, elsewhere an offline run as with Azure ML).

Imported from ``trainhub`` itself, not ``trainhub.sdk``: inside a run the launcher's small in-run
``trainhub`` package comes first on ``PYTHONPATH`` and has only ``Run`` with ``get_context()``, which
is all a training script needs.
"""

from azureml._names import getattr_for
from trainhub import Run

__all__ = ["Run"]
__getattr__ = getattr_for(__name__)
