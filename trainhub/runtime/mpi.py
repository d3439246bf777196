"""How an MPI run is laid out over its containers.

One container per node. On a single node the wrapper runs ``mpirun -np N`` in its one container. Over
several nodes every container uses the node's network; the other nodes' containers run only an sshd
on a per-run port that accepts a per-run key, and the first node's container runs ``mpirun`` over
SSH into them with their host keys pinned (both keys are made for the run and die with it).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass

import asyncssh

SSH_DIR = "/trainhub/ssh"
ENVIRON_FILE = "/trainhub/environ"
SSHD_LOGS = "logs/mpi"  # below the working folder, beside the ranks' logs
PORT_BASE = 41000
PORT_SPAN = 8000


@dataclass(frozen=True)
class MpiLayout:
    hosts: tuple[tuple[str, int], ...]  # (address, processes), the first node first
    port: int
    network: str | None = None

    @property
    def total(self) -> int:
        return sum(n for _, n in self.hosts)

    @property
    def multi_node(self) -> bool:
        return len(self.hosts) > 1


def port_for(run_id: str, attempt: int = 0) -> int:
    """The port the run's sshd listens on, on every node of the run: a base spread by run id, and the
    next port for each attempt (wrapping within the range), so an attempt never meets the sshd of
    the attempt before it."""
    digest = hashlib.sha256(run_id.encode()).digest()
    return PORT_BASE + (int.from_bytes(digest[:4], "big") + attempt) % PORT_SPAN


def head_environment(layout: MpiLayout) -> dict[str, str]:
    env = {
        "TRAINHUB_MPI_NP": str(layout.total),
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    }
    if layout.multi_node:
        env["TRAINHUB_MPI_HOSTS"] = ",".join(f"{host}:{n}" for host, n in layout.hosts)
        env["TRAINHUB_MPI_PORT"] = str(layout.port)
    if layout.network:
        env["TRAINHUB_MPI_NETWORK"] = layout.network
    return env


def worker_command(port: int) -> list[str]:
    """What the other nodes' containers run: an sshd for the run's key only, in the foreground."""
    return [
        "/bin/sh",
        "-c",
        # sshd makes itself unreadable in /proc: the ranks it starts read the environment here.
        # Its own log goes to the run's logs (collected from every node), so that a port it could
        # not bind or a key it refused is there to read when the first node could not reach it.
        f"cat /proc/self/environ > {ENVIRON_FILE} && mkdir -p /run/sshd {SSHD_LOGS} && "
        'exec /usr/sbin/sshd -D -e -f /dev/null -p "$1" '
        f"-h {SSH_DIR}/host_key -o AuthorizedKeysFile={SSH_DIR}/authorized_keys "
        "-o PermitRootLogin=prohibit-password -o PasswordAuthentication=no -o StrictModes=no "
        f'-o KbdInteractiveAuthentication=no 2>>"{SSHD_LOGS}/sshd-$TRAINHUB_NODE.txt"',
        "trainhub-mpi-worker",
        str(port),
    ]


@dataclass(frozen=True)
class SshMaterial:
    head: bytes  # tar for /: the run's client key and the workers' pinned host keys
    worker: bytes  # tar for /: the workers' host key and the key they accept


def ssh_material(layout: MpiLayout) -> SshMaterial:
    client = asyncssh.generate_private_key("ssh-ed25519", comment="trainhub-run")
    host = asyncssh.generate_private_key("ssh-ed25519", comment="trainhub-run-host")
    host_public = host.export_public_key("openssh").decode().split()
    known = "".join(
        f"[{address}]:{layout.port} {host_public[0]} {host_public[1]}\n"
        for address, _ in layout.hosts[1:]
    )
    head = _tar(
        {
            "id": (client.export_private_key("openssh"), 0o600),
            "known_hosts": (known.encode(), 0o644),
        }
    )
    worker = _tar(
        {
            "host_key": (host.export_private_key("openssh"), 0o600),
            "authorized_keys": (client.export_public_key("openssh"), 0o600),
        }
    )
    return SshMaterial(head, worker)


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        folder = tarfile.TarInfo(SSH_DIR.strip("/"))
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o700
        tar.addfile(folder)
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(f"{SSH_DIR.strip('/')}/{name}")
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
