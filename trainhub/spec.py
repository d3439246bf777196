"""The Estimator spec: one wire format for the SDK, the CLI, curl and the server.

Field names are Azure ML v1 ``Estimator`` argument names. :func:`parse_estimator` decodes JSON into an
:class:`EstimatorSpec` and applies Azure ML's combination rules; every problem is a :class:`SpecError`
naming the field. Fields whose capability has not landed yet are refused, never silently ignored.
Data references (``{"$data_reference": {...}}`` values) and their checks are in
:mod:`trainhub.spec_datarefs`; the errors in :mod:`trainhub.spec_errors`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec
from packaging.requirements import InvalidRequirement, Requirement

# DataReference and placed_references are imported from here too (runs.datarefs, runs.service).
from trainhub.spec_datarefs import (
    REFERENCE_ENV_PREFIX,
    Reference,
    check_reference_places,
    check_references,
    reference_name,
)
from trainhub.spec_datarefs import DataReference as DataReference
from trainhub.spec_datarefs import placed_references as placed_references
from trainhub.spec_dockerfile import base_images, check_dockerfile
from trainhub.spec_errors import NotSupportedYet as NotSupportedYet
from trainhub.spec_errors import SpecError as SpecError
from trainhub.spec_errors import has_control_character, shown

ScalarParam = str | int | float | bool | None
REGISTRY_NEEDS_IMAGE = (
    "image_registry_details needs custom_docker_image (or custom_dockerfile, for its FROM images)"
)

DISTRIBUTED_TYPES = ("mpi", "gloo", "nccl", "ps")
TORCH_BACKENDS = ("nccl", "gloo")
FRAMEWORKS = ("Python", "PyTorch", "TensorFlow")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SHM_SIZE = re.compile(r"^[1-9][0-9]*[bkmgBKMG]?$")
EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
# Environment names may have dots too, as Azure ML's curated ones do
# ("AzureML-sklearn-1.0-ubuntu20.04-py38-cpu"): an admin may register environments under them.
ENVIRONMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")

# Run tags: at most this many per run, keys and values at most this many characters.
MAX_TAGS = 100
MAX_TAG_KEY_CHARS = 256
MAX_TAG_VALUE_CHARS = 5000

# A Docker image reference, as the distribution project's reference grammar defines it:
# [host[:port]/]path[/path...][:tag][@algorithm:hex]. Repository paths are lowercase; a first part
# that holds '.' or ':' or is "localhost" is the registry host (Docker's own rule).
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST = rf"(?:{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*|\[[0-9A-Fa-f:.]+\])"
IMAGE_REFERENCE = re.compile(
    rf"(?P<name>(?:(?P<registry>{_HOST}(?::[0-9]+)?)/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,})?"
)
IMAGE_NAME_MAX = 255
# A conda match spec as one word: 'numpy', 'numpy=1.26', 'numpy>=1.2,<2', 'conda-forge::numpy'.
CONDA_PACKAGE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=<>!*,|:/@%~\[\]-]*")


class RegistryDetails(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    address: str | None = None
    username: str | None = None
    password: str | None = None


class DistributedTraining(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``Mpi(process_count_per_node=...)``, ``Gloo()``, ``Nccl()``, ``ParameterServer(...)``."""

    type: str
    process_count_per_node: int | None = None
    communication_backend: str | None = None
    worker_count: int | None = None
    parameter_server_count: int | None = None


class EstimatorSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    entry_script: str
    source_directory: str | None = None
    script_params: dict[str, ScalarParam | Reference] = {}
    # ScriptRunConfig's ``arguments``: given after the flattened script_params.
    arguments: list[ScalarParam | Reference] = []
    compute_target: str = "local"
    node_count: int = 1
    process_count_per_node: int = 1
    distributed_backend: str | None = None
    distributed_training: DistributedTraining | None = None
    use_gpu: bool = False
    use_docker: bool = True
    custom_docker_image: str | None = None
    custom_docker_base_image: str | None = None
    # A Dockerfile's text (Azure ML's docker.base_dockerfile): the environment's image is built from it.
    custom_dockerfile: str | None = None
    image_registry_details: RegistryDetails | None = None
    user_managed: bool = False
    conda_packages: list[str] = []
    pip_packages: list[str] = []
    conda_dependencies_file: str | None = None
    pip_requirements_file: str | None = None
    environment_variables: dict[str, str] = {}
    environment_definition: str | dict[str, Any] | None = None
    inputs: list[Reference] = []
    shm_size: str | None = None
    max_run_duration_seconds: int | None = None
    framework: str = "Python"
    framework_version: str | None = None

    @property
    def image(self) -> str | None:
        return self.custom_docker_image or self.custom_docker_base_image

    def command_arguments(self, paths: Mapping[str, str] | None = None) -> list[str]:
        """The script's command line: the flattened ``script_params``, then ``arguments``; a
        reference becomes its path in ``paths`` (by reference name)."""
        return flatten_script_params(self.script_params, paths) + flatten_arguments(
            self.arguments, paths
        )

    def references(self) -> dict[str, DataReference]:
        """Every reference of the run (script_params, then inputs), once per name."""
        found: dict[str, DataReference] = {}
        for _, ref in placed_references(self):
            found.setdefault(ref.ref_name, ref)
        return found

    def to_public(self) -> dict[str, Any]:
        """The spec as returned by the API: registry passwords never leave the server."""
        return redact(msgspec.to_builtins(self))


def redact(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored spec (or environment definition) without registry passwords."""
    out = dict(data)
    details = out.get("image_registry_details")
    if isinstance(details, dict) and details.get("password"):
        out["image_registry_details"] = {**details, "password": "***"}
    return out


class EnvironmentDefinition(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A named, reusable environment registered on the server (Azure ML's ``Environment``)."""

    name: str
    custom_docker_image: str | None = None
    custom_dockerfile: str | None = None
    image_registry_details: RegistryDetails | None = None
    user_managed: bool = False
    pip_packages: list[str] = []
    conda_packages: list[str] = []
    environment_variables: dict[str, str] = {}
    use_gpu: bool = False


def parse_environment_definition(raw: bytes | str) -> EnvironmentDefinition:
    try:
        env = msgspec.json.decode(raw, type=EnvironmentDefinition)
    except msgspec.ValidationError as exc:
        raise _from_msgspec(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise SpecError("environment", f"The environment is not valid JSON: {exc}") from None
    if not ENVIRONMENT_NAME.fullmatch(env.name):
        raise SpecError(
            "name",
            "Environment names are 1-255 letters, digits, '-', '_' or '.', starting with a letter "
            "or digit",
        )
    for key in env.environment_variables:
        if not ENV_NAME.match(key):
            raise SpecError(
                "environment_variables", f"'{key}' is not a valid environment variable name"
            )
    check_definition_fields(env)
    if env.user_managed and (env.pip_packages or env.conda_packages):
        raise SpecError("pip_packages", "packages cannot be installed when user_managed=True")
    if env.image_registry_details is not None and not (
        env.custom_docker_image or env.custom_dockerfile
    ):
        raise SpecError("image_registry_details", REGISTRY_NEEDS_IMAGE)
    return env


def apply_definition(spec: EstimatorSpec, env: EnvironmentDefinition) -> EstimatorSpec:
    """The spec with a registered environment's fields filled in."""
    check_definition_fields(env)
    if env.custom_dockerfile is not None and not spec.use_docker:
        raise SpecError(
            "use_docker",
            f"environment {env.name!r} is built from a Dockerfile: it needs use_docker=True",
        )
    return msgspec.structs.replace(
        spec,
        custom_docker_image=env.custom_docker_image,
        custom_dockerfile=env.custom_dockerfile,
        image_registry_details=env.image_registry_details,
        user_managed=env.user_managed,
        pip_packages=list(env.pip_packages),
        conda_packages=list(env.conda_packages),
        environment_variables={**env.environment_variables},
        use_gpu=env.use_gpu or spec.use_gpu,
    )


def definition_reference(value: str | dict[str, Any]) -> tuple[str, int | None]:
    """``"name"`` or ``{"name": ..., "version": ...}`` -> (name, version)."""
    if isinstance(value, str):
        return value, None
    name = value.get("name")
    version = value.get("version")
    if not isinstance(name, str) or (version is not None and not isinstance(version, int)):
        raise SpecError(
            "environment_definition",
            'environment_definition is a name or {"name": ..., "version": N}',
        )
    return name, version


def flatten_script_params(
    params: Mapping[str, Any], paths: Mapping[str, str] | None = None
) -> list[str]:
    """Azure ML's flattening: ``{"--lr": 0.1, "--verbose": ""}`` -> ``["--lr", "0.1", "--verbose"]``.

    A data reference (a :class:`Reference` or its stored JSON) becomes its path from ``paths``, or
    ``$AZUREML_DATAREFERENCE_<name>`` as Azure ML shows a run's arguments."""
    args: list[str] = []
    for key, value in params.items():
        args.append(key)
        if value is None or value == "":
            continue
        args.append(_argument(value, paths))
    return args


def flatten_arguments(values: list[Any], paths: Mapping[str, str] | None = None) -> list[str]:
    """ScriptRunConfig's ``arguments`` as words: ``["--lr", 0.1, ds.as_mount()]`` ->
    ``["--lr", "0.1", "/trainhub/data/<name>"]`` (a reference as in :func:`flatten_script_params`)."""
    return [_argument(value, paths) for value in values]


def _argument(value: Any, paths: Mapping[str, str] | None) -> str:
    name = reference_name(value)
    if name is None:
        return str(value)
    if paths is not None and name in paths:
        return paths[name]
    return f"${REFERENCE_ENV_PREFIX}{name}"


def parse_estimator(raw: bytes | str) -> EstimatorSpec:
    try:
        check_reference_places(msgspec.json.decode(raw), EstimatorSpec.__struct_fields__)
        spec = msgspec.json.decode(raw, type=EstimatorSpec)
    except msgspec.ValidationError as exc:
        raise _from_msgspec(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise SpecError("estimator", f"The estimator is not valid JSON: {exc}") from None
    validate(spec)
    return spec


def _from_msgspec(text: str) -> SpecError:
    unknown = re.search(r"unknown field `([^`]+)`(?: - at `\$\.?([^`]*)`)?", text)
    if unknown:
        where = f"{unknown.group(2)}." if unknown.group(2) else ""
        field = f"{where}{unknown.group(1)}"
        return SpecError(field, f"Unknown field '{field}' in the estimator")
    missing = re.search(r"missing required field `([^`]+)`", text)
    if missing:
        return SpecError(missing.group(1), f"The estimator needs '{missing.group(1)}'")
    at = re.search(r" - at `\$\.?([^`]*)`", text)
    field = at.group(1).replace("[...]", "") if at else "estimator"
    sentence = text.split(" - at ")[0]
    return SpecError(field or "estimator", f"Field '{field or 'estimator'}': {sentence}")


def validate(spec: EstimatorSpec) -> None:
    """Shape checks and Azure ML's combination rules, then the not-yet-supported fields."""
    _check_relative_path("entry_script", spec.entry_script)
    for name in ("pip_requirements_file", "conda_dependencies_file"):
        value = getattr(spec, name)
        if value is not None:
            _check_relative_path(name, value)
    if not spec.compute_target:
        raise SpecError("compute_target", "compute_target must name a compute target")
    if spec.node_count < 1:
        raise SpecError("node_count", "node_count must be at least 1")
    if spec.process_count_per_node < 1:
        raise SpecError("process_count_per_node", "process_count_per_node must be at least 1")
    if spec.max_run_duration_seconds is not None and spec.max_run_duration_seconds < 1:
        raise SpecError(
            "max_run_duration_seconds",
            "max_run_duration_seconds must be a positive number of seconds",
        )
    for key in spec.script_params:
        if not key:
            raise SpecError("script_params", "script_params keys must not be empty")
    for key in spec.environment_variables:
        if not ENV_NAME.match(key):
            raise SpecError(
                "environment_variables", f"'{key}' is not a valid environment variable name"
            )
    check_pip_packages("pip_packages", spec.pip_packages)
    check_conda_packages("conda_packages", spec.conda_packages)
    for name in ("custom_docker_image", "custom_docker_base_image"):
        value = getattr(spec, name)
        if value is not None:
            check_image_reference(name, value)
    if spec.shm_size is not None and not SHM_SIZE.match(spec.shm_size):
        raise SpecError("shm_size", "shm_size must look like '2g', '512m' or a number of bytes")
    if spec.framework not in FRAMEWORKS:
        raise SpecError("framework", f"framework must be one of {', '.join(FRAMEWORKS)}")
    if spec.distributed_backend is not None and spec.distributed_backend not in DISTRIBUTED_TYPES:
        raise SpecError(
            "distributed_backend",
            f"distributed_backend must be one of {', '.join(DISTRIBUTED_TYPES)}",
        )
    dt = spec.distributed_training
    if dt is not None and dt.type not in DISTRIBUTED_TYPES:
        raise SpecError(
            "distributed_training.type",
            f"distributed_training.type must be one of {', '.join(DISTRIBUTED_TYPES)}",
        )

    # Azure ML's combination rules.
    if spec.distributed_backend is not None and dt is not None:
        raise SpecError(
            "distributed_training", "Give distributed_training or distributed_backend, not both"
        )
    if spec.node_count > 1 and spec.distributed_backend is None and dt is None:
        raise SpecError(
            "node_count",
            "node_count > 1 needs a distributed backend (distributed_training=Mpi() or distributed_backend='mpi')",
        )
    if spec.process_count_per_node > 1 and spec.distributed_backend is None and dt is None:
        raise SpecError(
            "process_count_per_node", "process_count_per_node > 1 needs a distributed backend"
        )
    if dt is not None and dt.communication_backend not in (None, *TORCH_BACKENDS):
        raise SpecError(
            "distributed_training.communication_backend",
            f"distributed_training.communication_backend must be one of {', '.join(TORCH_BACKENDS)}",
        )
    if dt is not None and dt.process_count_per_node is not None and dt.process_count_per_node < 1:
        raise SpecError(
            "distributed_training.process_count_per_node",
            "distributed_training.process_count_per_node must be at least 1",
        )
    if not spec.use_docker and (spec.distributed_backend is not None or dt is not None):
        # Without a container, mpirun and torchrun run on the server's own machine: one node.
        field = (
            "distributed_backend"
            if spec.distributed_backend is not None
            else "distributed_training"
        )
        if spec.node_count > 1:
            raise SpecError(
                "node_count",
                "distributed runs with use_docker=False run on the server's machine only: "
                "node_count must be 1 (runs across nodes need containers)",
            )
        if not (is_mpi(spec) or torch_backend(spec)):
            raise SpecError(
                field,
                f"{field} needs containers: only MPI and torchrun runs can use use_docker=False",
            )
    if spec.custom_dockerfile is not None:
        check_custom_dockerfile(spec.custom_dockerfile, spec.image)
    if spec.custom_docker_image and spec.custom_docker_base_image:
        raise SpecError(
            "custom_docker_base_image",
            "custom_docker_base_image is the older name of custom_docker_image: give only one",
        )
    if not spec.use_docker:
        for field in ("custom_docker_image", "custom_docker_base_image", "custom_dockerfile"):
            if getattr(spec, field):
                raise SpecError(field, f"{field} needs use_docker=True")
        for field in ("image_registry_details", "shm_size"):
            if getattr(spec, field):
                raise SpecError(field, f"{field} needs use_docker=True")
    if spec.image_registry_details is not None and not (spec.image or spec.custom_dockerfile):
        raise SpecError("image_registry_details", REGISTRY_NEEDS_IMAGE)
    if spec.environment_definition is not None:
        for name in (
            "pip_packages",
            "conda_packages",
            "pip_requirements_file",
            "conda_dependencies_file",
            "custom_docker_image",
            "custom_docker_base_image",
            "custom_dockerfile",
            "image_registry_details",
            "environment_variables",
        ):
            if getattr(spec, name):
                raise SpecError(
                    name,
                    f"environment_definition cannot be combined with {name}: put it in the environment",
                )
        if spec.use_gpu:
            raise SpecError(
                "use_gpu",
                "environment_definition cannot be combined with use_gpu: put it in the environment",
            )
    if spec.user_managed and (spec.pip_packages or spec.conda_packages):
        field = "pip_packages" if spec.pip_packages else "conda_packages"
        raise SpecError(
            field,
            f"{field} cannot be installed when user_managed=True (the image's Python is used as it is)",
        )

    check_references(spec)
    _check_parameter_servers(spec)

    # Valid, but not on this server yet.
    framework_image = spec.use_docker and spec.framework != "Python"  # else: the machine's Python
    if framework_image and not (spec.image or spec.custom_dockerfile or _installs(spec)):
        raise NotSupportedYet(
            "framework",
            f"framework={spec.framework} needs custom_docker_image, custom_dockerfile or the "
            "framework in the environment's packages (pip_packages=['torch==2.13.0']) for now: "
            "framework images are not supported yet",
        )


def _check_parameter_servers(spec: EstimatorSpec) -> None:
    """``ParameterServer(worker_count, parameter_server_count)``: at least one of each, and a worker
    on every node (a node's launcher watches its parameter servers while its workers run: on a node
    of servers only, a server failing would go unseen). ``distributed_backend='ps'`` is one worker
    and one server, Azure ML's defaults."""
    counts = parameter_servers(spec)
    if counts is None:
        return
    for name, count in zip(("worker_count", "parameter_server_count"), counts, strict=True):
        if count < 1:
            raise SpecError(
                f"distributed_training.{name}", f"distributed_training.{name} must be at least 1"
            )
    if counts[0] < spec.node_count:
        raise SpecError(
            "distributed_training.worker_count" if spec.distributed_training else "node_count",
            f"worker_count={counts[0]} is less than node_count={spec.node_count}: "
            "every node of a parameter-server run runs at least one worker",
        )
    dt = spec.distributed_training
    name = "process_count_per_node"
    if dt is not None and dt.process_count_per_node is not None:
        name = "distributed_training.process_count_per_node"
    elif spec.process_count_per_node == 1:
        return
    raise SpecError(
        name,
        f"{name} does not apply to parameter servers: worker_count and parameter_server_count "
        "say how many processes run, spread over the nodes",
    )


def _installs(spec: EstimatorSpec) -> bool:
    """The run's environment installs packages of its own (the framework among them, presumably)."""
    return bool(
        spec.pip_packages
        or spec.conda_packages
        or spec.pip_requirements_file
        or spec.conda_dependencies_file
        or spec.environment_definition
    )


def _check_relative_path(field: str, value: str) -> None:
    if not value or value.startswith("/") or "\\" in value:
        raise SpecError(field, f"{field} must be a relative path inside the source directory")
    if any(part == ".." for part in value.split("/")):
        raise SpecError(field, f"{field} must not contain '..'")


def check_definition_fields(env: EnvironmentDefinition) -> None:
    """An environment definition's packages and image follow the Estimator's rules."""
    check_pip_packages("pip_packages", env.pip_packages)
    check_conda_packages("conda_packages", env.conda_packages)
    if env.custom_docker_image is not None:
        check_image_reference("custom_docker_image", env.custom_docker_image)
    if env.custom_dockerfile is not None:
        check_custom_dockerfile(env.custom_dockerfile, env.custom_docker_image)


def check_custom_dockerfile(text: str, image: str | None) -> None:
    """A Dockerfile to build (:mod:`trainhub.spec_dockerfile`), never beside an image to use, with
    its ``FROM`` images written as Docker image references."""
    field = "custom_dockerfile"
    if image:
        raise SpecError(
            field,
            "Give custom_docker_image (an image to run in) or custom_dockerfile (a Dockerfile to "
            "build), not both",
        )
    check_dockerfile(field, text)
    for base in base_images(text):
        try:
            check_image_reference(field, base.image)
        except SpecError as exc:
            raise SpecError(
                field, f"{field}: line {base.line}: FROM {exc.message.split(': ', 1)[1]}"
            ) from None


def check_pip_packages(field: str, entries: list[str]) -> None:
    """Each entry is one requirement (PEP 508): never a pip option, never two lines.

    The entries are written one per line to a requirements file, so an option
    (``--index-url=...``) or a newline (``"six\\n-r /etc/passwd"``) would be read by pip as such.
    """
    for index, entry in enumerate(entries):
        problem = _requirement_problem(entry)
        if problem:
            raise SpecError(
                field,
                f"{field}[{index}]: {shown(entry)} is not a requirement (PEP 508, like 'numpy', "
                f"'torch==2.3.1' or \"six; python_version < '3'\"): {problem}",
            )


def _requirement_problem(entry: str) -> str | None:
    if has_control_character(entry):
        return "it holds a control character such as a newline (one requirement per entry)"
    if entry.lstrip().startswith("-"):
        return "pip options are not accepted, only package names"
    if "${" in entry:
        return "pip would expand '${...}' in it as an environment variable"
    try:
        Requirement(entry)
    except InvalidRequirement as exc:
        return str(exc).splitlines()[0]
    return None


def check_conda_packages(field: str, entries: list[str]) -> None:
    """Each entry is one conda match spec written as one word (the build passes them as words)."""
    for index, entry in enumerate(entries):
        if not CONDA_PACKAGE.fullmatch(entry):
            raise SpecError(
                field,
                f"{field}[{index}]: {shown(entry)} is not a conda package spec (one word, like "
                "'numpy', 'numpy=1.26' or 'conda-forge::numpy'; no options, spaces or quotes)",
            )


def check_image_reference(field: str, value: str) -> None:
    """``value`` is a Docker image reference: ``[host[:port]/]path[:tag][@digest]``."""
    found = IMAGE_REFERENCE.fullmatch(value)
    registry = found.group("registry") if found else None
    # A first part without '.' or ':' that is not "localhost" is a path (Docker's rule): lowercase.
    if registry is not None and not ("." in registry or ":" in registry or registry == "localhost"):
        found = found if registry == registry.lower() else None
    if found is None or len(found.group("name")) > IMAGE_NAME_MAX:
        raise SpecError(
            field,
            f"{field}: {shown(value)} is not a Docker image reference (like 'python:3.11-slim' "
            "or 'registry.example.com:5000/team/image:tag'; repository names are lowercase, "
            f"at most {IMAGE_NAME_MAX} characters)",
        )


def check_tags(value: object) -> dict[str, str]:
    """Run tags: a JSON object of strings (other scalars are turned into strings), within the limits."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise SpecError("tags", "tags must be a JSON object of strings")
    if len(value) > MAX_TAGS:
        raise SpecError("tags", f"tags: at most {MAX_TAGS} tags (got {len(value)})")
    tags = {k: "" if v is None else str(v) for k, v in value.items()}
    for key, text in tags.items():
        if len(key) > MAX_TAG_KEY_CHARS:
            raise SpecError(
                "tags", f"tags[{shown(key)}]: key longer than {MAX_TAG_KEY_CHARS} characters"
            )
        if len(text) > MAX_TAG_VALUE_CHARS:
            raise SpecError(
                "tags", f"tags[{shown(key)}]: value longer than {MAX_TAG_VALUE_CHARS} characters"
            )
    return tags


def check_experiment_name(name: str) -> None:
    if not EXPERIMENT_NAME.match(name):
        raise SpecError(
            "experiment",
            "Experiment names are 1-255 letters, digits, '-' or '_', starting with a letter or digit",
        )


def processes_per_node(spec: EstimatorSpec) -> int:
    """``Mpi(process_count_per_node=N)`` wins over the Estimator's own ``process_count_per_node``
    (as in Azure ML v1); a parameter-server run has its processes spread evenly over its nodes."""
    counts = parameter_servers(spec)
    if counts is not None:
        return -(-sum(counts) // spec.node_count)
    dt = spec.distributed_training
    if dt is not None and dt.process_count_per_node is not None:
        return dt.process_count_per_node
    return spec.process_count_per_node


def is_mpi(spec: EstimatorSpec) -> bool:
    """The run is launched with ``mpirun``: an MPI backend was asked for."""
    dt = spec.distributed_training
    return spec.distributed_backend == "mpi" or (dt is not None and dt.type == "mpi")


def torch_backend(spec: EstimatorSpec) -> str | None:
    """``nccl`` or ``gloo`` when the run is launched with torchrun (``Nccl()``, ``Gloo()``,
    ``distributed_backend='nccl'|'gloo'``, ``PyTorchConfiguration``), else None."""
    dt = spec.distributed_training
    backend = dt.type if dt is not None else spec.distributed_backend
    return backend if backend in TORCH_BACKENDS else None


def parameter_servers(spec: EstimatorSpec) -> tuple[int, int] | None:
    """(workers, parameter servers) of a TensorFlow parameter-server run, else None."""
    dt = spec.distributed_training
    if dt is not None and dt.type == "ps":
        return (_count(dt.worker_count), _count(dt.parameter_server_count))
    return (1, 1) if dt is None and spec.distributed_backend == "ps" else None


def _count(value: int | None) -> int:
    return 1 if value is None else value


def stored_processes_per_node(spec: dict[str, Any]) -> int:
    """``processes_per_node`` of a spec as stored (a validated dict): cheap for a pass over the queue."""
    dt = spec.get("distributed_training") or {}
    if dt.get("type") == "ps" or spec.get("distributed_backend") == "ps":
        total = _count(dt.get("worker_count")) + _count(dt.get("parameter_server_count"))
        return -(-total // int(spec.get("node_count", 1)))
    return int(dt.get("process_count_per_node") or spec.get("process_count_per_node", 1))
