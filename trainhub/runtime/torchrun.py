"""How a PyTorch distributed run (``Gloo()``, ``Nccl()``) is laid out over its containers.

One container per node, as for MPI, each running ``torchrun`` for its node (static rendezvous on the
first node's address and a per-attempt port): ``--nnodes`` nodes, ``--nproc-per-node`` processes on
each, this container's ``--node-rank``. Over several nodes the containers use the nodes' network (the
processes of every node reach the first node's store and each other); on one node the rendezvous is
on the container's own loopback. What runs inside is :mod:`trainhub.runtime.torch_launch`.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainhub.runtime.mpi import port_for as port_for

# One node: the rendezvous never leaves the container.
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class TorchLayout:
    nodes: int
    per_node: int
    master_addr: str  # the first node's registered address, or the loopback on one node
    port: int
    backend: str  # nccl | gloo: what the script reads from TRAINHUB_DIST_BACKEND

    @property
    def world_size(self) -> int:
        return self.nodes * self.per_node


def node_environment(layout: TorchLayout, node_rank: int) -> dict[str, str]:
    """The variables of node ``node_rank``'s container: what its launcher gives ``torchrun``, and
    the variables Azure ML's PyTorch estimator set for every process (``AZ_BATCHAI_TASK_INDEX``, the
    process's own, is set by the launcher per process)."""
    address = f"{layout.master_addr}:{layout.port}"
    return {
        "TRAINHUB_TORCH_NNODES": str(layout.nodes),
        "TRAINHUB_TORCH_NPROC_PER_NODE": str(layout.per_node),
        "TRAINHUB_TORCH_NODE_RANK": str(node_rank),
        "TRAINHUB_TORCH_MASTER_ADDR": layout.master_addr,
        "TRAINHUB_TORCH_MASTER_PORT": str(layout.port),
        "TRAINHUB_DIST_BACKEND": layout.backend,
        "AZ_BATCHAI_PYTORCH_INIT_METHOD": f"tcp://{address}",
        "AZ_BATCH_MASTER_NODE": address,
        "AZ_BATCHAI_MPI_MASTER_NODE": layout.master_addr,
    }
