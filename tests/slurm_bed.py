"""A real single-node Slurm cluster for the tests: munged, slurmctld and slurmd (Debian's slurm-wlm)
in a network namespace that also runs sshd, reached as the login node.

Everything lives in a private folder (munge key, slurm.conf, spool, state, logs, the work dir that
stands for the cluster's shared storage); nothing is written under /etc. The node has two CPUs: two
single-process runs fit at once, and a run of two processes fills it (the next one then waits with
Slurm's reason). No GPUs: no gres. Setup tolerates leftovers of an earlier run; teardown stops the
daemons by their pid files and removes the namespace.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests import testbed

NAME = "slurm"  # namespace thslurm, link thvslurm
INDEX = 40  # 10.77.0.50
NODE = "c1"  # the compute node's name in Slurm
PARTITION = "debug"
PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd", "sshd")


@dataclass
class SlurmBed:
    root: Path
    address: str
    host_key: Path
    client_key: Path
    conf: Path
    work_dir: Path  # the cluster's shared storage (trainhub's work dir on it)

    @property
    def netns(self) -> str:
        return f"th{NAME}"

    def pidfile(self, what: str) -> Path:
        return self.root / f"{what}.pid"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def slurm(self, *args: str, check: bool = True) -> str:
        """A Slurm command (squeue, scontrol...) against this cluster, from the host."""
        done = subprocess.run(
            list(args), capture_output=True, text=True, env=self.env(), check=False, timeout=60
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr}")
        return done.stdout

    def node_state(self) -> str:
        return self.slurm("sinfo", "-h", "-n", NODE, "-o", "%T").strip()

    def wait_idle(self, timeout: float = 60) -> None:
        """The node up again and with nothing running (jobs of earlier tests gone)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.node_state() == "idle" and not self.slurm("squeue", "-h").strip():
                return
            time.sleep(0.3)
        raise RuntimeError(f"node {NODE} is {self.node_state()}: {self.slurm('squeue')}")

    def kill_slurmd(self) -> None:
        testbed._kill_pidfile(self.pidfile("slurmd"))

    def start_slurmd(self) -> None:
        _netns(self, "slurmd", "-f", str(self.conf), "-N", NODE)
        _wait_pidfile(self.pidfile("slurmd"), self.root / "slurmd.log")

    def swap_host_key(self) -> None:
        """The login node's sshd starts again with its other host key (sessions open stay)."""
        alt = self.root / "host_key_alt"
        if not alt.exists():
            testbed.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(alt))
        spare = self.root / "host_key_spare"
        for suffix in ("", ".pub"):
            key, other, tmp = (Path(f"{p}{suffix}") for p in (self.host_key, alt, spare))
            key.rename(tmp)
            other.rename(key)
            tmp.rename(other)
        testbed._kill_pidfile(self.pidfile("sshd"))
        _start_sshd(self)

    def resume_node(self) -> None:
        """After a node failure: back in service (as an admin's ``scontrol update``)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = self.node_state()
            if state == "idle":
                return
            if "down" in state or "drain" in state:
                self.slurm("scontrol", "update", f"NodeName={NODE}", "State=RESUME", check=False)
            time.sleep(0.5)
        raise RuntimeError(f"node {NODE} stays {self.node_state()}")


def ensure_packages() -> None:
    """Debian's Slurm and munge, installed once per machine (scripts/test installs them too)."""
    missing = [
        p
        for p in PACKAGES
        if "install ok installed"
        not in testbed.sh("dpkg-query", "-W", "-f=${Status}", p, check=False).stdout
    ]
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, capture_output=True
        )


SLURM_CONF = """\
ClusterName=trainhubtest
SlurmctldHost={host}({address})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay in squeue --states=all for a while (no slurmdbd here, so no sacct).
MinJobAge=600
# A lost slurmd is noticed within seconds (node failure tests), and the node comes back by itself.
SlurmdTimeout=5
ReturnToService=2
KillWait=2
InactiveLimit=0
SchedulerParameters=sched_interval=1
NodeName={node} NodeAddr={address} CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def start(root: Path, client_key: Path) -> SlurmBed:
    ensure_packages()
    stop(root)
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool", "work"):
        (root / sub).mkdir(exist_ok=True)
    bed = SlurmBed(
        root=root,
        address=f"{testbed.SUBNET}.{10 + INDEX}",
        host_key=root / "host_key",
        client_key=client_key,
        conf=root / "slurm.conf",
        work_dir=root / "work",
    )
    _namespace(bed)
    key = root / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    bed.conf.write_text(
        SLURM_CONF.format(
            host=socket.gethostname(),
            address=bed.address,
            root=root,
            node=NODE,
            partition=PARTITION,
        )
    )
    subprocess.run(
        [
            "munged",
            "--force",
            f"--key-file={key}",
            f"--socket={root}/munge.socket",
            f"--pid-file={bed.pidfile('munged')}",
            f"--log-file={root}/munged.log",
            f"--seed-file={root}/munged.seed",
        ],
        check=True,
        capture_output=True,
    )
    _netns(bed, "slurmctld", "-f", str(bed.conf))
    _wait_pidfile(bed.pidfile("slurmctld"), root / "slurmctld.log")
    bed.start_slurmd()
    _start_sshd(bed)
    bed.wait_idle(timeout=60)
    return bed


def stop(root: Path) -> None:
    """Stop the daemons (including leftovers of an earlier run) and remove the namespace."""
    for what in DAEMONS:
        testbed._kill_pidfile(root / f"{what}.pid")
    # Job steps of a killed slurmd live on in the namespace: stop_node kills what is left there.
    testbed.stop_node(NAME, root)
    if not testbed.sh("ip", "link", "show", "master", testbed.BRIDGE, check=False).stdout.strip():
        testbed.remove_bridge()  # unless nodes of the multi-node test bed are on it
    for sub in ("state", "spool", "work"):  # work: run folders and environments of earlier runs
        shutil.rmtree(root / sub, ignore_errors=True)


def _namespace(bed: SlurmBed) -> None:
    netns, name = bed.netns, NAME
    testbed.ensure_bridge()
    sh = testbed.sh
    sh("ip", "netns", "add", netns)
    sh("ip", "link", "add", f"thv{name}", "type", "veth", "peer", "name", f"thp{name}")
    sh("ip", "link", "set", f"thp{name}", "netns", netns)
    sh("ip", "link", "set", f"thv{name}", "master", testbed.BRIDGE, "up")
    sh("ip", "netns", "exec", netns, "ip", "addr", "add", f"{bed.address}/24", "dev", f"thp{name}")
    sh("ip", "netns", "exec", netns, "ip", "link", "set", f"thp{name}", "up")
    sh("ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up")


def _netns(bed: SlurmBed, *command: str) -> None:
    """A daemon in the node's namespace (it daemonizes itself). With nsenter, not ``ip netns exec``:
    that remounts /sys, and slurmd then finds no cgroup filesystem."""
    subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{bed.netns}", *command],
        check=True,
        capture_output=True,
        env=bed.env(),
        timeout=60,
    )


def _wait_pidfile(path: Path, log: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            text = log.read_text()[-2000:] if log.exists() else "(no log)"
            raise RuntimeError(f"{path.name} never appeared: {text}")
        time.sleep(0.1)


def _start_sshd(bed: SlurmBed) -> None:
    """The login node's sshd: Slurm's commands on the PATH, SLURM_CONF pointing at this cluster."""
    if not bed.host_key.exists():
        testbed.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(bed.host_key))
    (bed.root / "authorized_keys").write_text(Path(f"{bed.client_key}.pub").read_text())
    home = bed.root / "home"
    home.mkdir(exist_ok=True)
    (home / ".bashrc").write_text("# the login node's own, empty startup file\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    testbed.sh(
        "ip",
        "netns",
        "exec",
        bed.netns,
        "/usr/sbin/sshd",
        "-h",
        str(bed.host_key),
        "-o",
        f"ListenAddress={bed.address}",
        "-o",
        f"PidFile={bed.pidfile('sshd')}",
        "-o",
        "PermitRootLogin=prohibit-password",
        "-o",
        f"AuthorizedKeysFile={bed.root / 'authorized_keys'}",
        "-o",
        "StrictModes=no",
        "-o",
        "PasswordAuthentication=no",
        "-o",
        f"SetEnv=PATH={path} HOME={home} SLURM_CONF={bed.conf}",
    )
