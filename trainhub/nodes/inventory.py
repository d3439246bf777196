"""What a node has: GPUs (from ``nvidia-smi``'s CSV), CPUs, memory, Docker version and runtimes."""

from __future__ import annotations

from typing import Any

NVIDIA_SMI = "nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits"


def parse_gpus(csv: str) -> list[dict[str, Any]]:
    gpus = []
    for line in csv.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        memory = int(parts[3]) if parts[3].isdigit() else None
        gpus.append(
            {"index": int(parts[0]), "uuid": parts[1], "name": parts[2], "memory_mib": memory}
        )
    return gpus


def parse_meminfo(text: str) -> int | None:
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def docker_facts(info: dict[str, Any], version: dict[str, Any]) -> dict[str, Any]:
    runtimes = sorted((info.get("Runtimes") or {}).keys())
    return {
        "docker_version": version.get("Version"),
        "docker_api": version.get("ApiVersion"),
        "runtimes": runtimes,
        "nvidia_runtime": "nvidia" in runtimes,
    }
