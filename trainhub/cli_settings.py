"""``trainhub settings``: every setting with its value, where the value came from and its help line.

It takes the same flags as ``trainhub serve`` and reads the same ``TRAINHUB_*`` variables, so
``trainhub settings`` run beside ``trainhub serve`` with the same flags shows what the server uses.
Secrets (tokens, passwords in index URLs) are masked. ``trainhub.cli`` adds it to ``trainhub``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from trainhub.cli_common import emit_json
from trainhub.settings import LOG_FORMATS, Settings


def register(group: click.Group) -> None:
    group.add_command(settings)


def server_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The flags of ``trainhub serve`` (each overrides its ``TRAINHUB_*`` variable)."""
    options = [
        click.option(
            "--host", default=None, help="Address to listen on [TRAINHUB_HOST, default 127.0.0.1]."
        ),
        click.option(
            "--port",
            type=int,
            default=None,
            help="Port to listen on [TRAINHUB_PORT, default 8000].",
        ),
        click.option(
            "--data",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Data folder [TRAINHUB_DATA, default ./trainhub-data].",
        ),
        click.option(
            "--log-format",
            type=click.Choice(LOG_FORMATS),
            default=None,
            help="Log lines on stdout: key=value or JSON [TRAINHUB_LOG_FORMAT, default logfmt].",
        ),
    ]
    return functools.reduce(lambda wrapped, option: option(wrapped), reversed(options), fn)


@click.command()
@server_flags
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def settings(
    host: str | None, port: int | None, data: Path | None, log_format: str | None, as_json: bool
) -> None:
    """Every setting of the server: value, source (flag, variable or default) and meaning.

    Takes the flags of `trainhub serve`; secrets are masked."""
    try:
        rows = Settings.explain(host=host, port=port, data=data, log_format=log_format)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json([{**row, "value": _json_value(row["value"])} for row in rows])
        return
    from rich.console import Console
    from rich.table import Column, Table

    table = Table(
        Column("variable", no_wrap=True),
        Column("value", overflow="fold"),
        Column("source", no_wrap=True),
        "meaning",
    )
    for row in rows:
        value = "(none)" if row["value"] is None else str(row["value"])
        table.add_row(row["variable"], value, row["source"], row["help"])
    Console().print(table)


def _json_value(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value
