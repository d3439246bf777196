"""``trainhub backup`` and ``trainhub restore``: run on the server's machine, beside its data folder
(the server may be running), with a progress bar on stderr and ``--json`` for scripts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from trainhub.cli_common import emit_json, fail
from trainhub.settings import Settings

_DATA_HELP = "Data folder [TRAINHUB_DATA, default ./trainhub-data]."


class _Bar:
    """A rich progress bar over bytes, as :class:`trainhub.backup.Meter` wants it."""

    def __init__(self, progress: Any, what: str) -> None:
        self.progress = progress
        self.task = progress.add_task(what, total=None)

    def start(self, total_bytes: int) -> None:
        self.progress.update(self.task, total=total_bytes)

    def advance(self, nbytes: int) -> None:
        self.progress.advance(self.task, nbytes)


@contextmanager
def _meter(what: str, quiet: bool) -> Iterator[Any]:
    """A rich progress bar on stderr, or with ``--json`` none, and rich not even imported: its
    import is a good part of a backup with no change."""
    if quiet:
        from trainhub.backup import Quiet

        yield Quiet()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        yield _Bar(progress, what)


@click.command()
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--data", type=click.Path(file_okay=False, path_type=Path), default=None, help=_DATA_HELP
)
@click.option(
    "--full",
    is_flag=True,
    help="Walk the folders of finished runs too (taken from the previous backup otherwise): "
    "after a hand edit in one.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def backup(path: Path, data: Path | None, full: bool, as_json: bool) -> None:
    """Back up the data folder into PATH while the server runs (files stored once by content)."""
    from trainhub.backup import BackupError
    from trainhub.backup import backup as run_backup

    folder = Settings.load(data=data).data
    try:
        with _meter("backup", as_json) as meter:
            summary = run_backup(folder, path, meter, full=full)
    except (BackupError, OSError) as exc:
        fail(exc)
    if as_json:
        emit_json(asdict(summary))
        return
    click.echo(
        f"Backup {summary.backup} in {path}: {summary.files} files ({_mb(summary.bytes)}), "
        f"{summary.new_objects} new objects ({_mb(summary.new_bytes)}) in {summary.seconds:.1f} s"
    )
    if summary.skipped:
        click.echo(
            f"Not backed up (links, special or unreadable files): {len(summary.skipped)}", err=True
        )


@click.command()
@click.argument("path", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--backup", "name", default=None, help="Backup to restore [default: the latest].")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="Data folder to restore into: it must be empty or not exist yet.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def restore(path: Path, name: str | None, data: Path, as_json: bool) -> None:
    """Restore a backup from PATH into an empty data folder (every hash checked on the way)."""
    from trainhub.backup import BackupError
    from trainhub.restore import restore as run_restore

    try:
        with _meter("restore", as_json) as meter:
            summary = run_restore(path, data, name, meter)
    except (BackupError, OSError) as exc:
        fail(exc)
    if as_json:
        emit_json(asdict(summary))
        return
    click.echo(
        f"Restored {summary.backup} into {data}: {summary.files} files ({_mb(summary.bytes)}) "
        f"in {summary.seconds:.1f} s. Start the server with --data {data}."
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def register(main: click.Group) -> None:
    main.add_command(backup)
    main.add_command(restore)
