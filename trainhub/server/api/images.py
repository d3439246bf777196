"""``/api/v1/images``: environment images on the nodes, and pruning the unused ones."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import Parameter

from trainhub.runs.service import iso
from trainhub.store.lifecycle import ACTIVE
from trainhub.store import environments as env_store
from trainhub.store import runs as q


class ImagesController(Controller):
    path = "/api/v1/images"
    tags = ["images"]

    @get("/", summary="Environment images built by trainhub, with when a run last used each")
    async def list_images(self, state: State) -> dict[str, Any]:
        engine = state.launcher.engine
        present = {
            tag: img for img in await asyncio.to_thread(engine.env_images) for tag in img["tags"]
        }
        rows = await state.db.read(env_store.images)
        return {
            "images": [
                {
                    "image": row["image"],
                    "node": row["node"],
                    "baseImage": row["base_image"],
                    "present": row["image"] in present,
                    "size": present.get(row["image"], {}).get("size"),
                    "buildSeconds": row["build_seconds"],
                    "createdTimeUtc": iso(row["created_at"]),
                    "lastUsedTimeUtc": iso(row["last_used_at"]),
                }
                for row in rows
            ]
        }

    @post("/prune", status_code=200, summary="Remove environment images no run used for N days")
    async def prune(self, state: State, days: float = Parameter(ge=0)) -> dict[str, Any]:
        engine = state.launcher.engine
        cutoff = time.time() - days * 86400
        active = await state.db.read(lambda db: q.runs_with_status(db, ACTIVE))
        in_use = {r.image for r in active if r.image}
        removed, kept = [], []
        for row in await state.db.read(env_store.images):
            image = row["image"]
            if row["last_used_at"] >= cutoff or image in in_use:
                kept.append(image)
                continue
            await asyncio.to_thread(engine.remove_image, image)
            await state.db.write(lambda db, image=image: env_store.forget_image(db, image))
            removed.append(image)
        return {"removed": removed, "kept": kept}
