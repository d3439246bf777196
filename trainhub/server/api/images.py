"""``/api/v1/images``: environment images on the nodes, and pruning the unused ones on every node."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import Parameter

from trainhub.nodes import images
from trainhub.runs.service import iso
from trainhub.server.auth import admin_only


class ImagesController(Controller):
    path = "/api/v1/images"
    tags = ["images"]

    @get("/", summary="Environment images built by trainhub, with when a run last used each")
    async def list_images(self, state: State) -> dict[str, Any]:
        found = await images.list_images(state.pool)
        return {
            "images": [
                {
                    "image": row["image"],
                    "node": row["node"],
                    "baseImage": row["base_image"],
                    "present": bool(row["present_on"]),
                    "presentOn": row["present_on"],
                    "size": row["size"],
                    "buildSeconds": row["build_seconds"],
                    "createdTimeUtc": iso(row["created_at"]),
                    "lastUsedTimeUtc": iso(row["last_used_at"]),
                }
                for row in found
            ]
        }

    @post(
        "/prune",
        status_code=200,
        summary="Remove environment images no run used for N days, on every node (admins)",
        guards=[admin_only],
    )
    async def prune(self, state: State, days: float = Parameter(ge=0)) -> dict[str, Any]:
        pruned = await images.prune(state.pool, days)
        return {
            "removed": pruned.removed,
            "kept": pruned.kept,
            "unreachableNodes": pruned.unreachable,
        }
