"""Conda environments of Slurm runs, built on the cluster (a prefix names its own path in its
files, so it is installed where the jobs use it): ``WORK_DIR/envs/conda-<key>``, once per content
(the same key as the server's own prefixes), by ``conda_build.py`` run on the login node with a
bootstrap environment ``WORK_DIR/envs/rattler-<version>`` that holds py-rattler alone. The
bootstrap is made once per cluster from the py-rattler wheel the server's pip finds (its cache,
wheel folder or index: the cluster needs no package index for it)."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from trainhub.runs.conda import Request
from trainhub.slurm.login import Login

BUILDER = Path(__file__).with_name("conda_build.py")


class CondaBuildFailed(Exception):
    """The prefix could not be built on the cluster; the message holds the builder's output."""


@dataclass(frozen=True)
class ClusterPrefix:
    path: str
    has_python: bool


def rattler_version() -> str:
    return importlib.metadata.version("py-rattler")


def download_wheel(into: Path) -> Path:
    """The py-rattler wheel of the server's own version, as pip finds it (binary only, no deps:
    py-rattler has none)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", f"py-rattler=={rattler_version()}"]
        + ["--no-deps", "--only-binary=:all:", "--quiet", "--dest", str(into)],
        check=True,
        capture_output=True,
    )
    return next(into.glob("py_rattler-*.whl"))


async def bootstrap(login: Login, envs_dir: str) -> str:
    """The bootstrap environment's Python, made now if the cluster has none yet (under a lock)."""
    q = shlex.quote
    boot = f"{envs_dir}/rattler-{rattler_version()}"
    status, _ = await login.run(f"{q(boot)}/bin/python -c 'import rattler'", check=False)
    if status == 0:
        return f"{boot}/bin/python"
    with tempfile.TemporaryDirectory() as folder:
        wheel = await asyncio.to_thread(download_wheel, Path(folder))
        remote = f"{envs_dir}/{wheel.name}"
        await login.run(f"mkdir -p {q(envs_dir)}")
        await login.put({remote: await asyncio.to_thread(wheel.read_bytes)})
    make = (
        f"if ! [ -x {q(boot)}/bin/python ]; then rm -rf {q(boot)}.tmp && "
        f"python3 -m venv {q(boot)}.tmp && "
        f"{q(boot)}.tmp/bin/pip install --quiet --no-index --no-deps {q(remote)} && "
        f"mv {q(boot)}.tmp {q(boot)}; fi"
    )
    await login.run(f"flock {q(boot)}.lock sh -c {q(make)} && rm -f {q(remote)}")
    return f"{boot}/bin/python"


async def ensure_prefix(
    login: Login, envs_dir: str, request: Request, job_file: str
) -> tuple[ClusterPrefix, str]:
    """The prefix for ``request`` on the cluster, built now if it is not there; with the
    builder's output (for the run's build log). Raises :class:`CondaBuildFailed`."""
    q = shlex.quote
    python = await bootstrap(login, envs_dir)
    source = BUILDER.read_bytes()
    builder = f"{envs_dir}/conda-build-{hashlib.sha256(source).hexdigest()[:12]}.py"
    prefix = f"{envs_dir}/conda-{request.key}"
    job = {
        "specs": list(request.specs),
        "channels": list(request.channels),
        "prefix": prefix,
        "cache": f"{envs_dir}/.conda-cache",
    }
    await login.put({builder: source, job_file: json.dumps(job).encode()})
    status, out = await login.run(f"{q(python)} {q(builder)} < {q(job_file)} 2>&1", check=False)
    if status != 0:
        raise CondaBuildFailed(f"The conda environment could not be built on the cluster:\n{out}")
    return ClusterPrefix(prefix, "prefix-python: yes" in out), out
