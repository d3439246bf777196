"""What the launcher puts into every run's container besides the snapshot: a tiny ``trainhub``
package (``from trainhub import Run; Run.get_context()``, standard library only) and, with the
Azure ML compatibility setting, an ``azureml.core`` shim, so scripts run with nothing installed."""

from __future__ import annotations

import functools
import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

LIB_DIR = "/trainhub/lib"
CONTEXT_DIR = "/trainhub/ctx"
MPI_LAUNCHER = f"{LIB_DIR}/trainhub/_mpi.py"
TORCH_LAUNCHER = f"{LIB_DIR}/trainhub/_torch.py"
TF_LAUNCHER = f"{LIB_DIR}/trainhub/_tf.py"

_TRAINHUB_INIT = '''"""trainhub's in-run runtime (standard library only), put here by the launcher."""

from trainhub.context import get_context as _get_context


class Run:
    """Inside a run, ``Run.get_context()`` is the current run."""

    @staticmethod
    def get_context(allow_offline=True, **kwargs):
        return _get_context()


__all__ = ["Run"]
'''

_AZUREML_CORE_RUN = '''"""A small ``azureml.core.run`` for scripts written for Azure ML, put here by trainhub."""

from trainhub.context import get_context as _get_context


class Run:
    @staticmethod
    def get_context(allow_offline=True, **kwargs):
        return _get_context()
'''

_AZUREML_CORE_INIT = '''"""A small ``azureml.core`` for scripts written for Azure ML, put here by trainhub."""

from azureml.core.run import Run


class Dataset:
    """Inside a run, datasets come with the run: ``Run.get_context().input_datasets[name]``."""

    @staticmethod
    def get_by_name(*args, **kwargs):
        raise RuntimeError(
            "inside a trainhub run, read a dataset with Run.get_context().input_datasets[name] "
            "(give it to the run with dataset.as_named_input(name))"
        )

    get_by_id = get_by_name


__all__ = ["Dataset", "Run"]
'''


@functools.lru_cache(maxsize=2)
def runtime_archive(azureml_compat: bool) -> bytes:
    """A tar to extract at ``/``: the runtime package and an empty, writable context folder."""
    here = Path(__file__).resolve().parent
    files: dict[str, bytes] = {
        "trainhub/lib/trainhub/__init__.py": _TRAINHUB_INIT.encode(),
        "trainhub/lib/trainhub/context.py": (here.parent / "context.py").read_bytes(),
        MPI_LAUNCHER.lstrip("/"): (here / "mpi_launch.py").read_bytes(),
        TORCH_LAUNCHER.lstrip("/"): (here / "torch_launch.py").read_bytes(),
        TF_LAUNCHER.lstrip("/"): (here / "tf_launch.py").read_bytes(),
    }
    if azureml_compat:
        files.update(
            {
                "trainhub/lib/azureml/__init__.py": b"",
                "trainhub/lib/azureml/core/__init__.py": _AZUREML_CORE_INIT.encode(),
                "trainhub/lib/azureml/core/run.py": _AZUREML_CORE_RUN.encode(),
            }
        )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder in ("trainhub/ctx", "trainhub/ctx/files"):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777  # the script may run as any user
            tar.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


SMALL_SNAPSHOT = 16 * 1024 * 1024


def combined_archive(snapshot: Path, workdir: str, azureml_compat: bool) -> bytes | None:
    """One tar for ``/`` holding the runtime and the snapshot under ``workdir``: each copy into a
    container costs the engine about 50 ms, so small snapshots travel with the runtime in one.
    None for large snapshots (they are sent as they are)."""
    if snapshot.stat().st_size > SMALL_SNAPSHOT:
        return None
    prefix = workdir.strip("/") + "/"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as dest:
        with tarfile.open(fileobj=io.BytesIO(runtime_archive(azureml_compat))) as runtime:
            for member in runtime:
                dest.addfile(member, runtime.extractfile(member) if member.isfile() else None)
        with tarfile.open(snapshot, mode="r|gz") as source:
            for member in source:
                name = member.name
                while name.startswith("./"):
                    name = name[2:]
                if name in ("", "."):
                    continue
                member.name = prefix + name
                if member.islnk():
                    member.linkname = prefix + member.linkname.removeprefix("./")
                dest.addfile(member, source.extractfile(member) if member.isfile() else None)
    return out.getvalue()


# After the script ends, the container prints this with the exit code and stays up until the launcher
# has copied its results out: copies out of a running container are ~10x cheaper than out of a stopped
# one. SIGTERM (cancel, timeout) is passed on to the script.
EXIT_SENTINEL = b"\x1etrainhub-exit:"
EXIT_FILE = "/dev/shm/trainhub-exit"
_LAUNCH = '"$py" -u "$@" &\n'
# MPI runs: mpirun over the script (trainhub/runtime/mpi_launch.py), in the same wrapper; PyTorch
# distributed runs: torchrun for the container's node (trainhub/runtime/torch_launch.py);
# TensorFlow parameter-server runs: the node's tasks (trainhub/runtime/tf_launch.py).
_LAUNCHERS = {
    "mpi": f'"$py" {MPI_LAUNCHER} launch "$py" "$@" &\n',
    "torch": f'"$py" {TORCH_LAUNCHER} launch "$py" "$@" &\n',
    "tf": f'"$py" {TF_LAUNCHER} launch "$py" "$@" &\n',
}
CONTAINER_WRAPPER = (
    "py=$(command -v python3 || command -v python)\n" + _LAUNCH + "child=$!\n"
    "trap 'kill -TERM \"$child\" 2>/dev/null' TERM\n"
    'while :; do wait "$child"; code=$?; kill -0 "$child" 2>/dev/null || break; done\n'
    "trap - TERM\n"
    # Which results exist, so that the launcher copies only those out.
    'found=""; [ -d outputs ] && found="${found}o"; [ -d logs ] && found="${found}l"\n'
    '{ [ -s /trainhub/ctx/metrics.jsonl ] || [ -n "$(ls -A /trainhub/ctx/files 2>/dev/null)" ]; }'
    ' && found="${found}c"\n'
    # Also where it can be read when the container's disk is full and its log is lost.
    'printf \'%s:%s\\n\' "$code" "$found" > /dev/shm/trainhub-exit 2>/dev/null || :\n'
    'printf \'\\036trainhub-exit:%s:%s\\n\' "$code" "$found"\n'
    "exec sleep 2147483647\n"
)


def command_for(
    entry_script: str, arguments: list[str], *, launcher: str | None = None
) -> list[str]:
    """The container's command: the wrapper around the script, or around ``launcher`` ("mpi",
    "torch", "tf") over the script."""
    # The image's own Python, whatever it is called there, unbuffered so lines arrive as printed.
    wrapper = CONTAINER_WRAPPER
    if launcher is not None:
        wrapper = wrapper.replace(_LAUNCH, _LAUNCHERS[launcher], 1)
    return ["/bin/sh", "-c", wrapper, "trainhub", entry_script, *arguments]


class LogSink:
    """Writes a container's output to the driver log, taking out the exit line of the wrapper."""

    def __init__(self, raw: IO[bytes], on_exit: Callable[[int, str | None], None]) -> None:
        self._raw = raw
        self._on_exit = on_exit
        self._pending = b""

    def write(self, chunk: bytes) -> None:
        data = self._pending + chunk
        self._pending = b""
        start = data.find(EXIT_SENTINEL)
        if start >= 0:
            end = data.find(b"\n", start)
            if end < 0:
                self._pending = data[start:]
                data = data[:start]
            else:
                fields = data[start + len(EXIT_SENTINEL) : end].strip().split(b":")
                # Everything the script printed is in the driver log before its end is told:
                # a run shown Completed has its whole log.
                self._raw.write(data[:start])
                self._raw.flush()
                data = data[end + 1 :]
                code = int(fields[0]) if fields[0].lstrip(b"-").isdigit() else -1
                self._on_exit(code, fields[1].decode() if len(fields) > 1 else None)
        else:
            for k in range(min(len(EXIT_SENTINEL) - 1, len(data)), 0, -1):
                if data.endswith(EXIT_SENTINEL[:k]):
                    self._pending, data = data[-k:], data[:-k]
                    break
        self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        if self._pending:
            self._raw.write(self._pending)
            self._pending = b""
        self._raw.flush()
