"""``azureml.core.workspace.Workspace``: trainhub's ``Workspace`` with Azure ML's ways in.

A trainhub workspace is a server's URL and a token. ``Workspace.from_config()`` reads trainhub's
configuration (``trainhub login`` writes it); Azure ML's ways of naming a workspace in Azure (a
subscription, a resource group, a workspace name, its ``config.json``) have no meaning here, and each
says so and what to write instead. ``ws.compute_targets`` lists the server's targets by name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NoReturn, cast

from azureml._names import getattr_for
from azureml.core.compute import ComputeTarget, targets
from trainhub.sdk import workspace as trainhub_workspace
from trainhub.sdk.errors import ConfigError

__all__ = ["Workspace"]
__getattr__ = getattr_for(__name__)

AZURE_ARGUMENTS = ("subscription_id", "resource_group", "workspace_name", "auth", "location")
USE_TRAINHUB = (
    "use Workspace.from_config() after `trainhub login URL --token T`, or "
    "Workspace('http://your-trainhub-server:8000', token=...)"
)


def _azure_workspace(given: str) -> NoReturn:
    raise ConfigError(
        f"{given} names an Azure ML workspace (subscription, resource group, workspace name); a "
        f"trainhub workspace is a server's URL and a token: {USE_TRAINHUB}"
    )


class Workspace(trainhub_workspace.Workspace):
    """``Workspace.from_config()`` or ``Workspace(url, token=...)``, as trainhub's ``Workspace``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        azure = sorted(set(kwargs) & set(AZURE_ARGUMENTS))
        if azure:
            _azure_workspace(f"Workspace({', '.join(f'{k}=...' for k in azure)})")
        if len(args) > 2 or (args and not str(args[0]).startswith(("http://", "https://"))):
            _azure_workspace(f"Workspace({', '.join(repr(a) for a in args)})")
        super().__init__(*args, **kwargs)

    @classmethod
    def get(cls, name: str = "", *args: Any, **kwargs: Any) -> NoReturn:
        _azure_workspace(f"Workspace.get({name!r})")

    @classmethod
    def create(cls, name: str = "", *args: Any, **kwargs: Any) -> NoReturn:
        _azure_workspace(f"Workspace.create({name!r})")

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | None = None,
        auth: Any = None,
        _logger: Any = None,
        _file_name: str | None = None,
    ) -> Workspace:
        """trainhub's configuration (``TRAINHUB_URL``/``TRAINHUB_TOKEN``, ``path``, else
        ``~/.trainhub/config.json``). Where none is found but an Azure ML ``config.json`` is (where
        Azure ML looked: ``path``, else this folder and its parents), the error says so."""
        if auth is not None:
            raise ConfigError(f"auth= signs in to Azure; trainhub uses a token: {USE_TRAINHUB}")
        if path is not None and _file_name:
            path = Path(path) / _file_name
        try:
            return cast(Workspace, super().from_config(path))  # built with cls(...)
        except ConfigError:
            found = _azure_config(path)
            if found is None:
                raise
            raise ConfigError(
                f"{found} is an Azure ML configuration (subscription_id, resource_group, "
                "workspace_name), not a trainhub one. Run `trainhub login URL --token T` (it writes "
                f"{trainhub_workspace.config_path()}), or set TRAINHUB_URL and TRAINHUB_TOKEN, or "
                'pass from_config() a file holding {"url": "http://server:8000", "token": "..."}'
            ) from None

    @property
    def compute_targets(self) -> dict[str, ComputeTarget]:
        """The server's compute targets by name (``ws.compute_targets['gpu-cluster']``)."""
        return {n: ComputeTarget.of(self, n, nodes) for n, nodes in targets(self).items()}


def _azure_config(path: str | os.PathLike[str] | None) -> Path | None:
    """The Azure ML ``config.json`` that Azure ML's ``from_config`` would have read, if any."""
    if path is not None and Path(path).is_file():
        candidates = [Path(path)]
    else:
        folders = [Path(path)] if path is not None else [Path.cwd(), *Path.cwd().parents]
        candidates = [f / n for f in folders for n in ("config.json", ".azureml/config.json")]
    for file in candidates:
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "subscription_id" in data:
            return file
    return None
