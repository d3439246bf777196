"""``trainhub sweep ...``: submit a hyperparameter sweep from a YAML file, show it, its best child,
cancel it, change its limits while it runs. ``trainhub.cli`` adds the group to the ``trainhub``
command.

The YAML has ``HyperDriveConfig``'s fields (``hyperparameter_sampling``, ``primary_metric_name``,
``primary_metric_goal``, ``max_total_runs``, ``max_concurrent_runs``, ``max_duration_minutes``,
``policy``, ``resume_from``) beside the run config's (``entry_script``, ``script_params``,
``use_docker``, ...), or the run config under ``run_config``. A parameter's expression is Azure
ML's ``[kind, [arguments]]`` or, easier to type, ``{kind: [arguments]}`` (``{choice: [16, 32]}``).
It is checked here with the server's own rules, so a mistake is named before the upload.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from trainhub.cli_common import client_call, emit_json, fail


def register(group: click.Group) -> None:
    group.add_command(sweep)


@click.group()
def sweep() -> None:
    """Hyperparameter sweeps (HyperDrive): children of one run config with sampled values."""


def sweep_from_yaml(text: str) -> dict[str, Any]:
    """The sweep's wire format (what ``HyperDriveConfig.to_spec`` sends) from the YAML's text,
    checked with :func:`trainhub.hyperdrive.spec.sweep_from_data` (a ``SpecError`` names the
    field)."""
    import yaml

    from trainhub.hyperdrive.spec import SWEEP_FIELDS, sweep_from_data
    from trainhub.spec import SpecError

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError("config", f"The sweep file is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError("config", "The sweep file must be a mapping of fields")
    spec = {k: v for k, v in data.items() if k in SWEEP_FIELDS}
    flat = {k: v for k, v in data.items() if k not in SWEEP_FIELDS}
    if flat:
        if "run_config" in spec:
            name = sorted(map(str, flat))[0]
            raise SpecError(name, f"'{name}' belongs under run_config (or drop run_config)")
        spec["run_config"] = flat
    sampling = spec.get("hyperparameter_sampling")
    if isinstance(sampling, dict) and isinstance(sampling.get("parameter_space"), dict):
        space = sampling["parameter_space"]
        spec["hyperparameter_sampling"] = {
            **sampling,
            "parameter_space": {name: _expression(expr) for name, expr in space.items()},
        }
    sweep_from_data(spec)
    return spec


def _expression(expr: Any) -> Any:
    """``{choice: [a, b]}`` -> ``["choice", [[a, b]]]``; ``{uniform: [lo, hi]}`` ->
    ``["uniform", [lo, hi]]``; anything else as given (the server's check names it)."""
    if isinstance(expr, dict) and len(expr) == 1:
        ((kind, args),) = expr.items()
        if isinstance(args, list):
            return [kind, [args] if kind == "choice" else args]
    return expr


def _yaml_config(source: str, spec: dict[str, Any]) -> Any:
    """A ``HyperDriveConfig`` whose wire format is ``spec``: what ``Experiment.submit`` packs and
    sends (the snapshot of SOURCE uploaded only when the server lacks it)."""
    from trainhub.hyperdrive.runconfig import HyperDriveConfig

    class YamlSweep(HyperDriveConfig):
        def __init__(self) -> None:  # the fields are the YAML's, already checked
            self.primary_metric_name = spec["primary_metric_name"]

        @property
        def source_directory(self) -> str:
            return source

        def to_spec(self) -> dict[str, Any]:
            return spec

    return YamlSweep()


@sweep.command("submit")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The sweep as YAML: HyperDriveConfig's fields and the run config's.",
)
@click.option("--experiment", "-e", default="sweeps", show_default=True, help="Experiment name.")
@click.option("--priority", type=int, default=0, help="Higher runs first (default 0).")
@click.option("--json", "as_json", is_flag=True, help="Print the sweep as JSON.")
def sweep_submit(
    source: str, config_file: Path, experiment: str, priority: int, as_json: bool
) -> None:
    """Start a sweep over SOURCE: trainhub sweep submit ./proj --config sweep.yml"""
    from trainhub.spec import SpecError

    try:
        spec = sweep_from_yaml(config_file.read_text())
    except SpecError as exc:
        fail(Exception(f"{config_file}: {exc.field}: {exc.message}"))
    spec["run_config"].setdefault("source_directory", str(Path(source).resolve()))

    def submit(ws: Any) -> dict[str, Any]:
        from trainhub.sdk.run import Experiment

        run = Experiment(ws, experiment).submit(_yaml_config(source, spec), priority=priority)
        details: dict[str, Any] = ws.client.json("GET", f"/api/v1/sweeps/{run.id}")
        details["portalUrl"] = run.get_portal_url()
        return details

    details = client_call(submit)
    if as_json:
        emit_json(details)
        return
    limits = details["sweep"]
    click.echo(
        f"Submitted sweep {details['runId']} ({limits['maxTotalRuns']} children at most, "
        f"{limits['maxConcurrentRuns']} at a time); follow it with: "
        f"trainhub sweep show {details['runId']}"
    )
    click.echo(f"Web View: {details['portalUrl']}")


def _get(sweep_id: str) -> dict[str, Any]:
    found: dict[str, Any] = client_call(
        lambda ws: ws.client.json("GET", f"/api/v1/sweeps/{sweep_id}")
    )
    return found


@sweep.command("show")
@click.argument("sweep_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sweep_show(sweep_id: str, as_json: bool) -> None:
    """A sweep: status, limits, counts, and its children best first."""
    # Here, not at the top: ``trainhub.hyperdrive`` pulls in the SDK, which other commands skip.
    from trainhub.hyperdrive.ranking import ranked, why_stopped

    details = _get(sweep_id)
    if as_json:
        emit_json(details)
        return
    data = details["sweep"]
    counts = ", ".join(f"{v} {k}" for k, v in data["counts"].items() if k != "total")
    ended = f" ({data['endReason']})" if data["endReason"] else ""
    click.echo(f"Sweep:       {details['runId']} (experiment {details['experiment']})")
    click.echo(f"Status:      {details['status']}{ended}")
    click.echo(f"Goal:        {data['primaryMetricGoal']} {data['primaryMetricName']}")
    click.echo(
        f"Limits:      {data['maxTotalRuns']} children at most, {data['maxConcurrentRuns']} at a time"
    )
    click.echo(f"Children:    {data['counts']['total']}{f' ({counts})' if counts else ''}")
    if details.get("error"):
        click.echo(f"Error:       {details['error']['message']}")
    if not data["children"]:
        click.echo("No children yet: the sweep starts them within a second of its submission.")
        return
    from rich.console import Console
    from rich.table import Table

    names = sorted({name for c in data["children"] for name in c["hyperparameters"]})
    table = Table("child", "status", data["primaryMetricName"], *names, "why stopped")
    for child in ranked(data):
        metric = child["bestMetric"]
        table.add_row(
            child["runId"] + (" *" if child["runId"] == data["bestChildRunId"] else ""),
            child["status"],
            "-" if metric is None else f"{metric:.6g}",
            *(json.dumps(child["hyperparameters"].get(name)) for name in names),
            why_stopped(child),
        )
    Console(width=200).print(table)


@sweep.command("best")
@click.argument("sweep_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sweep_best(sweep_id: str, as_json: bool) -> None:
    """The child with the best primary metric, with its hyperparameters."""
    data = _get(sweep_id)["sweep"]
    best = next((c for c in data["children"] if c["runId"] == data["bestChildRunId"]), None)
    if as_json:
        emit_json(best)
        return
    if best is None:
        fail(Exception(f"No child of {sweep_id} has logged '{data['primaryMetricName']}' yet"))
    click.echo(f"Best:        {best['runId']} ({best['status']})")
    click.echo(
        f"{data['primaryMetricName']}: {best['bestMetric']:.6g} ({data['primaryMetricGoal']})"
    )
    for name, value in best["hyperparameters"].items():
        click.echo(f"  {name} = {json.dumps(value)}")


@sweep.command("cancel")
@click.argument("sweep_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sweep_cancel(sweep_id: str, as_json: bool) -> None:
    """Cancel a sweep and every child of it."""
    _get(sweep_id)  # a run id that is not a sweep is an error, not a run canceled
    details = client_call(lambda ws: ws.client.json("POST", f"/api/v1/runs/{sweep_id}/cancel"))
    if as_json:
        emit_json(details)
    else:
        click.echo(f"{sweep_id}: {details['status']} (its children with it)")


@sweep.command("set")
@click.argument("sweep_id")
@click.option(
    "--max-concurrent", type=int, default=None, help="Children queued or running at most."
)
@click.option("--max-total", type=int, default=None, help="Children in all at most.")
@click.option("--json", "as_json", is_flag=True, help="Print the sweep as JSON.")
def sweep_set(
    sweep_id: str, max_concurrent: int | None, max_total: int | None, as_json: bool
) -> None:
    """Change a running sweep's limits (trainhub's own: Azure ML fixes them at submission)."""
    data = {
        name: value
        for name, value in (("max_concurrent_runs", max_concurrent), ("max_total_runs", max_total))
        if value is not None
    }
    if not data:
        raise click.UsageError("Give --max-concurrent N and/or --max-total N")
    details = client_call(
        lambda ws: ws.client.json("PATCH", f"/api/v1/sweeps/{sweep_id}", json=data)
    )
    if as_json:
        emit_json(details)
        return
    limits = details["sweep"]
    click.echo(
        f"{sweep_id}: {limits['maxTotalRuns']} children at most, "
        f"{limits['maxConcurrentRuns']} at a time"
    )
