"""Submit a run from the browser: the Estimator's fields as a form, the source folder as a
``.tar.gz`` (chosen as a file, or a folder packed in the browser by ``static/submit.js``).

The form goes through ``service.submit`` exactly as the API's multipart submit does; a problem is
shown beside the field it concerns, with everything typed kept.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.datastructures import State, UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Redirect, Response, Template

from trainhub.runs import service
from trainhub.runs.artifacts import CHUNK, SnapshotError
from trainhub.spec import SpecError
from trainhub.store import environments
from trainhub.store import experiments as ex
from trainhub.store import nodes as node_store

ROWS = 3  # empty rows offered for script parameters and tags

# Where a problem with a spec field is shown on the form.
FIELD_OF = {
    "distributed_training": "node_count",
    "distributed_training.process_count_per_node": "process_count_per_node",
    "distributed_training.type": "node_count",
    "snapshot": "source",
    "snapshot_id": "source",
    "environment_definition": "environment",
    "custom_docker_image": "environment",
    "environment_variables": "environment",
}
FORM_FIELDS = {
    "experiment",
    "source",
    "entry_script",
    "script_params",
    "pip_packages",
    "conda_packages",
    "compute_target",
    "node_count",
    "process_count_per_node",
    "use_gpu",
    "environment",
    "tags",
}


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if isinstance(value, list):
        value = value[-1] if value else ""
    return value.strip() if isinstance(value, str) else ""


def _texts(data: dict[str, Any], name: str) -> list[str]:
    value = data.get(name)
    items = value if isinstance(value, list) else [value]
    return [v if isinstance(v, str) else "" for v in items if v is not None]


def _pairs(data: dict[str, Any], keys: str, values: str) -> list[tuple[str, str]]:
    """Rows of a key/value table (``param_name`` beside ``param_value``)."""
    names, texts = _texts(data, keys), _texts(data, values)
    texts += [""] * (len(names) - len(texts))
    return [(k.strip(), v.strip()) for k, v in zip(names, texts, strict=False)]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def form_values(data: dict[str, Any]) -> dict[str, Any]:
    """What was typed, to build the spec from and to show again."""
    return {
        "experiment": _text(data, "experiment"),
        "entry_script": _text(data, "entry_script"),
        "params": [p for p in _pairs(data, "param_name", "param_value") if p[0] or p[1]],
        "pip_packages": _text(data, "pip_packages"),
        "conda_packages": _text(data, "conda_packages"),
        "compute_target": _text(data, "compute_target") or "local",
        "node_count": _text(data, "node_count") or "1",
        "process_count_per_node": _text(data, "process_count_per_node") or "1",
        "use_gpu": bool(_text(data, "use_gpu")),
        "environment": _text(data, "environment"),
        "tags": [p for p in _pairs(data, "tag_name", "tag_value") if p[0] or p[1]],
    }


def _whole_number(field: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SpecError(field, f"{field} must be a whole number (got {text!r})") from None


def estimator_of(values: dict[str, Any]) -> dict[str, Any]:
    """The Estimator spec (the API's ``estimator`` part) the form describes. Its rules are checked
    by the service; here only what a form can get wrong on its own (a number that is not one)."""
    spec: dict[str, Any] = {
        "entry_script": values["entry_script"],
        "compute_target": values["compute_target"],
    }
    params: dict[str, str] = {}
    for key, value in values["params"]:
        if not key:
            raise SpecError(
                "script_params", f"A script parameter has a value ({value!r}) but no name"
            )
        if key in params:
            raise SpecError("script_params", f"The script parameter {key!r} is given twice")
        params[key] = value
    if params:
        spec["script_params"] = params
    if values["pip_packages"]:
        spec["pip_packages"] = _lines(values["pip_packages"])
    if values["conda_packages"]:
        spec["conda_packages"] = _lines(values["conda_packages"])
    nodes = _whole_number("node_count", values["node_count"])
    per_node = _whole_number("process_count_per_node", values["process_count_per_node"])
    spec["node_count"] = nodes
    if nodes > 1 or per_node > 1:  # as the CLI does: Mpi(process_count_per_node=N)
        spec["distributed_training"] = {"type": "mpi", "process_count_per_node": per_node}
    else:
        spec["process_count_per_node"] = per_node
    if values["use_gpu"]:
        spec["use_gpu"] = True
    if values["environment"]:
        name, _, version = values["environment"].rpartition(":")
        spec["environment_definition"] = (
            {"name": name, "version": int(version)}
            if name and version.isdigit()
            else values["environment"]
        )
    return spec


def tags_of(values: dict[str, Any]) -> str | None:
    tags: dict[str, str] = {}
    for key, value in values["tags"]:
        if not key:
            raise SpecError("tags", f"A tag has a value ({value!r}) but no name")
        tags[key] = value
    return json.dumps(tags) if tags else None


def _spool(upload: UploadFile, dest: Path) -> None:
    upload.file.seek(0)
    with dest.open("wb") as out:
        while chunk := upload.file.read(CHUNK):
            out.write(chunk)


class SubmitPages(Controller):
    include_in_schema = False

    @get("/submit")
    async def form(self, request: HTMXRequest, state: State, experiment: str = "") -> Template:
        values = form_values({"experiment": experiment})
        return await self._render(state, values, {}, status_code=200)

    @post("/submit", status_code=303)
    async def submit(
        self,
        request: HTMXRequest,
        state: State,
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> Response[Any]:
        values = form_values(data)
        upload: Path | None = None
        try:
            spec = estimator_of(values)
            tags = tags_of(values)
            archive = data.get("source_archive")
            if isinstance(archive, list):
                raise SpecError("source", "Choose one archive of the source folder, not several")
            if not isinstance(archive, UploadFile):
                raise SpecError(
                    "source",
                    "Choose the source folder (or an archive of it as .tar.gz) to run",
                )
            upload = service.new_upload_path(state.settings)
            try:
                await asyncio.to_thread(_spool, archive, upload)
            except BaseException:
                upload.unlink(missing_ok=True)
                raise
            run = await service.submit(
                state.settings,
                state.db,
                state.launcher,
                experiment=values["experiment"],
                estimator=json.dumps(spec),
                upload=upload,
                tags=tags,
                user=request.user.name,
            )
        except SpecError as exc:
            return await self._render(state, values, {_field(exc.field): exc.message})
        except SnapshotError as exc:
            return await self._render(
                state, values, {_field(exc.field): exc.message}, exc.status_code
            )
        finally:
            for part in data.values():
                for item in part if isinstance(part, list) else [part]:
                    if isinstance(item, UploadFile):
                        await item.close()
        where = f"/runs/{run.id}"
        if request.htmx:  # submit.js posts with fetch: it is told where to go
            return Response(None, status_code=200, headers={"HX-Redirect": where})
        return Redirect(where, status_code=303)

    async def _render(
        self,
        state: State,
        values: dict[str, Any],
        errors: dict[str, str],
        status_code: int = 422,
    ) -> Template:
        def read(conn: Any) -> tuple[list[str], list[dict[str, Any]], list[str]]:
            targets = list(node_store.list_targets(conn))
            envs = environments.list_definitions(conn)
            return targets, envs, ex.names(conn)

        targets, envs, experiments = await state.db.read(read)
        if values["compute_target"] not in targets:
            targets.append(values["compute_target"])
        general = errors.pop("", None)
        rows = values["params"] + [("", "")] * max(ROWS - len(values["params"]), 1)
        tag_rows = values["tags"] + [("", "")] * max(ROWS - len(values["tags"]), 1)
        return Template(
            "submit.html",
            context={
                "values": values,
                "errors": errors,
                "general": general,
                "targets": targets,
                "environments": envs,
                "experiments": experiments,
                "param_rows": rows,
                "tag_rows": tag_rows,
            },
            status_code=status_code,
        )


def _field(field: str | None) -> str:
    """The form field a spec problem is shown beside ('' when none fits: above the form)."""
    if not field:
        return ""
    name = FIELD_OF.get(field, field)
    if name in FORM_FIELDS:
        return name
    root = name.split(".")[0].split("[")[0]
    return FIELD_OF.get(root, root) if FIELD_OF.get(root, root) in FORM_FIELDS else ""
