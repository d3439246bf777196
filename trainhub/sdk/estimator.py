"""``Estimator``, ``PyTorch``, ``TensorFlow`` and the distributed-training configs, with Azure ML v1's
names, arguments and defaults. They only describe a run; ``Experiment.submit`` sends it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from trainhub.sdk.dataset import (
    AbstractDataset,
    DatasetConsumptionConfig,
    OutputFileDatasetConfig,
)
from trainhub.sdk.datastore import DataReference


class _Distributed:
    type = ""

    def to_spec(self) -> dict[str, Any]:
        return {"type": self.type, **{k: v for k, v in vars(self).items() if v is not None}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Mpi(_Distributed):
    type = "mpi"

    def __init__(self, process_count_per_node: int = 1) -> None:
        self.process_count_per_node = process_count_per_node


class Gloo(_Distributed):
    type = "gloo"


class Nccl(_Distributed):
    type = "nccl"


class ParameterServer(_Distributed):
    type = "ps"

    def __init__(self, worker_count: int = 1, parameter_server_count: int = 1) -> None:
        self.worker_count = worker_count
        self.parameter_server_count = parameter_server_count


def _name_of(value: Any) -> Any:
    """Azure ML accepted objects (a ComputeTarget, an Environment) where a name will do."""
    if value is None or isinstance(value, (str, dict)):
        return value
    return getattr(value, "name", str(value))


def _data_value(value: Any) -> Any:
    """A reference (``ds.as_mount()``, ``dataset.as_named_input('x').as_mount()``, an
    ``OutputFileDatasetConfig``...) as the spec's wire format; anything else as is."""
    if isinstance(value, AbstractDataset):
        value = value.as_named_input(f"input_{uuid.uuid4().hex[:8]}")
    if isinstance(value, (DataReference, DatasetConsumptionConfig, OutputFileDatasetConfig)):
        return value.to_spec()
    return value


def _environment_reference(value: Any) -> Any:
    if hasattr(value, "reference"):
        return value.reference()
    return _name_of(value)


class Estimator:
    """Azure ML v1's ``Estimator``: a script, its arguments, where and in what environment to run."""

    framework = "Python"

    def __init__(
        self,
        source_directory: str,
        *,
        compute_target: Any = None,
        vm_size: str | None = None,
        vm_priority: str | None = None,
        entry_script: str | None = None,
        script_params: dict[str, Any] | None = None,
        node_count: int = 1,
        process_count_per_node: int = 1,
        distributed_backend: str | None = None,
        distributed_training: _Distributed | None = None,
        use_gpu: bool = False,
        use_docker: bool = True,
        custom_docker_base_image: str | None = None,
        custom_docker_image: str | None = None,
        image_registry_details: Any = None,
        user_managed: bool = False,
        conda_packages: list[str] | None = None,
        pip_packages: list[str] | None = None,
        conda_dependencies_file_path: str | None = None,
        pip_requirements_file_path: str | None = None,
        conda_dependencies_file: str | None = None,
        pip_requirements_file: str | None = None,
        environment_variables: dict[str, str] | None = None,
        environment_definition: Any = None,
        inputs: list[Any] | None = None,
        source_directory_data_store: Any = None,
        shm_size: str | None = None,
        resume_from: Any = None,
        max_run_duration_seconds: int | None = None,
        framework_version: str | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise TypeError(
                f"{type(self).__name__}() got unexpected arguments: {', '.join(sorted(kwargs))}"
            )
        if entry_script is None:
            raise TypeError(f"{type(self).__name__}() needs entry_script")
        if vm_size or vm_priority or source_directory_data_store or resume_from:
            unsupported = [
                n
                for n, v in (
                    ("vm_size", vm_size),
                    ("vm_priority", vm_priority),
                    ("source_directory_data_store", source_directory_data_store),
                    ("resume_from", resume_from),
                )
                if v
            ]
            raise ValueError(
                f"not supported by trainhub: {', '.join(unsupported)} (nodes are registered servers)"
            )
        self.source_directory = str(source_directory)
        self.entry_script = entry_script
        self.script_params = dict(script_params or {})
        self.compute_target = _name_of(compute_target) or "local"
        self.node_count = node_count
        self.process_count_per_node = process_count_per_node
        self.distributed_backend = distributed_backend
        self.distributed_training = distributed_training
        self.use_gpu = use_gpu
        self.use_docker = use_docker
        self.custom_docker_base_image = custom_docker_base_image
        self.custom_docker_image = custom_docker_image
        self.image_registry_details = image_registry_details
        self.user_managed = user_managed
        self.conda_packages = list(conda_packages or [])
        self.pip_packages = list(pip_packages or [])
        self.conda_dependencies_file = conda_dependencies_file or conda_dependencies_file_path
        self.pip_requirements_file = pip_requirements_file or pip_requirements_file_path
        self.environment_variables = dict(environment_variables or {})
        self.environment_definition = environment_definition
        self.inputs = list(inputs or [])
        self.shm_size = shm_size
        self.max_run_duration_seconds = max_run_duration_seconds
        self.framework_version = framework_version

    def to_spec(self) -> dict[str, Any]:
        """The wire format the server takes (``trainhub.spec.EstimatorSpec``)."""
        registry = self.image_registry_details
        if registry is not None and not isinstance(registry, dict):
            registry = {k: getattr(registry, k, None) for k in ("address", "username", "password")}
        spec: dict[str, Any] = {
            "entry_script": self.entry_script,
            "source_directory": str(Path(self.source_directory).resolve()),
            "script_params": {k: _data_value(v) for k, v in self.script_params.items()},
            "compute_target": self.compute_target,
            "node_count": self.node_count,
            "process_count_per_node": self.process_count_per_node,
            "distributed_backend": self.distributed_backend,
            "distributed_training": self.distributed_training.to_spec()
            if self.distributed_training
            else None,
            "use_gpu": self.use_gpu,
            "use_docker": self.use_docker,
            "custom_docker_image": self.custom_docker_image,
            "custom_docker_base_image": self.custom_docker_base_image,
            "image_registry_details": registry,
            "user_managed": self.user_managed,
            "conda_packages": self.conda_packages,
            "pip_packages": self.pip_packages,
            "conda_dependencies_file": self.conda_dependencies_file,
            "pip_requirements_file": self.pip_requirements_file,
            "environment_variables": self.environment_variables,
            "environment_definition": _environment_reference(self.environment_definition),
            "inputs": [_data_value(v) for v in self.inputs],
            "shm_size": self.shm_size,
            "max_run_duration_seconds": self.max_run_duration_seconds,
            "framework": self.framework,
            "framework_version": self.framework_version,
        }
        defaults = {
            "node_count": 1,
            "process_count_per_node": 1,
            "use_gpu": False,
            "use_docker": True,
            "user_managed": False,
        }
        return {
            k: v
            for k, v in spec.items()
            if v not in (None, [], {}) and defaults.get(k, object()) != v
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(source_directory={self.source_directory!r}, entry_script={self.entry_script!r})"


class PyTorch(Estimator):
    """Azure ML v1's ``PyTorch`` estimator (``distributed_training=Nccl()`` / ``Gloo()`` / ``Mpi()``)."""

    framework = "PyTorch"


class TensorFlow(Estimator):
    """Azure ML v1's ``TensorFlow`` estimator (``distributed_training=ParameterServer()`` / ``Mpi()``).
    Its older spelling, ``worker_count=``, ``parameter_server_count=`` and
    ``distributed_backend='ps'``, is sent as ``ParameterServer(...)``."""

    framework = "TensorFlow"

    def __init__(
        self,
        source_directory: str,
        *,
        worker_count: int | None = None,
        parameter_server_count: int | None = None,
        **kwargs: Any,
    ) -> None:
        older = worker_count is not None or parameter_server_count is not None
        if older or kwargs.get("distributed_backend") == "ps":
            if kwargs.get("distributed_training") is not None:
                raise TypeError(
                    "TensorFlow() takes distributed_training=ParameterServer(...) or "
                    "worker_count/parameter_server_count, not both"
                )
            if kwargs.get("distributed_backend") not in (None, "ps"):
                raise TypeError(
                    "worker_count and parameter_server_count need distributed_backend='ps'"
                )
            kwargs["distributed_backend"] = None
            kwargs["distributed_training"] = ParameterServer(
                1 if worker_count is None else worker_count,
                1 if parameter_server_count is None else parameter_server_count,
            )
        super().__init__(source_directory, **kwargs)
