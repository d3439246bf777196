"""How a TensorFlow parameter-server run (``ParameterServer(worker_count, parameter_server_count)``) is
laid out over its containers.

Placement: the tasks in order, workers first (``worker 0`` .. ``worker W-1``, then ``ps 0`` ..
``ps P-1``), dealt round-robin over the nodes: task ``k`` runs on node ``k mod N``. Worker 0, the
chief (as in Azure ML v1), is on the first node; every node has at most one process more than
another, and (``worker_count >= node_count``, which the spec checks) at least one worker.

Addresses: over several nodes each task is at its node's registered address (the containers use the
nodes' network); on one node every task is on the container's own loopback. Ports: one per task and
attempt, from the run's port range (:func:`trainhub.runtime.mpi.port_for`): no two processes of a
node share one, and an attempt never meets the processes of the attempt before it.

One container per node runs :mod:`trainhub.runtime.tf_launch`, which starts that node's tasks, each
with its ``TF_CONFIG``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from trainhub.runtime.mpi import port_for

LOCALHOST = "localhost"


@dataclass(frozen=True)
class TfLayout:
    workers: int
    parameter_servers: int
    hosts: tuple[str, ...]  # each node's address, the first node first (LOCALHOST on one node)
    ports: tuple[int, ...]  # each task's, in task order (workers, then parameter servers)

    @property
    def tasks(self) -> list[tuple[str, int]]:
        """(type, index) of every task, in task order."""
        return [("worker", i) for i in range(self.workers)] + [
            ("ps", i) for i in range(self.parameter_servers)
        ]

    def node_of(self, task: int) -> int:
        return task % len(self.hosts)

    def cluster(self) -> dict[str, list[str]]:
        """``TF_CONFIG``'s ``cluster``: every task's host:port, by type."""
        found: dict[str, list[str]] = {"worker": [], "ps": []}
        for k, (kind, _) in enumerate(self.tasks):
            found[kind].append(f"{self.hosts[self.node_of(k)]}:{self.ports[k]}")
        return found


def layout_for(
    run_id: str, attempt: int, workers: int, parameter_servers: int, hosts: list[str]
) -> TfLayout:
    """The run's layout over ``hosts`` (one per node, the first node first)."""
    total = workers + parameter_servers
    ports = tuple(port_for(run_id, attempt * total + k) for k in range(total))
    return TfLayout(workers, parameter_servers, tuple(hosts), ports)


def node_environment(layout: TfLayout, node_rank: int) -> dict[str, str]:
    """The variables of node ``node_rank``'s container: the cluster, and which tasks run here."""
    mine = [
        f"{kind}:{index}"
        for k, (kind, index) in enumerate(layout.tasks)
        if layout.node_of(k) == node_rank
    ]
    return {
        "TRAINHUB_TF_CLUSTER": json.dumps(layout.cluster(), separators=(",", ":")),
        "TRAINHUB_TF_TASKS": ",".join(mine),
    }
