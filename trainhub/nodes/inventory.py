"""What a node has: GPUs (from ``nvidia-smi``'s CSV), CPUs, memory, Docker version and runtimes,
and whether Docker can hand GPUs to containers there."""

from __future__ import annotations

import os
import shlex
import shutil
from typing import Any

NVIDIA_SMI = "nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits"

# dockerd registers its ``nvidia`` device driver (what ``docker run --gpus`` and trainhub's device
# requests use) when this hook of the NVIDIA container toolkit is on dockerd's PATH; no ``nvidia``
# runtime entry is needed. The toolkit installs it in one of these folders, which a login shell's
# PATH may not show.
NVIDIA_HOOK = "nvidia-container-runtime-hook"
HOOK_DIRS = ("/usr/bin", "/usr/local/bin")
FIND_HOOK = "sh -c " + shlex.quote(
    f'for p in "$(command -v {NVIDIA_HOOK})" '
    + " ".join(f"{d}/{NVIDIA_HOOK}" for d in HOOK_DIRS)
    + '; do if [ -x "$p" ]; then echo "$p"; exit 0; fi; done; exit 1'
)


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


def parse_hook(output: str) -> str | None:
    """The hook's path from :data:`FIND_HOOK`'s output (a shell alias or function is not a path)."""
    for line in output.splitlines():
        if line.startswith("/"):
            return line.strip()
    return None


def find_local_hook() -> str | None:
    found = shutil.which(NVIDIA_HOOK)
    if found:
        return found
    for folder in HOOK_DIRS:
        path = os.path.join(folder, NVIDIA_HOOK)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def docker_facts(
    info: dict[str, Any], version: dict[str, Any], nvidia_hook: str | None
) -> dict[str, Any]:
    runtimes = sorted((info.get("Runtimes") or {}).keys())
    nvidia_runtime = "nvidia" in runtimes
    return {
        "docker_version": version.get("Version"),
        "docker_api": version.get("ApiVersion"),
        "runtimes": runtimes,
        "nvidia_runtime": nvidia_runtime,
        "nvidia_hook": nvidia_hook,
        "docker_root": info.get("DockerRootDir"),
        # Whether GPU device requests reach the GPUs on this node's engine.
        "gpu_support": nvidia_runtime or nvidia_hook is not None,
    }


def df_command(path: str) -> str:
    """Free bytes of the filesystem holding ``path``, as ``df`` prints them."""
    return f"df -B1 --output=avail -- {shlex.quote(path)} | tail -n 1"


def parse_df(text: str) -> int | None:
    value = text.strip()
    return int(value) if value.isdigit() else None
