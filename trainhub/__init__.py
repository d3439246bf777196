"""trainhub: Azure ML v1's Estimator workflow as a self-hosted service on your own GPU servers.

``from trainhub import Workspace, Experiment, Estimator`` is the SDK; inside a run,
``from trainhub import Run; Run.get_context()`` logs metrics.
"""

__version__ = "0.1.0"

from trainhub import sdk  # noqa: E402 - the version is read by the modules below
from trainhub.sdk import *  # noqa: E402, F403 - the SDK is the package's public face

__all__ = ["__version__"]
__all__ += sdk.__all__
