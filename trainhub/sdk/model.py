"""``Model``: registered models, as Azure ML v1's ``azureml.core.Model``.

``run.register_model(...)`` registers a file or folder of a run's outputs (the server copies it),
``Model.register(ws, model_path, model_name)`` one from this machine (sent as a tar archive);
``Model(ws, name, version=None)`` finds one (the latest version without ``version``), and
``model.download(target_dir)`` brings its file or folder back, byte for byte.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import tarfile
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from trainhub.sdk.errors import RunNotFoundError, TrainhubError
from trainhub.sdk.workspace import Workspace

if TYPE_CHECKING:
    from trainhub.sdk.run import Run

PREFIX = "/api/v1/models"


class ModelNotFoundError(RunNotFoundError):
    """404: no model of that name (or no such version) on the server."""


class Model:
    """One version of a registered model: ``name``, ``version``, ``id`` (``name:version``),
    ``url`` (its page), ``tags``, ``properties``, ``description``, ``run_id``, ``created_time``."""

    def __init__(
        self,
        workspace: Workspace,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Azure ML's parameter name
        version: int | None = None,
        *,
        _details: dict[str, Any] | None = None,
    ) -> None:
        self.workspace = workspace
        if _details is None:
            if id is not None:
                name, _, given = id.partition(":")
                version = int(given) if given else version
            if not name:
                raise TrainhubError(
                    "Model(ws, name, version=None): name the model (or id='name:1')"
                )
            _details = _fetch(workspace, name, version)
        self._set(_details)

    def _set(self, details: dict[str, Any]) -> None:
        self._details = details
        self.name: str = details["name"]
        self.version: int = int(details["version"])
        self.id: str = details["id"]
        self.url: str = details["url"]
        self.tags: dict[str, str] = dict(details.get("tags") or {})
        self.properties: dict[str, str] = dict(details.get("properties") or {})
        self.description: str | None = details.get("description")
        self.run_id: str | None = details.get("runId")
        self.experiment_name: str | None = details.get("experiment")
        self.created_by: str | None = details.get("createdBy")
        self.created_time = datetime.fromisoformat(details["createdUtc"].replace("Z", "+00:00"))
        self.sha256: str = details["sha256"]
        self.size_bytes: int = int(details["sizeBytes"])

    # Registering --------------------------------------------------------------------------------
    @staticmethod
    def register(
        workspace: Workspace,
        model_path: str | os.PathLike[str],
        model_name: str,
        tags: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        description: str | None = None,
        **kwargs: Any,
    ) -> Model:
        """Register a file or folder of this machine as ``model_name``'s next version."""
        _refuse_unknown("Model.register", kwargs)
        source = Path(model_path)
        if not source.exists():
            raise TrainhubError(f"model_path '{model_path}' is neither a file nor a folder here")
        entry = source.resolve().name
        params: dict[str, str] = {"path": entry}
        if tags is not None:
            params["tags"] = json.dumps(tags)
        if properties is not None:
            params["properties"] = json.dumps(properties)
        if description is not None:
            params["description"] = description
        with tempfile.TemporaryFile() as archive:
            with tarfile.open(fileobj=archive, mode="w") as tar:
                tar.add(source, arcname=entry, filter=_plain_only)
            archive.seek(0)
            details = workspace.client.json(
                "POST",
                f"{PREFIX}/{quote(model_name, safe='')}",
                params=params,
                content=_chunks(archive),
                headers={"Content-Type": "application/x-tar"},
                timeout=None,
            )
        return Model(workspace, _details=details)

    @staticmethod
    def list(
        workspace: Workspace,
        name: str | None = None,
        tags: builtins.list[Any] | None = None,
        **kwargs: Any,
    ) -> builtins.list[Model]:
        """Model versions, newest first; ``tags`` as Azure ML took them: ``['key', ['key',
        'value']]`` (a key that is set, or set to that value)."""
        _refuse_unknown("Model.list", kwargs)
        wanted = []
        for tag in tags or []:
            if isinstance(tag, str):
                wanted.append(tag)
            else:
                key, value = tag
                wanted.append(f"{key}={value}")
        params: dict[str, Any] = {"limit": 1000}
        if name is not None:
            params["name"] = name
        if wanted:
            params["tag"] = wanted
        found = workspace.client.json("GET", PREFIX, params=params)["models"]
        return [Model(workspace, _details=d) for d in found]

    # Using ----------------------------------------------------------------------------------------
    def download(
        self, target_dir: str | os.PathLike[str] = ".", exist_ok: bool = False, **kwargs: Any
    ) -> str:
        """Download the model's file or folder into ``target_dir``; returns its path there.
        An existing file or folder of that name is refused unless ``exist_ok``."""
        _refuse_unknown("Model.download", kwargs)
        root = Path(target_dir).resolve()
        base = f"{self._path}/files"
        listed = self.workspace.client.json("GET", base)["files"]
        entry = listed[0]["path"].split("/")[0] if listed else None
        if entry is None:
            raise TrainhubError(f"Model {self.id} has no files")
        target = root / entry
        if target.exists() and not exist_ok:
            raise TrainhubError(
                f"{target} already exists: pass exist_ok=True to overwrite it, or another "
                "target_dir"
            )
        for item in listed:
            dest = (root / item["path"]).resolve()
            if not dest.is_relative_to(root):
                raise TrainhubError(f"refusing to write {item['path']} outside {root}")
            self.workspace.client.download(
                f"{base}/{quote(item['path'])}", dest, label=f"Downloading {item['path']}"
            )
        return str(target)

    def add_tags(self, tags: dict[str, Any]) -> None:
        self._change(tags={**self.tags, **tags})

    def remove_tags(self, tags: builtins.list[str]) -> None:
        self._change(tags={k: v for k, v in self.tags.items() if k not in tags})

    def update(self, tags: dict[str, Any] | None = None, description: str | None = None) -> None:
        """Replace the tags and/or the description (who registered it, or an admin)."""
        self._change(tags=tags, description=description)

    def delete(self) -> None:
        """Delete this version and its files (admins)."""
        self.workspace.client.json("DELETE", self._path)

    def serialize(self) -> dict[str, Any]:
        return dict(self._details)

    def _change(self, **values: Any) -> None:
        body = {k: v for k, v in values.items() if v is not None}
        self._set(self.workspace.client.json("PATCH", self._path, json=body))

    @property
    def _path(self) -> str:
        return f"{PREFIX}/{quote(self.name, safe='')}/versions/{self.version}"

    def __repr__(self) -> str:
        return (
            f"Model(workspace={self.workspace!r}, name={self.name}, id={self.id}, "
            f"version={self.version}, tags={self.tags}, properties={self.properties})"
        )


def register_from_run(
    run: Run,
    model_name: str,
    model_path: str,
    tags: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    description: str | None = None,
) -> Model:
    """``Run.register_model``: the server copies the run's file or folder ``model_path``."""
    workspace = run.experiment.workspace
    body = {
        "name": model_name,
        "path": model_path,
        "tags": tags,
        "properties": properties,
        "description": description,
    }
    details = workspace.client.json(
        "POST",
        f"/api/v1/runs/{quote(run.id, safe='')}/models",
        json={k: v for k, v in body.items() if v is not None},
    )
    return Model(workspace, _details=details)


def _fetch(workspace: Workspace, name: str, version: int | None) -> dict[str, Any]:
    path = f"{PREFIX}/{quote(name, safe='')}"
    if version is not None:
        path += f"/versions/{int(version)}"
    try:
        details: dict[str, Any] = workspace.client.json("GET", path)
    except RunNotFoundError as exc:
        raise ModelNotFoundError(exc.status, exc.message, exc.field) from None
    return details


def _plain_only(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Files and folders only: a link could point anywhere, and the server refuses them."""
    return info if info.isreg() or info.isdir() else None


def _chunks(fh: io.BufferedIOBase | Any, size: int = 1024 * 1024) -> Any:
    while block := fh.read(size):
        yield block


def _refuse_unknown(what: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        names = ", ".join(sorted(kwargs))
        raise TypeError(f"{what}: trainhub has no {names} (Azure ML parameters it does not take)")
