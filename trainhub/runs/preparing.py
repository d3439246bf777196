"""``Preparing``: get the image a run needs onto its node, building an environment image at most once.

An image is built once per node even when several runs ask at the same time (a lock per image tag);
every later run with the same environment finds it and goes on at once. The build's output goes to
the run's ``logs/build_log.txt`` as it happens. An environment with conda packages is solved and
installed on the server first (``runs/conda.py``, once per content), and its prefix goes into the
image through the build context: a remote node needs nothing else. A Dockerfile environment's
Dockerfile is built the same way (its ``FROM`` images present or pulled first), and its packages, if
any, on top of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from trainhub.runs import conda
from trainhub.runs import environment as envs
from trainhub.runs.artifacts import BUILD_LOG
from trainhub.runtime.docker import BuildError, DockerEngine, EngineError
from trainhub.settings import Settings
from trainhub.spec import EstimatorSpec, SpecError
from trainhub.spec_dockerfile import base_images
from trainhub.store import Database
from trainhub.store import environments as env_store
from trainhub.store import runs as q
from trainhub.store.lifecycle import EndReason


class PrepareFailed(Exception):
    def __init__(self, reason: EndReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ImagePreparer:
    def __init__(
        self, settings: Settings, db: Database, engine: DockerEngine, node: str = "local"
    ) -> None:
        self.settings = settings
        self.db = db
        self.engine = engine
        self.node = node
        self._locks: dict[str, asyncio.Lock] = {}
        self._pythons: dict[str, str | None] = {}  # image id -> its Python's X.Y

    def environment(self, run: q.RunRow, spec: EstimatorSpec) -> envs.Environment:
        return environment_of(self.settings, run, spec)

    async def image_for(self, run: q.RunRow, spec: EstimatorSpec) -> str:
        """The image to run ``run`` in, pulled or built as needed; raises :class:`PrepareFailed`."""
        env = await asyncio.to_thread(self.environment, run, spec)
        log_path = self.settings.run_dir(run.id) / BUILD_LOG
        if env.dockerfile is not None:
            env = await self._dockerfile_image(env, log_path)
        else:
            await self._ensure_base(env, spec, log_path)
        if not env.needs_build:
            return env.base_image
        request = conda_request(env)
        if env.dockerfile is not None:
            base_id: str | None = env.base_image  # its tag is its content's hash, on every node
        else:
            base_id = await asyncio.to_thread(self.engine.image_id, env.base_image)
        fingerprint = await asyncio.to_thread(envs.build_fingerprint, self.settings)
        key = env.key(base_id or env.base_image, fingerprint)

        async def context() -> bytes:
            prefix, python = await self._conda_prefix(env, request, log_path)
            try:
                return await asyncio.to_thread(
                    envs.build_context, env, key, self.settings, prefix, python
                )
            except ValueError as exc:
                raise PrepareFailed(EndReason.BUILD_FAILED, str(exc)) from None

        return await self._built_once(
            key,
            context,
            log_path,
            source=env.base_image,
            record=env.to_json() | {"registry": None},
        )

    async def _dockerfile_image(self, env: envs.Environment, log_path: Path) -> envs.Environment:
        """``env`` with its Dockerfile built (or found) on this node as its base image."""
        assert env.dockerfile is not None
        text = env.dockerfile
        ids: dict[str, str] = {}
        for base in base_images(text):
            ids[base.image] = await self._from_image(base.image, env.registry, log_path)
        key = envs.dockerfile_key(text, ids)

        async def context() -> bytes:
            return envs.dockerfile_context(text)

        tag = await self._built_once(
            key,
            context,
            log_path,
            source="the environment's Dockerfile",
            base=f"Dockerfile (FROM {', '.join(ids) or 'its own stages'})",
            record={"dockerfile": text, "from": ids},
        )
        return dataclasses.replace(env, base_image=tag)

    async def _built_once(
        self,
        key: str,
        context: Callable[[], Awaitable[bytes]],
        log_path: Path,
        *,
        source: str,
        record: dict[str, Any],
        base: str | None = None,
    ) -> str:
        """The image tagged by ``key`` on this node: found, or built once from ``context`` however
        many runs ask at the same time, and recorded for ``trainhub images`` (``base`` is what it
        shows as the base, ``source`` by default)."""
        tag = envs.image_tag(key)
        lock = self._locks.setdefault(tag, asyncio.Lock())
        async with lock:
            if await asyncio.to_thread(self.engine.image_present, tag):
                append_log(
                    log_path,
                    f"Environment image {tag} is present on node {self.node}: reused, no build.\n",
                )
                await self.db.write(lambda db: env_store.touch_image(db, tag))
                return tag
            append_log(
                log_path, f"Building environment image {tag} on node {self.node} from {source}\n"
            )
            started = time.monotonic()
            data = await context()
            try:
                await asyncio.to_thread(self._build, data, tag, log_path)
            except BuildError as exc:
                raise PrepareFailed(
                    EndReason.BUILD_FAILED,
                    f"The environment build failed on node {self.node}:\n{exc}",
                ) from None
            seconds = time.monotonic() - started
            append_log(log_path, f"Built {tag} in {seconds:.1f} s\n")
            await self.db.write(
                lambda db: env_store.record_image(
                    db,
                    image=tag,
                    env_key=key,
                    base_image=base or source,
                    node=self.node,
                    environment=record,
                    build_seconds=seconds,
                )
            )
        return tag

    async def _conda_prefix(
        self, env: envs.Environment, request: conda.Request | None, log_path: Path
    ) -> tuple[conda.Prefix | None, str | None]:
        """The environment's conda prefix, built on the server if needed, and the base image's
        Python version when the prefix has no Python of its own (its packages are for that one)."""
        if request is None:
            return None, None
        prefix = await built_prefix(self.settings, request, log_path)
        if prefix.has_python:
            return prefix, None
        image_id = await asyncio.to_thread(self.engine.image_id, env.base_image) or ""
        if image_id not in self._pythons:
            self._pythons[image_id] = await asyncio.to_thread(
                self.engine.python_version, env.base_image
            )
        python = self._pythons[image_id]
        if python is None:
            raise PrepareFailed(
                EndReason.BUILD_FAILED,
                f"The conda environment has no Python and the image {env.base_image} has none either",
            )
        return prefix, python

    def _build(self, context: bytes, tag: str, log_path: Path) -> None:
        with log_path.open("a", encoding="utf-8") as sink:
            self.engine.build(context, tag, sink)

    async def _ensure_base(
        self, env: envs.Environment, spec: EstimatorSpec, log_path: Path
    ) -> None:
        image = env.base_image
        if await asyncio.to_thread(self.engine.image_present, image):
            return
        if not spec.image:
            command = "trainhub images build-base" + (" --gpu" if spec.use_gpu else "")
            raise PrepareFailed(
                EndReason.IMAGE_MISSING,
                f"The default image {image} is not on this node's Docker engine. Build it once with `{command}`.",
            )
        try:
            await self._pull(image, env.registry, log_path)
        except EngineError as exc:
            raise PrepareFailed(
                EndReason.IMAGE_MISSING, f"The image {image} is not on node {self.node} and {exc}"
            ) from None

    async def _from_image(self, image: str, registry: dict[str, Any] | None, log_path: Path) -> str:
        """The id of an image a Dockerfile starts ``FROM``, pulled first if this node lacks it."""
        found = await asyncio.to_thread(self.engine.image_id, image)
        if found is not None:
            return found
        try:
            await self._pull(image, registry, log_path)
        except EngineError as exc:
            raise PrepareFailed(
                EndReason.IMAGE_MISSING,
                f"The Dockerfile starts FROM {image}, which is not on node {self.node}, and {exc}. "
                "A node without a registry it can reach needs the image loaded onto it "
                f"(docker save {image} | docker load, on each node) or a Dockerfile FROM an image "
                f"every node has, such as {self.settings.default_image}.",
            ) from None
        return await asyncio.to_thread(self.engine.image_id, image) or image

    async def _pull(self, image: str, registry: dict[str, Any] | None, log_path: Path) -> None:
        append_log(log_path, f"Pulling {image}\n")
        try:
            await asyncio.to_thread(self.engine.pull, image, registry)
        except EngineError as exc:
            append_log(log_path, f"{exc}\n")
            raise
        append_log(log_path, f"Pulled {image}\n")


def conda_request(env: envs.Environment) -> conda.Request | None:
    """``env.conda``, with a bad conda environment file failing the run (it was checked at
    submit, but a registered environment may still hold one)."""
    try:
        return env.conda
    except SpecError as exc:
        raise PrepareFailed(EndReason.BUILD_FAILED, exc.message) from None


async def built_prefix(settings: Settings, request: conda.Request, log_path: Path) -> conda.Prefix:
    """The conda prefix of ``request`` (built now if needed), or the run fails at ``Preparing``
    with the solver's or installer's message."""
    try:
        return await conda.ensure_prefix(settings, request, log_path)
    except conda.CondaFailed as exc:
        raise PrepareFailed(EndReason.BUILD_FAILED, str(exc)) from None


def environment_of(settings: Settings, run: q.RunRow, spec: EstimatorSpec) -> envs.Environment:
    """The environment a run asks for, with its pip/conda files read from the snapshot."""
    assert run.snapshot is not None
    names = [n for n in (spec.pip_requirements_file, spec.conda_dependencies_file) if n]
    files = envs.read_dependency_files(settings.snapshot_path(run.snapshot), names)
    return envs.from_spec(spec, settings, files)


def append_log(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text)
