"""The login node of a Slurm cluster, over SSH: the same asyncssh connection as SSH nodes (host key
pinned at registration, keepalives), one connection per cluster shared by every run and the status
poll. Only Slurm's commands and a POSIX shell are used there; files travel by SFTP."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import asyncssh

from trainhub.store.slurm import SlurmTarget

log = logging.getLogger("trainhub.slurm")
CONNECT_TIMEOUT = 15.0


class LoginError(Exception):
    """The login node could not be reached or a command there failed (the message says which)."""


async def host_key_of(host: str, port: int, user: str, key_path: str) -> str:
    """Connect once without a pinned key and return the login node's public host key (to pin)."""
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(
                host,
                port=port,
                username=user,
                client_keys=[key_path],
                known_hosts=None,
                agent_path=None,
            ),
            CONNECT_TIMEOUT,
        )
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise LoginError(f"cannot connect to {user}@{host}:{port}: {exc}") from None
    try:
        key = conn.get_server_host_key()
        if key is None:
            raise LoginError(f"{host} showed no host key")
        return key.export_public_key("openssh").decode().strip()
    finally:
        conn.close()


class Login:
    """One cluster's login node: commands, uploads and downloads over one kept connection."""

    def __init__(self, target: SlurmTarget, keepalive: float) -> None:
        self.target = target
        self.keepalive = keepalive
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None  # kept open with the connection
        self._sftp_conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()

    async def conn(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                t = self.target
                try:
                    self._conn = await asyncio.wait_for(
                        asyncssh.connect(
                            t.host,
                            port=t.port,
                            username=t.user,
                            client_keys=[t.key_path],
                            known_hosts=([asyncssh.import_public_key(t.host_key)], [], []),
                            keepalive_interval=self.keepalive,
                            keepalive_count_max=3,
                            agent_path=None,
                        ),
                        CONNECT_TIMEOUT,
                    )
                except (OSError, asyncssh.Error, TimeoutError) as exc:
                    raise LoginError(
                        f"cannot reach the login node {t.host} of target {t.name}: {exc}"
                    ) from None
            return self._conn

    async def sftp(self) -> asyncssh.SFTPClient:
        """The connection's SFTP session, opened once (a file copy costs no session setup)."""
        conn = await self.conn()
        if self._sftp is None or self._sftp_conn is not conn:
            self._sftp = await conn.start_sftp_client()
            self._sftp_conn = conn
        return self._sftp

    def close(self) -> None:
        self._sftp = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def run(self, command: str, check: bool = True) -> tuple[int, str]:
        """Run ``command`` in the login shell; its exit status and its output (stdout then
        stderr). With ``check``, a failure raises ``LoginError`` with the output's end."""
        conn = await self.conn()
        try:
            done = await conn.run(command, check=False)
        except (OSError, asyncssh.Error) as exc:
            self.close()
            raise LoginError(f"login node {self.target.host}: {exc}") from None
        out = str(done.stdout or "") + str(done.stderr or "")
        status = done.exit_status if done.exit_status is not None else 255
        if check and status != 0:
            first = command.split()[0] if command.split() else command
            raise LoginError(f"{first} on {self.target.host} failed ({status}): {out[-2000:]}")
        return status, str(out)

    async def put(self, files: dict[str, bytes]) -> None:
        """Write files (remote path -> content); their folders must exist."""
        try:
            sftp = await self.sftp()
            for path, data in files.items():
                async with sftp.open(path, "wb") as fh:
                    await fh.write(data)
        except (OSError, asyncssh.Error) as exc:
            raise self._broken(exc) from None

    async def read_from(self, path: str, offset: int) -> bytes:
        """The bytes of ``path`` from ``offset`` on (empty when it does not exist yet)."""
        try:
            sftp = await self.sftp()
            async with sftp.open(path, "rb") as fh:
                await fh.seek(offset)
                data = await fh.read()
        except asyncssh.SFTPNoSuchFile:
            return b""
        except (OSError, asyncssh.Error) as exc:
            raise self._broken(exc) from None
        return data if isinstance(data, bytes) else data.encode()

    async def fetch_tree(self, remote: str, local: Path) -> None:
        """Copy the regular files under ``remote`` into ``local`` (links are never followed)."""
        try:
            await _fetch(await self.sftp(), remote, local)
        except asyncssh.Error as exc:
            raise self._broken(exc) from None

    def _broken(self, exc: Exception) -> LoginError:
        """A failed transfer: the next one starts on a fresh connection."""
        self.close()
        return LoginError(f"login node {self.target.host}: {exc}")


async def _fetch(sftp: asyncssh.SFTPClient, remote: str, local: Path) -> None:
    try:
        entries = await sftp.readdir(remote)
    except asyncssh.SFTPNoSuchFile:
        return
    local.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        name = str(entry.filename)
        if name in (".", "..") or "/" in name:
            continue
        mode = entry.attrs.permissions or 0
        source = f"{remote}/{name}"
        if stat.S_ISDIR(mode):
            await _fetch(sftp, source, local / name)
        elif stat.S_ISREG(mode):
            await sftp.get(source, os.fspath(local / name))
