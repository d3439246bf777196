"""The multi-node test bed: each "GPU node" is a network namespace with its own sshd and dockerd.

Real SSH, real Docker engines, real network. There is no GPU on these machines: the only stand-ins
are ``nvidia-smi``, on the PATH of a node's SSH sessions, and ``nvidia-container-runtime-hook``, on
the PATH of the node's dockerd too, which records the GPUs each container was given by the engine
(:meth:`Node.hook_records`). Setup tolerates leftovers of an earlier run; teardown removes what it
made (daemons by their pid files, namespaces, the bridge).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

BRIDGE = "thbr0"
SUBNET = "10.77.0"
BASE_IMAGE = "trainhub/base:cpu"
# No CUDA image can be had here: on the nodes the CPU image also carries the default GPU image's tag.
GPU_IMAGE = "trainhub/base:gpu"
FORWARD_RULE = ("FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT")

FAKE_NVIDIA_SMI = """#!/bin/sh
# Stand-in for nvidia-smi on a test node: the CSV the real one prints for
# --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits (gpus.csv), and for
# --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits (usage.csv, which a
# test sets with Node.set_gpu_usage); each usage query is counted in ../nvidia-smi-usage.log.
here="$(dirname "$0")"
case "$*" in
  *utilization.gpu*) echo "$*" >> "$here/../nvidia-smi-usage.log"; cat "$here/usage.csv" ;;
  *--query-gpu*) cat "$here/gpus.csv" ;;
  *) echo "NVIDIA-SMI stand-in for trainhub tests" ;;
esac
"""

FAKE_NVIDIA_HOOK = """#!/usr/bin/env python3
# Stand-in for nvidia-container-runtime-hook on a test node. With a GPU device request, runc calls it
# as a prestart hook with the container's OCI state on stdin; it records the container's id and the
# NVIDIA_VISIBLE_DEVICES line dockerd put into the bundle's config.json, then lets the container start.
# dockerd appends that line after the container's own environment; like the real hook, the last wins.
import json, os, sys

if sys.argv[1:] == ["prestart"]:
    state = json.load(sys.stdin)
    with open(os.path.join(state["bundle"], "config.json")) as fh:
        env = json.load(fh)["process"].get("env") or []
    lines = [e for e in env if e.startswith("NVIDIA_VISIBLE_DEVICES=")]
    line = lines[-1] if lines else "-"
    record = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "nvidia-hook.log")
    with open(record, "a") as fh:
        fh.write(state["id"] + " " + line + "\\n")
"""


@dataclass
class Node:
    name: str
    address: str
    root: Path
    host_key: Path
    client_key: Path
    docker_socket: str
    gpus: int
    nvidia_hook: bool = True

    @property
    def netns(self) -> str:
        return f"th{self.name}"

    def pidfile(self, what: str) -> Path:
        return self.root / f"{what}.pid"

    def set_gpu_usage(self, usage: dict[int, tuple[int, int]]) -> None:
        """What the stand-in nvidia-smi reports from now on: GPU index -> (utilisation in percent,
        memory used in MiB); GPUs left out report 0 and 0."""
        (self.root / "bin" / "usage.csv").write_text(
            "".join(
                f"{i}, {usage.get(i, (0, 0))[0]}, {usage.get(i, (0, 0))[1]}\n"
                for i in range(self.gpus)
            )
        )

    def usage_queries(self) -> int:
        """How often the node's nvidia-smi was asked for utilisation and memory used."""
        try:
            return len((self.root / "nvidia-smi-usage.log").read_text().splitlines())
        except FileNotFoundError:
            return 0

    def hook_records(self) -> dict[str, str]:
        """What the stand-in hook saw: container id -> its NVIDIA_VISIBLE_DEVICES value."""
        try:
            lines = (self.root / "nvidia-hook.log").read_text().splitlines()
        except FileNotFoundError:
            return {}
        return {
            cid: line.removeprefix("NVIDIA_VISIBLE_DEVICES=")
            for cid, line in (entry.split(" ", 1) for entry in lines)
        }


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


def _kill_pidfile(path: Path) -> None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def ensure_bridge() -> None:
    if sh("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    # The nodes talk to each other over the bridge, like servers on one switch (multi-node MPI).
    # Docker's FORWARD DROP policy in this namespace would drop bridged traffic otherwise.
    if sh("iptables", "-C", *FORWARD_RULE, check=False).returncode != 0:
        sh("iptables", "-I", "FORWARD", "1", *FORWARD_RULE[1:])


def stop_node(name: str, root: Path) -> None:
    """Stop everything of node ``name``, including leftovers of earlier runs (matched by the paths
    and addresses this test bed uses), then remove its namespace and link."""
    for what in ("sshd", "dockerd"):
        _kill_pidfile(root / f"{what}.pid")
    marks = [f"/run/docker-th{name}".encode(), f"/var/lib/docker-th{name}".encode()]
    pids = set(sh("ip", "netns", "pids", f"th{name}", check=False).stdout.split())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name in pids or any(mark in cmdline for mark in marks):
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
    time.sleep(0.3)
    sh("ip", "netns", "del", f"th{name}", check=False)
    sh("ip", "link", "del", f"thv{name}", check=False)


def start_node(
    name: str, index: int, root: Path, client_key: Path, gpus: int, nvidia_hook: bool = True
) -> Node:
    """A namespace ``th<name>`` at 10.77.0.<10+index> with sshd (key auth as root) and dockerd.
    A node with GPUs has the stand-in NVIDIA hook unless ``nvidia_hook`` is False."""
    stop_node(name, root)
    root.mkdir(parents=True, exist_ok=True)
    address = f"{SUBNET}.{10 + index}"
    netns = f"th{name}"
    ensure_bridge()
    sh("ip", "netns", "add", netns)
    sh("ip", "link", "add", f"thv{name}", "type", "veth", "peer", "name", f"thp{name}")
    sh("ip", "link", "set", f"thp{name}", "netns", netns)
    sh("ip", "link", "set", f"thv{name}", "master", BRIDGE, "up")
    sh("ip", "netns", "exec", netns, "ip", "addr", "add", f"{address}/24", "dev", f"thp{name}")
    sh("ip", "netns", "exec", netns, "ip", "link", "set", f"thp{name}", "up")
    sh("ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up")

    host_key = root / "host_key"
    if not host_key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
    (root / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    hook = bin_dir / "nvidia-container-runtime-hook"
    hook.unlink(missing_ok=True)
    if gpus and nvidia_hook:
        hook.write_text(FAKE_NVIDIA_HOOK)
        hook.chmod(0o755)
    if gpus:
        smi = bin_dir / "nvidia-smi"
        smi.write_text(FAKE_NVIDIA_SMI)
        smi.chmod(0o755)
        (bin_dir / "gpus.csv").write_text(
            "".join(
                f"{i}, GPU-{name}-{i:04d}-0000-0000-000000000000, NVIDIA A100-SXM4-40GB, 40960\n"
                for i in range(gpus)
            )
        )
    (root / "nvidia-smi-usage.log").unlink(missing_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)
    node = Node(
        name, address, root, host_key, client_key, f"/run/docker-{netns}.sock", gpus, nvidia_hook
    )
    if gpus:
        node.set_gpu_usage({})
    _start_sshd(node)
    start_dockerd(node)
    socket = node.docker_socket
    if (
        sh(
            "docker", "-H", f"unix://{socket}", "image", "inspect", BASE_IMAGE, check=False
        ).returncode
        != 0
    ):
        subprocess.run(
            f"docker save {BASE_IMAGE} | docker -H unix://{socket} load",
            shell=True,
            check=True,
            capture_output=True,
        )
    sh("docker", "-H", f"unix://{socket}", "tag", BASE_IMAGE, GPU_IMAGE)
    return node


def add_to(client: httpx.Client, node: Node, name: str | None = None) -> None:
    """Register ``node`` with a server (as ``trainhub node add`` would), asserting it is Ready."""
    body = {
        "name": name or node.name,
        "host": node.address,
        "user": "root",
        "key_path": str(node.client_key),
        "docker_socket": node.docker_socket,
    }
    response = client.post("/api/v1/nodes", json=body)
    assert response.status_code == 201, response.text


def start_dockerd(node: Node) -> None:
    """The node's own Docker engine, in its namespace; returns once it answers."""
    netns, root, name = node.netns, node.root, node.name
    bin_dir = root / "bin"
    socket = node.docker_socket
    log = (root / "dockerd.log").open("ab")
    # dockerd looks for the NVIDIA hook on its own PATH, once, when it starts.
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin')}"}
    subprocess.Popen(
        [
            "nsenter",
            f"--net=/var/run/netns/{netns}",
            "dockerd",
            "--data-root",
            f"/var/lib/docker-{netns}",
            "--exec-root",
            f"/run/docker-{netns}",
            "-H",
            f"unix://{socket}",
            "--pidfile",
            str(root / "dockerd.pid"),
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    while sh("docker", "-H", f"unix://{socket}", "info", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"dockerd of node {name} did not start: {(root / 'dockerd.log').read_text()[-2000:]}"
            )
        time.sleep(0.3)


def stop_dockerd(node: Node) -> None:
    """The node's engine stops as for an upgrade (its containers are stopped with it, then its
    containerd); returns once all of it is gone."""
    try:
        pid = int(node.pidfile("dockerd").read_text().strip())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60  # containers get their stop timeout, then containerd goes
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    mark = f"/run/docker-{node.netns}/containerd".encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if mark in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)


def client_key(root: Path) -> Path:
    key = root / "client_key"
    if not key.exists():
        root.mkdir(parents=True, exist_ok=True)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    return key


def remove_bridge() -> None:
    sh("ip", "link", "del", BRIDGE, check=False)
    sh("iptables", "-D", *FORWARD_RULE, check=False)


def namespace_pids(node: Node, command: str | None = None) -> list[int]:
    out = sh("ip", "netns", "pids", node.netns, check=False).stdout.split()
    pids = [int(p) for p in out if p.isdigit()]
    if command is None:
        return pids
    found = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == command:
                found.append(pid)
        except OSError:
            pass
    return found


def kill_node_daemons(node: Node) -> None:
    """Node loss: every process of the node dies at once (sshd and its sessions, dockerd, containers)."""
    for pid in namespace_pids(node):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def restart_sshd(node: Node) -> None:
    """Restart a node's sshd and drop its sessions (with a new host key if the old one was deleted)."""
    for pid in namespace_pids(node, "sshd"):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if not node.host_key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(node.host_key))
    _start_sshd(node)


def _start_sshd(node: Node) -> None:
    bin_dir = node.root / "bin"
    path = f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    # A home of the node's own, as a real node has: the login shell of every SSH command reads
    # ~/.bashrc, and this machine's root's one (pyenv's rehash waits up to a minute on a lock that
    # a killed node can leave behind) must not run on the nodes.
    home = node.root / "home"
    home.mkdir(exist_ok=True)
    (home / ".bashrc").write_text("# a test node's own, empty startup file\n")
    sh(
        "ip",
        "netns",
        "exec",
        node.netns,
        "/usr/sbin/sshd",
        "-h",
        str(node.host_key),
        "-o",
        f"ListenAddress={node.address}",
        "-o",
        f"PidFile={node.pidfile('sshd')}",
        "-o",
        "PermitRootLogin=prohibit-password",
        "-o",
        f"AuthorizedKeysFile={node.root / 'authorized_keys'}",
        "-o",
        "StrictModes=no",
        "-o",
        "PasswordAuthentication=no",
        "-o",
        f"SetEnv=PATH={path} HOME={home}",
        "-o",
        "AllowStreamLocalForwarding=yes",
    )
