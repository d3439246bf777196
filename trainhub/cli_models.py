"""``trainhub models ...``: list registered models, show one version, download its file or
folder. ``trainhub.cli`` adds the group to the ``trainhub`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from trainhub.cli_common import client_call, emit_json


def register(group: click.Group) -> None:
    group.add_command(models)


@click.group()
def models() -> None:
    """Registered models: versions of a name, from a run's outputs or from a client."""


def _split(spec: str) -> tuple[str, int | None]:
    """``NAME`` (the latest version) or ``NAME:VERSION``."""
    name, sep, version = spec.partition(":")
    if sep and not version.isdigit():
        raise click.BadParameter(f"'{spec}' is NAME or NAME:VERSION (a number)")
    return name, int(version) if sep else None


@models.command("list")
@click.option("--name", default=None, help="Only versions of this model.")
@click.option("--tag", "tags", multiple=True, help="KEY or KEY=VALUE (repeat for more).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_list(name: str | None, tags: tuple[str, ...], as_json: bool) -> None:
    """Model versions, newest first."""
    params: dict[str, Any] = {"limit": 1000, "tag": list(tags)}
    if name:
        params["name"] = name
    found = client_call(lambda ws: ws.client.json("GET", "/api/v1/models", params=params))
    rows = found["models"]
    if as_json:
        emit_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("model", "version", "registered (UTC)", "by", "run", "tags")
    for m in rows:
        tag_text = ", ".join(f"{k}={v}" for k, v in sorted(m["tags"].items()))
        table.add_row(
            m["name"],
            str(m["version"]),
            m["createdUtc"],
            m["createdBy"] or "",
            m["runId"] or "(uploaded)",
            tag_text,
        )
    Console().print(table)


@models.command("show")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_show(model: str, as_json: bool) -> None:
    """One version: MODEL is NAME (the latest) or NAME:VERSION."""
    name, version = _split(model)

    def fetch(ws: Any) -> dict[str, Any]:
        from trainhub.sdk.model import Model

        return Model(ws, name, version=version).serialize()

    found = client_call(fetch)
    if as_json:
        emit_json(found)
        return
    click.echo(f"Model:       {found['id']}")
    click.echo(f"Registered:  {found['createdUtc']} by {found['createdBy']}")
    click.echo(f"From:        {found['path']}")
    click.echo(f"Size:        {found['sizeBytes']:,} bytes in {found['files']} file(s)")
    click.echo(f"SHA-256:     {found['sha256']}")
    if found["runId"]:
        click.echo(f"Run:         {found['runId']} (experiment {found['experiment']})")
    for key, value in sorted(found["tags"].items()):
        click.echo(f"Tag:         {key}={value}")
    if found.get("description"):
        click.echo(f"Description: {found['description']}")
    click.echo(f"Page:        {found['url']}")


@models.command("download")
@click.argument("model")
@click.option(
    "-o", "--output", "target", default=".", type=click.Path(file_okay=False), help="Folder."
)
@click.option("--overwrite", is_flag=True, help="Replace a file or folder of that name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_download(model: str, target: str, overwrite: bool, as_json: bool) -> None:
    """Download a model's file or folder: MODEL is NAME (the latest) or NAME:VERSION."""
    name, version = _split(model)

    def fetch(ws: Any) -> dict[str, Any]:
        from trainhub.sdk.model import Model

        found = Model(ws, name, version=version)
        path = found.download(Path(target), exist_ok=overwrite)
        return {"id": found.id, "path": path}

    done = client_call(fetch)
    if as_json:
        emit_json(done)
        return
    click.echo(f"Downloaded {done['id']} to {done['path']}")
