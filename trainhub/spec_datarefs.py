"""Data references in the Estimator spec: ``{"$data_reference": {...}}`` values.

A reference (``ds.as_mount()``, ``ds.path('sub').as_download()``, ``ds.as_upload()``) is a value of
``script_params`` or an element of ``arguments`` or ``inputs``, nowhere else. This module holds its wire types, where
its data is in the run, and the checks :mod:`trainhub.spec` applies to a spec's references: their
places in the raw JSON, their fields, and the references of one run against each other.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import msgspec

from trainhub.spec_errors import SpecError, has_control_character, shown

if TYPE_CHECKING:
    from trainhub.spec import EstimatorSpec

# A data reference on the wire: {"$data_reference": {...}} as a script_params value or an arguments
# or inputs element, nowhere else. Its environment variable (Azure ML's name) holds its path in the run.
REFERENCE_KEY = "$data_reference"
REFERENCE_MODES = ("mount", "download", "upload", "direct")
REFERENCE_ENV_PREFIX = "AZUREML_DATAREFERENCE_"
# A reference's name ends that variable's name (the SDK names sub-path references with a uuid's hex).
REFERENCE_NAME = re.compile(r"^[A-Za-z0-9_]{1,255}$")
# Where a run's data is in its container: the working directory (runtime.docker.WORKDIR) and the
# folder of the references' default paths.
RUN_WORKDIR = "/trainhub/wd"
RUN_DATA_ROOT = "/trainhub/data"
# Folders of a run's container that a reference may not cover (absolute path_on_compute) ...
RESERVED_RUN_PATHS = ("/proc", "/sys", "/dev", "/trainhub/lib", "/trainhub/ctx")
# ... and folders it may not be (it would hide what they hold).
RESERVED_RUN_FOLDERS = ("/", "/trainhub", RUN_WORKDIR, RUN_DATA_ROOT)


class DatasetInput(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A dataset a reference reads: the client names its ``id``; the server fills in the rest
    from its record when the run is submitted (``trainhub.datasets.registry.resolve``):
    ``patterns`` pick its files below the reference's folder (none: all of them)."""

    id: str
    name: str | None = None
    version: int | None = None
    kind: str = "file"
    patterns: list[str] = []
    options: dict[str, Any] = {}


class DataReference(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``ds.as_mount()``, ``ds.path('sub').as_download()``, ``ds.as_upload(...)``, a dataset's
    ``as_named_input('x').as_mount()`` or an ``OutputFileDatasetConfig``: where the data is (a
    datastore and a folder in it), how the run gets it, and under which name. ``direct`` (a
    dataset given as itself) is mounted; the script's argument is the dataset's id."""

    datastore: str = ""
    path: str = ""
    mode: str = "mount"
    path_on_compute: str | None = None
    name: str | None = None
    overwrite: bool = False
    dataset: DatasetInput | None = None
    register_as: str | None = None

    @property
    def ref_name(self) -> str:
        """Azure ML's ``data_reference_name``: the datastore's name unless one was given."""
        return self.name or self.datastore

    @property
    def env_var(self) -> str:
        return REFERENCE_ENV_PREFIX + self.ref_name

    def path_in_run(self) -> str:
        """Where the run finds the data: ``/trainhub/data/<name>``, or ``path_on_compute``
        (relative to the working directory, or absolute as it is)."""
        where = self.path_on_compute
        if not where:
            return f"{RUN_DATA_ROOT}/{self.ref_name}"
        cleaned = _clean_path(where)
        if where.startswith("/"):
            return cleaned
        return f"{RUN_WORKDIR}/{cleaned}" if cleaned else RUN_WORKDIR

    @property
    def folder(self) -> str:
        """``path`` as a clean relative folder of the datastore ("" for its root)."""
        return _clean_path(self.path.replace("\\", "/")).lstrip("/")

    def folder_for(self, run_id: str) -> str:
        """An output's folder with Azure ML's placeholders filled in: ``{run-id}`` and
        ``{output-name}``."""
        return self.folder.replace("{run-id}", run_id).replace("{output-name}", self.ref_name)

    def argument(self) -> str:
        """What the script's argument becomes: the path in the run; a direct dataset's id."""
        if self.mode == "direct" and self.dataset is not None:
            return self.dataset.id
        return self.path_in_run()


class Reference(msgspec.Struct, forbid_unknown_fields=True):
    """The wire form of a reference: ``{"$data_reference": {...}}``."""

    data_reference: DataReference = msgspec.field(name=REFERENCE_KEY)


def reference_name(value: Any) -> str | None:
    """The name of a reference given as a :class:`Reference` or as its stored JSON, else None."""
    if isinstance(value, Reference):
        return value.data_reference.ref_name
    if isinstance(value, dict) and isinstance(value.get(REFERENCE_KEY), dict):
        inner = value[REFERENCE_KEY]
        return str(inner.get("name") or inner.get("datastore"))
    return None


def check_reference_places(raw: Any, fields: Collection[str]) -> None:
    """A data reference only as a script_params value or an inputs element (a 422 naming the
    field anywhere else), and each one well formed, before the spec is decoded into its types.
    ``fields`` are the Estimator's field names: an unknown field is left to the decoder."""
    if not isinstance(raw, dict):
        return
    for field, value in raw.items():
        if field == "script_params" and isinstance(value, dict):
            for key, param in value.items():
                where = f"script_params[{shown(str(key))}]"
                if isinstance(param, dict):
                    _check_reference_object("script_params", where, param)
                elif _holds_reference(param):
                    raise SpecError("script_params", f"{where}: {_MISPLACED}")
        elif field == "arguments" and isinstance(value, list):
            for index, item in enumerate(value):
                where = f"arguments[{index}]"
                if isinstance(item, dict):
                    _check_reference_object("arguments", where, item)
                elif isinstance(item, list):
                    raise SpecError(
                        "arguments",
                        f"{where}: an argument is a string, a number, a boolean or a data "
                        'reference ({"$data_reference": {...}}), not a list',
                    )
        elif field == "inputs" and isinstance(value, list):
            for index, item in enumerate(value):
                where = f"inputs[{index}]"
                if not isinstance(item, dict) or REFERENCE_KEY not in item:
                    raise SpecError(
                        "inputs",
                        f"{where} is not a data reference: inputs take references such as "
                        "ds.as_mount(), ds.path('dir').as_download() or ds.as_upload()",
                    )
                _check_reference_object("inputs", where, item)
        elif field in fields and _holds_reference(value):
            raise SpecError(str(field), f"{field}: {_MISPLACED}")


_MISPLACED = (
    "a data reference can only be a value of script_params or an element of inputs or arguments "
    "(this field cannot take one)"
)


def _check_reference_object(field: str, where: str, value: dict[str, Any]) -> None:
    if REFERENCE_KEY not in value:
        if _holds_reference(value):
            raise SpecError(field, f"{where}: {_MISPLACED}")
        raise SpecError(
            field,
            f"{where}: a value is a string, a number, a boolean, null or a data reference "
            '({"$data_reference": {...}})',
        )
    if len(value) != 1:
        extra = sorted(str(k) for k in value if k != REFERENCE_KEY)
        raise SpecError(field, f"{where}: unknown field(s) beside {REFERENCE_KEY}: {extra}")
    inner = value[REFERENCE_KEY]
    if isinstance(inner, dict) and any(_holds_reference(v) for v in inner.values()):
        raise SpecError(field, f"{where}: {_MISPLACED}")
    try:
        msgspec.convert(inner, DataReference)
    except msgspec.ValidationError as exc:
        raise SpecError(field, f"{where}.{REFERENCE_KEY}: {exc}") from None


def _holds_reference(value: Any) -> bool:
    """Whether ``value`` holds a data reference object anywhere inside it."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if REFERENCE_KEY in item:
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def placed_references(spec: EstimatorSpec) -> list[tuple[str, DataReference]]:
    """(where, reference) for every reference of ``spec``, in the order they are given."""
    placed = [
        (f"script_params[{shown(key)}]", value.data_reference)
        for key, value in spec.script_params.items()
        if isinstance(value, Reference)
    ]
    placed += [
        (f"arguments[{i}]", item.data_reference)
        for i, item in enumerate(spec.arguments)
        if isinstance(item, Reference)
    ]
    placed += [(f"inputs[{i}]", item.data_reference) for i, item in enumerate(spec.inputs)]
    return placed


def _clean_path(path: str) -> str:
    """``a//b/./c/`` -> ``a/b/c`` (leading ``/`` kept); callers have refused ``..``."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return ("/" if path.startswith("/") else "") + "/".join(parts)


def check_references(spec: EstimatorSpec) -> None:
    """Each reference's fields, and the references of one run against each other: a name is one
    reference (Azure ML's rule), and two references never share a path in the run."""
    by_name: dict[str, DataReference] = {}
    targets: dict[str, str] = {}
    for where, ref in placed_references(spec):
        field = where.split("[", 1)[0]
        _check_reference(field, where, ref)
        name = ref.ref_name
        ref = msgspec.structs.replace(ref, name=name, path=ref.folder)
        if by_name.setdefault(name, ref) != ref:
            raise SpecError(
                field,
                f"{where}: two different data references are named '{name}'; give them "
                "different names (data_reference_name)",
            )
        target = ref.path_in_run()
        if targets.setdefault(target, name) != name:
            raise SpecError(
                field,
                f"{where}: data references '{targets[target]}' and '{name}' would be at the "
                "same path in the run",
            )
    if by_name and not spec.use_docker:
        raise SpecError("use_docker", "data references (datastores) need use_docker=True for now")


def _check_reference(field: str, where: str, ref: DataReference) -> None:
    if not ref.datastore and ref.dataset is None:
        raise SpecError(field, f"{where}.datastore: name a datastore")
    if ref.dataset is not None and ref.mode == "upload":
        raise SpecError(field, f"{where}: a dataset is read by a run; an output is an upload")
    if ref.mode == "direct" and ref.dataset is None:
        raise SpecError(field, f"{where}.mode: 'direct' is for datasets (as_named_input)")
    if ref.register_as is not None and (
        ref.mode != "upload" or not 0 < len(ref.register_as) <= 250
    ):
        raise SpecError(
            field,
            f"{where}.register_as: an output's dataset name (1 to 250 characters), for uploads",
        )
    if ref.mode not in REFERENCE_MODES:
        raise SpecError(
            field,
            f"{where}.mode must be one of {', '.join(REFERENCE_MODES)} (got {shown(ref.mode)})",
        )
    if not REFERENCE_NAME.match(ref.ref_name):
        raise SpecError(
            field,
            f"{where}.name: {shown(ref.ref_name)} cannot name a data reference (letters, digits "
            f"and '_': it ends the variable's name {REFERENCE_ENV_PREFIX}<name>)",
        )
    path = ref.path.replace("\\", "/")
    if path.startswith("/") or ".." in path.split("/") or has_control_character(path):
        raise SpecError(
            field,
            f"{where}.path: {shown(ref.path)} must be a folder inside the datastore "
            "(relative, without '..')",
        )
    where_in_run = ref.path_on_compute
    if where_in_run is not None:
        target = ref.path_in_run()
        if (
            ".." in where_in_run.split("/")
            or "\\" in where_in_run
            or has_control_character(where_in_run)
            or target in RESERVED_RUN_FOLDERS
            or any(target == r or target.startswith(r + "/") for r in RESERVED_RUN_PATHS)
        ):
            raise SpecError(
                field,
                f"{where}.path_on_compute: {shown(where_in_run)} cannot hold the data (a folder "
                "under the working directory, or an absolute path outside /, /proc, /sys, /dev "
                "and trainhub's own folders; no '..')",
            )
