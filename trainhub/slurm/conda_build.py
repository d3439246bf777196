"""Solve and install one conda prefix on a Slurm cluster's login node (standard library and
py-rattler only: this file is copied to the cluster and run by the bootstrap environment's Python,
where trainhub is not installed).

A conda prefix names its own path inside its files, so it is built where the jobs use it, on the
cluster's shared storage, never on the server. As on the server (``trainhub.runs.conda``): under
the prefix's lock, into a temporary sibling whose files already name the final path, then renamed,
so a prefix with its marker is complete. The job (JSON) comes on stdin; the last line printed says
whether the prefix has its own Python.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Literal

import rattler

PLATFORMS: list[Literal["linux-64", "noarch"]] = ["linux-64", "noarch"]
READY = "conda-meta/trainhub-ready.json"


def build(job: dict[str, Any]) -> None:
    final = Path(job["prefix"])
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{final}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / READY).is_file():
            print(f"Conda environment {final.name} is present: reused, no solve", flush=True)
            return
        building = final.with_name(f".{final.name}.building-{os.getpid()}")
        shutil.rmtree(final, ignore_errors=True)  # a build that was interrupted
        try:
            asyncio.run(_solve_and_install(job, building))
            (building / READY).write_text(json.dumps({"specs": job["specs"]}) + "\n")
            building.rename(final)
        finally:
            shutil.rmtree(building, ignore_errors=True)
        print(f"Conda environment {final.name} built", flush=True)


async def _solve_and_install(job: dict[str, Any], into: Path) -> None:
    cache = Path(job["cache"])
    print(f"Solving {', '.join(job['specs'])} from {', '.join(job['channels'])}", flush=True)
    records = await rattler.solve(
        job["channels"],
        job["specs"],
        gateway=rattler.Gateway(cache_dir=cache / "repodata"),
        platforms=PLATFORMS,
        virtual_packages=rattler.VirtualPackage.detect(),
    )
    for record in sorted(records, key=lambda r: r.name.normalized):
        print(f"  {record.name.normalized} {record.version} {record.build}", flush=True)
    await rattler.install(
        records, into, alternative_target_prefix=job["prefix"], cache_dir=cache / "pkgs"
    )


def main() -> None:
    job = json.loads(sys.stdin.read())
    code = 0
    try:
        build(job)
        has_python = (Path(job["prefix"]) / "bin" / "python").exists()
        print(f"prefix-python: {'yes' if has_python else 'no'}", flush=True)
    except Exception as exc:  # noqa: BLE001 - the solver's or installer's own message
        print(f"ERROR: {type(exc).__name__}: {str(exc).strip()}", flush=True)
        code = 1
    sys.stdout.flush()
    os._exit(code)  # py-rattler's threads can crash an exiting interpreter (trainhub.runs.conda)


if __name__ == "__main__":
    main()
