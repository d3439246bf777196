"""``Workspace``: where the server is and the token to reach it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from trainhub.sdk.client import ApiClient
from trainhub.sdk.errors import ConfigError

if TYPE_CHECKING:  # the datastore and environment modules build on this one
    from trainhub.sdk.datastore import Datastore
    from trainhub.sdk.environment import Environment


def config_path() -> Path:
    """``$TRAINHUB_CONFIG``, else ``~/.trainhub/config.json``."""
    override = os.environ.get("TRAINHUB_CONFIG")
    return Path(override) if override else Path.home() / ".trainhub" / "config.json"


class Workspace:
    """A trainhub server, as Azure ML's ``Workspace`` was a workspace: ``Workspace(url, token=...)``."""

    def __init__(
        self, url: str, token: str | None = None, *, name: str | None = None, timeout: float = 60.0
    ) -> None:
        token = token or os.environ.get("TRAINHUB_TOKEN")
        if not url:
            raise ConfigError(
                "Workspace needs the server's URL, e.g. Workspace('http://lab-server:8000', token=...)"
            )
        if not token:
            raise ConfigError(
                "Workspace needs an API token: token=..., TRAINHUB_TOKEN, or `trainhub login`"
            )
        self.url = url.rstrip("/")
        self.name = name or self.url
        self._token = token
        self._client = ApiClient(self.url, token, timeout=timeout)
        # Azure ML's placement of a workspace, which notebooks print: a trainhub server has no
        # subscription or resource group; its location is the host it runs on.
        self.subscription_id = "self-hosted"
        self.resource_group = "trainhub"
        self.location = urlsplit(self.url).netloc

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None) -> Workspace:
        """From a config file (``path``, a file or a folder holding ``config.json``), else from
        ``TRAINHUB_URL``/``TRAINHUB_TOKEN``, else from ``~/.trainhub/config.json``."""
        if path is None and os.environ.get("TRAINHUB_URL"):
            return cls(os.environ["TRAINHUB_URL"], os.environ.get("TRAINHUB_TOKEN"))
        file = Path(path) if path is not None else config_path()
        if file.is_dir():
            file = file / "config.json"
        if not file.is_file():
            raise ConfigError(
                f"No workspace configuration at {file}: run `trainhub login URL --token T` "
                "or set TRAINHUB_URL and TRAINHUB_TOKEN"
            )
        try:
            data = json.loads(file.read_text())
            return cls(data["url"], data.get("token"), name=data.get("name"))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{file} is not a trainhub configuration ({exc})") from None

    def write_config(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Save URL and token (mode 600) so that ``from_config()`` finds them."""
        return write_config(self.url, self._token, Path(path) if path else None)

    def get_details(self) -> dict[str, Any]:
        health: dict[str, Any] = self._client.json("GET", "/healthz")
        return {"name": self.name, "url": self.url, "version": health.get("version")}

    def get_default_datastore(self) -> Datastore:
        """``workspaceblobstore``, the workspace's default datastore (a folder on the server)."""
        from trainhub.sdk.datastore import Datastore

        return Datastore.get_default(self)

    @property
    def datastores(self) -> dict[str, Datastore]:
        """Every datastore of the workspace, by name (asked of the server each time)."""
        from trainhub.sdk.datastore import all_datastores

        return all_datastores(self)

    @property
    def environments(self) -> dict[str, Environment]:
        """Every registered environment (its latest version) by name, as ``Environment.list(ws)``."""
        from trainhub.sdk.environment import Environment

        return Environment.list(self)

    @property
    def client(self) -> ApiClient:
        return self._client

    def __repr__(self) -> str:
        return f"Workspace.create(name='{self.name}', url='{self.url}')"


def write_config(url: str, token: str, path: Path | None = None) -> Path:
    file = path or config_path()
    file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": url.rstrip("/"), "token": token}, fh, indent=2)
    os.chmod(file, 0o600)
    return file
