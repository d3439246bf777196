"""Conda environments without conda: solved and installed on the server with py-rattler.

A run's conda part (match specs from ``conda_packages`` and the environment file, the channels, the
platforms) is keyed by its content. Its prefix is built once per key under ``DATA/conda/<key>``:
into a temporary sibling whose files already name the final path, then renamed, so a prefix that
exists with its marker is complete. Environment images ``COPY`` it to that same absolute path, and
runs without a container use it in place: nothing in it is ever relocated.

The solve and the install run in a worker process (``python -m trainhub.runs.conda``): py-rattler's
runtime threads can crash the interpreter that used them when it exits (seen here about once in 20
exits), which must never be the server. Workers for the same key wait on one file lock, so the
prefix is built once even by several servers on one data folder.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Literal

import msgspec
import msgspec.yaml
import rattler
import rattler.exceptions

from trainhub.settings import Settings
from trainhub.spec import SpecError, check_pip_packages

PLATFORMS: tuple[Literal["linux-64"], Literal["noarch"]] = ("linux-64", "noarch")
READY = "conda-meta/trainhub-ready.json"  # written last: the prefix is complete
FILE_FIELD = "conda_dependencies_file"
# conda's ``defaults`` are Anaconda's own channels, not a channel named "defaults" on anaconda.org.
DEFAULTS = ("https://repo.anaconda.com/pkgs/main", "https://repo.anaconda.com/pkgs/r")
SCHEMES = ("http://", "https://", "file://", "s3://", "gcs://", "oci://")


class CondaFailed(Exception):
    """The environment could not be solved or installed; the message is the solver's or
    installer's own."""


class EnvFile(msgspec.Struct):
    """The parts of a conda environment file (``environment.yml``) that make the environment."""

    channels: list[str] = []
    dependencies: list[str | dict[str, list[str]]] = []


@dataclass(frozen=True)
class Request:
    """What a prefix is built from. ``channels`` are URLs in priority order; ``pip`` holds the
    environment file's ``pip:`` section (installed by pip, not part of the prefix); ``with_pip``
    says whether pip must be there when the environment has its own Python."""

    specs: tuple[str, ...]
    channels: tuple[str, ...]
    pip: tuple[str, ...] = ()
    with_pip: bool = False

    @property
    def key(self) -> str:
        blob = json.dumps(
            {
                "specs": sorted(self.specs),
                "channels": list(self.channels),
                "platforms": list(PLATFORMS),
                "with_pip": self.with_pip,
            }
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Prefix:
    """A complete prefix on the server."""

    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def has_python(self) -> bool:
        return self.python.exists()

    def site_packages(self, python_version: str) -> str:
        return f"{self.path}/lib/python{python_version}/site-packages"

    def variables(self, python_version: str | None, inherited: dict[str, str]) -> dict[str, str]:
        """What a process sees of the prefix: its ``bin`` first on ``PATH``; without a Python of
        its own, its packages for ``python_version`` (the Python that runs) and its libraries."""
        env = {
            "PATH": _joined(f"{self.path}/bin", inherited.get("PATH")),
            "CONDA_PREFIX": str(self.path),
        }
        if not self.has_python and python_version:
            env["PYTHONPATH"] = _joined(
                self.site_packages(python_version), inherited.get("PYTHONPATH")
            )
            env["LD_LIBRARY_PATH"] = _joined(f"{self.path}/lib", inherited.get("LD_LIBRARY_PATH"))
        return env


def _joined(first: str, rest: str | None) -> str:
    return f"{first}:{rest}" if rest else first


# Reading the request ------------------------------------------------------------------------------
def request_for(
    packages: tuple[str, ...] | list[str],
    env_file: str | None,
    default_channels: str,
    with_pip: bool = False,
) -> Request:
    """The request of ``conda_packages`` and an environment file's text; raises :class:`SpecError`
    naming the field. Channels: the file's ``channels:``, else ``default_channels`` (the setting),
    plus those named by ``channel::package`` specs."""
    specs: list[str] = []
    pip: list[str] = []
    channels: list[str] = []
    if env_file is not None:
        parsed = parse_env_file(env_file)
        for entry in parsed.dependencies:
            if isinstance(entry, dict):
                unknown = sorted(set(entry) - {"pip"})
                if unknown:
                    raise SpecError(
                        FILE_FIELD,
                        f"{FILE_FIELD}: dependencies may hold a 'pip:' list, not {unknown[0]!r}",
                    )
                pip += entry.get("pip", [])
            else:
                specs.append(_checked_spec(FILE_FIELD, entry, "dependencies"))
        channels += [url for c in parsed.channels for url in channel_urls(FILE_FIELD, c)]
        try:
            check_pip_packages(FILE_FIELD, pip)
        except SpecError as exc:
            raise SpecError(FILE_FIELD, f"{FILE_FIELD}: pip: {exc.message}") from None
    specs += [
        _checked_spec("conda_packages", entry, f"conda_packages[{index}]")
        for index, entry in enumerate(packages)
    ]
    if not specs:
        raise SpecError(FILE_FIELD, f"{FILE_FIELD}: it names no conda package (dependencies:)")
    named = [_spec_channel(s) for s in specs]
    if not channels and any(c is None for c in named):
        channels = [
            url for c in default_channels.split(",") for url in channel_urls("conda_channels", c)
        ]
    for url in named:
        if url is not None and url not in channels:
            channels.append(url)
    unique = list(dict.fromkeys(channels))
    return Request(
        specs=tuple(specs), channels=tuple(unique), pip=tuple(pip), with_pip=with_pip or bool(pip)
    )


def parse_env_file(text: str) -> EnvFile:
    """A conda environment file, with YAML's own message when it is not one."""
    if not text.strip():
        raise SpecError(FILE_FIELD, f"{FILE_FIELD}: the file is empty")
    try:
        return msgspec.yaml.decode(text, type=EnvFile)
    except msgspec.ValidationError as exc:
        raise SpecError(FILE_FIELD, f"{FILE_FIELD}: not a conda environment file: {exc}") from None
    except msgspec.DecodeError as exc:
        message = " ".join(str(exc).split())
        raise SpecError(FILE_FIELD, f"{FILE_FIELD}: not valid YAML: {message}") from None


def _checked_spec(field: str, entry: str, where: str) -> str:
    try:
        rattler.MatchSpec(entry)
    except rattler.exceptions.InvalidMatchSpecError as exc:
        raise SpecError(field, f"{where}: {entry!r} is not a conda match spec: {exc}") from None
    return entry


def _spec_channel(spec: str) -> str | None:
    channel = rattler.MatchSpec(spec).channel
    return channel.base_url.rstrip("/") if channel is not None else None


def channel_urls(field: str, entry: str) -> list[str]:
    """A channel as URLs: a URL as it is, an absolute folder as ``file://``, ``defaults`` as
    Anaconda's channels, a name (``conda-forge``, ``pytorch/label/dev``) on anaconda.org;
    ``nodefaults`` (conda's "not the defaults") and blanks as none."""
    value = entry.strip()
    if value in ("", "nodefaults"):
        return []
    if value.startswith(SCHEMES):
        return [value.rstrip("/")]
    if value.startswith("/"):
        return [Path(value).resolve().as_uri()]
    if value == "defaults":
        return list(DEFAULTS)
    if not all(c.isalnum() or c in "-_./" for c in value) or ".." in value:
        raise SpecError(
            field,
            f"{field}: {entry!r} is not a conda channel (a name such as conda-forge, a URL, or "
            "an absolute folder path)",
        )
    return [str(rattler.Channel(value).base_url).rstrip("/")]


# Building the prefix ------------------------------------------------------------------------------
def cache_dir(settings: Settings) -> Path:
    """Downloaded packages and channel indexes, shared by every prefix of this server."""
    return settings.conda_prefix(".cache")


def ready(settings: Settings, request: Request) -> Prefix | None:
    prefix = Prefix(settings.conda_prefix(request.key))
    return prefix if (prefix.path / READY).is_file() else None


async def ensure_prefix(settings: Settings, request: Request, log_path: Path) -> Prefix:
    """The complete prefix for ``request``, built now if it is not there yet (its progress and
    the solver's messages go to ``log_path``); raises :class:`CondaFailed`."""
    found = ready(settings, request)
    if found is not None:
        _append(log_path, f"Conda environment {request.key} is present: reused, no solve.\n")
        return found
    job = {
        **asdict(request),
        "prefix": str(settings.conda_prefix(request.key)),
        "cache": str(cache_dir(settings)),
        "log": str(log_path),
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trainhub.runs.conda",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(json.dumps(job).encode())
    found = ready(settings, request)
    if found is not None:
        return found
    try:
        message = str(json.loads(out.decode().strip().splitlines()[-1])["error"])
    except (ValueError, IndexError, KeyError, TypeError):
        tail = out.decode(errors="replace").strip()[-2000:]
        message = f"the conda worker ended with code {proc.returncode}: {tail}"
    raise CondaFailed(message)


def build(job: dict[str, Any], log: IO[str]) -> None:
    """Solve and install one prefix (in the worker), under the key's lock."""
    final = Path(job["prefix"])
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".{final.name}.lock").open("a") as lock:
        if (final / READY).is_file():
            log.write(f"Conda environment {final.name} is present: reused, no solve.\n")
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.write(f"Conda environment {final.name} is being built by another run: waiting\n")
            log.flush()
            fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / READY).is_file():
            log.write(f"Conda environment {final.name} was built meanwhile: reused, no solve.\n")
            return
        for leftover in [final, *root.glob(f".{final.name}.building-*")]:
            shutil.rmtree(leftover, ignore_errors=True)  # a build that was interrupted
        building = root / f".{final.name}.building-{os.getpid()}"
        try:
            records = asyncio.run(_solve(job, log))
            asyncio.run(_install(job, records, building, log))
            (building / READY).write_text(
                json.dumps({"specs": job["specs"], "channels": job["channels"]}) + "\n"
            )
            building.rename(final)
        finally:
            shutil.rmtree(building, ignore_errors=True)


async def _solve(job: dict[str, Any], log: IO[str]) -> list[rattler.RepoDataRecord]:
    specs = list(job["specs"])
    log.write(
        f"Solving conda environment {Path(job['prefix']).name} for {', '.join(PLATFORMS)}\n"
        f"  specs: {', '.join(specs)}\n  channels: {', '.join(job['channels'])}\n"
    )
    log.flush()
    started = time.monotonic()
    gateway = rattler.Gateway(cache_dir=Path(job["cache"]) / "repodata")

    async def solve(wanted: list[str]) -> list[rattler.RepoDataRecord]:
        return await rattler.solve(
            job["channels"],
            wanted,
            gateway=gateway,
            platforms=list(PLATFORMS),
            virtual_packages=rattler.VirtualPackage.detect(),
        )

    records = await solve(specs)
    names = {r.name.normalized for r in records}
    if job["with_pip"] and "python" in names and "pip" not in names:
        log.write("  the environment has its own Python and pip packages: adding pip\n")
        records = await solve([*specs, "pip"])
    log.write(f"Solved in {time.monotonic() - started:.1f} s: {len(records)} package(s)\n")
    for record in sorted(records, key=lambda r: r.name.normalized):
        log.write(f"  {record.name.normalized} {record.version} {record.build}  {record.channel}\n")
    log.flush()
    return records


async def _install(
    job: dict[str, Any], records: list[rattler.RepoDataRecord], into: Path, log: IO[str]
) -> None:
    log.write(f"Installing {len(records)} package(s) into {job['prefix']}\n")
    log.flush()
    started = time.monotonic()
    await rattler.install(
        records,
        into,
        alternative_target_prefix=job["prefix"],  # its files name the final path
        cache_dir=Path(job["cache"]) / "pkgs",
        # rattler's reporter Protocol has no-op defaults, which mypy reads as abstract methods.
        reporter=_Progress(log),  # type: ignore[abstract]
    )
    log.write(f"Installed in {time.monotonic() - started:.1f} s\n")
    log.flush()


class _Progress(rattler.InstallerReporter):
    """One line per package downloaded and linked, as it happens."""

    def __init__(self, log: IO[str]) -> None:
        self.log = log
        self.names: dict[int, str] = {}

    def _line(self, text: str) -> None:
        self.log.write(text + "\n")
        self.log.flush()

    def on_populate_cache_start(self, operation: int, package_name: str) -> int:
        self.names[operation] = package_name
        return operation

    def on_download_start(self, cache_entry: int) -> int:
        return cache_entry

    def on_download_completed(self, download_idx: int) -> None:
        self._line(f"  downloaded {self.names.get(download_idx, '?')}")

    def on_link_start(self, operation: int, package_name: str) -> int:
        self.names[operation] = package_name
        return operation

    def on_link_complete(self, index: int) -> None:
        self._line(f"  linked {self.names.get(index, '?')}")


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text)


def _failure(exc: Exception) -> str:
    """What went wrong, in words, before rattler's own message."""
    errors = rattler.exceptions
    if isinstance(exc, errors.SolverError):
        return "The conda packages cannot be solved"
    if isinstance(exc, errors.GatewayError | errors.FetchRepoDataError):
        return "A conda channel could not be read"
    return "The conda environment could not be installed"


def main() -> None:
    """The worker: a job (JSON) on stdin; progress to the job's log; one JSON line on stdout."""
    job = json.loads(sys.stdin.read())
    with open(job["log"], "a", encoding="utf-8") as log:
        try:
            build(job, log)
            result: dict[str, Any] = {"ok": True}
        except Exception as exc:  # noqa: BLE001 - the solver's or installer's own message
            message = f"{_failure(exc)}: {str(exc).strip() or type(exc).__name__}"
            log.write(f"ERROR: {message}\n")
            result = {"error": message}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # never through finalization: see the module's docstring


if __name__ == "__main__":
    main()
