"""Azure ML's ``Environment``: a named, reusable environment registered on the server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

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
    """The package lists of an environment: ``CondaDependencies.create(conda_packages=[...],
    pip_packages=[...])``, ``add_conda_package``, ``add_pip_package``, ``add_channel``, or
    ``CondaDependencies(conda_dependencies_file_path="env.yml")``."""

    def __init__(self, conda_dependencies_file_path: str | None = None) -> None:
        self.pip_packages: list[str] = []
        self.conda_packages: list[str] = []
        self.conda_channels: list[str] = []
        if conda_dependencies_file_path is not None:
            self._read(Path(conda_dependencies_file_path).read_text())

    @classmethod
    def create(
        cls,
        pip_packages: list[str] | None = None,
        conda_packages: list[str] | None = None,
        python_version: str | None = None,
        pin_sdk_version: bool = True,
        pip_indexing_urls: list[str] | None = None,
    ) -> CondaDependencies:
        if pip_indexing_urls:
            raise ValueError(
                "pip_indexing_urls is not supported by trainhub: packages come from the "
                "server's own pip settings"
            )
        deps = cls()
        deps.pip_packages = list(pip_packages or [])
        deps.conda_packages = list(conda_packages or [])
        if python_version:
            deps.conda_packages.insert(0, f"python={python_version}")
        return deps

    def _read(self, text: str) -> None:
        """A conda environment file's ``channels`` and ``dependencies`` (with its ``pip:`` list)."""
        data = msgspec.yaml.decode(text)
        if not isinstance(data, dict):
            raise ValueError("a conda environment file is a YAML mapping (channels, dependencies)")
        self.conda_channels = [str(c) for c in data.get("channels") or []]
        for entry in data.get("dependencies") or []:
            if isinstance(entry, dict):
                self.pip_packages += [str(p) for p in entry.get("pip") or []]
            else:
                self.conda_packages.append(str(entry))

    def add_pip_package(self, pip_package: str) -> None:
        self.pip_packages.append(pip_package)

    def add_conda_package(self, conda_package: str) -> None:
        self.conda_packages.append(conda_package)

    def add_channel(self, channel: str) -> None:
        if channel not in self.conda_channels:
            self.conda_channels.append(channel)

    def conda_specs(self) -> list[str]:
        """The conda packages as the server takes them: with channels added, a package that names
        no channel is ``<first channel>::package`` (trainhub solves with the channels named so)."""
        channels = [c for c in self.conda_channels if c != "defaults"]
        if not channels:
            return list(self.conda_packages)
        return [p if "::" in p else f"{channels[0]}::{p}" for p in self.conda_packages]


def _not_supported(what: str) -> ValueError:
    return ValueError(
        f"{what} is not supported by trainhub yet: use docker.base_image (an image) with "
        "python.conda_dependencies, or user_managed_dependencies"
    )


class DockerSection:
    def __init__(self) -> None:
        self.enabled = True
        self.base_image: str | None = None
        self.base_image_registry = ContainerRegistry()
        self.gpu_support = False
        self._dockerfile: str | None = None

    @property
    def base_dockerfile(self) -> str | None:
        """The Dockerfile the server builds the environment's image from (its text). Set it to the
        text or, as Azure ML allowed, to the path of a file, which is read now."""
        return self._dockerfile

    @base_dockerfile.setter
    def base_dockerfile(self, value: str | os.PathLike[str] | None) -> None:
        self._dockerfile = None if value is None else _dockerfile_text(value)


def _dockerfile_text(value: str | os.PathLike[str]) -> str:
    """A Dockerfile's text, or the text of the file it names (a single line naming a file)."""
    if isinstance(value, os.PathLike):
        return Path(value).read_text(encoding="utf-8")
    if "\n" not in value:
        try:
            if Path(value).is_file():
                return Path(value).read_text(encoding="utf-8")
        except OSError:  # a line too long to be a path is a Dockerfile's text
            pass
    return value


class PythonSection:
    def __init__(self) -> None:
        self.user_managed_dependencies = False
        self.conda_dependencies: CondaDependencies | None = None

    @property
    def interpreter_path(self) -> str:
        return "python"

    @interpreter_path.setter
    def interpreter_path(self, value: str) -> None:
        if value not in ("python", None):
            raise _not_supported("python.interpreter_path (the run uses the image's 'python')")


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

    @classmethod
    def from_conda_specification(cls, name: str, file_path: str) -> Environment:
        """An environment from a conda environment file (``channels``, ``dependencies``, ``pip:``)."""
        env = cls(name)
        env.python.conda_dependencies = CondaDependencies(conda_dependencies_file_path=file_path)
        return env

    @classmethod
    def from_dockerfile(
        cls,
        name: str,
        dockerfile: str | os.PathLike[str],
        conda_specification: str | None = None,
        pip_requirements: str | None = None,
    ) -> Environment:
        """An environment built from a Dockerfile (its text or a path to it). Packages from a conda
        environment file or a pip requirements file (one of them, as in Azure ML) go on top of it;
        without either, the image's Python is used as it is (``user_managed_dependencies``)."""
        if conda_specification and pip_requirements:
            raise ValueError(
                "from_dockerfile takes conda_specification or pip_requirements, not both"
            )
        if conda_specification:
            env = cls.from_conda_specification(name, conda_specification)
        elif pip_requirements:
            env = cls.from_pip_requirements(name, pip_requirements)
        else:
            env = cls(name)
            env.python.user_managed_dependencies = True
        env.docker.base_dockerfile = dockerfile
        return env

    def to_spec_fields(self) -> dict[str, Any]:
        """The Estimator spec's environment fields (the one wire format): what a ScriptRunConfig
        given this environment sends."""
        deps = self.python.conda_dependencies or CondaDependencies()
        return {
            "use_docker": self.docker.enabled,
            "custom_docker_image": self.docker.base_image,
            "custom_dockerfile": self.docker.base_dockerfile,
            "image_registry_details": self.docker.base_image_registry.to_spec(),
            "user_managed": self.python.user_managed_dependencies,
            "pip_packages": list(deps.pip_packages),
            "conda_packages": deps.conda_specs(),
            "environment_variables": dict(self.environment_variables),
            "use_gpu": self.docker.gpu_support,
        }

    def to_definition(self) -> dict[str, Any]:
        deps = self.python.conda_dependencies or CondaDependencies()
        definition: dict[str, Any] = {
            "name": self.name,
            "custom_docker_image": self.docker.base_image,
            "custom_dockerfile": self.docker.base_dockerfile,
            "image_registry_details": self.docker.base_image_registry.to_spec(),
            "user_managed": self.python.user_managed_dependencies,
            "pip_packages": deps.pip_packages,
            "conda_packages": deps.conda_specs(),
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
        return cls._from_answer(found)

    @classmethod
    def _from_answer(cls, found: dict[str, Any]) -> Environment:
        definition = found["definition"]
        env = cls(found["name"])
        env.version = found["version"]
        env.docker.base_image = definition.get("custom_docker_image")
        env.docker._dockerfile = definition.get("custom_dockerfile")  # text, never a path
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

    @staticmethod
    def list(workspace: Workspace) -> dict[str, Environment]:
        """The registered environments (latest versions) by name, as Azure ML returns them."""
        found = workspace.client.json("GET", "/api/v1/environments")
        return {e["name"]: Environment._from_answer(e) for e in found["environments"]}

    def reference(self) -> str | dict[str, Any]:
        return {"name": self.name, "version": self.version} if self.version else self.name

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r}, version={self.version})"
