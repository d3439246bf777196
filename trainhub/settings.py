"""One Settings object, built at start-up from flags and ``TRAINHUB_*`` variables.

Nothing here is read at import time: :func:`Settings.load` is called by the CLI (or a test) and the
result is passed to whatever needs it. Paths under the data folder are derived by methods.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MB = 1024 * 1024


LOG_FORMATS = ("logfmt", "json")


def _setting(default: Any, help: str, *, secret: bool = False) -> Any:
    return field(default=default, metadata={"help": help, "secret": secret})


@dataclass(frozen=True)
class Settings:
    data: Path = _setting(
        Path("trainhub-data"), "folder for the SQLite file, snapshots and run history"
    )
    host: str = _setting("127.0.0.1", "address the server listens on")
    port: int = _setting(8000, "port the server listens on")
    admin_token: str | None = _setting(
        None,
        "admin API token to create on first start (otherwise one is generated and printed once)",
        secret=True,
    )
    default_image: str = _setting("trainhub/base:cpu", "image for runs that name none")
    default_gpu_image: str = _setting(
        "trainhub/base:gpu",
        "image for use_gpu runs that name none (`trainhub images build-base --gpu`)",
    )
    build_ca_bundle: str | None = _setting(
        None,
        "extra CA bundle (PEM file) trusted by every environment build (TLS-intercepting proxies)",
    )
    pip_index_url: str | None = _setting(
        None, "pip index URL for environment builds (a lab mirror)"
    )
    pip_extra_index_urls: str | None = _setting(None, "extra pip index URLs, comma-separated")
    wheel_dir: str | None = _setting(
        None, "folder of wheels offered to pip in every environment build"
    )
    max_snapshot_mb: int = _setting(300, "largest snapshot upload accepted (compressed), in MB")
    max_snapshot_expanded_mb: int = _setting(1024, "largest snapshot accepted once expanded, in MB")
    max_snapshot_files: int = _setting(2000, "most files a snapshot may hold")
    max_concurrent_runs: int = _setting(4, "runs executing at once on the local node")
    sync_interval_seconds: float = _setting(3.0, "how often ./logs is copied from a running run")
    cancel_grace_seconds: int = _setting(10, "seconds between SIGTERM and SIGKILL when a run stops")
    process_python: str = _setting(
        "python3", "Python for use_docker=False runs on the server's machine"
    )
    ssh_keepalive_seconds: float = _setting(5.0, "seconds between SSH keepalives to a node")
    slurm_poll_seconds: float = _setting(
        1.0, "how often each Slurm target's jobs are polled (one squeue per cluster)"
    )
    engine_check_seconds: float = _setting(
        5.0, "how often each node's Docker engine is asked whether it answers (and its free disk)"
    )
    node_lost_grace_seconds: float = _setting(
        60.0, "how long a node may be Unreachable before its runs fail with node_lost"
    )
    starvation_seconds: float = _setting(
        600.0, "after this long in the queue a run reserves the capacity it needs"
    )
    mpi_network: str | None = _setting(
        None,
        "network (CIDR, e.g. 10.0.0.0/24) that the containers of a multi-node MPI run talk over; "
        "by default Open MPI picks",
    )
    db_busy_seconds: float = _setting(
        30.0, "how long a write waits for a locked database before the request fails with 503"
    )
    min_free_gb: float = _setting(
        1.0,
        "free space the data folder's disk must keep: below it no run starts and submits get 507",
    )
    watchdog_seconds: float = _setting(
        10.0, "how often runs are checked for a lost driving task (they are then ended)"
    )
    interactive_timeout_minutes: float = _setting(
        30.0,
        "an interactive run (experiment.start_logging()) whose client made no call for this long "
        "ends Failed with reason abandoned",
    )
    fault_injection: str | None = _setting(
        None, "for trainhub's own tests: faults to inject, comma-separated (drop-task)"
    )
    public_url: str | None = _setting(
        None,
        "the server's address as users' browsers reach it (for the SDK's and CLI's Web View links); "
        "by default the address the client used",
    )
    web_dir: str | None = _setting(
        None,
        "folder holding the dashboard's templates/ and static/ (by default the one beside the "
        "trainhub package)",
    )
    session_hours: float = _setting(12.0, "how long a browser login lasts without being used")
    login_attempts_per_minute: int = _setting(
        5, "wrong passwords allowed per user name and per client address in a minute"
    )
    gpu_sample_seconds: float = _setting(
        5.0, "how often GPU utilisation is sampled on nodes whose GPUs runs hold"
    )
    tensorboard_reload_seconds: float = _setting(
        5.0, "how often a run's TensorBoard reloads its event files"
    )
    tensorboard_idle_minutes: float = _setting(
        15.0, "a run's TensorBoard that nobody opened for this long is stopped"
    )
    tensorboard_max: int = _setting(
        4, "most TensorBoard processes at once (the least recently used one is stopped)"
    )
    azureml_compat: bool = _setting(
        False, "make `from azureml.core.run import Run` work in runs (a small azureml.core shim)"
    )
    conda_channels: str = _setting(
        "conda-forge",
        "conda channels for conda_packages when the spec's environment file names none, "
        "comma-separated (names, URLs of a lab mirror, or local channel folders)",
    )
    debian_mirror: str = _setting(
        "http://deb.debian.org/debian", "Debian mirror used by `trainhub images build-base`"
    )
    retention_days: float = _setting(
        0.0,
        "remove the outputs of runs that ended more than this many days ago, unless tagged keep "
        "(logs and metrics stay; 0 keeps everything)",
    )
    log_format: str = _setting(
        "logfmt", "the server's log lines on stdout: logfmt (key=value) or json (one object a line)"
    )
    metrics_token: str | None = _setting(
        None,
        "bearer token that may read /metrics (besides admins' tokens), for a Prometheus scraper",
        secret=True,
    )
    metrics_allow: str | None = _setting(
        None,
        "client addresses or networks (CIDR) that may read /metrics without a token, comma-separated",
    )

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Defaults, then ``TRAINHUB_<NAME>`` variables, then explicit (non-None) overrides."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            env = os.environ.get(f"TRAINHUB_{f.name.upper()}")
            if env is not None and env != "":
                values[f.name] = _coerce(f.type, env, f.name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "data" in values:
            values["data"] = Path(values["data"])
        if values.get("mpi_network"):
            try:
                ipaddress.ip_network(values["mpi_network"], strict=False)
            except ValueError:
                raise ValueError(
                    "TRAINHUB_MPI_NETWORK must be a network such as 10.0.0.0/24, "
                    f"got {values['mpi_network']!r}"
                ) from None
        if values.get("log_format", "logfmt") not in LOG_FORMATS:
            raise ValueError(
                f"TRAINHUB_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, "
                f"got {values['log_format']!r}"
            )
        if values.get("retention_days", 0) < 0:
            raise ValueError(
                f"TRAINHUB_RETENTION_DAYS must be 0 (keep everything) or more, "
                f"got {values['retention_days']!r}"
            )
        if values.get("metrics_allow"):
            metrics_allow_networks(values["metrics_allow"])
        return cls(**values)

    @classmethod
    def explain(cls, **overrides: Any) -> list[dict[str, Any]]:
        """Every setting as ``trainhub settings`` shows it: its variable, its value (secrets
        masked), where the value came from (flag, variable or default) and its help line."""
        settings = cls.load(**overrides)
        rows = []
        for f in dataclasses.fields(cls):
            variable = f"TRAINHUB_{f.name.upper()}"
            if overrides.get(f.name) is not None:
                source = "flag"
            elif os.environ.get(variable):
                source = "variable"
            else:
                source = "default"
            value = getattr(settings, f.name)
            if f.metadata["secret"] and value:
                shown: Any = "********"
            elif isinstance(value, str | Path):
                shown = mask_url_password(str(value))
            else:
                shown = value
            rows.append(
                {
                    "name": f.name,
                    "variable": variable,
                    "value": shown,
                    "source": source,
                    "secret": f.metadata["secret"],
                    "help": f.metadata["help"],
                }
            )
        return rows

    def secrets(self) -> list[str]:
        """The secret values set (for the log filter that keeps them out of every line)."""
        return [
            str(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.metadata["secret"] and getattr(self, f.name)
        ]

    # Paths derived from the data folder.
    @property
    def db_path(self) -> Path:
        return self.data / "trainhub.db"

    @property
    def runs_dir(self) -> Path:
        return self.data / "runs"

    @property
    def snapshots_dir(self) -> Path:
        return self.data / "snapshots"

    @property
    def uploads_dir(self) -> Path:
        return self.data / "uploads"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def work_dir(self, run_id: str) -> Path:
        """Where a use_docker=False run executes (its snapshot, runtime files, exit code)."""
        return self.data / "work" / run_id

    def venv_dir(self, env_key: str) -> Path:
        return self.data / "envs" / env_key

    @property
    def datastores_dir(self) -> Path:
        return self.data / "datastores"

    def datastore_dir(self, name: str) -> Path:
        """Where a ``server`` datastore's files are."""
        return self.datastores_dir / name

    @property
    def models_dir(self) -> Path:
        return self.data / "models"

    def model_dir(self, name: str, version: int) -> Path:
        """Where a registered model's files are (copied there: the run may go, the model stays)."""
        return self.models_dir / name / str(version)

    @property
    def node_keys_dir(self) -> Path:
        """SSH private keys sent with a node (``ComputeTarget.attach``): removed with the node."""
        return self.data / "node-keys"

    def conda_prefix(self, env_key: str) -> Path:
        """Where a conda environment is solved and installed on the server (and found at the
        same path inside the environment's image, so that its files need no relocation)."""
        return self.data / "conda" / env_key

    def snapshot_path(self, sha256: str) -> Path:
        return self.snapshots_dir / f"{sha256}.tar.gz"

    @property
    def web_root(self) -> Path:
        """The folder with the dashboard's ``templates/`` and ``static/``."""
        if self.web_dir:
            return Path(self.web_dir)
        beside = Path(__file__).resolve().parent.parent  # a source checkout (or editable install)
        if (beside / "templates").is_dir():
            return beside
        if (beside / "share" / "trainhub" / "templates").is_dir():
            return beside / "share" / "trainhub"  # pip install --target (trainhub.pyz)
        return Path(sys.prefix) / "share" / "trainhub"  # pip install . (pyproject's data-files)

    def fault(self, name: str) -> bool:
        return name in (self.fault_injection or "").split(",")

    @property
    def max_snapshot_bytes(self) -> int:
        return self.max_snapshot_mb * MB

    @property
    def max_snapshot_expanded_bytes(self) -> int:
        return self.max_snapshot_expanded_mb * MB


_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@/\s]+@")


def mask_url_password(text: str) -> str:
    """``https://user:secret@mirror/simple`` -> ``https://user:****@mirror/simple`` (every URL in
    ``text``): index URLs may carry a password."""
    return _URL_PASSWORD.sub(r"\1****@", text)


def metrics_allow_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """TRAINHUB_METRICS_ALLOW as networks (a bare address is a network of one)."""
    try:
        return [
            ipaddress.ip_network(item.strip(), strict=False)
            for item in text.split(",")
            if item.strip()
        ]
    except ValueError as exc:
        raise ValueError(
            f"TRAINHUB_METRICS_ALLOW must be addresses or networks such as 10.0.0.5,10.1.0.0/16: "
            f"{exc}"
        ) from None


def _coerce(type_name: Any, raw: str, name: str) -> Any:
    text = str(type_name)
    if text.startswith("bool"):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"TRAINHUB_{name.upper()} must be true or false, got {raw!r}")
    try:
        if text.startswith("int"):
            return int(raw)
        if text.startswith("float"):
            return float(raw)
    except ValueError:
        raise ValueError(f"TRAINHUB_{name.upper()} must be a number, got {raw!r}") from None
    return raw
