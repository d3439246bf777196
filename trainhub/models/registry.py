"""Registering models: names, versions, who may do what, and the model's answer on the wire.

A name takes Azure ML's rule for model names (a letter or digit, then letters, digits, ``-``,
``_`` or ``.``; at most 255). Each registration of a name is its next version (1, 2, ...). The
files are copied out of the run (or the client's archive) into a staging folder first, with no
transaction open; the version is then taken and the folder renamed into place in one write, so
two registrations of one name at once get two versions. Members register from their own runs
and from their own machines; admins from any run; only admins delete a version.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlite_utils

from trainhub.accounts import User, require_admin, require_run_owner
from trainhub.datastores.registry import check_description
from trainhub.models import files
from trainhub.runs import service as runs
from trainhub.settings import Settings
from trainhub.spec import SpecError, check_tags
from trainhub.store import Database
from trainhub.store import models as store
from trainhub.store.models import ModelName, ModelRow
from trainhub.store.runs import RunRow

MAX_NAME = 255
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME - 1}}}")
MAX_LIST = 1000


class ModelNotFound(LookupError):
    """No model (or no such version, or no such file of it): HTTP 404."""


# Input ------------------------------------------------------------------------------------------
def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SpecError(
            "name",
            f"{name!r} cannot be a model name: 1 to {MAX_NAME} letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (Azure ML's rule)",
        )
    return name


def check_properties(value: object) -> dict[str, str]:
    try:
        return check_tags(value)
    except SpecError as exc:
        raise SpecError("properties", exc.message.replace("tags", "properties")) from None


def parse_tag_filter(raw: list[str]) -> list[tuple[str, str | None]]:
    """``key`` (the tag is set) or ``key=value``, as Azure ML's ``Model.list(tags=...)`` took."""
    return [(key, value if sep else None) for key, sep, value in (t.partition("=") for t in raw)]


# Registering ------------------------------------------------------------------------------------
async def register_from_run(
    settings: Settings,
    db: Database,
    user: User,
    run_id: str,
    *,
    name: str,
    path: str,
    tags: object = None,
    properties: object = None,
    description: str | None = None,
) -> ModelRow:
    run = await runs.get(db, run_id)
    require_run_owner(user, run_id, run.user, "register a model from")
    return await register_run_output(
        settings,
        db,
        run,
        name=name,
        path=path,
        tags=tags,
        properties=properties,
        description=description,
        created_by=user.name,
    )


async def register_run_output(
    settings: Settings,
    db: Database,
    run: RunRow,
    *,
    name: str,
    path: str,
    tags: object = None,
    properties: object = None,
    description: str | None = None,
    created_by: str | None,
) -> ModelRow:
    """The run's file or folder ``path`` as ``name``'s next version, the run as its lineage (who
    may ask is the caller's business: a client's user, or the run's own script)."""
    clean = _checked(name, tags, properties, description)
    relative, source = files.run_source(settings.run_dir(run.id), path)
    staging = await asyncio.to_thread(files.new_staging, settings.models_dir)
    try:
        staged = await asyncio.to_thread(files.copy_from_run, source, staging)
        return await _commit(
            settings,
            db,
            staged,
            **clean,
            path=relative,
            created_by=created_by,
            run_id=run.id,
            experiment=run.experiment,
        )
    finally:
        await asyncio.to_thread(files.discard, staging)


async def register_upload(
    settings: Settings,
    db: Database,
    user: User,
    body: AsyncIterator[bytes],
    *,
    name: str,
    path: str,
    tags: object = None,
    properties: object = None,
    description: str | None = None,
) -> ModelRow:
    """A model from a client: ``body`` is a tar of one file or folder called ``path``."""
    clean = _checked(name, tags, properties, description)
    entry = files.check_entry(path)
    runs.check_room(settings)
    staging = await asyncio.to_thread(files.new_staging, settings.models_dir)
    try:
        archive = staging.with_suffix(".tar")
        await files.receive(body, archive, settings.max_snapshot_bytes)
        staged = await asyncio.to_thread(
            files.extract_archive,
            archive,
            staging,
            entry,
            max_files=settings.max_snapshot_files,
            max_bytes=settings.max_snapshot_expanded_bytes,
        )
        return await _commit(
            settings,
            db,
            staged,
            **clean,
            path=entry,
            created_by=user.name,
            run_id=None,
            experiment=None,
        )
    finally:
        await asyncio.to_thread(files.discard, staging)
        await asyncio.to_thread(staging.with_suffix(".tar").unlink, missing_ok=True)


def _checked(name: str, tags: object, properties: object, description: str | None) -> Any:
    return {
        "name": check_name(name),
        "tags": check_tags(tags if tags is not None else {}),
        "properties": check_properties(properties if properties is not None else {}),
        "description": check_description(description),
    }


async def _commit(
    settings: Settings,
    db: Database,
    staged: files.Staged,
    *,
    name: str,
    tags: dict[str, str],
    properties: dict[str, str],
    description: str | None,
    path: str,
    created_by: str | None,
    run_id: str | None,
    experiment: str | None,
) -> ModelRow:
    """Take the next version and move the staged files to it, in one write: a failed rename
    rolls the row back."""

    def insert(conn: sqlite_utils.Database) -> ModelRow:
        version = store.next_version(conn, name)
        row = store.add_model(
            conn,
            name=name,
            version=version,
            path=path,
            entry=staged.entry,
            is_folder=staged.is_folder,
            size_bytes=staged.size_bytes,
            files=staged.files,
            sha256=staged.sha256,
            tags=tags,
            properties=properties,
            description=description,
            run_id=run_id,
            experiment=experiment,
            created_by=created_by,
        )
        target = settings.model_dir(name, version)
        shutil.rmtree(target, ignore_errors=True)  # left by a version deleted halfway
        target.mkdir(parents=True)
        os.rename(staged.folder / staged.entry, target / staged.entry)
        return row

    return await db.write(insert)


# Reading ----------------------------------------------------------------------------------------
async def get(db: Database, name: str, version: int | None = None) -> ModelRow:
    row = await db.read(lambda conn: store.get_model(conn, name, version))
    if row is None:
        which = f"'{name}'" + (f" version {version}" if version is not None else "")
        raise ModelNotFound(f"No model {which} is registered on this server")
    return row


async def list_versions(
    db: Database,
    *,
    name: str | None = None,
    tags: list[str] | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[ModelRow]:
    if not 1 <= limit <= MAX_LIST:
        raise SpecError("limit", f"limit is between 1 and {MAX_LIST}")
    wanted = parse_tag_filter(tags or [])
    return await db.read(
        lambda conn: store.list_models(conn, name=name, tags=wanted, before=before, limit=limit)
    )


async def list_names(db: Database, contains: str | None = None) -> list[ModelName]:
    return await db.read(lambda conn: store.list_names(conn, contains=contains))


async def versions(db: Database, name: str) -> list[ModelRow]:
    return await db.read(lambda conn: store.versions_of(conn, name))


def version_dir(settings: Settings, row: ModelRow) -> Path:
    return settings.model_dir(row.name, row.version)


async def file_list(settings: Settings, row: ModelRow) -> list[tuple[str, int]]:
    return await asyncio.to_thread(files.listing, version_dir(settings, row))


# Changing ---------------------------------------------------------------------------------------
async def update(
    db: Database,
    user: User,
    name: str,
    version: int,
    *,
    tags: object = None,
    description: str | None = None,
) -> ModelRow:
    """Replace a version's tags and/or description (who registered it, or an admin)."""
    row = await get(db, name, version)
    if not user.is_admin and row.created_by != user.name:
        require_admin(user, f"change model {row.id}, registered by {row.created_by}")
    clean_tags = check_tags(tags) if tags is not None else None
    text = check_description(description) if description is not None else None
    await db.write(
        lambda conn: store.update_model(
            conn,
            row.name,
            row.version,
            tags=clean_tags,
            description=(text or "") if description is not None else None,
        )
    )
    return await get(db, name, version)


async def remove(settings: Settings, db: Database, user: User, name: str, version: int) -> ModelRow:
    """Delete a version and its files (admins)."""
    require_admin(user, "delete a model version")
    row = await get(db, name, version)
    await db.write(lambda conn: store.remove_model(conn, row.name, row.version))
    await asyncio.to_thread(shutil.rmtree, version_dir(settings, row), True)
    return row


# On the wire ------------------------------------------------------------------------------------
def public(row: ModelRow, base_url: str) -> dict[str, Any]:
    """The model's JSON; ``url`` is its page on the dashboard, absolute."""
    return {
        "name": row.name,
        "version": row.version,
        "id": row.id,
        "path": row.path,
        "sizeBytes": row.size_bytes,
        "sha256": row.sha256,
        "files": row.files,
        "tags": row.tags,
        "properties": row.properties,
        "description": row.description,
        "runId": row.run_id,
        "experiment": row.experiment,
        "createdBy": row.created_by,
        "createdUtc": runs.iso(row.created_at),
        "url": f"{base_url.rstrip('/')}/models/{row.name}/{row.version}",
    }
