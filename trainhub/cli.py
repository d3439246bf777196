"""The ``trainhub`` command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from trainhub import __version__
from trainhub.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trainhub")
def main() -> None:
    """trainhub: Azure ML v1 Estimator runs on your own GPU servers."""


@main.command()
@click.option(
    "--host", default=None, help="Address to listen on [TRAINHUB_HOST, default 127.0.0.1]."
)
@click.option(
    "--port", type=int, default=None, help="Port to listen on [TRAINHUB_PORT, default 8000]."
)
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data folder [TRAINHUB_DATA, default ./trainhub-data].",
)
def serve(host: str | None, port: int | None, data: Path | None) -> None:
    """Start the server: API, launcher and run history in one process."""
    import uvicorn

    from trainhub.server.app import check_python, create_app
    from trainhub.store import Database
    from trainhub.store.tokens import add_token, find_token, generate_token, has_admin

    try:
        check_python()
    except RuntimeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    settings = Settings.load(host=host, port=port, data=data)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    db = Database(settings.db_path)
    given = settings.admin_token
    if given and db.read_sync(lambda conn: find_token(conn, given)) is None:
        db.write_sync(lambda conn: add_token(conn, "admin", given, is_admin=True))
    elif not db.read_sync(has_admin):
        token = generate_token()
        db.write_sync(lambda conn: add_token(conn, "admin", token, is_admin=True))
        click.echo("Admin API token (shown once; only its hash is stored, keep it now):", err=True)
        click.echo(f"    {token}", err=True)
    click.echo(f"trainhub {__version__}: data in {settings.data.resolve()}", err=True)
    app = create_app(settings, db)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")


@main.group()
def images() -> None:
    """Base images and environment images."""


@images.command("build-base")
@click.option(
    "--tag", default=None, help="Image tag [TRAINHUB_DEFAULT_IMAGE, default trainhub/base:cpu]."
)
@click.option("--mirror", default=None, help="Debian mirror [TRAINHUB_DEBIAN_MIRROR].")
@click.option("--force", is_flag=True, help="Rebuild even when the image is present.")
def build_base(tag: str | None, mirror: str | None, force: bool) -> None:
    """Build the default CPU image locally from Debian packages (no registry needed)."""
    import docker

    from trainhub.runtime.base_image import BaseImageError, build_base_image

    settings = Settings.load(debian_mirror=mirror)
    try:
        client = docker.from_env()
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
