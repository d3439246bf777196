"""The HTTP client under the SDK and CLI: typed errors with the server's sentence, progress bars."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from trainhub import __version__
from trainhub.sdk.errors import (
    AuthenticationError,
    RunNotFoundError,
    ServiceError,
    TrainhubError,
    ValidationError,
)

CHUNK = 1024 * 1024


def show_progress() -> bool:
    """Progress bars on a terminal only: nothing when piped or redirected."""
    return sys.stderr.isatty() and os.environ.get("TRAINHUB_NO_PROGRESS") is None


def transfer_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
        disable=not show_progress(),
    )


class _ProgressReader:
    """A file wrapper that advances a progress bar as httpx reads it."""

    def __init__(self, raw: IO[bytes], progress: Progress, task: Any) -> None:
        self._raw = raw
        self._progress = progress
        self._task = task

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._progress.advance(self._task, len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def fileno(self) -> int:
        return self._raw.fileno()


def raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
        message = str(body.get("error") or body)
        field = body.get("field")
    except ValueError:
        message = response.text[:300] or response.reason_phrase
        field = None
    status = response.status_code
    cls: type[ServiceError] = ServiceError
    if status == 401:
        cls = AuthenticationError
    elif status == 404:
        cls = RunNotFoundError
    elif status == 422:
        cls = ValidationError
    raise cls(status, message, field)


class ApiClient:
    def __init__(self, url: str, token: str, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"trainhub-sdk/{__version__}",
            },
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise TrainhubError(f"Cannot reach trainhub at {self.url}: {exc}") from None
        raise_for(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if not response.is_success:
                    response.read()
                    raise_for(response)
                yield response
        except httpx.TransportError as exc:
            raise TrainhubError(f"Cannot reach trainhub at {self.url}: {exc}") from None

    def upload(self, path: str, *, data: dict[str, str], file_field: str, file_path: Path) -> Any:
        size = file_path.stat().st_size
        with transfer_progress() as progress, file_path.open("rb") as raw:
            task = progress.add_task("Uploading snapshot", total=size)
            reader = _ProgressReader(raw, progress, task)
            files = {file_field: ("snapshot.tar.gz", reader, "application/gzip")}
            return self.json("POST", path, data=data, files=files)

    def download(self, path: str, dest: Path, *, label: str) -> int:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        written = 0
        with self.stream("GET", path) as response, transfer_progress() as progress:
            total = int(response.headers.get("content-length") or 0) or None
            task = progress.add_task(label, total=total)
            with part.open("wb") as out:
                for chunk in response.iter_bytes(CHUNK):
                    out.write(chunk)
                    written += len(chunk)
                    progress.advance(task, len(chunk))
        part.replace(dest)
        return written
