"""``trainhub datasets ...``: list registered datasets, show a name's version with its versions and
the runs that used it, download a file dataset's files. ``trainhub.cli`` adds the group to the
``trainhub`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from trainhub.cli_common import client_call, emit_json

PREFIX = "/api/v1/datasets"


def register(group: click.Group) -> None:
    group.add_command(datasets)


@click.group()
def datasets() -> None:
    """Registered datasets: versioned records over files of a datastore."""


def _paths(found: dict[str, Any]) -> str:
    return ", ".join(found["paths"])


@datasets.command("list")
@click.option("--contains", default=None, help="Only names containing this (any case).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def datasets_list(contains: str | None, as_json: bool) -> None:
    """Each registered name's latest version, the newest registration first."""
    params = {"contains": contains} if contains else {}
    found = client_call(lambda ws: ws.client.json("GET", PREFIX, params=params))["datasets"]
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo(
            "No dataset's name contains that." if contains else "No datasets are registered yet."
        )
        return
    from rich.console import Console
    from rich.table import Column, Table

    name = Column("dataset", overflow="fold")  # a name is folded, never cut short
    table = Table(name, "version", "kind", "datastore", "paths", "versions", "runs", "by")
    for d in found:
        table.add_row(
            d["name"],
            str(d["version"]),
            d["kind"],
            d["datastore"],
            _paths(d),
            str(d["versions"]),
            str(d["runs"]),
            d["createdBy"] or "",
        )
    Console().print(table)


@datasets.command("show")
@click.argument("name")
@click.option("--version", type=click.IntRange(min=1), default=None, help="Not the latest.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def datasets_show(name: str, version: int | None, as_json: bool) -> None:
    """One version of NAME (its latest by default), its versions and the runs that used it."""
    params = {"version": version} if version is not None else {}
    url = f"{PREFIX}/{quote(name, safe='')}"
    found = client_call(lambda ws: ws.client.json("GET", url, params=params))
    if as_json:
        emit_json(found)
        return
    click.echo(f"Dataset:     {found['name']} version {found['version']}")
    click.echo(f"Kind:        {found['kind']}")
    click.echo(f"Datastore:   {found['datastore']}")
    click.echo(f"Paths:       {_paths(found)}")
    for key, value in sorted(found["options"].items()):
        click.echo(f"Option:      {key}={value!r}")
    click.echo(f"Registered:  {found['createdUtc']} by {found['createdBy']}")
    if found.get("description"):
        click.echo(f"Description: {found['description']}")
    for key, value in sorted(found["tags"].items()):
        click.echo(f"Tag:         {key}={value}")
    click.echo(f"Id:          {found['id']}")
    click.echo(f"Versions:    {', '.join(str(v) for v in found['versions'])}")
    if found.get("url"):
        click.echo(f"Page:        {found['url']}")
    if not found["runs"]:
        click.echo("Runs:        none yet")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("run", "experiment", "status", "direction", "version", "name in the run")
    for use in found["runs"]:
        table.add_row(
            use["runId"],
            use["experiment"],
            use["status"],
            use["direction"],
            str(use["dataset"]["version"]),
            use["reference"],
        )
    Console().print(table)


@datasets.command("download")
@click.argument("name")
@click.argument("target", type=click.Path(file_okay=False))
@click.option("--version", type=click.IntRange(min=1), default=None, help="Not the latest.")
@click.option("--overwrite", is_flag=True, help="Replace local files that differ.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the files' local paths).")
def datasets_download(
    name: str, target: str, version: int | None, overwrite: bool, as_json: bool
) -> None:
    """Download a file dataset's files into TARGET, below their common folder (as a run sees
    them), each checked by its SHA-256; files already there unchanged are skipped."""

    def fetch(ws: Any) -> dict[str, Any]:
        from trainhub.sdk.dataset import Dataset, FileDataset
        from trainhub.sdk.errors import TrainhubError

        found = Dataset.get_by_name(ws, name, version=version or "latest")
        if not isinstance(found, FileDataset):
            raise TrainhubError(
                f"'{found.name}' is a tabular dataset: read it with "
                f"Dataset.get_by_name(ws, '{found.name}').to_pandas_dataframe()"
            )
        local = found.download(Path(target), overwrite=overwrite, show_progress=not as_json)
        return {"name": found.name, "version": found.version, "files": local}

    done = client_call(fetch)
    if as_json:
        emit_json(done)
        return
    count = len(done["files"])
    click.echo(
        f"Downloaded {done['name']} version {done['version']} "
        f"({count} file{'' if count == 1 else 's'}) to {target}"
    )
