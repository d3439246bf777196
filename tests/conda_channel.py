"""A real conda channel on disk for the tests: small ``noarch`` packages (``.tar.bz2`` with
``info/index.json``, ``info/paths.json`` and the files), indexed by py-rattler's indexer."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# conda's placeholder for the install prefix: a text file holding it is rewritten at install time.
PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
# The indexer runs in its own process: py-rattler's runtime threads can crash an interpreter as it
# exits, which must not be pytest's.
_INDEX = "import asyncio, os, sys, rattler; asyncio.run(rattler.index.index_fs(sys.argv[1])); os._exit(0)"


@dataclass
class Package:
    name: str
    version: str = "1.0"
    files: dict[str, str] = field(default_factory=dict)  # path in the prefix -> text
    executables: tuple[str, ...] = ()  # paths among ``files`` that are programs (mode 755)
    depends: tuple[str, ...] = ()


def write_package(channel: Path, package: Package) -> Path:
    """``channel/noarch/<name>-<version>-0.tar.bz2``; files holding :data:`PLACEHOLDER` are
    marked for prefix replacement, as conda-build marks them."""
    index = {
        "name": package.name,
        "version": package.version,
        "build": "0",
        "build_number": 0,
        "noarch": "generic",
        "subdir": "noarch",
        "depends": list(package.depends),
        "license": "MIT",
        "timestamp": int(time.time() * 1000),
    }
    paths = []
    for path, text in sorted(package.files.items()):
        data = text.encode()
        entry: dict[str, object] = {
            "_path": path,
            "path_type": "hardlink",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_in_bytes": len(data),
        }
        if PLACEHOLDER in text:
            entry.update({"prefix_placeholder": PLACEHOLDER, "file_mode": "text"})
        paths.append(entry)
    members = {
        "info/index.json": (json.dumps(index).encode(), 0o644),
        "info/paths.json": (json.dumps({"paths_version": 1, "paths": paths}).encode(), 0o644),
    }
    for path, text in package.files.items():
        members[path] = (text.encode(), 0o755 if path in package.executables else 0o644)
    target = channel / "noarch" / f"{package.name}-{package.version}-0.tar.bz2"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:bz2") as tar:
        for name, (data, mode) in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    return target


def make_channel(channel: Path, packages: list[Package]) -> Path:
    """A channel folder holding ``packages``, indexed (``noarch/repodata.json``)."""
    for package in packages:
        write_package(channel, package)
    (channel / "linux-64").mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", _INDEX, str(channel)], check=True)
    return channel
