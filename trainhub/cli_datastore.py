"""``trainhub datastore ...``: list and show datastores, register and remove them (admins), and
upload and download the files of a ``server`` datastore, with progress bars. ``trainhub.cli``
adds the group to the ``trainhub`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from trainhub.cli_common import client_call, emit_json

DEFAULT = "workspaceblobstore"


def register(group: click.Group) -> None:
    group.add_command(datastore)


@click.group()
def datastore() -> None:
    """Datastores: named places for training data (a folder on the server, or one the nodes share)."""


def _where(d: dict[str, Any]) -> str:
    if d["kind"] == "server":
        return "(on the server)"
    return ", ".join(f"{node}: {path}" for node, path in sorted(d["paths"].items()))


@datastore.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def datastore_list(as_json: bool) -> None:
    """Every datastore: its kind, where its data is, whether it is read-only."""
    found = client_call(lambda ws: ws.client.json("GET", "/api/v1/datastores"))["datastores"]
    if as_json:
        emit_json(found)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("datastore", "kind", "where", "read-only", "description")
    for d in found:
        name = d["name"] + (" (default)" if d.get("isDefault") else "")
        table.add_row(
            name, d["kind"], _where(d), "yes" if d["readOnly"] else "", d.get("description") or ""
        )
    Console().print(table)


@datastore.command("show")
@click.argument("name")
@click.option("--files", "with_files", is_flag=True, help="List its files too (server kind).")
@click.option("--prefix", default="", help="With --files: only paths starting with this.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def datastore_show(name: str, with_files: bool, prefix: str, as_json: bool) -> None:
    """One datastore (and, with --files, the files under --prefix)."""

    def fetch(ws: Any) -> dict[str, Any]:
        found: dict[str, Any] = ws.client.json("GET", f"/api/v1/datastores/{name}")
        if with_files:
            listing = ws.client.json(
                "GET", f"/api/v1/datastores/{name}/files", params={"prefix": prefix}
            )
            found["files"] = listing["files"]
        return found

    found = client_call(fetch)
    if as_json:
        emit_json(found)
        return
    click.echo(f"Datastore:   {found['name']}" + (" (default)" if found["isDefault"] else ""))
    click.echo(f"Kind:        {found['kind']}")
    click.echo(f"Where:       {_where(found)}")
    click.echo(f"Read-only:   {'yes (members cannot write)' if found['readOnly'] else 'no'}")
    if found.get("description"):
        click.echo(f"Description: {found['description']}")
    for f in found.get("files", []):
        click.echo(f"{f['size']:>14,}  {f['modifiedUtc']}  {f['path']}")


@datastore.command("add")
@click.argument("name")
@click.option(
    "--shared",
    "shared_path",
    default=None,
    help="A folder every node has (an NFS mount): a shared datastore. Without it, a folder on the server.",
)
@click.option(
    "--node-path",
    "node_paths",
    multiple=True,
    metavar="NODE=PATH",
    help="Where a shared datastore is on one node, if not at --shared (repeatable).",
)
@click.option("--read-only", is_flag=True, help="Members may not write to it (admins may).")
@click.option("--description", default=None, help="What it holds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def datastore_add(
    name: str,
    shared_path: str | None,
    node_paths: tuple[str, ...],
    read_only: bool,
    description: str | None,
    as_json: bool,
) -> None:
    """Register datastore NAME (admins)."""
    paths = {**({"*": shared_path} if shared_path else {}), **_pairs(node_paths)}
    body = {
        "name": name,
        "kind": "shared" if paths else "server",
        "paths": paths,
        "readOnly": read_only,
        "description": description,
    }
    found = client_call(lambda ws: ws.client.json("POST", "/api/v1/datastores", json=body))
    if as_json:
        emit_json(found)
        return
    click.echo(f"Added {found['kind']} datastore {found['name']} {_where(found)}")


@datastore.command("update")
@click.argument("name")
@click.option(
    "--read-only/--writable", default=None, help="Whether members may write to it (admins may)."
)
@click.option("--description", default=None, help="What it holds.")
@click.option(
    "--node-path",
    "node_paths",
    multiple=True,
    metavar="NODE=PATH",
    help="A shared datastore's paths, replacing its current ones ('*=PATH' for every node).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def datastore_update(
    name: str,
    read_only: bool | None,
    description: str | None,
    node_paths: tuple[str, ...],
    as_json: bool,
) -> None:
    """Change datastore NAME (admins): read-only, description, a shared one's paths."""
    body: dict[str, Any] = {"readOnly": read_only, "description": description}
    if node_paths:
        body["paths"] = _pairs(node_paths)
    body = {k: v for k, v in body.items() if v is not None}
    found = client_call(lambda ws: ws.client.json("PATCH", f"/api/v1/datastores/{name}", json=body))
    if as_json:
        emit_json(found)
        return
    state = "read-only" if found["readOnly"] else "writable"
    click.echo(f"{found['name']}: {state}, {_where(found)}")


@datastore.command("remove")
@click.argument("name")
def datastore_remove(name: str) -> None:
    """Forget datastore NAME (admins); a server datastore's files stay on the server."""
    client_call(lambda ws: ws.client.json("DELETE", f"/api/v1/datastores/{name}"))
    click.echo(f"removed {name}")


@datastore.command("upload")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--datastore", "-d", "name", default=DEFAULT, show_default=True, help="Datastore.")
@click.option(
    "--target-path", "-t", default=None, help="Folder in the datastore (default: its root)."
)
@click.option("--overwrite", is_flag=True, help="Replace files that are there with other bytes.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
def datastore_upload(
    source: Path, name: str, target_path: str | None, overwrite: bool, as_json: bool
) -> None:
    """Upload SOURCE (a folder, or one file) into a server datastore. Files already there with
    the same bytes are skipped; a transfer that broke resumes where it stopped."""

    def run(ws: Any) -> Any:
        from trainhub.sdk.datastore import Datastore

        ds = Datastore.get(ws, name)
        if source.is_dir():
            return ds.upload_tree(source, target_path, overwrite, show_progress=not as_json)
        return ds.upload_list(
            [source], source.parent, target_path, overwrite, show_progress=not as_json
        )

    summary = client_call(run)
    _report("uploaded", name, target_path or "", summary.public(), as_json)


@datastore.command("download")
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
@click.option("--datastore", "-d", "name", default=DEFAULT, show_default=True, help="Datastore.")
@click.option("--prefix", "-p", default=None, help="Only the paths starting with this.")
@click.option("--overwrite", is_flag=True, help="Replace local files that have other bytes.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
def datastore_download(
    destination: Path, name: str, prefix: str | None, overwrite: bool, as_json: bool
) -> None:
    """Download a server datastore's files (under --prefix) into DESTINATION, at their paths in
    the datastore. Files already there with the same bytes are skipped."""

    def run(ws: Any) -> Any:
        from trainhub.sdk.datastore import Datastore

        ds = Datastore.get(ws, name)
        return ds.download_tree(destination, prefix, overwrite, show_progress=not as_json)

    summary = client_call(run)
    _report("downloaded", name, prefix or "", summary.public(), as_json)


def _report(verb: str, name: str, path: str, counts: dict[str, int], as_json: bool) -> None:
    if as_json:
        emit_json({"datastore": name, "path": path, **counts})
        return
    click.echo(
        f"{verb} {counts['transferred']} files ({counts['bytes']:,} bytes) "
        f"{'to' if verb == 'uploaded' else 'from'} {name}:{path or '/'}; "
        f"{counts['skipped']} already there, {counts['resumed']} resumed"
    )


def _pairs(items: tuple[str, ...]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        node, sep, path = item.partition("=")
        if not sep or not node:
            raise click.BadParameter(f"{item!r} is not NODE=PATH", param_hint="--node-path")
        pairs[node] = path
    return pairs
