"""PyTorch for the tests' environments, with no package index: torch's CPU wheel (pip's find-links folder
on these machines holds it, TESTBED.md) and its dependencies fetched once into a wheel folder by pip,
which the servers of the torch tests offer to their environment builds. The test bed's nodes reach no
index, so pip there takes everything from that folder (the index named is a folder with no packages).

The folder's path and contents stay the same between sessions, so the environment image of
``pip_packages=[TORCH]`` has the same content hash: each engine builds it once and keeps it, as it
keeps the base images.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TORCH = "torch==2.13.0"  # pinned: an unpinned torch pulls a CUDA build of several GB
WHEELS = Path("/tmp/trainhub-torch-wheels")


def torch_settings() -> dict[str, str]:
    """Server settings for runs with ``pip_packages=[TORCH]``."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", TORCH, "--only-binary=:all:", "--quiet"]
        + ["--dest", str(WHEELS)],
        check=True,
    )
    return {"wheel_dir": str(WHEELS), "pip_index_url": "file:///trainhub-build/no-index"}


# Every process sums its rank + 1 with the others' (as Azure ML's PyTorch examples started: the
# init method and the rank from the AZ_BATCHAI_* variables), checks the sum, and writes the
# variables it had to outputs/env-<rank>.json on its node; rank 0 writes the sum to
# outputs/world.json, and each node's first process writes outputs/node.txt (the same path on every
# node) and outputs/node-<node>.txt.
ALLREDUCE = """
import json, os
import torch
import torch.distributed as dist

NAMES = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
         "AZ_BATCHAI_PYTORCH_INIT_METHOD", "AZ_BATCHAI_TASK_INDEX", "AZ_BATCH_MASTER_NODE",
         "AZ_BATCHAI_MPI_MASTER_NODE", "TRAINHUB_DIST_BACKEND", "TRAINHUB_NODE"]
mine = {name: os.environ.get(name) for name in NAMES}
dist.init_process_group(
    os.environ["TRAINHUB_DIST_BACKEND"],
    init_method=os.environ["AZ_BATCHAI_PYTORCH_INIT_METHOD"],
    rank=int(os.environ["AZ_BATCHAI_TASK_INDEX"]),
    world_size=int(os.environ["WORLD_SIZE"]),
)
rank, size = dist.get_rank(), dist.get_world_size()
total = torch.tensor([float(rank + 1)])
dist.all_reduce(total)
assert total.item() == size * (size + 1) / 2, total.item()
print(f"rank {rank} of {size}: allreduce {total.item():g}", flush=True)
os.makedirs("outputs", exist_ok=True)
json.dump(mine, open(f"outputs/env-{rank}.json", "w"))
if rank == 0:
    json.dump({"sum": total.item(), "size": size}, open("outputs/world.json", "w"))
if int(os.environ["LOCAL_RANK"]) == 0:
    node = os.environ["TRAINHUB_NODE"]
    open("outputs/node.txt", "w").write(node)
    open(f"outputs/node-{node}.txt", "w").write(node)
dist.destroy_process_group()
"""
