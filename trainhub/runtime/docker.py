"""A Docker engine as the launcher sees it: the same calls for the local socket and, later, a socket
forwarded over SSH. Everything here is blocking (docker-py); callers run it off the event loop.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import docker
import docker.errors
import docker.types
from docker.models.containers import Container
from docker.utils import parse_repository_tag

LABEL_RUN = "org.trainhub.run_id"
LABEL_INSTANCE = "org.trainhub.instance"
LABEL_KIND = "org.trainhub.kind"
WORKDIR = "/trainhub/wd"
CHUNK = 1024 * 1024
# Where a helper container has the volume it fills.
FILL_AT = "/trainhub-fill"
# How long the engine may take to answer once an archive is sent (it extracts the last of it).
ANSWER_SECONDS = 600
# The engine's sentence when a bind mount's source is missing on its host.
MISSING_BIND = "bind source path does not exist: "


class EngineError(RuntimeError):
    pass


class BuildError(EngineError):
    """An environment build failed; the message is the tail of its log."""


@dataclass(frozen=True)
class DataMount:
    """A volume (``source`` names it) or a folder of the node (``bind``) at ``target`` in a
    container."""

    target: str
    source: str
    bind: bool = False
    read_only: bool = True

    def docker(self) -> docker.types.Mount:
        kind = "bind" if self.bind else "volume"
        return docker.types.Mount(self.target, self.source, type=kind, read_only=self.read_only)


@dataclass(frozen=True)
class FileBytes:
    """The first ``size`` bytes of an open file, as one part of an archive sent to the engine:
    handed to the kernel (sendfile), never read into this process."""

    file: BinaryIO
    size: int


ArchivePart = bytes | FileBytes


class MissingBindSource(EngineError):
    """A bind mount's source does not exist on the engine's host."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} does not exist")
        self.path = path


def _answer(conn: socket.socket) -> str | None:
    """The engine's answer to a request written by hand: None for a 2xx, else its message."""
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        status = data.split(b"\r\n", 1)[0].split(b" ")
        if len(status) > 1 and status[1].startswith(b"2"):
            return None
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        return "the engine closed the connection without an answer"
    try:
        start = body.index(b"{")
        return str(json.loads(body[start : body.rindex(b"}") + 1])["message"])
    except (ValueError, KeyError, TypeError):
        return head.split(b"\r\n", 1)[0].decode(errors="replace")


def _read_parts(parts: Iterable[ArchivePart]) -> Iterator[bytes]:
    for part in parts:
        if isinstance(part, FileBytes):
            left = part.size
            while left > 0:
                data = part.file.read(min(CHUNK, left))
                if not data:
                    raise EngineError("a file shrank while it was being sent")
                left -= len(data)
                yield data
        else:
            yield part


class _SizedBody:
    """An iterable body of a known length: requests sends it with Content-Length, unchunked."""

    def __init__(self, chunks: Iterator[bytes], size: int) -> None:
        self._chunks, self._size = chunks, size

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks


@dataclass(frozen=True)
class RunContainer:
    id: str
    run_id: str
    status: str  # Docker's: created, running, exited, ...


class DockerEngine:
    def __init__(self, base_url: str | None = None) -> None:
        if base_url:
            self.client = docker.DockerClient(base_url=base_url, max_pool_size=64)
        else:
            self.client = docker.DockerClient.from_env(max_pool_size=64)
        url = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self.socket_path = url.removeprefix("unix://") if url.startswith("unix://") else None

    def close(self) -> None:
        self.client.close()

    def answers(self, timeout: float = 3.0) -> bool:
        """Whether the engine takes a new connection and answers ``/_ping`` now. A fresh connection
        each time: a stopping engine closes its socket first but keeps serving the kept-alive
        connections of the client's pool."""
        if self.socket_path is None:  # a TCP engine: its own ping
            try:
                return bool(self.client.ping())
            except Exception:  # noqa: BLE001 - not answering, whatever the way
                return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(timeout)
                conn.connect(self.socket_path)
                conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                status = conn.recv(64).split(b"\r\n", 1)[0]
        except OSError:
            return False
        return status.startswith(b"HTTP/1.") and b" 200 " in status + b" "

    # Images ---------------------------------------------------------------------------------
    def image_present(self, tag: str) -> bool:
        try:
            self.client.images.get(tag)
        except docker.errors.ImageNotFound:
            return False
        return True

    def image_env(self, tag: str) -> dict[str, str]:
        """The ``ENV`` of an image, as a dict."""
        config = self.client.api.inspect_image(tag).get("Config") or {}
        pairs = (item.partition("=") for item in config.get("Env") or [])
        return {key: value for key, _, value in pairs}

    def image_id(self, tag: str) -> str | None:
        try:
            return str(self.client.api.inspect_image(tag)["Id"])
        except docker.errors.ImageNotFound:
            return None

    def pull(self, image: str, registry: dict[str, Any] | None = None) -> None:
        """Pull ``image``, with the credentials of ``registry`` (address, username, password) if given.
        The password goes to the engine only; it is never logged."""
        repository, tag = parse_repository_tag(image)
        auth = None
        if registry and registry.get("username"):
            auth = {
                "username": registry["username"],
                "password": registry.get("password") or "",
                "serveraddress": registry.get("address") or repository.split("/")[0],
            }
        try:
            for event in self.client.api.pull(
                repository, tag=tag or "latest", auth_config=auth, stream=True, decode=True
            ):
                if isinstance(event, dict) and event.get("error"):
                    raise EngineError(f"could not pull {image}: {event['error']}")
        except docker.errors.APIError as exc:
            raise EngineError(f"could not pull {image}: {exc.explanation or exc}") from None
        if self.image_id(image) is None:
            raise EngineError(
                f"could not pull {image}: the engine reports no such image afterwards"
            )

    def build(self, context: bytes, tag: str, sink: IO[str]) -> None:
        """Build ``tag`` from a tar context, writing the build's output to ``sink`` as it comes."""
        lines: list[str] = []
        try:
            stream = self.client.api.build(
                fileobj=io.BytesIO(context),
                custom_context=True,
                tag=tag,
                rm=True,
                forcerm=True,
                decode=True,
                labels={"org.trainhub.kind": "env"},
            )
            for event in stream:
                text = event.get("stream") or event.get("status") or ""
                if text:
                    sink.write(text if text.endswith("\n") else text + "\n")
                    sink.flush()
                    lines.append(text.rstrip())
                if event.get("error"):
                    sink.write(f"ERROR: {event['error']}\n")
                    sink.flush()
                    tail = "\n".join(lines[-15:] + [str(event["error"]).rstrip()])
                    raise BuildError(tail)
        except docker.errors.APIError as exc:
            raise BuildError(f"the engine refused the build: {exc.explanation or exc}") from None

    def python_version(self, image: str) -> str | None:
        """``X.Y`` of the Python a run of ``image`` gets (python3, else python); None without one."""
        probe = (
            'py=$(command -v python3 || command -v python) && exec "$py" -c '
            "'import sys; print(\"%d.%d\" % sys.version_info[:2])'"
        )
        try:
            out = self.client.containers.run(
                image, ["/bin/sh", "-c", probe], remove=True, network_mode="none"
            )
        except docker.errors.ContainerError:
            return None
        return bytes(out).decode().strip() or None

    def env_images(self) -> list[dict[str, Any]]:
        images = self.client.api.images(filters={"label": "org.trainhub.kind=env"})
        return [
            {
                "id": img["Id"],
                "tags": img.get("RepoTags") or [],
                "size": img.get("Size", 0),
                "created": img.get("Created", 0),
                "env": (img.get("Labels") or {}).get("org.trainhub.env"),
            }
            for img in images
        ]

    def remove_image(self, image: str) -> None:
        try:
            self.client.api.remove_image(image)
        except docker.errors.NotFound:
            pass

    # Containers -----------------------------------------------------------------------------
    def create_run_container(
        self,
        *,
        run_id: str,
        instance: str,
        image: str,
        command: list[str],
        environment: dict[str, str],
        shm_size: str | None,
        gpu_uuids: list[str] | None = None,
        host_network: bool = False,
        mounts: list[DataMount] | None = None,
    ) -> str:
        device_requests = None
        if gpu_uuids:
            device_requests = [
                docker.types.DeviceRequest(device_ids=list(gpu_uuids), capabilities=[["gpu"]])
            ]
        container = self.client.containers.create(
            image,
            command=command,
            working_dir=WORKDIR,
            environment=environment,
            labels={LABEL_RUN: run_id, LABEL_INSTANCE: instance},
            shm_size=shm_size,
            device_requests=device_requests,
            network_mode="host" if host_network else None,
            # Multi-node MPI containers run an sshd and hold root-only keys, whatever the image's USER.
            user="root" if host_network else None,
            mounts=[m.docker() for m in mounts or []],
            detach=True,
            tty=False,
            stdin_open=False,
        )
        return str(container.id)

    # Volumes and helper containers (a run's data) ---------------------------------------------
    def volume_present(self, name: str) -> bool:
        try:
            self.client.api.inspect_volume(name)
        except docker.errors.NotFound:
            return False
        return True

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        self.client.api.create_volume(name, labels=labels)

    def remove_volume(self, name: str) -> None:
        """Remove a volume, and first any helper container left holding it (one of a server
        killed while it filled the volume); a run's container holding it is left alone (the
        engine refuses then)."""
        filters = {"volume": name, "label": f"{LABEL_KIND}=helper"}
        for found in self.client.api.containers(all=True, filters=filters):
            self.remove(str(found["Id"]))
        try:
            self.client.api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            pass

    def volume_runs(self, labels: list[str]) -> dict[str, str]:
        """The volumes carrying all ``labels`` (``key=value``) and the run each was made for."""
        found = self.client.api.volumes(filters={"label": labels}).get("Volumes") or []
        return {str(v["Name"]): str((v.get("Labels") or {}).get(LABEL_RUN, "")) for v in found}

    def remove_volumes(self, labels: list[str]) -> int:
        """Remove every volume carrying all ``labels`` (``key=value``); how many there were."""
        found = self.client.api.volumes(filters={"label": labels}).get("Volumes") or []
        for volume in found:
            self.remove_volume(str(volume["Name"]))
        return len(found)

    def fill_volume(
        self,
        volume: str,
        image: str,
        parts: Iterable[ArchivePart],
        size: int,
        labels: dict[str, str],
    ) -> None:
        """Extract a tar of ``size`` bytes, streamed from ``parts`` as they are produced, into
        ``volume``: through a helper container that has it mounted and is never started (the
        engine mounts a created container's volumes for an archive copy)."""
        helper = self._helper(
            image, ["true"], [DataMount(FILL_AT, volume, read_only=False)], labels
        )
        try:
            self.put_archive_parts(helper, FILL_AT, parts, size)
        finally:
            self.remove(helper)

    def put_archive_parts(
        self, container_id: str, path: str, parts: Iterable[ArchivePart], size: int
    ) -> None:
        """``put_archive`` of an archive given as parts, with its length known up front. Over a
        unix socket the request is written here, file contents by sendfile: the bulk of the data
        costs this process next to nothing (docker-py would copy every byte through Python, and
        chunk it). A TCP engine gets the same body through docker-py."""
        if self.socket_path is None:
            body = _SizedBody(_read_parts(parts), size)
            if not self.client.api.put_archive(container_id, path, body):
                raise EngineError(f"the engine refused an archive for {path}")
            return
        query = urllib.parse.urlencode({"path": path})
        target = f"/v{self.client.api.api_version}/containers/{container_id}/archive?{query}"
        head = (
            f"PUT {target} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\n"
            f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
        )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(self.socket_path)
            try:
                conn.sendall(head.encode())
                for part in parts:
                    if isinstance(part, FileBytes):
                        if conn.sendfile(part.file, 0, part.size) != part.size:
                            raise EngineError("a file shrank while it was being sent")
                    else:
                        conn.sendall(part)
            except OSError as exc:  # the engine may have answered (and closed) early
                raise EngineError(_answer(conn) or f"the copy broke off: {exc}") from None
            conn.settimeout(ANSWER_SECONDS)
            message = _answer(conn)
            if message:
                raise EngineError(message)

    def run_helper(
        self, image: str, script: str, mounts: list[DataMount], labels: dict[str, str]
    ) -> None:
        """Run ``script`` (sh) in a short-lived container of ``image`` with ``mounts``, no network;
        raises :class:`EngineError` with its output when it fails."""
        helper = self._helper(image, ["/bin/sh", "-ec", script], mounts, labels)
        try:
            self.client.api.start(helper)
            code = self.wait(helper)
            if code != 0:
                output = self.client.api.logs(helper, stdout=True, stderr=True)
                text = output.decode(errors="replace").strip()[-2000:]
                raise EngineError(f"exit code {code}: {text}")
        finally:
            self.remove(helper)

    def check_mounts(self, image: str, mounts: list[DataMount], labels: dict[str, str]) -> None:
        """Whether the bind mounts' sources exist on the engine's host, asked of the engine
        itself: a container with them is created (never started) and removed again."""
        self.remove(self._helper(image, ["true"], mounts, labels))

    def _helper(
        self, image: str, command: list[str], mounts: list[DataMount], labels: dict[str, str]
    ) -> str:
        config = self.client.api.create_host_config(
            mounts=[m.docker() for m in mounts], network_mode="none"
        )
        try:
            created = self.client.api.create_container(
                image,
                command=command,
                user="root",
                labels={**labels, LABEL_KIND: "helper"},
                host_config=config,
                network_disabled=True,
            )
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc)
            if MISSING_BIND in text:
                raise MissingBindSource(text.split(MISSING_BIND, 1)[1].strip()) from None
            raise EngineError(f"the engine refused a helper container: {text}") from None
        return str(created["Id"])

    def put_snapshot(self, container_id: str, snapshot: Path) -> None:
        with snapshot.open("rb") as fh:
            ok = self.client.api.put_archive(container_id, WORKDIR, fh)
        if not ok:
            raise EngineError("the engine refused the snapshot archive")

    def put_archive(self, container_id: str, path: str, data: bytes) -> None:
        if not self.client.api.put_archive(container_id, path, data):
            raise EngineError(f"the engine refused an archive for {path}")

    def start(self, container_id: str) -> None:
        self.client.api.start(container_id)

    def stream_logs(self, container_id: str, sink: IO[bytes]) -> None:
        """Copy the container's whole output (stdout and stderr) to ``sink`` as it is printed,
        from its first line, until the container stops."""
        stream = self.client.api.logs(
            container_id, stdout=True, stderr=True, stream=True, follow=True
        )
        for chunk in stream:
            sink.write(chunk)
            sink.flush()

    def wait(self, container_id: str) -> int:
        result = self.client.api.wait(container_id)
        return int(result.get("StatusCode", -1))

    def signal(self, container_id: str, signal: str) -> None:
        try:
            self.client.api.kill(container_id, signal=signal)
        except docker.errors.APIError:
            pass  # not running any more

    def stop(self, container_id: str, grace_seconds: int) -> None:
        try:
            self.client.api.stop(container_id, timeout=grace_seconds)
        except docker.errors.NotFound:
            pass

    def get_archive(self, container_id: str, path: str) -> Iterator[bytes] | None:
        """The archive of ``path`` as it streams; closing the iterator (or reading it to the end)
        closes the response, so an aborted copy never leaves the engine holding the container.
        docker-py's own ``get_archive`` gives no way to close its response: the same request,
        kept (uncompressed, no read timeout on a long copy)."""
        api = self.client.api
        response = api._get(  # noqa: SLF001
            api._url("/containers/{0}/archive", container_id),  # noqa: SLF001
            params={"path": path},
            stream=True,
            headers={"Accept-Encoding": "identity"},
        )
        try:
            api._raise_for_status(response)  # noqa: SLF001
            api._disable_socket_timeout(api._get_raw_response_socket(response))  # noqa: SLF001
        except docker.errors.NotFound:
            response.close()
            return None
        except BaseException:
            response.close()
            raise

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.iter_content(CHUNK, decode_unicode=False)
            finally:
                response.close()

        return chunks()

    def read_small_file(self, container_id: str, path: str) -> str | None:
        """A small file of a running container, read by a process in it (works where copying out
        does not: a tmpfs such as /dev/shm)."""
        try:
            result = self.client.api.exec_create(container_id, ["cat", path], stdout=True)
            output = self.client.api.exec_start(result["Id"])
            code = self.client.api.exec_inspect(result["Id"]).get("ExitCode")
        except docker.errors.APIError:
            return None
        return output.decode(errors="replace") if code == 0 else None

    def remove(self, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass

    def container_image(self, container_id: str) -> str:
        """The image (its id) a container was created from."""
        return str(self.client.api.inspect_container(container_id)["Image"])

    def container_status(self, container_id: str) -> str | None:
        try:
            info = self.client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        return str(info["State"]["Status"])

    def remove_containers_of(self, instance: str, run_id: str) -> int:
        """Remove every container of ``run_id`` (an earlier attempt's too); how many there were."""
        labels = [f"{LABEL_INSTANCE}={instance}", f"{LABEL_RUN}={run_id}"]
        containers: list[Container] = self.client.containers.list(
            all=True, filters={"label": labels}
        )
        for c in containers:
            self.remove(str(c.id))
        return len(containers)

    def find_run_containers(self, instance: str) -> dict[str, RunContainer]:
        found: dict[str, RunContainer] = {}
        containers: list[Container] = self.client.containers.list(
            all=True, filters={"label": f"{LABEL_INSTANCE}={instance}"}
        )
        for c in containers:
            run_id = c.labels.get(LABEL_RUN)
            if run_id:
                found[run_id] = RunContainer(id=str(c.id), run_id=run_id, status=str(c.status))
        return found
