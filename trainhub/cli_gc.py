"""``trainhub gc``: apply retention and free unused snapshots and environment images.

By default it asks the running server (``POST /api/v1/gc``, an admin's token): the server's one
database writer and its node pool do the work while runs go on. ``--data DIR`` works on a data
folder directly while no server uses it (retention and snapshots; images need the server's nodes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from trainhub.cli_common import client_call, emit_json, fail
from trainhub.settings import Settings

_PARTS = (
    ("runOutputs", "outputs of runs past retention"),
    ("snapshots", "snapshots no run holds"),
    ("strayFiles", "stray snapshot files and abandoned uploads"),
    ("images", "environment images no run used"),
)


def _offline(data: Path, dry_run: bool) -> dict[str, Any]:
    import asyncio  # here, not at the top: it costs every trainhub command 30 ms

    from trainhub import gc
    from trainhub.store import Database

    settings = Settings.load(data=data)
    if not settings.db_path.is_file():
        raise click.ClickException(
            f"{settings.data} is not a trainhub data folder (no trainhub.db)"
        )
    db = Database(settings.db_path, settings.db_busy_seconds)
    try:
        report = asyncio.run(gc.collect(settings, db, None, dry_run=dry_run))
    finally:
        db.close()
    return report.to_json()


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from trainhub.runs.artifacts import human_size

    dry = report["dryRun"]
    table = Table(
        "what", "count", "bytes", title="gc (dry run: nothing was removed)" if dry else "gc"
    )
    for key, label in _PARTS:
        part = report.get(key)
        if part is None:
            table.add_row(label, "-", "not looked at (images need the server: no --data)")
            continue
        table.add_row(label, str(part["count"]), human_size(part["bytes"]))
    verb = "would free" if dry else "freed"
    table.add_row("total", "", f"{verb} {human_size(report['totalBytes'])}", style="bold")
    console = Console()
    console.print(table)
    if not report["retentionDays"]:
        console.print("Retention is off (TRAINHUB_RETENTION_DAYS=0): every run keeps its outputs.")
    if report.get("unreachableNodes"):
        nodes = ", ".join(report["unreachableNodes"])
        console.print(f"Not reachable now, their images are pruned later: {nodes}", style="yellow")


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Say what would be freed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--image-days",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    help="Remove environment images no run used for this many days.",
)
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Work on this data folder directly, while no server uses it (no images).",
)
def gc_command(dry_run: bool, as_json: bool, image_days: float, data: Path | None) -> None:
    """Apply retention (TRAINHUB_RETENTION_DAYS) and free snapshots and images nobody uses."""
    if data is not None:
        try:
            report = _offline(data, dry_run)
        except OSError as exc:
            fail(exc)
    else:
        params = {"dryRun": str(dry_run).lower(), "imageDays": image_days}
        report = client_call(lambda ws: ws.client.json("POST", "/api/v1/gc", params=params))
    if as_json:
        emit_json(report)
        return
    _print(report)


def register(main: click.Group) -> None:
    main.add_command(gc_command)
