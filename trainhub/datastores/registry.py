"""Registering datastores: the rules for names, kinds and paths, and who may do what.

Admins register, change and remove datastores; everybody lists and reads them. Names follow Azure
ML's rule for datastore names (letters, digits and ``_``; case-insensitive, so ``MyData`` and
``mydata`` are one name). ``workspaceblobstore`` (kind ``server``) always exists: it is the
workspace's default, as in Azure ML, and cannot be removed. A ``shared`` datastore names a folder
the nodes already have (an NFS mount): one path for every node (``"*"``) and/or one per node.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
from pathlib import Path

import sqlite_utils

from trainhub.accounts import Forbidden, User, require_admin
from trainhub.settings import Settings
from trainhub.spec import SpecError
from trainhub.store import Database
from trainhub.store import datastores as store
from trainhub.store.datastores import DEFAULT, DatastoreKind, DatastoreRow

MAX_NAME = 255  # a folder name under the data folder (and part of an environment variable's name)
MAX_DESCRIPTION = 1000
MAX_PATHS = 64
MAX_PATH = 4096
_NAME = re.compile(rf"[A-Za-z0-9_]{{1,{MAX_NAME}}}")
_NODE = re.compile(r"[A-Za-z0-9_-]+")  # trainhub.nodes.service's rule for node names
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class DatastoreNotFound(LookupError):
    """No datastore of that name (HTTP 404)."""


class DatastoreExists(Exception):
    """A datastore of that name (in any case) is already registered (HTTP 409)."""


# Input ------------------------------------------------------------------------------------------
def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SpecError(
            "name",
            f"{name!r} cannot be a datastore name: 1 to {MAX_NAME} letters, digits or '_' "
            "(Azure ML's rule)",
        )
    return name


def check_kind(kind: str) -> DatastoreKind:
    try:
        return DatastoreKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in DatastoreKind)
        raise SpecError("kind", f"Unknown datastore kind {kind!r}: one of {known}") from None


def check_description(description: str | None) -> str | None:
    if description is None:
        return None
    text = description.strip()
    if len(text) > MAX_DESCRIPTION:
        raise SpecError(
            "description", f"A description is at most {MAX_DESCRIPTION} characters long"
        )
    return text or None


def check_paths(kind: DatastoreKind, paths: dict[str, str] | None) -> dict[str, str]:
    """A ``shared`` datastore's paths, normalised: absolute folders, keyed by node or ``"*"``."""
    paths = paths or {}
    if kind is DatastoreKind.SERVER:
        if paths:
            raise SpecError(
                "paths",
                "A server datastore's files live on the server (in its data folder): it takes "
                "no paths; a folder the nodes already have is a shared datastore",
            )
        return {}
    if not paths:
        raise SpecError(
            "paths",
            'A shared datastore needs the folder the nodes have: {"*": "/mnt/data"} for every '
            'node, and/or {"<node>": "/other/path"} for one node',
        )
    if len(paths) > MAX_PATHS:
        raise SpecError("paths", f"A shared datastore has at most {MAX_PATHS} paths")
    clean: dict[str, str] = {}
    for node, path in paths.items():
        field = f"paths.{node}"
        if node != "*" and not _NODE.fullmatch(node):
            raise SpecError(
                field,
                f"{node!r} is neither '*' (every node) nor a node name (letters, digits, -, _)",
            )
        if not isinstance(path, str) or not path.startswith("/"):
            raise SpecError(field, f"{path!r} is not an absolute path on the node")
        normal = posixpath.normpath(path)
        if (
            len(path) > MAX_PATH
            or _CONTROL.search(path)
            or ".." in path.split("/")
            or normal.startswith("//")
        ):
            raise SpecError(
                field,
                f"{path!r} is not a plain absolute path (no '..', at most {MAX_PATH} characters)",
            )
        if normal == "/":
            raise SpecError(field, "'/' is the node's whole file system, not a data folder")
        clean[node] = normal
    return clean


# Reading ----------------------------------------------------------------------------------------
def find(conn: sqlite_utils.Database, name: str) -> DatastoreRow | None:
    """The datastore called ``name``, in any case (Azure ML's names are case-insensitive)."""
    row = store.get_datastore(conn, name)
    if row is not None:
        return row
    folded = name.casefold()
    return next((r for r in store.list_datastores(conn) if r.name.casefold() == folded), None)


async def get(db: Database, name: str) -> DatastoreRow:
    row = await db.read(lambda conn: find(conn, name))
    if row is None:
        raise DatastoreNotFound(f"No datastore named '{name}'")
    return row


async def list_all(db: Database) -> list[DatastoreRow]:
    return await db.read(store.list_datastores)


def folder(settings: Settings, row: DatastoreRow) -> Path:
    """A ``server`` datastore's folder; a clear refusal for a ``shared`` one (no files here)."""
    if row.kind != DatastoreKind.SERVER:
        where = ", ".join(f"{node}: {path}" for node, path in row.paths.items())
        raise SpecError(
            "datastore",
            f"'{row.name}' is a shared datastore: its files are on the nodes ({where}), not on "
            "the server, so they are neither uploaded nor downloaded here",
        )
    return settings.datastore_dir(row.name)


def check_writable(row: DatastoreRow, user: User) -> None:
    """Members write to a datastore unless an admin made it read-only; admins always may."""
    if row.read_only and not user.is_admin:
        raise Forbidden(
            f"Datastore '{row.name}' is read-only: only an admin may write to it; "
            f"{user.name} is a {user.role}"
        )


# Changing (admins) ------------------------------------------------------------------------------
async def add(
    settings: Settings,
    db: Database,
    user: User,
    *,
    name: str,
    kind: str,
    paths: dict[str, str] | None = None,
    read_only: bool = False,
    description: str | None = None,
) -> DatastoreRow:
    require_admin(user, "register a datastore")
    clean_name = check_name(name)
    clean_kind = check_kind(kind)
    clean_paths = check_paths(clean_kind, paths)
    text = check_description(description)

    def insert(conn: sqlite_utils.Database) -> DatastoreRow:
        existing = find(conn, clean_name)
        if existing is not None:
            raise DatastoreExists(f"A datastore named '{existing.name}' is already registered")
        return store.add_datastore(
            conn,
            name=clean_name,
            kind=clean_kind.value,
            paths=clean_paths,
            read_only=read_only,
            description=text,
            created_by=user.name,
        )

    row = await db.write(insert)
    if row.kind == DatastoreKind.SERVER:
        await asyncio.to_thread(settings.datastore_dir(row.name).mkdir, parents=True, exist_ok=True)
    return row


async def update(
    db: Database,
    user: User,
    name: str,
    *,
    paths: dict[str, str] | None = None,
    read_only: bool | None = None,
    description: str | None = None,
) -> DatastoreRow:
    """Change what was given; the name and the kind stay (remove and add again to change them)."""
    require_admin(user, "change a datastore")
    row = await get(db, name)
    values: dict[str, object] = {}
    if paths is not None:
        values["paths"] = check_paths(DatastoreKind(row.kind), paths)
    if read_only is not None:
        values["read_only"] = read_only
    if description is not None:
        values["description"] = check_description(description)
    if values:
        await db.write(lambda conn: store.update_datastore(conn, row.name, **values))
    return await get(db, row.name)


async def remove(db: Database, user: User, name: str) -> DatastoreRow:
    """Forget a datastore. A server datastore's files stay in its folder (as Azure ML's
    ``unregister`` left the blob container): registering the name again finds them."""
    require_admin(user, "remove a datastore")
    row = await get(db, name)
    if row.name == DEFAULT:
        raise SpecError(
            "name", f"'{DEFAULT}' is the workspace's default datastore: it cannot be removed"
        )
    await db.write(lambda conn: store.remove_datastore(conn, row.name))
    return row
