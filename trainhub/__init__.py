"""trainhub: Azure ML v1's Estimator workflow as a self-hosted service on your own GPU servers.

``from trainhub import Workspace, Experiment, Estimator`` is the SDK; inside a run,
``from trainhub import Run; Run.get_context()`` logs metrics.
"""

__version__ = "0.1.0"

from trainhub.sdk import (  # noqa: E402 - the version is read by the modules below
    ActivityFailedException,
    AuthenticationError,
    CondaDependencies,
    ConfigError,
    ContainerRegistry,
    Environment,
    Estimator,
    Experiment,
    Gloo,
    Mpi,
    Nccl,
    ParameterServer,
    PyTorch,
    Run,
    RunNotFoundError,
    ServiceError,
    SnapshotError,
    TensorFlow,
    TrainhubError,
    ValidationError,
    Workspace,
)

__all__ = [
    "ActivityFailedException",
    "AuthenticationError",
    "CondaDependencies",
    "ConfigError",
    "ContainerRegistry",
    "Environment",
    "Estimator",
    "Experiment",
    "Gloo",
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
    "__version__",
]
