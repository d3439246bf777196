"""``azureml.core.compute``: compute targets by name, and SSH machines attached the Azure ML way.

A trainhub compute target is a named group of the server's registered nodes (``local`` is always
there; admins make others with ``trainhub target create``). An Estimator sends only the target's
name, so ``ComputeTarget(workspace=ws, name='gpu-cluster')`` checks that the server has it and keeps
the name, and the Azure ML habit of trying it and creating the cluster on
``ComputeTargetException`` works when the target exists and says what to do when it does not.

``ComputeTarget.attach(ws, name, RemoteCompute.attach_configuration(address=..., username=...,
private_key_file=...))`` is Azure ML's way to bring one's own machine: it registers the machine as
the node ``name`` (the server connects, pins its host key and probes its GPUs, as ``trainhub node
add`` does) and a compute target of that name holding it. The key file is read and checked here,
before anything is sent (decrypted with ``private_key_passphrase`` when it has one); the server
keeps the key for the node's connections and deletes it on ``detach()``. Attaching is an admin's
action, as ``node add`` is.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NoReturn

from azureml._names import getattr_for
from azureml.exceptions import ComputeTargetException
from trainhub.sdk import Workspace
from trainhub.sdk.errors import ServiceError, TrainhubError

__all__ = ["AmlCompute", "ComputeTarget", "RemoteCompute", "SlurmCompute"]
__getattr__ = getattr_for(__name__)

LOCAL = "local"
# Far more than any SSH private key file (an RSA key of 16384 bits is about 12 KB).
MAX_KEY_FILE_BYTES = 64 * 1024
# Node states that do not change by waiting: an admin acts first.
STUCK_STATES = {
    "Untrusted": "trainhub node trust {name}",
    "Disabled": "trainhub node enable {name}",
}


def targets(workspace: Workspace) -> dict[str, list[str]]:
    """The server's compute targets and their nodes (``GET /api/v1/targets``)."""
    found = workspace.client.json("GET", "/api/v1/targets")["targets"]
    return {t["name"]: list(t["nodes"]) for t in found}


def _said(exc: TrainhubError) -> str:
    """The server's own sentence, without the HTTP status."""
    return exc.message if isinstance(exc, ServiceError) else str(exc)


class ComputeTarget:
    """A compute target of the server, by name: ``ComputeTarget(workspace=ws, name='gpu-cluster')``
    (a :class:`RemoteCompute` for a machine attached with :meth:`attach`)."""

    workspace: Workspace
    name: str
    nodes: list[str]

    def __new__(cls, workspace: Workspace, name: str) -> ComputeTarget:
        found = targets(workspace)
        if name not in found:
            raise ComputeTargetException(
                f"ComputeTargetNotFound: {workspace.url} has no compute target '{name}' "
                f"(it has: {', '.join(sorted(found))}); attach a machine with "
                "ComputeTarget.attach(ws, name, RemoteCompute.attach_configuration(...)), or an "
                "admin makes one from registered nodes with `trainhub target create NAME --nodes "
                "n1,n2`"
            )
        return cls.of(workspace, name, found[name])

    @classmethod
    def of(cls, workspace: Workspace, name: str, nodes: list[str]) -> ComputeTarget:
        """One the caller already listed (no second request to the server)."""
        kind: type[ComputeTarget] = RemoteCompute if _attached(name, nodes) else ComputeTarget
        target = object.__new__(kind if issubclass(kind, cls) else cls)
        target.workspace, target.name, target.nodes = workspace, name, nodes
        return target

    @staticmethod
    def create(workspace: Workspace, name: str, provisioning_configuration: Any) -> NoReturn:
        raise ComputeTargetException(
            f"trainhub does not provision machines, so compute target '{name}' cannot be created "
            "here. Attach a machine you have (SSH with a key, Docker installed): "
            f"ComputeTarget.attach(ws, '{name}', RemoteCompute.attach_configuration("
            "address='10.0.0.5', username='me', private_key_file='~/.ssh/id_ed25519')); or an "
            "admin registers the lab's servers (`trainhub node add`) and groups them "
            f"(`trainhub target create {name} --nodes n1,n2`)"
        )

    @staticmethod
    def attach(
        workspace: Workspace,
        name: str,
        attach_configuration: RemoteAttachConfiguration | SlurmAttachConfiguration,
    ) -> RemoteCompute | SlurmCompute:
        """Register the machine as node ``name`` and a compute target ``name`` holding it (a
        Slurm cluster: a target ``name`` of kind slurm, see :class:`SlurmCompute`)."""
        config = attach_configuration
        if isinstance(config, SlurmAttachConfiguration):
            return SlurmCompute.register(workspace, name, config)
        if not isinstance(config, RemoteAttachConfiguration):
            raise ComputeTargetException(
                "trainhub attaches machines reached over SSH only: give "
                "RemoteCompute.attach_configuration(address=..., username=..., private_key_file=...)"
            )
        private_key = config.read_private_key()  # a bad key file stops here, before any request
        found = targets(workspace)
        if name in found:
            raise ComputeTargetException(
                f"{workspace.url} has a compute target '{name}' already (nodes: "
                f"{', '.join(found[name]) or 'none'}): use ComputeTarget(workspace=ws, "
                f"name='{name}'), or detach() it first"
            )
        where = f"{config.username}@{config.address}:{config.ssh_port}"
        node = {
            "name": name,
            "host": config.address,
            "port": config.ssh_port,
            "user": config.username,
            "docker_socket": config.docker_socket,
            "private_key": private_key,
        }
        try:
            workspace.client.json("POST", "/api/v1/nodes", json=node)
        except TrainhubError as exc:
            raise ComputeTargetException(
                f"Cannot attach {where} as '{name}' (key {config.private_key_file}): {_said(exc)}"
            ) from None
        try:
            workspace.client.json("POST", "/api/v1/targets", json={"name": name, "nodes": [name]})
        except TrainhubError as exc:
            try:
                workspace.client.json("DELETE", f"/api/v1/nodes/{name}")
            except TrainhubError:
                pass  # the error below says what failed first
            raise ComputeTargetException(
                f"{where} was registered as node '{name}' but no compute target could be made for "
                f"it ({_said(exc)}), so the node was removed again"
            ) from None
        target = ComputeTarget.of(workspace, name, [name])
        assert isinstance(target, RemoteCompute)
        return target

    @staticmethod
    def list(workspace: Workspace) -> list[ComputeTarget]:
        return [ComputeTarget.of(workspace, n, nodes) for n, nodes in targets(workspace).items()]

    def wait_for_completion(self, show_output: bool = False, **kwargs: Any) -> None:
        """Nothing to wait for: a group of registered nodes is ready as soon as it exists."""

    def get_status(self) -> ComputeStatus:
        """What the target's nodes are doing now: states, GPUs (free of all), runs on them."""
        found = self.workspace.client.json("GET", "/api/v1/nodes")["nodes"]
        return ComputeStatus([n for n in found if n["name"] in self.nodes])

    def detach(self) -> None:
        raise ComputeTargetException(
            f"Compute target '{self.name}' groups nodes an admin registered; it was not attached "
            f"with ComputeTarget.attach. An admin removes it with `trainhub target remove "
            f"{self.name}` (and its nodes with `trainhub node remove NAME`)"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workspace={self.workspace.name!r}, name={self.name!r}, nodes={self.nodes!r})"


def _attached(name: str, nodes: list[str]) -> bool:
    """A target made by ``ComputeTarget.attach``: its only node has its name."""
    return name != LOCAL and nodes == [name]


class RemoteAttachConfiguration:
    """Where the machine is and how to log in: what ``RemoteCompute.attach_configuration`` gives
    ``ComputeTarget.attach``. The key file is read when attaching."""

    def __init__(
        self,
        address: str,
        ssh_port: int,
        username: str,
        private_key_file: str,
        private_key_passphrase: str | None,
        docker_socket: str,
    ) -> None:
        self.address = address
        self.ssh_port = ssh_port
        self.username = username
        self.private_key_file = private_key_file
        self._passphrase = private_key_passphrase
        self.docker_socket = docker_socket

    def validate_configuration(self) -> None:
        """Checked when made; here for the code that calls it, as Azure ML's did."""

    def read_private_key(self) -> str:
        """The key's text, unencrypted, in OpenSSH's format; a clear error naming the file if it
        cannot be read, is not a private key, or does not open with the passphrase."""
        import asyncssh  # the SDK needs it only here

        path = Path(self.private_key_file).expanduser()
        shown = f"private_key_file {path}"
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ComputeTargetException(f"{shown} cannot be read: {exc.strerror or exc}") from None
        if len(data) > MAX_KEY_FILE_BYTES:
            raise ComputeTargetException(
                f"{shown} is {len(data)} bytes, more than any SSH private key: not a private key"
            )
        try:
            key = asyncssh.import_private_key(data, self._passphrase or None)
        except asyncssh.KeyEncryptionError as exc:
            raise ComputeTargetException(
                f"{shown} cannot be decrypted with private_key_passphrase: {exc}"
            ) from None
        except asyncssh.KeyImportError as exc:
            if b"PRIVATE KEY" not in data and _is_public_key(data):
                raise ComputeTargetException(
                    f"{shown} is a public key: give the private one (the file without .pub)"
                ) from None
            # asyncssh's reasons are fixed sentences ("Passphrase must be specified to import
            # encrypted private keys"), never the file's content.
            raise ComputeTargetException(
                f"{shown} cannot be used as an SSH private key (OpenSSH or PEM format): {exc}"
            ) from None
        return bytes(key.export_private_key("openssh")).decode()

    def __repr__(self) -> str:  # never the passphrase
        return (
            f"RemoteAttachConfiguration(address={self.address!r}, ssh_port={self.ssh_port}, "
            f"username={self.username!r}, private_key_file={self.private_key_file!r}, "
            f"docker_socket={self.docker_socket!r})"
        )


def _is_public_key(data: bytes) -> bool:
    import asyncssh

    try:
        asyncssh.import_public_key(data)
    except (asyncssh.KeyImportError, ValueError):
        return False
    return True


class RemoteCompute(ComputeTarget):
    """A machine attached over SSH (``ComputeTarget.attach``): one node, and a target of its name."""

    @staticmethod
    def attach_configuration(
        resource_id: str | None = None,
        ssh_port: int = 22,
        username: str = "",
        password: str = "",
        private_key_file: str = "",
        private_key_passphrase: str = "",
        address: str | None = None,
        *,
        docker_socket: str = "/var/run/docker.sock",
    ) -> RemoteAttachConfiguration:
        """Azure ML's arguments, in Azure ML's order. trainhub reaches a machine by its address
        with a key: ``resource_id`` (an Azure VM) and ``password`` are refused, saying so.
        ``docker_socket`` (a trainhub extra) is where the machine's Docker engine listens, for one
        that is not at the usual place (rootless Docker: ``/run/user/1000/docker.sock``)."""
        if resource_id:
            raise ComputeTargetException(
                "resource_id names an Azure virtual machine; trainhub attaches a machine by its "
                "SSH address: address='10.0.0.5'"
            )
        if password:
            raise ComputeTargetException(
                "trainhub reaches machines with an SSH key, not a password: give "
                "private_key_file (and private_key_passphrase if the key has one)"
            )
        for argument, value in (
            ("address", address),
            ("username", username),
            ("private_key_file", private_key_file),
        ):
            if not value or not isinstance(value, str):
                raise ComputeTargetException(f"RemoteCompute.attach_configuration needs {argument}")
        if (
            isinstance(ssh_port, bool)
            or not isinstance(ssh_port, int)
            or not 1 <= ssh_port <= 65535
        ):
            raise ComputeTargetException(f"ssh_port {ssh_port!r} is not a TCP port (1-65535)")
        assert address is not None
        return RemoteAttachConfiguration(
            address,
            ssh_port,
            username,
            str(private_key_file),
            private_key_passphrase or None,
            docker_socket,
        )

    def wait_for_completion(
        self,
        show_output: bool = False,
        is_delete_operation: bool = False,
        timeout_in_minutes: float = 5.0,
        **kwargs: Any,
    ) -> None:
        """Until the node is Ready (after a detach: gone); an error saying why if it cannot be
        (host key changed, disabled, still unreachable after ``timeout_in_minutes``)."""
        deadline = time.monotonic() + timeout_in_minutes * 60
        said = ""
        while True:
            node = self._node()
            state = "Detached" if node is None else str(node["state"])
            line = f"{self.name}: {state}" + (
                f" ({node['error']})" if node and node.get("error") and state != "Ready" else ""
            )
            if show_output and line != said:
                print(line + (f", {_facts(node)}" if node and state == "Ready" else ""))
            said = line
            if is_delete_operation and node is None:
                return
            if not is_delete_operation:
                if node is None:
                    raise ComputeTargetException(f"Compute target '{self.name}' was detached")
                if state == "Ready":
                    return
                if state in STUCK_STATES:
                    raise ComputeTargetException(
                        f"{line}: it takes no runs until an admin acts "
                        f"(`{STUCK_STATES[state].format(name=self.name)}`)"
                    )
            if time.monotonic() > deadline:
                raise ComputeTargetException(
                    f"{line} after {timeout_in_minutes} minute(s) of waiting"
                )
            time.sleep(1)

    def _node(self) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.workspace.client.json("GET", f"/api/v1/nodes/{self.name}")
        except ServiceError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def detach(self) -> None:
        """Remove the target and the node (the server deletes the key it kept); refused while
        runs wait for it or run on it."""
        busy = self.get_status().running_runs
        if busy:
            raise ComputeTargetException(
                f"Compute target '{self.name}' cannot be detached: {len(busy)} run(s) are active "
                f"on it ({', '.join(busy)}); cancel them or wait for them to end"
            )
        client = self.workspace.client
        try:
            client.json("DELETE", f"/api/v1/targets/{self.name}")
        except TrainhubError as exc:
            raise ComputeTargetException(
                f"Compute target '{self.name}' cannot be detached: {_said(exc)}"
            ) from None
        try:
            client.json("DELETE", f"/api/v1/nodes/{self.name}")
        except TrainhubError as exc:
            if not (isinstance(exc, ServiceError) and exc.status == 404):
                raise ComputeTargetException(
                    f"Compute target '{self.name}' was removed, but its node could not be: "
                    f"{_said(exc)}"
                ) from None


def _facts(node: dict[str, Any]) -> str:
    """A Ready node in a few words: GPUs, CPUs, Docker."""
    facts = node.get("inventory") or {}
    gpus = facts.get("gpus") or []
    return (
        f"{len(gpus)} GPU(s)"
        + (f" ({gpus[0]['name']})" if gpus else "")
        + f", {facts.get('cpus')} CPU(s), Docker {facts.get('docker_version')}"
    )


class SlurmAttachConfiguration:
    """A Slurm cluster's login node and where its jobs go: what
    ``SlurmCompute.attach_configuration`` gives :meth:`ComputeTarget.attach`."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.fields.items() if k != "key_path"}
        return f"SlurmAttachConfiguration({shown})"


class SlurmCompute(ComputeTarget):
    """A Slurm cluster as a compute target (a trainhub extra: Azure ML had none). Slurm schedules
    its runs; ``key_path`` is a key file on the server's machine, as ``trainhub target create
    --kind slurm --key`` names it. Attaching is an admin's action."""

    @staticmethod
    def attach_configuration(
        address: str,
        username: str,
        key_path: str,
        partition: str,
        *,
        ssh_port: int = 22,
        account: str | None = None,
        qos: str | None = None,
        work_dir: str = "/shared/trainhub",
    ) -> SlurmAttachConfiguration:
        for argument, value in (
            ("address", address),
            ("username", username),
            ("key_path", key_path),
            ("partition", partition),
        ):
            if not value or not isinstance(value, str):
                raise ComputeTargetException(f"SlurmCompute.attach_configuration needs {argument}")
        return SlurmAttachConfiguration(
            host=address,
            user=username,
            key_path=key_path,
            partition=partition,
            port=ssh_port,
            account=account,
            qos=qos,
            work_dir=work_dir,
        )

    @staticmethod
    def register(workspace: Workspace, name: str, config: SlurmAttachConfiguration) -> SlurmCompute:
        body = {"name": name, "kind": "slurm", **config.fields}
        try:
            workspace.client.json("POST", "/api/v1/targets", json=body)
        except TrainhubError as exc:
            raise ComputeTargetException(
                f"Cannot attach the Slurm cluster at {config.fields['host']} as '{name}': "
                f"{_said(exc)}"
            ) from None
        target = object.__new__(SlurmCompute)
        target.workspace, target.name, target.nodes = workspace, name, []
        return target

    def wait_for_completion(self, show_output: bool = False, **kwargs: Any) -> None:
        """Nothing to wait for: the login node answered when the target was made."""

    def detach(self) -> None:
        """Forget the target (refused while runs wait for it or run on it); jobs' folders on the
        cluster stay."""
        try:
            self.workspace.client.json("DELETE", f"/api/v1/targets/{self.name}")
        except TrainhubError as exc:
            raise ComputeTargetException(f"Cannot detach '{self.name}': {_said(exc)}") from None


class ComputeStatus:
    """``compute.get_status()``: what the server knows of the target's nodes now.

    ``state`` is the node's state (Ready, Unreachable, Draining, Disabled, Untrusted); for a target
    of several nodes, Ready when all are, else NotReady (``nodes`` has each one's). ``gpus`` and
    ``free_gpus`` count all the nodes' GPUs; ``running_runs`` are the runs holding part of them.
    """

    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self.nodes = [
            {
                "name": n["name"],
                "state": n["state"],
                "error": n.get("error"),
                "gpus": len((n.get("inventory") or {}).get("gpus") or []),
                "freeGpus": len((n.get("inventory") or {}).get("gpus") or [])
                - len(n.get("allocatedGpus") or []),
                "cpus": (n.get("inventory") or {}).get("cpus"),
                "runs": list(n.get("runs") or []),
            }
            for n in nodes
        ]
        states = {n["state"] for n in self.nodes}
        if len(self.nodes) == 1:
            self.state = str(self.nodes[0]["state"])
        else:
            self.state = "Ready" if states == {"Ready"} else "NotReady"
        self.current_node_count = sum(n["state"] == "Ready" for n in self.nodes)
        self.gpus = sum(int(n["gpus"]) for n in self.nodes)
        self.free_gpus = sum(int(n["freeGpus"]) for n in self.nodes)
        self.running_runs = sorted({r for n in self.nodes for r in n["runs"]})
        self.errors = [f"{n['name']}: {n['error']}" for n in self.nodes if n["error"]]

    def serialize(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "currentNodeCount": self.current_node_count,
            "gpus": self.gpus,
            "freeGpus": self.free_gpus,
            "runningRuns": self.running_runs,
            "errors": self.errors,
            "nodes": self.nodes,
        }

    def __repr__(self) -> str:
        return f"ComputeStatus({self.serialize()!r})"


class AmlCompute(ComputeTarget):
    """Azure ML's managed cluster. Only its ``provisioning_configuration`` is here, for the code that
    builds one before trying ``ComputeTarget.create`` (which says what to do instead)."""

    @staticmethod
    def provisioning_configuration(**kwargs: Any) -> dict[str, Any]:
        return dict(kwargs)
