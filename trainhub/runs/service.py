"""Run services: submit, cancel and the Azure ML-shaped details. No HTTP in here."""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from trainhub.accounts import Forbidden, User, require_run_owner
from trainhub.datasets import registry as datasets
from trainhub.runs import admission, datarefs, retention
from trainhub.runs.artifacts import (
    DRIVER_LOG,
    GB,
    SnapshotError,
    check_snapshot,
    free_bytes,
    human_size,
    resolve_artifact,
    store_snapshot,
)
from trainhub.runs.launcher import Launcher
from trainhub.settings import Settings
from trainhub.spec import (
    EnvironmentDefinition,
    EstimatorSpec,
    SpecError,
    apply_definition,
    check_experiment_name,
    check_tags,
    definition_reference,
    flatten_arguments,
    flatten_script_params,
    parse_estimator,
    placed_references,
    redact,
    stored_processes_per_node,
)
from trainhub.spec_datarefs import Reference
from trainhub.store import (
    Database,
    datastores,
    environments,
    interactive,
    lifecycle,
    metrics,
    snapshots,
    sweeps,
    users,
)
from trainhub.store import disk as disk_store
from trainhub.store import runs as q
from trainhub.store.datastores import DatastoreKind
from trainhub.store.lifecycle import RunStatus
from trainhub.store.runs import RunKind


class RunNotFound(LookupError):
    pass


class ArtifactNotFound(RunNotFound):
    pass


class RunConflict(Exception):
    pass


class StorageFull(Exception):
    """The data folder's disk is below its free-space floor (or full): nothing new is accepted."""


def check_room(settings: Settings) -> None:
    free = free_bytes(settings.data)
    if free < settings.min_free_gb * GB:
        raise StorageFull(
            f"The server's data folder ({settings.data}) has {human_size(free)} free, below the "
            f"{human_size(settings.min_free_gb * GB)} it keeps free (TRAINHUB_MIN_FREE_GB): "
            "no new runs until space is freed"
        )


def new_upload_path(settings: Settings) -> Path:
    check_room(settings)
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    return settings.uploads_dir / f"{secrets.token_hex(8)}.part"


async def submit(
    settings: Settings,
    db: Database,
    launcher: Launcher,
    *,
    experiment: str,
    estimator: bytes | str,
    upload: Path | None = None,
    snapshot_id: str | None = None,
    tags: bytes | str | None = None,
    priority: str | None = None,
    max_retries: str | None = None,
    user: str | None = None,
) -> q.RunRow:
    """Validate the spec and the snapshot, store both, queue the run.

    The snapshot is either ``upload`` (a file in the uploads folder, moved to its content address or
    removed) or ``snapshot_id``, one the server already holds.
    """
    admitted = await admit(
        settings,
        db,
        launcher,
        experiment=experiment,
        estimator=estimator,
        upload=upload,
        snapshot_id=snapshot_id,
        tags=tags,
        priority=priority,
        max_retries=max_retries,
        user=user,
    )
    spec = admitted.spec

    def insert(conn: Any) -> q.RunRow:
        if not disk_store.snapshot_known(conn, admitted.snapshot):  # `trainhub gc` took it since
            raise SpecError(
                "snapshot_id", f"This server has no snapshot '{admitted.snapshot}': upload it"
            )
        return q.insert_run(
            conn,
            experiment=experiment,
            spec=msgspec.to_builtins(spec),
            snapshot=admitted.snapshot,
            target=spec.compute_target,
            tags=admitted.tags,
            snapshot_uploaded=upload is not None,
            priority=admitted.priority,
            max_retries=admitted.max_retries,
            user=user,
        )

    run = await db.write(insert)
    await datasets.record_inputs(db, run.id, list(spec.references().values()))
    launcher.wake()
    return run


@dataclass(frozen=True)
class Admitted:
    """A submission that passed every check: the spec resolved (registered environment,
    datasets), its snapshot stored."""

    spec: EstimatorSpec
    snapshot: str
    tags: dict[str, str]
    priority: int
    max_retries: int


async def admit(
    settings: Settings,
    db: Database,
    launcher: Launcher,
    *,
    experiment: str,
    estimator: bytes | str,
    upload: Path | None = None,
    snapshot_id: str | None = None,
    tags: bytes | str | None = None,
    priority: str | None = None,
    max_retries: str | None = None,
    user: str | None = None,
) -> Admitted:
    """:func:`submit`'s checks and the snapshot's storing, without queueing anything (a sweep
    admits its run config once, then queues its children)."""
    try:
        check_room(settings)
        check_experiment_name(experiment)
        spec = parse_estimator(estimator)
        run_tags = parse_tags(tags)
        run_priority = parse_int("priority", priority, -1000, 1000)
        run_retries = parse_int("max_retries", max_retries, 0, 10)
        spec = await _resolve_definition(db, spec)
        if upload is not None:
            info = await asyncio.to_thread(
                check_snapshot,
                upload,
                max_files=settings.max_snapshot_files,
                max_expanded_bytes=settings.max_snapshot_expanded_bytes,
            )
            _check_entry_script(spec, info.files)
            await asyncio.to_thread(store_snapshot, upload, info, settings.snapshots_dir)
            await db.write(
                lambda conn: snapshots.record(
                    conn,
                    info.sha256,
                    info.compressed_bytes,
                    sorted(info.files),
                    info.expanded_bytes,
                )
            )
            sha256 = info.sha256
        else:
            known = await db.read(lambda conn: snapshots.get(conn, snapshot_id or ""))
            if known is None or not settings.snapshot_path(known["sha256"]).exists():
                raise SpecError(
                    "snapshot_id", f"This server has no snapshot '{snapshot_id}': upload it"
                )
            _check_entry_script(spec, frozenset(known["files"]))
            sha256 = known["sha256"]
    finally:
        if upload is not None:
            upload.unlink(missing_ok=True)
    await admission.check_conda(settings, spec, sha256)
    await admission.check_target(db, launcher, spec)
    spec = await _resolve_datasets(settings, db, spec)
    await _check_references(settings, db, spec, user)
    return Admitted(spec, sha256, run_tags, run_priority, run_retries)


def parse_int(field: str, raw: str | None, low: int, high: int) -> int:
    """An integer multipart part (``priority``, ``max_retries``) within its limits."""
    if raw is None or raw == "":
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise SpecError(field, f"{field} must be an integer") from None
    if not low <= value <= high:
        raise SpecError(field, f"{field} must be between {low} and {high}")
    return value


def parse_tags(raw: bytes | str | None) -> dict[str, str]:
    if raw is None or raw == "" or raw == b"":
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise SpecError("tags", "tags must be a JSON object of strings") from None
    return check_tags(value)


def _check_entry_script(spec: EstimatorSpec, files: frozenset[str]) -> None:
    entry = spec.entry_script.removeprefix("./")
    if entry not in files:
        raise SpecError(
            "entry_script", f"The entry script '{spec.entry_script}' is not in the snapshot"
        )
    for field in ("pip_requirements_file", "conda_dependencies_file"):
        name = getattr(spec, field)
        if name and name.removeprefix("./") not in files:
            raise SpecError(field, f"'{name}' is not in the snapshot")


async def _check_references(
    settings: Settings, db: Database, spec: EstimatorSpec, user: str | None
) -> None:
    """Each data reference names a datastore of this server, an existing folder of a ``server``
    one (mount, download), and one the submitter may write into (upload; read-only ones take
    uploads from admins only): a 422 or a 403 naming the reference otherwise. A ``shared``
    datastore's folders are on the nodes: they are checked at Preparing."""
    placed = placed_references(spec)
    if not placed:
        return
    rows = {row.name: row for row in await db.read(datastores.list_datastores)}
    submitter = await db.read(lambda conn: users.user_by_name(conn, user)) if user else None
    for where, ref in placed:
        field = where.split("[", 1)[0]
        row = rows.get(ref.datastore)
        if row is None:
            known = ", ".join(sorted(rows)) or "none"
            raise SpecError(
                field,
                f"{where}: there is no datastore '{ref.datastore}' on this server (it has: {known})",
            )
        if ref.mode == "upload" and row.read_only and not (submitter and submitter.is_admin):
            who = f"; {submitter.name} is a {submitter.role}" if submitter else ""
            raise Forbidden(
                f"{where}: datastore '{row.name}' is read-only: only an admin may upload into it{who}"
            )
        if row.kind != DatastoreKind.SERVER:
            continue
        if ref.folder.split("/")[0] == datarefs.RESERVED:
            raise SpecError(
                field,
                f"{where}.path: '{datarefs.RESERVED}' is the datastore's own folder, not data",
            )
        if ref.mode != "upload" and datarefs.server_folder(settings, row.name, ref.folder) is None:
            raise SpecError(
                field, f"{where}.path: datastore '{row.name}' has no folder '{ref.folder}'"
            )


async def _resolve_datasets(settings: Settings, db: Database, spec: EstimatorSpec) -> EstimatorSpec:
    """Every reference to a dataset filled in from its record (its datastore, folder, patterns)."""
    placed = [(where, ref) for where, ref in placed_references(spec) if ref.dataset is not None]
    if not placed:
        return spec
    resolved = {id(ref): await datasets.resolve(settings, db, ref, where) for where, ref in placed}

    def swap(value: Any) -> Any:
        if isinstance(value, Reference) and id(value.data_reference) in resolved:
            return Reference(resolved[id(value.data_reference)])
        return value

    return msgspec.structs.replace(
        spec,
        script_params={k: swap(v) for k, v in spec.script_params.items()},
        arguments=[swap(v) for v in spec.arguments],
        inputs=[swap(v) for v in spec.inputs],
    )


async def _resolve_definition(db: Database, spec: EstimatorSpec) -> EstimatorSpec:
    """Fill in a registered environment named by ``environment_definition``."""
    if spec.environment_definition is None:
        return spec
    name, version = definition_reference(spec.environment_definition)
    found = await db.read(lambda conn: environments.get_definition(conn, name, version))
    if found is None:
        which = f"'{name}'" + (f" version {version}" if version else "")
        raise SpecError(
            "environment_definition", f"No environment {which} is registered on this server"
        )
    definition = msgspec.convert(found["definition"], EnvironmentDefinition)
    resolved = apply_definition(spec, definition)
    return msgspec.structs.replace(
        resolved, environment_definition={"name": found["name"], "version": found["version"]}
    )


async def cancel(db: Database, launcher: Launcher, run_id: str, user: User) -> q.RunRow:
    run = await get(db, run_id)
    require_run_owner(user, run_id, run.user, "cancel")
    if run.status is RunStatus.CANCELED or run.status is RunStatus.CANCEL_REQUESTED:
        return run
    if run.status.is_terminal():
        raise RunConflict(
            f"Run {run_id} has already ended ({run.status.value}); there is nothing to cancel"
        )
    if run.kind == RunKind.SWEEP:  # its children are canceled; it ends once they have
        for child in await db.write(lambda conn: sweeps.request_cancel(conn, run_id)):
            launcher.request_cancel(child)
        return await get(db, run_id)
    if run.kind == RunKind.INTERACTIVE:  # nothing runs: Canceled at once, its children with it
        await db.write(lambda conn: lifecycle.cancel(conn, run_id))
        return await get(db, run_id)
    if not await db.write(
        lambda conn: lifecycle.move(
            conn,
            run_id,
            RunStatus.CANCELED,
            expect=[RunStatus.QUEUED],
            detail="canceled",
            reason="canceled",
        )
    ):
        await db.write(lambda conn: lifecycle.request_cancel(conn, run_id, _now()))
        launcher.request_cancel(run_id)
    return await get(db, run_id)


async def set_tags(db: Database, run_id: str, tags: Any, user: User) -> dict[str, Any]:
    """Add or change tags of a run (its submitter or an admin); returns all its tags."""
    run = await get(db, run_id)
    require_run_owner(user, run_id, run.user, "tag")
    if not isinstance(tags, dict):
        raise SpecError("tags", 'Send {"tags": {"key": "value", ...}}')
    clean = check_tags(tags)
    check_tags({**run.tags, **clean})  # the run's tags stay within the limits too

    def apply(conn: Any) -> dict[str, Any]:
        interactive.touch(conn, [run_id], _now())  # an interactive run's client is there
        return metrics.set_tags(conn, run_id, clean)

    merged: dict[str, Any] = await db.write(apply)
    return merged


async def artifact(settings: Settings, db: Database, run_id: str, path: str) -> Path:
    """The file ``path`` of a run's history (never outside it); :class:`OutputsRemoved` (410)
    for an output that retention removed."""
    run = await get(db, run_id)
    relative = path.lstrip("/")
    if run.outputs_removed_at is not None and not retention.is_kept_path(relative):
        raise retention.OutputsRemoved(run_id, run.outputs_removed_at)
    found = resolve_artifact(settings.run_dir(run_id), relative)
    if found is None:
        raise ArtifactNotFound(f"Run {run_id} has no file '{relative}'")
    return found


async def get(db: Database, run_id: str) -> q.RunRow:
    run = await db.read(lambda conn: q.get_run(conn, run_id))
    if run is None:
        raise RunNotFound(f"No run with id '{run_id}'")
    return run


def _now() -> float:
    return datetime.now(UTC).timestamp()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def details(
    run: q.RunRow, events: list[dict[str, Any]] | None = None, public_url: str | None = None
) -> dict[str, Any]:
    """The keys of Azure ML's ``Run.get_details()``, plus trainhub's own under ``properties``.
    ``portalUrl`` is the run's page: absolute with ``public_url`` (TRAINHUB_PUBLIC_URL), else a path
    that the SDK and CLI put after the address they use."""
    spec = redact(run.spec)
    file_url = f"/api/v1/runs/{run.id}/files/{DRIVER_LOG}"
    out: dict[str, Any] = {
        "runId": run.id,
        "experiment": run.experiment,
        "number": run.number,
        "target": run.target,
        "status": run.status.value,
        "submittedBy": run.user,
        "portalUrl": f"{(public_url or '').rstrip('/')}/runs/{run.id}",
        "startTimeUtc": iso(run.started_at),
        "endTimeUtc": iso(run.ended_at),
        # Azure ML's names for what a user says about a run, its kind ('script', or 'interactive':
        # experiment.start_logging() and child runs) and its parent.
        "displayName": run.display_name,
        "description": run.description,
        "kind": run.kind,
        "parentRunId": run.parent_id,
        "properties": {
            **run.properties,  # set by the user (add_properties); trainhub's own names win
            "createdTimeUtc": iso(run.created_at),
            "snapshotId": run.snapshot,
            "snapshotUploaded": bool(run.snapshot_uploaded),
            "node": run.node,
            "exitCode": run.exit_code,
            "reason": run.reason,
            "priority": run.priority,
            "retries": run.retries,
            "maxRetries": run.max_retries,
            "waitReason": run.wait_reason if run.status is RunStatus.QUEUED else None,
        },
        "runDefinition": {
            "script": spec.get("entry_script"),
            "arguments": _arguments(spec),
            "target": run.target,
            "nodeCount": spec.get("node_count", 1),
            # Azure ML's names: the communicator and the MPI process count per node.
            "communicator": _communicator(spec),
            "mpi": {"processCountPerNode": stored_processes_per_node(spec)},
            "maxRunDurationSeconds": spec.get("max_run_duration_seconds"),
            "environmentVariables": spec.get("environment_variables", {}),
            "image": run.image
            or spec.get("custom_docker_image")
            or spec.get("custom_docker_base_image"),
            "environment": {
                k: spec[k]
                for k in (
                    "pip_packages",
                    "conda_packages",
                    "pip_requirements_file",
                    "conda_dependencies_file",
                    "user_managed",
                    "use_docker",
                    "environment_definition",
                    "image_registry_details",
                    "custom_dockerfile",
                )
                if k in spec
            },
            "framework": spec.get("framework", "Python"),
            "estimator": spec,
        },
        "logFiles": {DRIVER_LOG: file_url},
        "error": json.loads(run.error) if run.error else None,
        "tags": run.tags,
    }
    if events is not None:
        out["statusHistory"] = [
            {"status": e["status"], "timeUtc": iso(e["at"]), "detail": e["detail"]} for e in events
        ]
    return out


def _communicator(spec: dict[str, Any]) -> str:
    backend = spec.get("distributed_backend") or (spec.get("distributed_training") or {}).get(
        "type"
    )
    names = {"mpi": "Mpi", "nccl": "Nccl", "gloo": "Gloo", "ps": "ParameterServer"}
    return names.get(backend or "", "None")


def _arguments(spec: dict[str, Any]) -> list[str]:
    return flatten_script_params(spec.get("script_params", {})) + flatten_arguments(
        spec.get("arguments", [])
    )


__all__ = [
    "RunConflict",
    "RunNotFound",
    "SnapshotError",
    "SpecError",
    "cancel",
    "details",
    "get",
    "iso",
    "new_upload_path",
    "submit",
]
