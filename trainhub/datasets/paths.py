"""Which files of a datastore a dataset holds: its paths (``folder/**``, ``data/*.csv``, a file, a
folder), as one base folder and glob patterns relative to it.

A run sees a dataset as one folder: the base folder's matching files at their paths below it, as
Azure ML kept a file dataset's structure below its files' common folder. The base is the longest
folder every path starts with (a glob's literal folders; a file's folder; a folder itself). The
patterns follow the glob rules of a path (``*`` and ``?`` within one name, ``**`` across folders),
anchored at the base: pathspec's gitignore-style patterns with a leading ``/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pathspec

from trainhub.datastores import files
from trainhub.spec_errors import SpecError

MAX_PATHS = 64
_GLOB = re.compile(r"[*?\[]")
EVERYTHING = "/**"


def clean_pattern(path: object, field: str) -> str:
    """A dataset's path inside its datastore: relative, ``/``-separated, globs allowed, no
    ``..``, not the server's own folder (a 422 naming ``field`` otherwise). A leading ``/`` is
    taken as the datastore's root, as Azure ML's paths wrote it."""
    if not isinstance(path, str):
        raise SpecError(field, "a dataset's path is a string (a folder, a file or a glob)")
    clean = files.clean_path(path.lstrip("/") or ".", field=field, prefix=True).rstrip("/")
    return clean or "**"


def is_glob(segment: str) -> bool:
    return bool(_GLOB.search(segment))


@dataclass(frozen=True)
class Selection:
    """A dataset's files: everything below ``base`` (a folder of the datastore, "" for its root)
    that ``patterns`` (relative to ``base``) match."""

    base: str
    patterns: tuple[str, ...]

    @property
    def whole_folder(self) -> bool:
        return self.patterns == (EVERYTHING,)

    @cached_property
    def spec(self) -> pathspec.GitIgnoreSpec:
        return pathspec.GitIgnoreSpec.from_lines(self.patterns)

    def matches(self, relative: str) -> bool:
        """Whether a file at ``relative`` (to the base) is part of the dataset."""
        return self.whole_folder or self.spec.match_file(relative)


def selection(paths: list[str], is_dir: Callable[[str], bool]) -> Selection:
    """The base folder and relative patterns of cleaned ``paths``; ``is_dir`` says whether a path
    without globs is a folder (the dataset holds all of it) or a file."""
    bases: list[list[str]] = []
    for path in paths:
        segments = path.split("/")
        literal = next((i for i, s in enumerate(segments) if is_glob(s)), len(segments))
        if literal == len(segments) and not is_dir(path):
            literal -= 1  # a file: its folder
        bases.append(segments[:literal])
    common: list[str] = []
    for parts in zip(*bases, strict=False):
        if any(p != parts[0] for p in parts):
            break
        common.append(parts[0])
    base = "/".join(common)
    patterns: list[str] = []
    for path in paths:
        rest = path[len(base) :].lstrip("/") if base else path
        pattern = "/" + rest if rest and rest != "**" else EVERYTHING
        if pattern not in patterns:
            patterns.append(pattern)
    return Selection(base, tuple(patterns))


def server_selection(root: Path, paths: list[str]) -> Selection:
    """:func:`selection` for a ``server`` datastore at ``root`` (links out are never followed)."""

    def is_dir(path: str) -> bool:
        try:
            return files.inside(root, path).is_dir()
        except SpecError:
            return False

    return selection(paths, is_dir)


def matched(root: Path, chosen: Selection) -> Iterator[tuple[str, os.stat_result]]:
    """The files of a ``server`` datastore at ``root`` that a dataset holds: (path in the
    datastore, stat), sorted."""
    prefix = f"{chosen.base}/" if chosen.base else ""
    for relative, st in files.walk(root, prefix):
        if chosen.matches(relative[len(prefix) :]):
            yield relative, st
