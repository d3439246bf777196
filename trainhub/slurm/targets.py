"""Slurm compute targets: registered (the login node reached once, its host key pinned), listed,
removed; and what a run sent to one may ask for (a 422 naming the field beats a job that fails)."""

from __future__ import annotations

import re
import time
from typing import Any

from trainhub.nodes.service import check_host, check_name, check_port, check_user
from trainhub.slurm.login import Login, LoginError, host_key_of
from trainhub.spec import EstimatorSpec, SpecError
from trainhub.store import Database
from trainhub.store import nodes as node_store
from trainhub.store import runs as q
from trainhub.store import slurm as store
from trainhub.store.lifecycle import TERMINAL, RunStatus
from trainhub.store.slurm import SlurmTarget

# Slurm's partition, account and QOS names: no spaces, nothing a shell or sbatch reads as syntax.
_SLURM_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_WORK_DIR = re.compile(r"/[A-Za-z0-9_./-]{0,400}")


class TargetBusy(Exception):
    """Runs still wait for the target or run on it."""


async def create(
    db: Database,
    *,
    name: str,
    host: str,
    port: int,
    user: str,
    key_path: str,
    partition: str,
    account: str | None,
    qos: str | None,
    work_dir: str,
) -> dict[str, Any]:
    """Register (or change) a Slurm target: the login node answers with the key, its host key
    is pinned, and Slurm's commands answer there (``sinfo`` for the partition)."""
    check_name(name)
    check_host(host)
    check_user(user)
    check_port(port)
    for field, value in (("partition", partition), ("account", account), ("qos", qos)):
        if value is not None and not _SLURM_NAME.fullmatch(value):
            raise SpecError(field, f"{field} {value!r} is not a Slurm name (letters, digits, _.-)")
    if not _WORK_DIR.fullmatch(work_dir) or ".." in work_dir.split("/"):
        raise SpecError(
            "work_dir", f"work_dir {work_dir!r} must be an absolute path without spaces or '..'"
        )
    nodes_targets = await db.read(node_store.list_targets)
    if name in nodes_targets:
        raise SpecError("name", f"A compute target of nodes is named '{name}' already")
    try:
        host_key = await host_key_of(host, port, user, key_path)
    except LoginError as exc:
        raise SpecError("host", str(exc)) from None
    target = SlurmTarget(
        name=name,
        host=host,
        port=port,
        user=user,
        key_path=key_path,
        host_key=host_key,
        partition=partition,
        account=account,
        qos=qos,
        work_dir=work_dir.rstrip("/") or "/",
        created_at=time.time(),
    )
    login = Login(target, keepalive=5.0)
    try:
        status, out = await login.run(f"sinfo -h -p {partition} -o %P", check=False)
    except LoginError as exc:
        raise SpecError("host", str(exc)) from None
    finally:
        login.close()
    if status != 0 or not out.strip():
        raise SpecError(
            "partition",
            f"sinfo on {host} does not know partition {partition!r}: {out.strip()[-500:]}",
        )
    await db.write(lambda conn: store.put_target(conn, target))
    return target.public()


async def listed(db: Database) -> list[dict[str, Any]]:
    return [t.public() for t in await db.read(store.list_targets)]


async def remove(db: Database, name: str) -> bool:
    """Forget a Slurm target (False: none of that name); refused while runs use it."""
    unended = set(RunStatus) - TERMINAL

    def check_and_remove(conn: Any) -> list[str] | None:
        if store.get_target(conn, name) is None:
            return None
        using = sorted(r.id for r in q.runs_with_status(conn, unended) if r.target == name)
        if not using:
            store.remove_target(conn, name)
        return using

    using = await db.write(check_and_remove)
    if using is None:
        return False
    if using:
        raise TargetBusy(
            f"Compute target {name} has {len(using)} queued or active run(s) "
            f"({', '.join(using[:3])}); cancel them or wait for them to end"
        )
    return True


def check_spec(spec: EstimatorSpec, target: str) -> None:
    """What a Slurm target does not run (yet): pip packages on top of conda, a container image (no container runtime is used there: a job runs on the nodes' own system)."""
    for name in ("custom_docker_image", "custom_docker_base_image", "custom_dockerfile"):
        if getattr(spec, name):
            raise SpecError(
                name,
                f"Target '{target}' is a Slurm cluster: its jobs run without containers "
                "(no Apptainer/enroot/podman support), so it cannot use an image",
            )
    if (spec.conda_packages or spec.conda_dependencies_file) and (
        spec.pip_packages or spec.pip_requirements_file
    ):
        raise SpecError(
            "pip_packages" if spec.pip_packages else "pip_requirements_file",
            f"Target '{target}' is a Slurm cluster: a conda environment there takes no pip "
            "packages yet (add them as conda packages)",
        )
