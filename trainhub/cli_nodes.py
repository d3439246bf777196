"""``trainhub node ...`` and ``trainhub target ...``: the admin verbs for GPU nodes and targets.

Two click groups; ``trainhub.cli`` adds them to the ``trainhub`` command."""

from __future__ import annotations

from typing import Any

import click

from trainhub.cli_common import client_call, emit_json


# Nodes and compute targets (admin) -------------------------------------------------------------
@click.group()
def node() -> None:
    """GPU servers reached over SSH (nothing to install on them but Docker)."""


def _node_line(n: dict[str, Any]) -> list[str]:
    facts = n.get("inventory") or {}
    gpus = facts.get("gpus") or []
    busy = len(n.get("allocatedGpus") or [])
    gpu_text = f"{len(gpus) - busy}/{len(gpus)} free" if gpus else "-"
    return [
        n["name"],
        n.get("host") or "(this server)",
        n["state"],
        gpu_text,
        str(facts.get("cpus") or "-"),
        str(len(n.get("runs") or [])),
    ]


@node.command("add")
@click.argument("name")
@click.option("--host", required=True, help="Address of the node.")
@click.option("--port", default=22, show_default=True, help="SSH port.")
@click.option("--user", required=True, help="SSH user.")
@click.option("--key", "key_path", required=True, help="Private key file, on the server's machine.")
@click.option(
    "--docker-socket",
    default="/var/run/docker.sock",
    show_default=True,
    help="Docker socket on the node.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def node_add(
    name: str, host: str, port: int, user: str, key_path: str, docker_socket: str, as_json: bool
) -> None:
    """Register NAME: the server connects, shows and pins its host key, and probes its inventory."""
    body = {
        "name": name,
        "host": host,
        "port": port,
        "user": user,
        "key_path": key_path,
        "docker_socket": docker_socket,
    }
    found = client_call(lambda ws: ws.client.json("POST", "/api/v1/nodes", json=body))
    if as_json:
        emit_json(found)
        return
    gpus = found["inventory"].get("gpus") or []
    click.echo(f"Added node {name} ({user}@{host}:{port}), state {found['state']}")
    click.echo(f"Pinned host key: {found['hostKey']}")
    click.echo(
        f"GPUs: {len(gpus)}"
        + (f" ({gpus[0]['name']})" if gpus else "")
        + f", CPUs: {found['inventory'].get('cpus')}, "
        f"Docker {found['inventory'].get('docker_version')}"
    )


@node.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def node_list(as_json: bool) -> None:
    """Nodes with their state, free GPUs and runs."""
    found = client_call(lambda ws: ws.client.json("GET", "/api/v1/nodes"))["nodes"]
    if as_json:
        emit_json(found)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("node", "host", "state", "GPUs", "CPUs", "runs")
    for n in found:
        table.add_row(*_node_line(n))
    Console().print(table)


@node.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def node_show(name: str, as_json: bool) -> None:
    """One node: inventory, pinned host key, allocated GPUs, runs."""
    found = client_call(lambda ws: ws.client.json("GET", f"/api/v1/nodes/{name}"))
    if as_json:
        emit_json(found)
        return
    facts = found.get("inventory") or {}
    click.echo(f"Node:      {found['name']} ({found.get('host') or 'this server'})")
    click.echo(
        f"State:     {found['state']}" + (f" ({found['error']})" if found.get("error") else "")
    )
    click.echo(
        f"Docker:    {facts.get('docker_version')} (GPU support: {'yes' if facts.get('gpu_support') else 'no'}{', hook ' + facts['nvidia_hook'] if facts.get('nvidia_hook') else ''}{', nvidia runtime' if facts.get('nvidia_runtime') else ''})"
    )
    click.echo(
        f"CPUs:      {facts.get('cpus')}, memory {round((facts.get('memory_bytes') or 0) / 2**30, 1)} GiB"
    )
    for gpu in facts.get("gpus") or []:
        used = "busy" if gpu["index"] in (found.get("allocatedGpus") or []) else "free"
        click.echo(
            f"GPU {gpu['index']}:     {gpu['name']} {gpu['memory_mib']} MiB {gpu['uuid']} ({used})"
        )
    if found.get("hostKey"):
        click.echo(f"Host key:  {found['hostKey']}")


def _node_action(name: str, action: str, as_json: bool) -> None:
    found = client_call(lambda ws: ws.client.json("POST", f"/api/v1/nodes/{name}/{action}"))
    if as_json:
        emit_json(found)
    else:
        click.echo(f"{name}: {found['state']}")


@node.command("drain")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def node_drain(name: str, as_json: bool) -> None:
    """No new runs on NAME; running ones finish."""
    _node_action(name, "drain", as_json)


@node.command("enable")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def node_enable(name: str, as_json: bool) -> None:
    """Take runs on NAME again (after drain or disable)."""
    _node_action(name, "enable", as_json)


@node.command("disable")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def node_disable(name: str, as_json: bool) -> None:
    """Take NAME out of service: no connection, no runs (enable undoes it)."""
    _node_action(name, "disable", as_json)


@node.command("trust")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def node_trust(name: str, as_json: bool) -> None:
    """Re-pin NAME's current host key (after checking it changed legitimately)."""
    _node_action(name, "trust", as_json)


@node.command("remove")
@click.argument("name")
def node_remove(name: str) -> None:
    """Forget NAME (refused while runs use it)."""
    client_call(lambda ws: ws.client.json("DELETE", f"/api/v1/nodes/{name}"))
    click.echo(f"removed {name}")


@click.group()
def target() -> None:
    """Compute targets: named groups of nodes (`compute_target` in the Estimator)."""


@target.command("create")
@click.argument("name")
@click.option("--kind", type=click.Choice(["nodes", "slurm"]), default="nodes", show_default=True)
@click.option("--nodes", help="Comma-separated node names (kind nodes).")
@click.option("--host", help="The Slurm cluster's login node (kind slurm).")
@click.option("--port", default=22, show_default=True, help="SSH port of the login node.")
@click.option("--user", help="SSH user on the login node (the jobs run as this user).")
@click.option("--key", "key_path", help="Private key file, on the server's machine.")
@click.option("--partition", help="Slurm partition the jobs go to.")
@click.option("--account", help="Slurm account to charge (sbatch --account).")
@click.option("--qos", help="Slurm quality of service (sbatch --qos).")
@click.option(
    "--work-dir",
    default="/shared/trainhub",
    show_default=True,
    help="Folder on the cluster's shared storage for run folders and environments.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def target_create(name: str, kind: str, nodes: str | None, as_json: bool, **slurm: Any) -> None:
    """Create or change compute target NAME: a group of SSH nodes, or (--kind slurm) a Slurm
    cluster reached through its login node, where Slurm schedules the runs."""
    if kind == "slurm":
        body = {"name": name, "kind": kind, **{k: v for k, v in slurm.items() if v is not None}}
    else:
        if not nodes:
            raise click.UsageError("--nodes is needed for a target of kind nodes")
        body = {"name": name, "nodes": [n.strip() for n in nodes.split(",") if n.strip()]}
    found = client_call(lambda ws: ws.client.json("POST", "/api/v1/targets", json=body))
    if as_json:
        emit_json(found)
    elif kind == "slurm":
        click.echo(
            f"target {found['name']}: Slurm partition {found['partition']} via "
            f"{found['user']}@{found['host']} (host key {found['hostKey']})"
        )
    else:
        click.echo(f"target {found['name']}: {', '.join(found['nodes'])}")


@target.command("remove")
@click.argument("name")
def target_remove(name: str) -> None:
    """Forget compute target NAME, not its nodes (refused while runs wait for it or use it)."""
    client_call(lambda ws: ws.client.json("DELETE", f"/api/v1/targets/{name}"))
    click.echo(f"removed target {name}")


@target.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def target_list(as_json: bool) -> None:
    """Compute targets and their nodes."""
    found = client_call(lambda ws: ws.client.json("GET", "/api/v1/targets"))["targets"]
    if as_json:
        emit_json(found)
        return
    for t in found:
        if t.get("kind") == "slurm":
            click.echo(f"{t['name']}: Slurm partition {t['partition']} via {t['host']}")
        else:
            click.echo(f"{t['name']}: {', '.join(t['nodes'])}")
