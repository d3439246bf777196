"""The ``trainhub`` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from trainhub import (
    __version__,
    cli_backup,
    cli_datasets,
    cli_datastore,
    cli_gc,
    cli_models,
    cli_nodes,
    cli_settings,
    cli_sweeps,
    cli_users,
)
from trainhub.cli_common import client_call, client_command, emit_json, fail, workspace
from trainhub.logs import configure as configure_logs
from trainhub.settings import Settings

SHUTDOWN_GRACE_SECONDS = 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trainhub")
def main() -> None:
    """trainhub: Azure ML v1 Estimator runs on your own GPU servers."""


@main.command()
@cli_settings.server_flags
def serve(host: str | None, port: int | None, data: Path | None, log_format: str | None) -> None:
    """Start the server: API, launcher and run history in one process."""
    import uvicorn

    from trainhub.server.app import check_python, create_app
    from trainhub.store import Database
    from trainhub.store.tokens import add_token, admin_id, find_token, generate_token, has_admin

    try:
        check_python()
    except RuntimeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    settings = Settings.load(host=host, port=port, data=data, log_format=log_format)
    configure_logs(settings.log_format, settings.secrets())
    db = Database(settings.db_path, settings.db_busy_seconds)
    given = settings.admin_token
    if given and db.read_sync(lambda conn: find_token(conn, given)) is None:
        db.write_sync(
            lambda conn: add_token(conn, "admin", given, user_id=admin_id(conn), is_admin=True)
        )
    elif not db.read_sync(has_admin):
        token = generate_token()
        db.write_sync(
            lambda conn: add_token(conn, "admin", token, user_id=admin_id(conn), is_admin=True)
        )
        click.echo("Admin API token (shown once; only its hash is stored, keep it now):", err=True)
        click.echo(f"    {token}", err=True)
    click.echo(f"trainhub {__version__}: data in {settings.data.resolve()}", err=True)
    app = create_app(settings, db)
    # SIGTERM (docker stop, systemctl stop): stop accepting, give open requests (a client following
    # a log) a few seconds, then end the background work; runs keep running and the next start
    # re-attaches them. Well inside docker stop's 10 s before its SIGKILL.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )


@main.group()
def images() -> None:
    """Base images and environment images."""


@images.command("build-base")
@click.option(
    "--tag", default=None, help="Image tag [TRAINHUB_DEFAULT_IMAGE / TRAINHUB_DEFAULT_GPU_IMAGE]."
)
@click.option("--mirror", default=None, help="Debian mirror [TRAINHUB_DEBIAN_MIRROR].")
@click.option(
    "--gpu", is_flag=True, help="Build the GPU image from an NVIDIA CUDA base (needs a registry)."
)
@click.option(
    "--cuda-image", default=None, help="CUDA base for --gpu (e.g. a lab mirror of nvidia/cuda)."
)
@click.option("--force", is_flag=True, help="Rebuild even when the image is present.")
def build_base(
    tag: str | None, mirror: str | None, gpu: bool, cuda_image: str | None, force: bool
) -> None:
    """Build the default image locally: CPU from Debian packages (no registry needed), or --gpu."""
    import docker

    from trainhub.runtime.base_image import (
        CUDA_BASE,
        BaseImageError,
        build_base_image,
        build_gpu_base_image,
    )

    settings = Settings.load(debian_mirror=mirror)
    try:
        client = docker.from_env()
        if gpu:
            build_gpu_base_image(
                client,
                tag or settings.default_gpu_image,
                cuda_image or CUDA_BASE,
                force=force,
                log=lambda line: click.echo(line, err=True),
            )
        else:
            build_base_image(
                client,
                tag or settings.default_image,
                settings.debian_mirror,
                force=force,
                log=lambda line: click.echo(line, err=True),
            )
    except (BaseImageError, docker.errors.DockerException) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@images.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def images_list(as_json: bool) -> None:
    """Environment images the server built, with when a run last used each."""
    found = client_call(lambda ws: ws.client.json("GET", "/api/v1/images"))["images"]
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo(
            "No environment images yet: runs with pip_packages or conda_packages build them."
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("image", "node", "base", "size", "built in", "last used (UTC)")
    for img in found:
        size = f"{img['size'] / 2**20:.0f} MB" if img["size"] else "(gone)"
        built = f"{img['buildSeconds']:.1f} s" if img["buildSeconds"] else "-"
        table.add_row(
            img["image"], img["node"], img["baseImage"], size, built, img["lastUsedTimeUtc"]
        )
    Console().print(table)


@images.command("prune")
@click.option(
    "--days",
    type=float,
    default=30,
    show_default=True,
    help="Remove images no run used for this long.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def images_prune(days: float, as_json: bool) -> None:
    """Remove environment images that no run used for DAYS days from every node (never one in use)."""
    result = client_call(
        lambda ws: ws.client.json("POST", "/api/v1/images/prune", params={"days": days})
    )
    if as_json:
        emit_json(result)
        return
    for image in result["removed"]:
        click.echo(f"removed {image}")
    click.echo(f"{len(result['removed'])} removed, {len(result['kept'])} kept")
    unreachable = result.get("unreachableNodes") or []
    if unreachable:
        click.echo(f"not reachable now, pruned there later: {', '.join(unreachable)}", err=True)


@main.command()
@click.argument("url")
@click.option("--token", required=True, envvar="TRAINHUB_TOKEN", help="API token [TRAINHUB_TOKEN].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@client_command
def login(url: str, token: str, as_json: bool) -> None:
    """Check URL and TOKEN against the server and save them (~/.trainhub/config.json, mode 600)."""
    from trainhub.sdk.workspace import Workspace

    ws = Workspace(url, token)
    ws.client.json("GET", "/api/v1/runs", params={"limit": 1})
    path = ws.write_config()
    details = ws.get_details()
    if as_json:
        emit_json({**details, "config": str(path)})
    else:
        click.echo(f"Logged in to {ws.url} (trainhub {details['version']}); saved to {path}")


@main.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("--experiment", "-e", required=True, help="Experiment name.")
@click.option("--entry-script", required=True, help="Script to run, relative to SOURCE.")
@click.option("--compute-target", default="local", show_default=True, help="Compute target.")
@click.option("--image", default=None, help="custom_docker_image to run in.")
@click.option("--pip", "pip_packages", multiple=True, help="pip package to install (repeatable).")
@click.option("--env", "env_vars", multiple=True, help="Environment variable K=V (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Run tag K=V (repeatable).")
@click.option(
    "--max-run-duration", type=int, default=None, help="Stop the run after this many seconds."
)
@click.option("--priority", type=int, default=0, help="Higher runs first (default 0).")
@click.option("--gpu", "use_gpu", is_flag=True, help="use_gpu: one GPU per process.")
@click.option(
    "--node-count", type=click.IntRange(min=1), default=1, help="Nodes for an MPI run (default 1)."
)
@click.option(
    "--processes-per-node",
    type=click.IntRange(min=1),
    default=1,
    help="MPI processes per node (default 1): Mpi(process_count_per_node=N).",
)
@click.option(
    "--max-retries",
    type=click.IntRange(min=0),
    default=0,
    help="Queue the run again this many times if its node is lost (default 0).",
)
@click.option(
    "--wait", is_flag=True, help="Stream the log and wait for the end; exit 1 unless Completed."
)
@click.option("--json", "as_json", is_flag=True, help="Print the run's details as JSON.")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@client_command
def submit(
    source: str,
    experiment: str,
    entry_script: str,
    compute_target: str,
    image: str | None,
    pip_packages: tuple[str, ...],
    env_vars: tuple[str, ...],
    tags: tuple[str, ...],
    max_run_duration: int | None,
    priority: int,
    use_gpu: bool,
    node_count: int,
    processes_per_node: int,
    max_retries: int,
    wait: bool,
    as_json: bool,
    script_args: tuple[str, ...],
) -> None:
    """Submit SOURCE as a run: trainhub submit ./proj -e demo --entry-script train.py -- --lr 0.1"""
    from trainhub.sdk.errors import ActivityFailedException
    from trainhub.sdk.estimator import Estimator, Mpi
    from trainhub.sdk.run import Experiment

    distributed = node_count > 1 or processes_per_node > 1
    est = Estimator(
        source_directory=source,
        entry_script=entry_script,
        script_params=script_params_from_args(list(script_args)),
        compute_target=compute_target,
        custom_docker_image=image,
        pip_packages=list(pip_packages) or None,
        environment_variables=_pairs(env_vars, "--env"),
        max_run_duration_seconds=max_run_duration,
        use_gpu=use_gpu,
        node_count=node_count,
        distributed_training=Mpi(process_count_per_node=processes_per_node)
        if distributed
        else None,
    )
    run = Experiment(workspace(), experiment).submit(
        est, tags=_pairs(tags, "--tag") or None, priority=priority, max_retries=max_retries
    )
    if not wait:
        if as_json:
            emit_json(run.get_details())
        else:
            click.echo(
                f"Submitted {run.id} (run {run.number} of {experiment}); follow it with: trainhub logs {run.id} -f"
            )
            click.echo(f"Web View: {run.get_portal_url()}")
        return
    try:
        details = run.wait_for_completion(show_output=not as_json)
    except ActivityFailedException:
        if as_json:
            emit_json(run.get_details())
        sys.exit(1)
    if as_json:
        emit_json(details)


def script_params_from_args(args: list[str]) -> dict[str, str]:
    """``--lr 0.1 --verbose data.csv`` -> ``{"--lr": "0.1", "--verbose": "", "data.csv": ""}``:
    flattened back the Azure ML way, that is the same command line."""
    params: dict[str, str] = {}
    i = 0
    while i < len(args):
        key = args[i]
        value = ""
        if (
            key.startswith("-")
            and "=" not in key
            and i + 1 < len(args)
            and not args[i + 1].startswith("-")
        ):
            value = args[i + 1]
            i += 1
        if key in params:
            raise click.UsageError(
                f"'{key}' appears twice in the script arguments; use the SDK's script_params"
            )
        params[key] = value
        i += 1
    return params


def _pairs(items: tuple[str, ...], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{option} takes KEY=VALUE, got '{item}'")
        out[key] = value
    return out


@main.group()
def runs() -> None:
    """List, show and cancel runs."""


@runs.command("list")
@click.option("--experiment", "-e", default=None, help="Only this experiment.")
@click.option("--status", default=None, help="Only these statuses (comma-separated).")
@click.option("--limit", default=20, show_default=True, help="How many runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_command
def runs_list(experiment: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """Runs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if experiment:
        params["experiment"] = experiment
    if status:
        params["status"] = status
    page = workspace().client.json("GET", "/api/v1/runs", params=params)
    if as_json:
        emit_json(page["runs"])
        return
    if not page["runs"]:
        click.echo(
            "No runs yet. Submit one with: trainhub submit ./project -e NAME --entry-script train.py"
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("run id", "experiment", "#", "status", "started (UTC)", "ended (UTC)")
    for r in page["runs"]:
        table.add_row(
            r["runId"],
            r["experiment"],
            str(r["number"]),
            r["status"],
            r["startTimeUtc"] or "",
            r["endTimeUtc"] or "",
        )
    Console().print(table)


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_command
def runs_show(run_id: str, as_json: bool) -> None:
    """A run's details."""
    from trainhub.sdk.run import Experiment, Run

    ws = workspace()
    details = ws.client.json("GET", f"/api/v1/runs/{run_id}")
    if as_json:
        emit_json(details)
        return
    props = details["properties"]
    lines = [
        f"Run:         {details['runId']} (#{details['number']} of {details['experiment']})",
        f"Status:      {details['status']}",
        f"Target:      {details['target']}",
        f"Started:     {details['startTimeUtc'] or '-'}",
        f"Ended:       {details['endTimeUtc'] or '-'}",
        f"Script:      {details['runDefinition']['script']} {' '.join(details['runDefinition']['arguments'])}",
        f"Exit code:   {props['exitCode'] if props['exitCode'] is not None else '-'}",
        f"Web View:    {Run(Experiment(ws, details['experiment']), run_id, _details=details).get_portal_url()}",
    ]
    if details.get("tags"):
        lines.append("Tags:        " + ", ".join(f"{k}={v}" for k, v in details["tags"].items()))
    if details.get("error"):
        lines.append(f"Error:       {details['error']['message']}")
    click.echo("\n".join(lines))


@runs.command("cancel")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_command
def runs_cancel(run_id: str, as_json: bool) -> None:
    """Cancel a run (SIGTERM, then SIGKILL after the server's grace period)."""
    details = workspace().client.json("POST", f"/api/v1/runs/{run_id}/cancel")
    if as_json:
        emit_json(details)
    else:
        click.echo(f"{run_id}: {details['status']}")


@main.command()
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the run ends.")
@client_command
def logs(run_id: str, follow: bool) -> None:
    """Print a run's driver log."""
    client = workspace().client
    params = {"follow": "true"} if follow else {}
    with client.stream(
        "GET", f"/api/v1/runs/{run_id}/logs", params=params, timeout=None
    ) as response:
        for chunk in response.iter_bytes():
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()


@main.command()
@click.argument("run_id")
@click.argument("path", required=False)
@click.option(
    "--output", "-o", "output_dir", default=".", show_default=True, help="Folder to write into."
)
@click.option("--json", "as_json", is_flag=True, help="Print the written files as JSON.")
@client_command
def download(run_id: str, path: str | None, output_dir: str, as_json: bool) -> None:
    """Download a run's artifacts: all, one file (PATH), or a folder (PATH ending in /)."""
    from trainhub.sdk.run import Run

    run = Run.get(workspace(), run_id)
    names = run.get_file_names()
    if path and path in names:
        dest = (Path(output_dir) / path).resolve()
        run.download_file(path, dest)
        written = [str(dest)]
    else:
        if path and not any(n.startswith(path) for n in names):
            fail(
                Exception(
                    f"Run {run_id} has no file or folder '{path}' (it has: {', '.join(names) or 'nothing'})"
                )
            )
        written = run.download_files(prefix=path, output_directory=output_dir)
    if as_json:
        emit_json(written)
    else:
        for item in written:
            click.echo(item)


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_command
def metrics(run_id: str, as_json: bool) -> None:
    """The metrics a run logged with Run.get_context().log(...)."""
    values = workspace().client.json("GET", f"/api/v1/runs/{run_id}/metrics")["metrics"]
    if as_json:
        emit_json(values)
        return
    if not values:
        click.echo(f"{run_id} has logged no metrics (yet).")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("metric", "value")
    for name, value in values.items():
        table.add_row(name, json.dumps(value) if not isinstance(value, str) else value)
    Console().print(table)


main.add_command(cli_nodes.node)
main.add_command(cli_nodes.target)
cli_users.register(main)
cli_datastore.register(main)
cli_datasets.register(main)
cli_models.register(main)
cli_sweeps.register(main)
cli_settings.register(main)
cli_backup.register(main)
cli_gc.register(main)
