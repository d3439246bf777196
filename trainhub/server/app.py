"""The litestar app factory. The lifespan owns the background work (the launcher)."""

from __future__ import annotations

import asyncio
import logging
import sys
import tarfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.csrf import CSRFConfig
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.datastructures import MutableScopeHeaders, State
from litestar.middleware import DefineMiddleware
from litestar.middleware.session.client_side import CookieBackendConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.htmx import HTMXPlugin, HTMXRequest
from litestar.plugins.prometheus import PrometheusConfig
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import Message, Scope

from trainhub import __version__
from trainhub.accounts import LoginThrottle
from trainhub.hyperdrive.controller import SweepController
from trainhub.nodes.pool import NO_ENGINE, NodePool, connect_local_engine
from trainhub.nodes.telemetry import GpuTelemetry
from trainhub.prometheus import MetricsAccess
from trainhub.runs.interactive import Watchdog
from trainhub.runs.launcher import Launcher
from trainhub.runs.retention import DiskKeeper
from trainhub.server.api.accounts import AccountsController
from trainhub.server.api.datasets import DatasetsController
from trainhub.server.api.datastores import DatastoresController
from trainhub.server.api.disk import DiskController
from trainhub.server.api.environments import EnvironmentsController
from trainhub.server.api.health import healthz
from trainhub.server.api.images import ImagesController
from trainhub.server.api.interactive import InteractiveController
from trainhub.server.api.metrics import metrics
from trainhub.server.api.models import ModelsController
from trainhub.server.api.nodes import NodesController
from trainhub.server.api.runs import RunsController
from trainhub.server.api.sweeps import SweepsController
from trainhub.server.api.telemetry import TelemetryController
from trainhub.server.auth import PUBLIC_PATHS, Authenticate, is_api
from trainhub.server.errors import EXCEPTION_HANDLERS
from trainhub.server.pages import PAGE_CONTROLLERS
from trainhub.settings import MB, Settings
from trainhub.store import Database
from trainhub.store import runs as q
from trainhub.tensorboard.processes import TensorboardManager

log = logging.getLogger("trainhub.server")

# Pages allow scripts and styles from this server only: a name with <script> in it stays text,
# and an injected inline script would not run anyway. TensorBoard's own pages (proxied) keep theirs.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; frame-ancestors 'self'; base-uri 'self'; form-action 'self'"
)


# HTTP request counts and times for /metrics, by route (its path template, not every run's id).
HTTP_METRICS = PrometheusConfig(
    app_name="trainhub", prefix="trainhub_http", group_path=True, exclude=["^/metrics$"]
)


async def security_headers(message: Message, scope: Scope) -> None:
    if message["type"] != "http.response.start" or "/tensorboard" in scope.get("path", ""):
        return
    headers = MutableScopeHeaders.from_message(message)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    if not is_api(scope.get("path", "")):
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("Referrer-Policy", "same-origin")


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
    secret = bytes.fromhex(database.read_sync(q.session_secret))
    web = settings.web_root
    if not (web / "templates").is_dir() or not (web / "static").is_dir():
        raise RuntimeError(
            f"The dashboard's templates/ and static/ are not in {web}: set TRAINHUB_WEB_DIR"
        )
    session = CookieBackendConfig(
        secret=secret,
        key="trainhub_session",
        max_age=int(settings.session_hours * 3600),
        httponly=True,
        samesite="lax",
        exclude=["^/api/", "^/static/", "^/healthz$", "^/metrics$"],
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=32, thread_name_prefix="trainhub-io")
        )
        engine = await asyncio.to_thread(connect_local_engine)
        if engine is None:
            log.warning("no Docker engine answers: %s", NO_ENGINE)
        pool = NodePool(settings, database, engine)
        await pool.start()
        launcher = Launcher(settings, database, pool, instance)
        app.state.pool = pool
        app.state.launcher = launcher
        await launcher.start()
        sweeps = SweepController(database, launcher)  # hyperparameter sweeps' children
        app.state.sweeps = sweeps
        await sweeps.start()
        telemetry = GpuTelemetry(settings, database, pool)
        app.state.telemetry = telemetry  # the nodes page reads GPU values through it
        await telemetry.start()
        boards = TensorboardManager(settings, database)
        app.state.tensorboard = boards
        await boards.start()
        abandoned = Watchdog(settings, database)  # interactive runs whose client vanished
        await abandoned.start()
        disk = DiskKeeper(settings, database)  # runs' sizes, and retention (hourly)
        await disk.start()
        try:
            yield
        finally:
            await disk.stop()
            await abandoned.stop()
            await boards.stop()
            await telemetry.stop()
            await sweeps.stop()
            await launcher.stop()
            await pool.stop()
            if pool.local_engine is not None:  # the one of the start, or one that came later
                pool.local_engine.close()
            database.close()

    return Litestar(
        route_handlers=[
            healthz,
            metrics,
            AccountsController,
            RunsController,
            SweepsController,
            InteractiveController,
            EnvironmentsController,
            ImagesController,
            NodesController,
            TelemetryController,
            DatastoresController,
            ModelsController,
            DatasetsController,
            DiskController,
            *PAGE_CONTROLLERS,
            create_static_files_router(
                path="/static", directories=[web / "static"], include_in_schema=False
            ),
        ],
        lifespan=[lifespan],
        state=State(
            {
                "settings": settings,
                "db": database,
                "login_throttle": LoginThrottle(settings.login_attempts_per_minute),
                "metrics_access": MetricsAccess(settings),
            }
        ),
        middleware=[
            HTTP_METRICS.middleware,
            session.middleware,
            DefineMiddleware(Authenticate, exclude=PUBLIC_PATHS),
        ],
        csrf_config=CSRFConfig(
            secret=secret.hex(),
            cookie_name="trainhub_csrf",
            header_name="x-csrftoken",
            cookie_samesite="lax",
            # The API takes bearer tokens only (no cookie), and TensorBoard's own frontend POSTs
            # read-only queries with its X-XSRF-Protected header, not our token (the session
            # cookie is SameSite=Lax, so no other site's POST carries it anyway).
            exclude=["^/api/", "^/runs/[^/]+/tensorboard/", "^/tensorboard/"],
        ),
        template_config=TemplateConfig(directory=web / "templates", engine=JinjaTemplateEngine),
        plugins=[HTMXPlugin()],
        request_class=HTMXRequest,
        before_send=[security_headers],
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
        logging_config=None,  # trainhub.logs configures logging (structured lines on stdout)
        debug=False,
    )
