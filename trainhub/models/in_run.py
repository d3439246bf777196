"""Models a run's own script registers: ``Run.get_context().register_model(...)``.

The script has no route to the server: ``register_model`` appends a ``model`` record to the run's
records file, which comes in with its metrics (``RunControl.ingest`` reads the whole file each
time, so the requests are always complete). Once the run's ``./outputs`` are stored at its end,
each request goes through the same registry as a client's ``run.register_model``, in the name of
the run's submitter, the run as the model's lineage. Each outcome (the version taken, or why not)
is a line of the run's driver log and of the server's log: a bad request fails neither the run
nor the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainhub.runs.artifacts import DRIVER_LOG
from trainhub.runs.preparing import append_log
from trainhub.settings import Settings
from trainhub.spec import SpecError
from trainhub.store import Database
from trainhub.store import runs as q

log = logging.getLogger("trainhub.models")
MAX_REQUESTS = 100  # per run: a script looping over register_model stops here


@dataclass(frozen=True)
class Request:
    """One ``register_model`` call, as the script wrote it (checked when carried out)."""

    name: Any
    path: Any
    tags: Any
    properties: Any
    description: Any


def requests_in(lines: list[str]) -> list[Request]:
    """The ``model`` records among a run's records lines, in order."""
    found = []
    for line in lines:
        if '"model"' not in line:  # most lines are metrics: skip them unparsed
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("t") == "model":
            found.append(
                Request(
                    record.get("name"),
                    record.get("path"),
                    record.get("tags"),
                    record.get("properties"),
                    record.get("description"),
                )
            )
    return found


async def register_requested(
    settings: Settings, db: Database, run_id: str, requests: list[Request]
) -> None:
    """Carry out ``requests`` of the run, in order; the driver log tells how each went."""
    from trainhub.models import registry  # it builds on the runs service, which needs the launcher

    run = await db.read(lambda conn: q.get_run(conn, run_id))
    if run is None or not requests:
        return
    notes = []
    for index, request in enumerate(requests):
        label = f"model {request.name!r}" if isinstance(request.name, str) else "a model"
        if index >= MAX_REQUESTS:
            notes.append(
                f"trainhub: {len(requests) - index} more register_model calls were left out "
                f"(at most {MAX_REQUESTS} per run)"
            )
            break
        try:
            description = request.description
            if description is not None and not isinstance(description, str):
                raise SpecError("description", "A description is a string")
            row = await registry.register_run_output(
                settings,
                db,
                run,
                name=request.name,
                path=request.path,
                tags=request.tags,
                properties=request.properties,
                description=description,
                created_by=run.user,
            )
        except SpecError as exc:
            notes.append(f"trainhub: {label} was not registered: {exc.message}")
        except Exception as exc:  # noqa: BLE001 - a disk error, say: told, never fatal
            log.exception("run %s: registering %s failed", run_id, label)
            notes.append(f"trainhub: {label} was not registered: {exc}")
        else:
            notes.append(
                f"trainhub: registered model '{row.name}' version {row.version} from {row.path}"
            )
    for note in notes:
        log.info("run %s: %s", run_id, note.removeprefix("trainhub: "))
    await asyncio.to_thread(_append, settings.run_dir(run_id) / DRIVER_LOG, notes)


def _append(path: Path, notes: list[str]) -> None:
    """The notes on lines of their own, after whatever the script printed last."""
    text = "".join(f"{note}\n" for note in notes)
    with contextlib.suppress(OSError), path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) != b"\n":
            text = "\n" + text
    append_log(path, text)
