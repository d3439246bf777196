"""Environment images on the nodes: which are present where, and pruning the unused ones on every node.

An environment image's tag is the hash of what it holds, so the same tag may be built on several nodes
(each node of a multi-node run builds its own). Listing and pruning therefore look at every node the
pool can reach now, ``local`` and each remote node through its forwarded engine. An image is never
removed while a run that is not finished uses it, nor while a container on that node still uses it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from typing import Any

import docker.errors

from trainhub.nodes.pool import LOCAL, NodePool, NodeUnavailable
from trainhub.runtime.docker import DockerEngine
from trainhub.store import environments as env_store
from trainhub.store import nodes as node_store
from trainhub.store import runs as q
from trainhub.store.lifecycle import ACTIVE

SECONDS_PER_DAY = 86400


@dataclass
class _Nodes:
    """The engines of the nodes reachable now, the environment images on each, and the others."""

    engines: dict[str, DockerEngine] = field(default_factory=dict)
    images: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    unreachable: list[str] = field(default_factory=list)


async def _reachable(pool: NodePool) -> _Nodes:
    found = _Nodes()
    names = [LOCAL] + [r.name for r in await pool.db.read(node_store.list_nodes)]
    for name in names:
        try:
            found.engines[name] = pool.engine(name)
        except NodeUnavailable:
            found.unreachable.append(name)
    listed = await asyncio.gather(
        *(asyncio.to_thread(engine.env_images) for engine in found.engines.values()),
        return_exceptions=True,
    )
    for name, images in zip(list(found.engines), listed, strict=True):
        if isinstance(images, BaseException):  # the node went away in between
            del found.engines[name]
            found.unreachable.append(name)
            continue
        found.images[name] = {tag: img for img in images for tag in img["tags"]}
    return found


async def list_images(pool: NodePool) -> list[dict[str, Any]]:
    """Every environment image trainhub built, where it is present now and when a run last used it."""
    nodes = await _reachable(pool)
    rows = await pool.db.read(env_store.images)
    out = []
    for row in rows:
        where = [name for name, images in nodes.images.items() if row["image"] in images]
        # The size on the node that built it, else on any node that has it.
        first = row["node"] if row["node"] in where else (where[0] if where else None)
        size = nodes.images[first][row["image"]].get("size") if first else None
        out.append({**row, "present_on": where, "size": size})
    return out


@dataclass
class Pruned:
    removed: list[str]
    kept: list[str]
    unreachable: list[str]
    bytes: int = 0  # the removed images' sizes as the engines report them, summed over nodes


async def prune(
    pool: NodePool, days: float, *, now: float | None = None, dry_run: bool = False
) -> Pruned:
    """Remove the environment images no run used for ``days`` days from every node that has them.

    Kept: an image used within the period, one a run that is not finished uses, and one a container
    on a node still uses (the engine refuses). While a node is unreachable its copy cannot be
    removed: the image's record stays, so a later prune removes it there too. ``dry_run`` removes
    nothing and says what would go (an image a container holds would be kept after all).
    """
    cutoff = (time.time() if now is None else now) - days * SECONDS_PER_DAY
    active = await pool.db.read(lambda db: q.runs_with_status(db, ACTIVE))
    in_use = {r.image for r in active if r.image}
    nodes = await _reachable(pool)
    removed, kept, freed = [], [], 0
    for row in await pool.db.read(env_store.images):
        image = row["image"]
        if row["last_used_at"] >= cutoff or image in in_use:
            kept.append(image)
            continue
        holders = [name for name, images in nodes.images.items() if image in images]
        size = sum(nodes.images[name][image].get("size") or 0 for name in holders)
        if dry_run:
            removed.append(image)
            freed += size
            continue
        results = await asyncio.gather(*(_remove(nodes.engines[name], image) for name in holders))
        if not all(results):
            kept.append(image)
            continue
        if not nodes.unreachable:
            await pool.db.write(functools.partial(env_store.forget_image, image=image))
        removed.append(image)
        freed += size
    return Pruned(removed, kept, nodes.unreachable, freed)


async def _remove(engine: DockerEngine, image: str) -> bool:
    """Remove ``image`` from one engine; False when a container there still uses it."""
    try:
        await asyncio.to_thread(engine.remove_image, image)
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            return False
        raise
    return True
