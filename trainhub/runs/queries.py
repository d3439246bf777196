"""Run queries, and what people say about a run: Azure ML's ``get_runs`` filters, set-once
``add_properties``, ``remove_tags``, ``display_name`` and ``description``. No HTTP in here.

Properties are set once, as in Azure ML: a key keeps its first value (sending the same value again
is fine), so a property can be trusted to say what a run was (a dataset version, a commit); tags
are for what changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trainhub.accounts import User, require_run_owner
from trainhub.runs.artifacts import BUILD_LOG, DRIVER_LOG
from trainhub.runs.logview import rank_logs
from trainhub.runs.service import get
from trainhub.spec import MAX_TAG_KEY_CHARS, MAX_TAG_VALUE_CHARS, MAX_TAGS, SpecError
from trainhub.spec_errors import has_control_character, shown
from trainhub.store import Database
from trainhub.store import runs as q
from trainhub.store.runs import RunKind

MAX_PROPERTIES = MAX_TAGS
MAX_DISPLAY_NAME_CHARS = 256
MAX_DESCRIPTION_CHARS = 5000
# The names a run's details use for what trainhub itself says under ``properties``.
SYSTEM_PROPERTIES = frozenset(
    {
        "createdTimeUtc",
        "snapshotId",
        "snapshotUploaded",
        "node",
        "exitCode",
        "reason",
        "priority",
        "retries",
        "maxRetries",
        "waitReason",
        "allocation",
        "queuePosition",
    }
)
# ``kind`` filter values: trainhub's names and Azure ML's run type of a submitted script.
KINDS = {
    "script": RunKind.SCRIPT,
    "interactive": RunKind.INTERACTIVE,
    "azureml.scriptrun": RunKind.SCRIPT,
    "sweep": RunKind.SWEEP,
    "hyperdrive": RunKind.SWEEP,  # Azure ML's run type of a HyperDrive run
}


def parse_kind(raw: str | None) -> RunKind | None:
    if raw is None or raw == "":
        return None
    found = KINDS.get(raw.strip().lower())
    if found is None:
        raise SpecError(
            "kind",
            f"Unknown run kind {shown(raw)}: one of script, interactive, sweep "
            "(or Azure ML's azureml.scriptrun, hyperdrive); trainhub has no other kinds of run",
        )
    return found


def parse_key_filters(field: str, values: Iterable[str] | None) -> list[str]:
    """``key`` or ``key=value`` filters (``tag``, ``property``): a key is needed, within limits."""
    out = []
    for value in values or ():
        key = value.partition("=")[0]
        if not key:
            raise SpecError(field, f"{field}: {shown(value)} names no key (send key or key=value)")
        if len(key) > MAX_TAG_KEY_CHARS:
            raise SpecError(field, f"{field}: key longer than {MAX_TAG_KEY_CHARS} characters")
        out.append(value)
    return out


def check_properties(value: object, have: dict[str, Any]) -> dict[str, str]:
    """New properties: a JSON object of strings (numbers and true/false become strings), names
    trainhub does not use itself, within the tags' limits."""
    if not isinstance(value, dict) or not value:
        raise SpecError("properties", 'Send {"properties": {"key": "value", ...}} (at least one)')
    out: dict[str, str] = {}
    for key, raw in value.items():
        where = f"properties[{shown(key)}]"
        if not key:
            raise SpecError("properties", "properties: a key is empty")
        if len(key) > MAX_TAG_KEY_CHARS:
            raise SpecError(
                "properties", f"{where}: key longer than {MAX_TAG_KEY_CHARS} characters"
            )
        if key in SYSTEM_PROPERTIES:
            raise SpecError(
                "properties", f"{where}: trainhub sets this property itself; choose another name"
            )
        if isinstance(raw, (dict, list)) or raw is None:
            kind = "null" if raw is None else type(raw).__name__
            raise SpecError("properties", f"{where}: a property is a string, not {kind}")
        text = str(raw)
        if len(text) > MAX_TAG_VALUE_CHARS:
            raise SpecError(
                "properties", f"{where}: value longer than {MAX_TAG_VALUE_CHARS} characters"
            )
        out[key] = text
    if len({**have, **out}) > MAX_PROPERTIES:
        raise SpecError("properties", f"properties: at most {MAX_PROPERTIES} on a run")
    return out


async def add_properties(db: Database, run_id: str, value: object, user: User) -> dict[str, Any]:
    """Add properties to a run (its submitter or an admin); returns all of them. A key that
    already holds another value is refused, naming the key and the value it keeps."""
    run = await get(db, run_id)
    require_run_owner(user, run_id, run.user, "set properties of")
    new = check_properties(value, run.properties)
    try:
        merged: dict[str, Any] = await db.write(lambda conn: q.add_properties(conn, run_id, new))
    except q.PropertyAlreadySet as exc:
        raise SpecError(
            "properties",
            f"properties[{shown(exc.key)}] is already set to {shown(str(exc.value))} on run "
            f"{run_id}: a property is set once (use a tag for a value that changes)",
        ) from None
    return merged


async def remove_tags(db: Database, run_id: str, keys: object, user: User) -> dict[str, Any]:
    """Remove tags of a run (its submitter or an admin); returns the tags left."""
    run = await get(db, run_id)
    require_run_owner(user, run_id, run.user, "remove tags of")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise SpecError("key", "Name the tags to remove: ?key=a&key=b")
    left: dict[str, Any] = await db.write(lambda conn: q.remove_tags(conn, run_id, keys))
    return left


def check_text(field: str, value: object, limit: int, *, one_line: bool) -> str | None:
    """A display name (one line) or a description: a string within ``limit``; empty clears it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpecError(field, f"{field} must be a string (or null to clear it)")
    if len(value) > limit:
        raise SpecError(field, f"{field} is longer than {limit} characters ({len(value)})")
    if one_line and has_control_character(value):
        raise SpecError(field, f"{field} is one line: no line breaks or control characters")
    return value.strip() or None


async def describe(db: Database, run_id: str, data: object, user: User) -> q.RunRow:
    """Set a run's ``displayName`` and/or ``description`` (its submitter or an admin)."""
    run = await get(db, run_id)
    require_run_owner(user, run_id, run.user, "rename")
    if not isinstance(data, dict) or not data:
        raise SpecError(None, 'Send {"displayName": "...", "description": "..."} (either or both)')
    unknown = sorted(set(data) - {"displayName", "description"})
    if unknown:
        raise SpecError(
            unknown[0],
            f"Unknown field {shown(unknown[0])}: a run's displayName and description can change",
        )
    fields: dict[str, str | None] = {}
    if "displayName" in data:
        fields["display_name"] = check_text(
            "displayName", data["displayName"], MAX_DISPLAY_NAME_CHARS, one_line=True
        )
    if "description" in data:
        fields["description"] = check_text(
            "description", data["description"], MAX_DESCRIPTION_CHARS, one_line=False
        )
    await db.write(lambda conn: q.update_run(conn, run_id, **fields))
    return await get(db, run_id)


def log_files(run_dir: Path, run_id: str) -> dict[str, str]:
    """Azure ML's ``logFiles`` of one run: the logs the server writes (driver, environment build,
    one per MPI rank), each with its download address. The user's own ``./logs`` files are
    artifacts (``get_file_names``); ``get_all_logs`` downloads those too."""
    names = [DRIVER_LOG]
    if (run_dir / BUILD_LOG).is_file():
        names.append(BUILD_LOG)
    names += rank_logs(run_dir)
    return {name: f"/api/v1/runs/{run_id}/files/{name}" for name in names}
