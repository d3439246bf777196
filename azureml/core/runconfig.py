"""``azureml.core.runconfig``: the pieces an Estimator takes. ``MpiConfiguration`` is trainhub's
``Mpi`` (Azure ML's Estimator accepted it as ``distributed_training``); ``RunConfiguration`` and the
rest belong with ``ScriptRunConfig``, which trainhub does not have yet."""

from __future__ import annotations

from typing import Any

from azureml._names import getattr_for
from trainhub.sdk import CondaDependencies, Mpi

__all__ = ["CondaDependencies", "MpiConfiguration"]
__getattr__ = getattr_for(__name__)


class MpiConfiguration(Mpi):
    """``distributed_training=MpiConfiguration()``, with ``node_count`` given to the Estimator."""

    def __init__(self, process_count_per_node: int = 1, node_count: int = 1) -> None:
        super().__init__(process_count_per_node)
        self.node_count = node_count

    def to_spec(self) -> dict[str, Any]:
        if self.node_count != 1:
            raise ValueError(
                "MpiConfiguration.node_count is for ScriptRunConfig; with an Estimator give "
                "node_count to the Estimator (Estimator(..., node_count=2, "
                "distributed_training=MpiConfiguration()))"
            )
        return {"type": self.type, "process_count_per_node": self.process_count_per_node}
