"""trainhub: Azure ML v1's Estimator workflow as a self-hosted service on your own GPU servers.

``from trainhub import Workspace, Experiment, Estimator`` is the SDK; inside a run,
``from trainhub import Run; Run.get_context()`` logs metrics.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from trainhub.sdk import *  # noqa: F403 - the SDK is the package's public face


def __getattr__(name: str) -> Any:
    """The SDK's names, imported on first use (PEP 562): the SDK pulls in httpx and pandas (0.3 to
    0.8 s), which the commands that never call a server (backup, settings) should not pay for."""
    if name.startswith("__") and name != "__all__":
        raise AttributeError(f"module 'trainhub' has no attribute {name!r}")
    if importlib.util.find_spec(f"trainhub.{name}") is not None:
        # ``from trainhub import cli_backup``: the import system asks here first, and then imports
        # the submodule itself; the SDK is not needed for that.
        raise AttributeError(f"module 'trainhub' has no attribute {name!r}")
    from trainhub import sdk

    if name == "__all__":
        return ["__version__", *sdk.__all__]
    if name not in sdk.__all__:
        raise AttributeError(f"module 'trainhub' has no attribute {name!r}")
    value = getattr(sdk, name)
    globals()[name] = value  # the next look-up is a plain one
    return value


def __dir__() -> list[str]:
    from trainhub import sdk

    return sorted({*globals(), *sdk.__all__})
