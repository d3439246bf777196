"""Azure ML v1's ``ScriptRunConfig`` and ``RunConfiguration``, with the distributed-job configs.

They describe the same run an ``Estimator`` does and send the same spec (``to_spec``): the server
does not care which shape the client used. ``src.run_config`` holds what a run needs beside the
script (target, environment, node count, communicator); ``ScriptRunConfig``'s own arguments are
written into it, as in Azure ML, so that ``src.run_config.environment = env`` takes effect.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from trainhub.sdk.environment import Environment
from trainhub.sdk.estimator import Mpi, _data_value, _name_of

# Azure ML's default limit on a ScriptRunConfig's run: 30 days.
DEFAULT_MAX_RUN_DURATION_SECONDS = 2592000


class MpiConfiguration(Mpi):
    """``distributed_job_config=MpiConfiguration(process_count_per_node=2, node_count=2)``; given to
    an Estimator as ``distributed_training``, the Estimator holds ``node_count``."""

    def __init__(self, process_count_per_node: int = 1, node_count: int = 1) -> None:
        super().__init__(process_count_per_node)
        self.node_count = node_count

    def to_spec(self) -> dict[str, Any]:
        if self.node_count != 1:
            raise ValueError(
                "MpiConfiguration.node_count is for ScriptRunConfig; with an Estimator give "
                "node_count to the Estimator (Estimator(..., node_count=2, "
                "distributed_training=MpiConfiguration()))"
            )
        return {"type": self.type, "process_count_per_node": self.process_count_per_node}


class PyTorchConfiguration:
    """``PyTorchConfiguration(communication_backend='Nccl', process_count=4, node_count=2)``:
    ``process_count`` is the total over all nodes."""

    def __init__(
        self,
        communication_backend: str = "Nccl",
        process_count: int | None = None,
        node_count: int = 1,
    ) -> None:
        self.communication_backend = communication_backend
        self.process_count = process_count
        self.node_count = node_count

    def to_spec(self) -> dict[str, Any]:
        backend = self.communication_backend.lower()
        spec: dict[str, Any] = {"type": backend, "communication_backend": backend}
        if self.process_count is not None:
            spec["process_count_per_node"] = max(1, self.process_count // max(1, self.node_count))
        return spec


class TensorflowConfiguration:
    """``TensorflowConfiguration(worker_count=2, parameter_server_count=1)``: parameter servers."""

    node_count = 1

    def __init__(self, worker_count: int = 1, parameter_server_count: int = 1) -> None:
        self.worker_count = worker_count
        self.parameter_server_count = parameter_server_count

    def to_spec(self) -> dict[str, Any]:
        return {
            "type": "ps",
            "worker_count": self.worker_count,
            "parameter_server_count": self.parameter_server_count,
        }


DistributedJobConfig = MpiConfiguration | PyTorchConfiguration | TensorflowConfiguration


class DockerConfiguration:
    """``docker_runtime_config=DockerConfiguration(use_docker=True)``; ``shm_size`` as ``'2g'``.
    Extra ``docker run`` arguments are not supported: the server decides how containers start."""

    def __init__(
        self,
        use_docker: bool | None = None,
        shared_volumes: bool | None = None,
        arguments: list[str] | None = None,
        shm_size: str | None = None,
    ) -> None:
        if arguments:
            raise ValueError(
                "DockerConfiguration(arguments=...) is not supported by trainhub: the server "
                "decides how a run's container starts"
            )
        self.use_docker = use_docker
        self.shared_volumes = shared_volumes
        self.shm_size = shm_size


class RunConfiguration:
    """What a run needs beside its script: ``target``, ``environment``, ``node_count``,
    ``communicator`` with ``mpi`` / ``pytorch`` / ``tensorflow``, ``max_run_duration_seconds``,
    ``environment_variables`` (added to the environment's), ``docker``."""

    def __init__(
        self, script: str | None = None, arguments: list[Any] | None = None, **kwargs: Any
    ) -> None:
        if kwargs:
            raise TypeError(f"RunConfiguration() got unexpected arguments: {', '.join(kwargs)}")
        self.script = script
        self.arguments: list[Any] = list(arguments or [])
        self.target: Any = "local"
        self.environment: Environment | str | None = None
        self.node_count = 1
        self.communicator = "None"
        self.mpi = MpiConfiguration()
        self.pytorch: PyTorchConfiguration | None = None
        self.tensorflow: TensorflowConfiguration | None = None
        self.max_run_duration_seconds: int | None = None
        self.environment_variables: dict[str, str] = {}
        self.docker = DockerConfiguration()

    def distributed_training(self) -> dict[str, Any] | None:
        """The spec's ``distributed_training``, from ``communicator`` as Azure ML set it."""
        communicator = self.communicator.lower()
        if communicator in ("intelmpi", "openmpi", "mpi"):
            return {"type": "mpi", "process_count_per_node": self.mpi.process_count_per_node}
        if communicator in ("nccl", "gloo") and self.pytorch is not None:
            return self.pytorch.to_spec()
        if communicator == "parameterserver" and self.tensorflow is not None:
            return self.tensorflow.to_spec()
        if communicator != "none":
            raise ValueError(
                f"run_config.communicator={self.communicator!r} needs its configuration: give "
                "ScriptRunConfig(distributed_job_config=MpiConfiguration(...) / "
                "PyTorchConfiguration(...) / TensorflowConfiguration(...))"
            )
        return None

    def environment_fields(self) -> dict[str, Any]:
        """The environment part of the spec: an Environment object's fields, or a registered
        environment's name."""
        env = self.environment
        if env is None:
            fields: dict[str, Any] = {"environment_variables": dict(self.environment_variables)}
        elif isinstance(env, str):
            if self.environment_variables:
                raise ValueError(
                    "run_config.environment_variables with a registered environment's name: "
                    "put the variables in the environment"
                )
            fields = {"environment_definition": env}
        else:
            fields = env.to_spec_fields()
            fields["environment_variables"] = {
                **fields["environment_variables"],
                **self.environment_variables,
            }
        if self.docker.use_docker is not None:
            fields["use_docker"] = self.docker.use_docker
        return fields

    def __repr__(self) -> str:
        return (
            f"RunConfiguration(target={_name_of(self.target)!r}, environment={self.environment!r})"
        )


class ScriptRunConfig:
    """Azure ML v1's ``ScriptRunConfig``: a script in ``source_directory``, its ``arguments``
    (strings, numbers, ``ds.path('x').as_mount()``...), where and in what environment it runs."""

    def __init__(
        self,
        source_directory: str,
        script: str | None = None,
        arguments: list[Any] | None = None,
        run_config: RunConfiguration | None = None,
        _telemetry_values: Any = None,
        compute_target: Any = None,
        environment: Environment | str | None = None,
        distributed_job_config: DistributedJobConfig | None = None,
        resume_from: Any = None,
        max_run_duration_seconds: int | None = DEFAULT_MAX_RUN_DURATION_SECONDS,
        command: list[str] | str | None = None,
        docker_runtime_config: DockerConfiguration | None = None,
    ) -> None:
        if resume_from is not None:
            raise ValueError("resume_from is not supported by trainhub")
        if command is not None:
            if script is not None or arguments:
                raise ValueError("give command, or script and arguments, not both")
            script, arguments = _python_command(command)
        self.source_directory = str(source_directory)
        self.run_config = run_config if run_config is not None else RunConfiguration()
        if script is not None:
            self.run_config.script = script
        if arguments is not None:
            self.run_config.arguments = list(arguments)
        if compute_target is not None:
            self.run_config.target = compute_target
        if environment is not None:
            self.run_config.environment = environment
        if max_run_duration_seconds is not None:
            self.run_config.max_run_duration_seconds = max_run_duration_seconds
        if docker_runtime_config is not None:
            self.run_config.docker = docker_runtime_config
        if isinstance(distributed_job_config, MpiConfiguration):
            self.run_config.communicator = "IntelMpi"
            self.run_config.mpi = distributed_job_config
        elif isinstance(distributed_job_config, PyTorchConfiguration):
            self.run_config.communicator = distributed_job_config.communication_backend
            self.run_config.pytorch = distributed_job_config
        elif isinstance(distributed_job_config, TensorflowConfiguration):
            self.run_config.communicator = "ParameterServer"
            self.run_config.tensorflow = distributed_job_config
        elif distributed_job_config is not None:
            raise TypeError(
                "distributed_job_config takes MpiConfiguration, PyTorchConfiguration or "
                "TensorflowConfiguration"
            )
        if distributed_job_config is not None:
            self.run_config.node_count = distributed_job_config.node_count

    @property
    def script(self) -> str | None:
        return self.run_config.script

    @property
    def arguments(self) -> list[Any]:
        return self.run_config.arguments

    def to_spec(self) -> dict[str, Any]:
        """The wire format the server takes (``trainhub.spec.EstimatorSpec``), as an Estimator's."""
        rc = self.run_config
        if not rc.script:
            raise TypeError("ScriptRunConfig() needs script (the file to run in source_directory)")
        spec: dict[str, Any] = {
            "entry_script": rc.script,
            "source_directory": str(Path(self.source_directory).resolve()),
            "arguments": [_data_value(v) for v in rc.arguments],
            "compute_target": _name_of(rc.target) or "local",
            "node_count": rc.node_count,
            "distributed_training": rc.distributed_training(),
            "max_run_duration_seconds": rc.max_run_duration_seconds,
            "shm_size": rc.docker.shm_size,
            **rc.environment_fields(),
        }
        defaults = {"node_count": 1, "use_gpu": False, "use_docker": True, "user_managed": False}
        return {
            k: v
            for k, v in spec.items()
            if v not in (None, [], {}) and defaults.get(k, object()) != v
        }

    def __repr__(self) -> str:
        return (
            f"ScriptRunConfig(source_directory={self.source_directory!r}, script={self.script!r})"
        )


def _python_command(command: list[str] | str) -> tuple[str, list[Any]]:
    """``command=['python', 'train.py', '--lr', 0.1]`` as a script and its arguments; any other
    command is refused (trainhub runs a Python script)."""
    words: list[Any] = shlex.split(command) if isinstance(command, str) else list(command)
    if (
        len(words) >= 2
        and words[0] in ("python", "python3")
        and isinstance(words[1], str)
        and words[1].endswith(".py")
    ):
        return words[1], words[2:]
    raise ValueError(
        "ScriptRunConfig(command=...) is not supported by trainhub yet beyond "
        "'python script.py args...': give script= and arguments= instead"
    )
