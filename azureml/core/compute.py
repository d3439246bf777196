"""``azureml.core.compute``: compute targets by name.

A trainhub compute target is a named group of the server's registered nodes (``local`` is always
there; admins make others with ``trainhub target create``). An Estimator sends only the target's
name, so ``ComputeTarget(workspace=ws, name='gpu-cluster')`` checks that the server has it and keeps
the name, and the Azure ML habit of trying it and creating the cluster on
``ComputeTargetException`` works when the target exists and says what to do when it does not.
"""

from __future__ import annotations

from typing import Any, NoReturn

from azureml._names import getattr_for
from azureml.exceptions import ComputeTargetException
from trainhub.sdk import Workspace

__all__ = ["AmlCompute", "ComputeTarget"]
__getattr__ = getattr_for(__name__)


def targets(workspace: Workspace) -> dict[str, list[str]]:
    """The server's compute targets and their nodes (``GET /api/v1/targets``)."""
    found = workspace.client.json("GET", "/api/v1/targets")["targets"]
    return {t["name"]: list(t["nodes"]) for t in found}


class ComputeTarget:
    """A compute target of the server, by name: ``ComputeTarget(workspace=ws, name='gpu-cluster')``."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        found = targets(workspace)
        if name not in found:
            raise ComputeTargetException(
                f"ComputeTargetNotFound: {workspace.url} has no compute target '{name}' "
                f"(it has: {', '.join(sorted(found))}); an admin makes one from registered nodes "
                "with `trainhub target create NAME --nodes n1,n2`"
            )
        self.workspace = workspace
        self.name = name
        self.nodes = found[name]

    @classmethod
    def of(cls, workspace: Workspace, name: str, nodes: list[str]) -> ComputeTarget:
        """One the caller already listed (no second request to the server)."""
        target = cls.__new__(cls)
        target.workspace, target.name, target.nodes = workspace, name, nodes
        return target

    @staticmethod
    def create(workspace: Workspace, name: str, provisioning_configuration: Any) -> NoReturn:
        raise ComputeTargetException(
            f"trainhub does not provision machines, so compute target '{name}' cannot be created "
            "here: an admin registers the lab's servers (`trainhub node add`) and groups them "
            f"(`trainhub target create {name} --nodes n1,n2`)"
        )

    @staticmethod
    def list(workspace: Workspace) -> list[ComputeTarget]:
        return [ComputeTarget.of(workspace, n, nodes) for n, nodes in targets(workspace).items()]

    def wait_for_completion(self, show_output: bool = False, **kwargs: Any) -> None:
        """Nothing to wait for: a target is registered nodes, ready as soon as it exists."""

    def __repr__(self) -> str:
        return f"ComputeTarget(workspace={self.workspace.name!r}, name={self.name!r}, nodes={self.nodes!r})"


class AmlCompute(ComputeTarget):
    """Azure ML's managed cluster. Only its ``provisioning_configuration`` is here, for the code that
    builds one before trying ``ComputeTarget.create`` (which says what to do instead)."""

    @staticmethod
    def provisioning_configuration(**kwargs: Any) -> dict[str, Any]:
        return dict(kwargs)
