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


# The GPU image: needs a registry that serves an NVIDIA CUDA base (Docker Hub or a lab mirror).
CUDA_BASE = "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04"
GPU_RECIPE_VERSION = "1"


def gpu_dockerfile(cuda_image: str) -> str:
    return "\n".join(
        [
            f"FROM {cuda_image}",
            "ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PYTHONUNBUFFERED=1",
            "RUN apt-get update && apt-get install -y --no-install-recommends "
            + " ".join(CPU_PACKAGES)
            + " && rm -rf /var/lib/apt/lists/*",
            f"LABEL org.trainhub.recipe={GPU_RECIPE_VERSION} org.trainhub.kind=base-gpu",
            'CMD ["python3"]',
            "",
        ]
    )


def build_gpu_base_image(
    client: docker.DockerClient,
    tag: str,
    cuda_image: str,
    *,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> bool:
    """``trainhub images build-base --gpu``: CUDA runtime + the same packages as the CPU image."""
    import io
    import tarfile

    if not force:
        try:
            labels = client.images.get(tag).labels or {}
            if labels.get("org.trainhub.recipe") == GPU_RECIPE_VERSION:
                log(
                    f"{tag} is present (GPU recipe {GPU_RECIPE_VERSION}); nothing to do (--force rebuilds it)"
                )
                return False
        except docker.errors.ImageNotFound:
            pass
    data = gpu_dockerfile(cuda_image).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    log(f"building {tag} from {cuda_image}...")
    try:
        for event in client.api.build(
            fileobj=io.BytesIO(buf.getvalue()),
            custom_context=True,
            tag=tag,
            rm=True,
            pull=True,
            decode=True,
        ):
            if event.get("stream"):
                log(event["stream"].rstrip())
            if event.get("error"):
                raise BaseImageError(
                    f"building {tag} failed: {event['error'].strip()}\n"
                    f"The GPU image starts from {cuda_image}, which needs a registry that serves it "
                    "(Docker Hub, or a lab mirror given with --cuda-image)."
                )
    except docker.errors.APIError as exc:
        raise BaseImageError(
            f"building {tag} failed: {exc.explanation or exc}\nThe GPU image starts from {cuda_image}, "
            "which needs a registry that serves it (Docker Hub, or a lab mirror given with --cuda-image)."
        ) from None
    log(f"built {tag}")
    return True
