"""The Python SDK: Azure ML v1's Workspace / Experiment / Estimator / Run, against a trainhub server."""

from trainhub.sdk.datastore import DataReference, Datastore, DatastoreError
from trainhub.sdk.environment import CondaDependencies, ContainerRegistry, Environment
from trainhub.sdk.errors import (
    ActivityFailedException,
    AuthenticationError,
    ConfigError,
    RunNotFoundError,
    ServiceError,
    SnapshotError,
    TrainhubError,
    ValidationError,
)
from trainhub.sdk.estimator import Estimator, Gloo, Mpi, Nccl, ParameterServer, PyTorch, TensorFlow
from trainhub.sdk.model import Model, ModelNotFoundError
from trainhub.sdk.run import Experiment, Run
from trainhub.sdk.script_run_config import (
    DockerConfiguration,
    MpiConfiguration,
    PyTorchConfiguration,
    RunConfiguration,
    ScriptRunConfig,
    TensorflowConfiguration,
)
from trainhub.sdk.workspace import Workspace

__all__: list[str] = [
    "TensorflowConfiguration",
    "ScriptRunConfig",
    "RunConfiguration",
    "PyTorchConfiguration",
    "MpiConfiguration",
    "DockerConfiguration",
    "ActivityFailedException",
    "AuthenticationError",
    "CondaDependencies",
    "ConfigError",
    "ContainerRegistry",
    "DataReference",
    "Datastore",
    "DatastoreError",
    "Environment",
    "Estimator",
    "Experiment",
    "Gloo",
    "Model",
    "ModelNotFoundError",
    "Mpi",
    "Nccl",
    "ParameterServer",
    "PyTorch",
    "Run",
    "RunNotFoundError",
    "ServiceError",
    "SnapshotError",
    "TensorFlow",
    "TrainhubError",
    "ValidationError",
    "Workspace",
]
