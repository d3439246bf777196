"""A run's environment: normalized from the Estimator spec, hashed, turned into a Dockerfile.

Equal environments share one image: the tag is a hash of the normalized environment, the base image's
id and the build settings (CA bundle, package indexes, wheel folder), so any change makes a new one.
Runtime-only fields (environment variables, shm size) are not part of it. A conda part enters the
hash as its prefix's content key (``runs/conda.py``); the image copies that prefix, built on the
server, to the same absolute path.

A Dockerfile environment (``custom_dockerfile``) is built in two steps through the same cache: the
Dockerfile alone into an image tagged by the hash of its text and its ``FROM`` images' ids, then, if
the environment also has packages, the usual package image on top of that one, whose hash holds the
Dockerfile's text and that tag (not the built image's id, which differs from node to node).
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import tarfile
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import msgspec

from trainhub.runs import conda
from trainhub.settings import Settings
from trainhub.spec import EstimatorSpec
from trainhub.store.runs import RunRow

ENV_IMAGE_REPO = "trainhub/env"
VENV = "/opt/trainhub-env"
MAX_DEPENDENCY_FILE = 1024 * 1024
CONDA_CONTEXT = "trainhub-conda"  # the prefix's folder in the build context


@dataclass(frozen=True)
class Environment:
    # The image to run in or build on; for a Dockerfile environment, the Dockerfile's own image,
    # known once it is built (empty until then).
    base_image: str
    user_managed: bool = False
    pip_packages: tuple[str, ...] = ()
    pip_requirements: str | None = None
    conda_packages: tuple[str, ...] = ()
    conda_dependencies: str | None = None
    conda_channels: str = ""  # the server's channels (a setting) for specs that name none
    registry: dict[str, Any] | None = field(default=None, compare=False)
    dockerfile: str | None = None

    @property
    def needs_build(self) -> bool:
        return bool(
            self.pip_packages
            or self.pip_requirements
            or self.conda_packages
            or self.conda_dependencies
        )

    @property
    def needs_conda(self) -> bool:
        return bool(self.conda_packages or self.conda_dependencies)

    @cached_property
    def conda(self) -> conda.Request | None:
        """The conda part, parsed; raises :class:`~trainhub.spec.SpecError` for a bad file."""
        if not self.needs_conda:
            return None
        return conda.request_for(
            self.conda_packages,
            self.conda_dependencies,
            self.conda_channels,
            with_pip=bool(self.pip_packages or self.pip_requirements),
        )

    @property
    def pip_lines(self) -> tuple[str, ...]:
        """``pip_packages`` and the conda environment file's ``pip:`` section."""
        return self.pip_packages + (self.conda.pip if self.conda else ())

    def normalized(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("registry")
        data.pop("base_image")
        data.pop("conda_channels")
        if self.dockerfile is None:
            data.pop("dockerfile")  # the hashes of environments without one stay as they were
        data["pip_packages"] = sorted({p.strip() for p in self.pip_packages if p.strip()})
        data["conda_packages"] = sorted({p.strip() for p in self.conda_packages if p.strip()})
        if self.conda is not None:
            data["conda_prefix"] = self.conda.key
        return data

    def key(self, base_image_id: str, build_fingerprint: str) -> str:
        blob = json.dumps(
            {"env": self.normalized(), "base": base_image_id, "build": build_fingerprint},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["pip_packages"] = list(self.pip_packages)
        data["conda_packages"] = list(self.conda_packages)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Environment:
        values = dict(data)
        values["pip_packages"] = tuple(values.get("pip_packages") or ())
        values["conda_packages"] = tuple(values.get("conda_packages") or ())
        return cls(**values)


def image_tag(key: str) -> str:
    return f"{ENV_IMAGE_REPO}:{key}"


def dockerfile_key(text: str, base_ids: dict[str, str]) -> str:
    """The hash of a Dockerfile image: its text and the ids of the images it starts ``FROM``."""
    blob = json.dumps({"dockerfile": text, "from": base_ids}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def dockerfile_context(text: str) -> bytes:
    """A Dockerfile's build context: the Dockerfile and nothing else (as in Azure ML v1)."""
    data = text.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def from_spec(spec: EstimatorSpec, settings: Settings, files: dict[str, str]) -> Environment:
    """``files`` holds the contents of the dependency files named by the spec, read from the snapshot
    (keyed by their path in it, without a leading ``./``)."""
    if spec.custom_dockerfile is not None:
        base = ""  # built from the Dockerfile at Preparing
    elif spec.image:
        base = spec.image
    elif spec.use_gpu:
        base = settings.default_gpu_image
    else:
        base = settings.default_image
    details = spec.image_registry_details
    registry: dict[str, Any] | None = msgspec.to_builtins(details) if details is not None else None
    conda_file = files.get((spec.conda_dependencies_file or "").removeprefix("./"))
    return Environment(
        base_image=base,
        user_managed=spec.user_managed,
        pip_packages=tuple(spec.pip_packages),
        pip_requirements=files.get((spec.pip_requirements_file or "").removeprefix("./")),
        conda_packages=tuple(spec.conda_packages),
        conda_dependencies=conda_file,
        conda_channels=settings.conda_channels if spec.conda_packages or conda_file else "",
        registry=registry,
        dockerfile=spec.custom_dockerfile,
    )


def build_fingerprint(settings: Settings) -> str:
    """What, besides the environment, changes the built image: the build settings."""
    parts: list[str] = [settings.pip_index_url or "", settings.pip_extra_index_urls or ""]
    if settings.build_ca_bundle:
        ca = Path(settings.build_ca_bundle)
        parts.append(hashlib.sha256(ca.read_bytes()).hexdigest() if ca.is_file() else "missing")
    if settings.wheel_dir:
        folder = Path(settings.wheel_dir)
        if folder.is_dir():
            parts += sorted(f"{p.name}:{p.stat().st_size}" for p in folder.iterdir() if p.is_file())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def pip_environment(
    settings: Settings, ca_path: str | None, wheels_path: str | None
) -> dict[str, str]:
    """The pip settings a build gets (inside an image build or for a venv on a node)."""
    env = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PIP_PROGRESS_BAR": "off"}
    if ca_path:
        env["PIP_CERT"] = ca_path
    if settings.pip_index_url:
        env["PIP_INDEX_URL"] = settings.pip_index_url
    if settings.pip_extra_index_urls:
        env["PIP_EXTRA_INDEX_URL"] = " ".join(settings.pip_extra_index_urls.split(","))
    if wheels_path:
        env["PIP_FIND_LINKS"] = wheels_path
    return env


def dockerfile(
    env: Environment,
    key: str,
    settings: Settings,
    prefix: conda.Prefix | None = None,
    python_version: str | None = None,
) -> str:
    """The Dockerfile. A conda ``prefix`` is copied to its own path; with a Python of its own it
    runs the script and takes the pip packages, else the image's Python (``python_version``) runs
    in a venv with the prefix's packages and libraries visible."""
    has_ca = bool(settings.build_ca_bundle)
    has_wheels = bool(settings.wheel_dir and Path(settings.wheel_dir).is_dir())
    pip_env = pip_environment(
        settings,
        "/trainhub-build/ca.crt" if has_ca else None,
        "/trainhub-build/wheels" if has_wheels else None,
    )
    lines = [
        f"FROM {env.base_image}",
        f"LABEL org.trainhub.env={key} org.trainhub.kind=env",
        "COPY trainhub-build/ /trainhub-build/",
        "ENV " + " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(pip_env.items())),
    ]
    make_venv = f"RUN python3 -m venv --system-site-packages {VENV}"
    use_venv = f"ENV PATH={VENV}/bin:$PATH VIRTUAL_ENV={VENV}"
    pip = f"{VENV}/bin/python -m pip"
    if prefix is None:
        lines += [make_venv, use_venv]
    elif prefix.has_python:
        path = _dockerfile_path(prefix.path)
        lines.append(f"COPY {json.dumps([f'{CONDA_CONTEXT}/', f'{path}/'])}")
        lines.append(f'ENV PATH="{path}/bin:$PATH" CONDA_PREFIX="{path}"')
        pip = f"{shlex.quote(str(prefix.python))} -m pip"
    else:
        if python_version is None:
            raise ValueError("the image's Python version is needed for a prefix without Python")
        path = _dockerfile_path(prefix.path)
        site = prefix.site_packages(python_version)
        lines.append(make_venv)  # before the prefix's libraries are on LD_LIBRARY_PATH
        lines.append(f"COPY {json.dumps([f'{CONDA_CONTEXT}/', f'{path}/'])}")
        lines.append(
            f'ENV PATH="{path}/bin:$PATH" CONDA_PREFIX="{path}" '
            f'PYTHONPATH="{site}${{PYTHONPATH:+:$PYTHONPATH}}" '
            f'LD_LIBRARY_PATH="{path}/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"'
        )
        lines.append(use_venv)
    if env.pip_requirements:
        lines.append(f"RUN {pip} install -r /trainhub-build/requirements.txt")
    if env.pip_lines:
        lines.append(f"RUN {pip} install -r /trainhub-build/pip-packages.txt")
    return "\n".join(lines) + "\n"


def _dockerfile_path(path: Path) -> str:
    """``path`` as it may stand in a Dockerfile's quoted ``ENV`` and JSON ``COPY``."""
    text = str(path)
    if any(c in text for c in '"$\\\n`'):
        raise ValueError(f"the data folder's path {text!r} cannot be written in a Dockerfile")
    return text


def build_context(
    env: Environment,
    key: str,
    settings: Settings,
    prefix: conda.Prefix | None = None,
    python_version: str | None = None,
) -> bytes:
    """The build context as a tar: the Dockerfile, ``trainhub-build/`` (lists, CA, wheels) and the
    conda prefix (``trainhub-conda/``, links kept as links)."""
    files: dict[str, bytes] = {
        "Dockerfile": dockerfile(env, key, settings, prefix, python_version).encode()
    }
    if env.pip_requirements:
        files["trainhub-build/requirements.txt"] = env.pip_requirements.encode()
    if env.pip_lines:
        files["trainhub-build/pip-packages.txt"] = "\n".join(env.pip_lines).encode() + b"\n"
    if settings.build_ca_bundle:
        files["trainhub-build/ca.crt"] = Path(settings.build_ca_bundle).read_bytes()
    else:
        files["trainhub-build/.keep"] = b""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        if settings.wheel_dir and Path(settings.wheel_dir).is_dir():
            for wheel in sorted(Path(settings.wheel_dir).iterdir()):
                if wheel.is_file():
                    tar.add(
                        str(wheel), arcname=f"trainhub-build/wheels/{wheel.name}", recursive=False
                    )
        if prefix is not None:
            tar.add(str(prefix.path), arcname=CONDA_CONTEXT)
    return buf.getvalue()


def read_dependency_files(snapshot: Path, names: list[str]) -> dict[str, str]:
    """The text of ``names`` (requirements/conda files) from a checked snapshot."""
    wanted = {n.removeprefix("./") for n in names if n}
    found: dict[str, str] = {}
    if not wanted:
        return found
    with tarfile.open(snapshot, mode="r:gz") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if name in wanted and member.isreg() and member.size <= MAX_DEPENDENCY_FILE:
                handle = tar.extractfile(member)
                if handle is not None:
                    found[name] = handle.read().decode("utf-8", errors="replace")
    return found


def environment_for(
    spec: EstimatorSpec,
    run: RunRow,
    *,
    lib_dir: str,
    context_dir: str,
    inherited_pythonpath: str | None = None,
) -> dict[str, str]:
    """The variables every run's script sees, in a container or as a process: the spec's own, the
    run's identity (trainhub's and Azure ML's names), and where the in-run runtime lives."""
    env = dict(spec.environment_variables)
    pythonpath = [lib_dir, inherited_pythonpath, env.get("PYTHONPATH")]
    env.update(
        {
            "TRAINHUB_RUN_ID": run.id,
            "AZUREML_RUN_ID": run.id,
            "TRAINHUB_RUN_NUMBER": str(run.number),
            "TRAINHUB_EXPERIMENT": run.experiment,
            "AZUREML_EXPERIMENT_NAME": run.experiment,
            "TRAINHUB_CONTEXT_DIR": context_dir,
            "PYTHONPATH": ":".join(p for p in pythonpath if p),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env
