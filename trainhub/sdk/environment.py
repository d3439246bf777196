"""Azure ML's ``Environment``: a named, reusable environment registered on the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainhub.sdk.workspace import Workspace


class ContainerRegistry:
    """Where a private image lives: ``address``, ``username``, ``password``."""

    def __init__(
        self, address: str | None = None, username: str | None = None, password: str | None = None
    ) -> None:
        self.address = address
        self.username = username
        self.password = password

    def to_spec(self) -> dict[str, Any] | None:
        values = {"address": self.address, "username": self.username, "password": self.password}
        return {k: v for k, v in values.items() if v is not None} or None


class CondaDependencies:
    """The package lists of an environment (``CondaDependencies.create(pip_packages=[...])``)."""

    def __init__(self) -> None:
        self.pip_packages: list[str] = []
        self.conda_packages: list[str] = []

    @classmethod
    def create(
        cls,
        pip_packages: list[str] | None = None,
        conda_packages: list[str] | None = None,
        **kwargs: Any,
    ) -> CondaDependencies:
        deps = cls()
        deps.pip_packages = list(pip_packages or [])
        deps.conda_packages = list(conda_packages or [])
        return deps

    def add_pip_package(self, package: str) -> None:
        self.pip_packages.append(package)

    def add_conda_package(self, package: str) -> None:
        self.conda_packages.append(package)


class DockerSection:
    def __init__(self) -> None:
        self.enabled = True
        self.base_image: str | None = None
        self.base_image_registry = ContainerRegistry()
        self.gpu_support = False


class PythonSection:
    def __init__(self) -> None:
        self.user_managed_dependencies = False
        self.conda_dependencies: CondaDependencies | None = None


class Environment:
    """``env = Environment("tf-env"); env.python.conda_dependencies = CondaDependencies.create(...);
    env.register(ws)``, then ``Estimator(..., environment_definition=env)``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.version: int | None = None
        self.docker = DockerSection()
        self.python = PythonSection()
        self.environment_variables: dict[str, str] = {}

    @classmethod
    def from_pip_requirements(cls, name: str, file_path: str) -> Environment:
        env = cls(name)
        lines = [ln.strip() for ln in Path(file_path).read_text().splitlines()]
        env.python.conda_dependencies = CondaDependencies.create(
            pip_packages=[ln for ln in lines if ln and not ln.startswith("#")]
        )
        return env

    def to_definition(self) -> dict[str, Any]:
        deps = self.python.conda_dependencies or CondaDependencies()
        definition: dict[str, Any] = {
            "name": self.name,
            "custom_docker_image": self.docker.base_image,
            "image_registry_details": self.docker.base_image_registry.to_spec(),
            "user_managed": self.python.user_managed_dependencies,
            "pip_packages": deps.pip_packages,
            "conda_packages": deps.conda_packages,
            "environment_variables": self.environment_variables,
            "use_gpu": self.docker.gpu_support,
        }
        return {k: v for k, v in definition.items() if v not in (None, [], {}, False)}

    def register(self, workspace: Workspace) -> Environment:
        found = workspace.client.json("POST", "/api/v1/environments", json=self.to_definition())
        self.version = int(found["version"])
        return self

    @classmethod
    def get(cls, workspace: Workspace, name: str, version: int | None = None) -> Environment:
        params = {"version": version} if version else {}
        found = workspace.client.json("GET", f"/api/v1/environments/{name}", params=params)
        definition = found["definition"]
        env = cls(found["name"])
        env.version = found["version"]
        env.docker.base_image = definition.get("custom_docker_image")
        registry = definition.get("image_registry_details") or {}
        env.docker.base_image_registry = ContainerRegistry(
            registry.get("address"), registry.get("username"), None
        )
        env.docker.gpu_support = bool(definition.get("use_gpu"))
        env.python.user_managed_dependencies = bool(definition.get("user_managed"))
        env.python.conda_dependencies = CondaDependencies.create(
            pip_packages=definition.get("pip_packages"),
            conda_packages=definition.get("conda_packages"),
        )
        env.environment_variables = dict(definition.get("environment_variables") or {})
        return env

    def reference(self) -> str | dict[str, Any]:
        return {"name": self.name, "version": self.version} if self.version else self.name

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r}, version={self.version})"
