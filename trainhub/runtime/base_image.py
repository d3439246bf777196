"""The default base image, built locally from Debian packages: no registry is needed.

Air-gapped labs and machines without Docker Hub still get a working image: ``debootstrap`` fetches
Debian packages from a mirror (a lab's local mirror works the same way) into a folder, which is
imported as an image. Python 3, Open MPI, OpenSSH and mpi4py are in it for distributed runs.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

# Bump when the recipe below changes: an image with an older recipe is rebuilt.
RECIPE_VERSION = "1"
SUITE = "bookworm"
CPU_PACKAGES = [
    "python3",
    "python3-venv",
    "ca-certificates",
    "openssh-server",
    "openssh-client",
    "openmpi-bin",
    "python3-mpi4py",
    "procps",
]
IMAGE_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "ENV PYTHONUNBUFFERED=1",
    f"LABEL org.trainhub.recipe={RECIPE_VERSION}",
    "LABEL org.trainhub.kind=base-cpu",
    'CMD ["python3"]',
]


class BaseImageError(RuntimeError):
    pass


def base_image_present(client: docker.DockerClient, tag: str) -> bool:
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    labels = image.labels or {}
    return bool(labels.get("org.trainhub.recipe") == RECIPE_VERSION)


def build_base_image(
    client: docker.DockerClient,
    tag: str,
    mirror: str,
    *,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> bool:
    """Build ``tag`` unless an image of the current recipe is there. Returns True when it built."""
    if not force and base_image_present(client, tag):
        log(f"{tag} is present (recipe {RECIPE_VERSION}); nothing to do (--force rebuilds it)")
        return False
    if shutil.which("debootstrap") is None:
        raise BaseImageError(
            "debootstrap is not installed: `apt-get install -y debootstrap` (Debian/Ubuntu) first"
        )
    with tempfile.TemporaryDirectory(prefix="trainhub-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"debootstrap {SUITE} from {mirror} (about a minute)...")
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(CPU_PACKAGES)}",
            SUITE,
            str(rootfs),
            mirror,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise BaseImageError(f"debootstrap failed (exit {proc.returncode}):\n{tail}")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        log(f"importing the root filesystem as {tag}...")
        repository, _, image_tag = tag.rpartition(":")
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            assert tar.stdout is not None
            client.api.import_image_from_stream(
                tar.stdout, repository=repository, tag=image_tag, changes=IMAGE_CHANGES
            )
        if tar.returncode != 0:
            raise BaseImageError(f"tar of the root filesystem failed (exit {tar.returncode})")
    if not base_image_present(client, tag):
        raise BaseImageError(f"the import finished but {tag} is not on the engine")
    log(f"built {tag}")
    return True
