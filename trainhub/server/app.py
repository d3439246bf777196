"""The litestar app factory. The lifespan owns the background work (the launcher)."""

from __future__ import annotations

import asyncio
import logging
import sys
import tarfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import docker.errors
from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from trainhub import __version__
from trainhub.nodes.pool import NodePool
from trainhub.runs.launcher import Launcher
from trainhub.runtime.docker import DockerEngine
from trainhub.server.api.environments import EnvironmentsController
from trainhub.server.api.health import healthz
from trainhub.server.api.images import ImagesController
from trainhub.server.api.nodes import NodesController
from trainhub.server.api.runs import RunsController
from trainhub.server.auth import PUBLIC_PATHS, BearerTokenAuth
from trainhub.server.errors import EXCEPTION_HANDLERS
from trainhub.settings import MB, Settings
from trainhub.store import Database
from trainhub.store import runs as q

log = logging.getLogger("trainhub.server")


class EngineUnavailable(RuntimeError):
    pass


def check_python() -> None:
    """Artifacts are extracted with tarfile's extraction filters (PEP 706): Python >= 3.11.4."""
    if not hasattr(tarfile, "data_filter"):
        raise RuntimeError(
            f"trainhub's server needs Python >= 3.11.4 (tarfile extraction filters); this is "
            f"{sys.version.split()[0]}"
        )


def create_app(settings: Settings, db: Database | None = None) -> Litestar:
    check_python()
    database = db or Database(settings.db_path, settings.db_busy_seconds)
    instance = database.read_sync(q.instance_id)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=32, thread_name_prefix="trainhub-io")
        )
        try:
            engine = await asyncio.to_thread(DockerEngine)
            await asyncio.to_thread(engine.client.ping)
        except docker.errors.DockerException as exc:
            raise EngineUnavailable(
                f"Cannot reach the Docker engine ({exc}). Start dockerd, or point DOCKER_HOST at it."
            ) from None
        pool = NodePool(settings, database, engine)
        await pool.start()
        launcher = Launcher(settings, database, pool, instance)
        app.state.pool = pool
        app.state.launcher = launcher
        await launcher.start()
        try:
            yield
        finally:
            await launcher.stop()
            await pool.stop()
            engine.close()
            database.close()

    return Litestar(
        route_handlers=[
            healthz,
            RunsController,
            EnvironmentsController,
            ImagesController,
            NodesController,
        ],
        lifespan=[lifespan],
        state=State({"settings": settings, "db": database}),
        middleware=[DefineMiddleware(BearerTokenAuth, exclude=PUBLIC_PATHS)],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_snapshot_bytes + MB,
        openapi_config=OpenAPIConfig(
            title="trainhub",
            version=__version__,
            path="/schema",
            components=Components(
                security_schemes={"BearerToken": SecurityScheme(type="http", scheme="bearer")}
            ),
            security=[{"BearerToken": []}],
        ),
        debug=False,
    )
