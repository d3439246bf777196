"""A small CNN trained on synthetic images for a fixed number of steps with DistributedDataParallel,
one process per GPU (or per CPU slot with ``--device cpu``); rank 0 prints and logs (``run.log``) the images
per second of the timed steps (after a warm-up). The same script runs under trainhub and under a bare
``torchrun`` in bench/gpu_check.py: only the timed steps count, so the two are compared like for like.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(128, 256, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256 * 8 * 8, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    backend = os.environ.get("TRAINHUB_DIST_BACKEND") or ("nccl" if cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(backend)
    net = DistributedDataParallel(model().to(device), device_ids=[local_rank] if cuda else None)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(args.batch, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (args.batch,), device=device)
    started = 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            if cuda:
                torch.cuda.synchronize()
            dist.barrier()
            started = time.perf_counter()
        loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if cuda:
        torch.cuda.synchronize()
    dist.barrier()
    elapsed = time.perf_counter() - started
    rate = dist.get_world_size() * args.batch * args.steps / elapsed
    if dist.get_rank() == 0:
        print(f"images_per_s={rate:.1f} loss={loss.item():.4f}", flush=True)
        from trainhub import Run  # inside a run: its context; under a bare torchrun: offline

        Run.get_context().log("images_per_s", rate)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
