"""Creating, registering and finding datasets, and what a run's reference to one becomes.

A dataset is a record over paths of one datastore: a kind (``file``, or ``tabular`` with the options
its delimited files are read with), its paths, and for a registered one a name and a version.
Registering a name again with other data makes its next version when ``create_new_version`` is
given (Azure ML's rule: otherwise a 409); registering the same data again answers the version that
has it. A dataset a run uses without a name is saved once per definition (Azure ML's "saved
dataset"), so every run's data has a record and a page. Members create and register datasets;
everyone reads them.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from trainhub.accounts import User
from trainhub.datasets import paths
from trainhub.datasets.paths import Selection
from trainhub.datastores import files
from trainhub.datastores import registry as datastores
from trainhub.datastores.registry import DatastoreNotFound, check_description
from trainhub.settings import Settings
from trainhub.spec import SpecError, check_tags
from trainhub.spec_datarefs import DataReference, DatasetInput
from trainhub.store import Database
from trainhub.store import datasets as store
from trainhub.store.datasets import KINDS, DatasetName, DatasetRow, DatasetUse
from trainhub.store.datastores import DatastoreKind, DatastoreRow

MAX_NAME = 250
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9 ._-]{{0,{MAX_NAME - 1}}}")
# A tabular dataset's reading options and their defaults (Azure ML's from_delimited_files).
TABULAR_OPTIONS: dict[str, Any] = {"separator": ",", "header": True, "encoding": "utf8"}
ENCODINGS = ("utf8", "iso88591", "latin1", "ascii", "utf16", "utf32", "utf8bom", "windows1252")
MAX_LISTED = 10_000


class DatasetNotFound(LookupError):
    """No dataset of that name, version or id (HTTP 404)."""


class DatasetExists(Exception):
    """The name is registered with other data and no new version was asked for (HTTP 409)."""


# Input ------------------------------------------------------------------------------------------
def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name != name.strip():
        raise SpecError(
            "name",
            f"{name!r} cannot be a dataset name: 1 to {MAX_NAME} letters, digits, spaces, '-', "
            "'_' or '.', starting with a letter or digit",
        )
    return name


def check_kind(kind: object) -> str:
    if kind not in KINDS:
        raise SpecError("kind", f"Unknown dataset kind {kind!r}: one of {', '.join(KINDS)}")
    return str(kind)


def check_options(kind: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """A tabular dataset's options with their defaults filled in; a file dataset has none."""
    given = dict(options or {})
    if kind == "file":
        if given:
            raise SpecError("options", "a file dataset takes no reading options")
        return {}
    unknown = sorted(set(given) - set(TABULAR_OPTIONS))
    if unknown:
        known = ", ".join(TABULAR_OPTIONS)
        raise SpecError("options", f"unknown option(s) {unknown}: a tabular dataset has {known}")
    chosen = {**TABULAR_OPTIONS, **given}
    separator = chosen["separator"]
    if not isinstance(separator, str) or len(separator) != 1 or separator in '\r\n"':
        raise SpecError("options.separator", f"{separator!r}: the separator is one character")
    if not isinstance(chosen["header"], bool):
        raise SpecError(
            "options.header", "header is true (the first line names the columns) or false"
        )
    encoding = str(chosen["encoding"]).lower().replace("-", "").replace("_", "")
    if encoding not in ENCODINGS:
        raise SpecError(
            "options.encoding", f"{chosen['encoding']!r}: one of {', '.join(ENCODINGS)}"
        )
    return {**chosen, "encoding": encoding}


def check_paths(raw: object) -> list[str]:
    if not isinstance(raw, list) or not raw:
        raise SpecError("paths", "a dataset has one or more paths in its datastore")
    if len(raw) > paths.MAX_PATHS:
        raise SpecError("paths", f"a dataset has at most {paths.MAX_PATHS} paths")
    cleaned: list[str] = []
    for index, path in enumerate(raw):
        clean = paths.clean_pattern(path, f"paths[{index}]")
        if clean not in cleaned:
            cleaned.append(clean)
    return cleaned


def selection(settings: Settings, datastore: DatastoreRow, chosen: list[str]) -> Selection:
    """The dataset's base folder and patterns. A ``shared`` datastore's files are on the nodes,
    not here: its datasets are whole folders (``folder`` or ``folder/**``), which a run mounts as
    they are."""
    if datastore.kind == DatastoreKind.SERVER:
        return paths.server_selection(settings.datastore_dir(datastore.name), chosen)
    found = paths.selection(chosen, lambda _: True)
    if not found.whole_folder:
        raise SpecError(
            "paths",
            f"datastore '{datastore.name}' is shared (its files are on the nodes): a dataset of it "
            "is one whole folder ('folder' or 'folder/**'), not files picked by a pattern",
        )
    return found


def _matches(settings: Settings, datastore: DatastoreRow, chosen: Selection) -> list[str]:
    """The dataset's files (paths in the datastore), at most ``MAX_LISTED`` + 1."""
    root = settings.datastore_dir(datastore.name)
    out: list[str] = []
    for relative, _ in paths.matched(root, chosen):
        out.append(relative)
        if len(out) > MAX_LISTED:
            break
    return out


# Creating and registering -----------------------------------------------------------------------
async def create(
    settings: Settings,
    db: Database,
    user: User,
    *,
    kind: object,
    datastore: object,
    paths_given: object,
    options: dict[str, Any] | None = None,
    name: object = None,
    description: str | None = None,
    tags: object = None,
    create_new_version: bool = False,
) -> tuple[DatasetRow, bool]:
    """A dataset over ``paths_given`` of ``datastore``: registered under ``name`` (its next version,
    or the version that already has this data), or saved unnamed. Answers (row, created)."""
    kind = check_kind(kind)
    chosen_options = check_options(kind, options)
    chosen = check_paths(paths_given)
    if not isinstance(datastore, str) or not datastore:
        raise SpecError("datastore", "name the datastore the dataset's paths are in")
    try:
        row = await datastores.get(db, datastore)
    except DatastoreNotFound:
        raise SpecError(
            "datastore", f"there is no datastore '{datastore}' on this server"
        ) from None
    found = selection(settings, row, chosen)
    if row.kind == DatastoreKind.SERVER:
        matched = await asyncio.to_thread(_matches, settings, row, found)
        if not matched:
            shown = ", ".join(chosen)
            raise SpecError(
                "paths", f"no file of datastore '{row.name}' matches {shown}: upload the data first"
            )
    clean_name = check_name(name) if name is not None else None
    clean_tags = check_tags(tags) if tags is not None else {}
    clean_description = check_description(description)
    definition = store.definition_key(kind, row.name, chosen, chosen_options)

    def write(conn: Any) -> tuple[DatasetRow, bool]:
        if clean_name is None:
            saved = store.find_saved(conn, definition)
            if saved is not None:
                return saved, False
        else:
            latest = store.get_by_name(conn, clean_name)
            if latest is not None and latest.definition == definition:
                return latest, False
            if latest is not None and not create_new_version:
                raise DatasetExists(
                    f"a dataset named '{latest.name}' is registered (version {latest.version}) "
                    "with other data: register with create_new_version=True for a new version"
                )
        added = store.add_dataset(
            conn,
            dataset_id=uuid.uuid4().hex,
            name=clean_name,
            kind=kind,
            datastore=row.name,
            paths=chosen,
            options=chosen_options,
            description=clean_description,
            tags=clean_tags,
            created_by=user.name,
        )
        return added, True

    return await db.write(write)


async def get_by_id(db: Database, dataset_id: str) -> DatasetRow:
    row = await db.read(lambda conn: store.get_by_id(conn, dataset_id))
    if row is None:
        raise DatasetNotFound(f"No dataset with id '{dataset_id}'")
    return row


async def get_by_name(db: Database, name: str, version: int | None = None) -> DatasetRow:
    row = await db.read(lambda conn: store.get_by_name(conn, name, version))
    if row is None:
        which = f"'{name}'" + (f" version {version}" if version is not None else "")
        raise DatasetNotFound(f"No dataset {which} is registered on this server")
    return row


async def list_names(db: Database, contains: str | None = None) -> list[DatasetName]:
    return await db.read(lambda conn: store.list_names(conn, contains=contains))


async def versions(db: Database, name: str) -> list[DatasetRow]:
    found = await db.read(lambda conn: store.versions_of(conn, name))
    if not found:
        raise DatasetNotFound(f"No dataset '{name}' is registered on this server")
    return found


async def uses_of_name(db: Database, name: str) -> list[DatasetUse]:
    return await db.read(lambda conn: store.uses_of_name(conn, name))


async def uses_of_run(db: Database, run_id: str) -> list[DatasetUse]:
    return await db.read(lambda conn: store.uses_of_run(conn, run_id))


async def files_of(
    settings: Settings, db: Database, row: DatasetRow
) -> tuple[Selection, list[files.StoredFile]]:
    """The dataset's files as they are now, with their sizes and checksums (a ``server``
    datastore's; a shared one's files are on the nodes)."""
    datastore = await datastores.get(db, row.datastore)
    root = datastores.folder(settings, datastore)
    chosen = selection(settings, datastore, row.paths)

    def listed() -> list[files.StoredFile]:
        out = []
        for relative, st in paths.matched(root, chosen):
            digest = files.sha256_of(root, relative, st)
            out.append(files.StoredFile(relative, st.st_size, digest, st.st_mtime))
            if len(out) >= MAX_LISTED:
                break
        return out

    return chosen, await asyncio.to_thread(listed)


# Runs -------------------------------------------------------------------------------------------
async def resolve(
    settings: Settings, db: Database, ref: DataReference, where: str
) -> DataReference:
    """A run's reference to a dataset (``{"dataset": {"id": ...}}``) filled in from its record:
    the datastore, the base folder, the patterns and what the run is told of it."""
    assert ref.dataset is not None
    field = where.split("[", 1)[0]
    row = await db.read(lambda conn: store.get_by_id(conn, ref.dataset.id if ref.dataset else ""))
    if row is None:
        raise SpecError(field, f"{where}: there is no dataset with id '{ref.dataset.id}'")
    try:
        datastore = await datastores.get(db, row.datastore)
    except DatastoreNotFound:
        raise SpecError(
            field, f"{where}: dataset {row.label} is in datastore '{row.datastore}', removed since"
        ) from None
    chosen = selection(settings, datastore, row.paths)
    info = DatasetInput(
        id=row.id,
        name=row.name,
        version=row.version,
        kind=row.kind,
        patterns=[] if chosen.whole_folder else list(chosen.patterns),
        options=row.options,
    )
    return msgspec.structs.replace(ref, datastore=datastore.name, path=chosen.base, dataset=info)


async def record_inputs(db: Database, run_id: str, refs: list[DataReference]) -> None:
    uses = [r for r in refs if r.dataset is not None and r.mode != "upload"]
    if not uses:
        return

    def write(conn: Any) -> None:
        for ref in uses:
            assert ref.dataset is not None
            store.record_use(conn, run_id, ref.ref_name, ref.dataset.id, "input", ref.mode)

    await db.write(write)


async def register_output(
    db: Database, run_id: str, ref: DataReference, folder: str, user: str | None
) -> DatasetRow:
    """An ``OutputFileDatasetConfig(...).register_on_complete(name)``: the folder the run uploaded
    into, as the next version of ``name`` (or the version holding just that folder), with the run
    as its origin."""
    name = check_name(ref.register_as)
    chosen = [f"{folder}/**" if folder else "**"]
    definition = store.definition_key("file", ref.datastore, chosen, {})

    def write(conn: Any) -> DatasetRow:
        latest = store.get_by_name(conn, name)
        if latest is not None and latest.definition == definition:
            row = latest
        else:
            row = store.add_dataset(
                conn,
                dataset_id=uuid.uuid4().hex,
                name=name,
                kind="file",
                datastore=ref.datastore,
                paths=chosen,
                options={},
                description=f"written by run {run_id}",
                created_by=user,
            )
        store.record_use(conn, run_id, ref.ref_name, row.id, "output", ref.mode)
        return row

    return await db.write(write)


# Answers ----------------------------------------------------------------------------------------
def public(row: DatasetRow, base_url: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "version": row.version,
        "kind": row.kind,
        "datastore": row.datastore,
        "paths": row.paths,
        "options": row.options,
        "description": row.description,
        "tags": row.tags,
        "createdBy": row.created_by,
        "createdUtc": _iso(row.created_at),
    }
    if base_url and row.name:
        out["url"] = f"{base_url.rstrip('/')}/datasets/{row.name}?version={row.version}"
    return out


def public_use(use: DatasetUse) -> dict[str, Any]:
    return {
        "runId": use.run_id,
        "experiment": use.experiment,
        "status": use.status,
        "reference": use.reference,
        "direction": use.direction,
        "mode": use.mode,
        "dataset": {"id": use.dataset.id, "name": use.dataset.name, "version": use.dataset.version},
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
