"""Snapshot packing without a server: canonical bytes, ignore files, limits."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from trainhub.runs.artifacts import check_snapshot
from trainhub.sdk.errors import SnapshotError
from trainhub.sdk.snapshot import pack


def make(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    return root


def test_same_folder_same_bytes_whatever_the_times(tmp_path: Path) -> None:
    a = make(tmp_path / "a", {"train.py": "x", "pkg/m.py": "y"})
    b = make(tmp_path / "b", {"pkg/m.py": "y", "train.py": "x"})
    os.utime(b / "train.py", (10, 10))
    sa, sb = pack(a), pack(b)
    try:
        assert sa.sha256 == sb.sha256
        assert sa.path.read_bytes() == sb.path.read_bytes()
        with tarfile.open(sa.path) as tar:
            members = tar.getmembers()
        assert [m.name for m in members] == ["pkg", "pkg/m.py", "train.py"]
        assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(0, 0, 0, "")}
        info = check_snapshot(sa.path, max_files=10, max_expanded_bytes=10**6)
        assert info.sha256 == sa.sha256  # the server computes the same id
    finally:
        sa.remove()
        sb.remove()


def test_executable_bit_is_kept(tmp_path: Path) -> None:
    root = make(tmp_path, {"run.sh": "#!/bin/sh\n", "a.py": ""})
    os.chmod(root / "run.sh", 0o755)
    snap = pack(root)
    with tarfile.open(snap.path) as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    snap.remove()
    assert modes == {"a.py": 0o644, "run.sh": 0o755}


@pytest.mark.parametrize(
    ("ignore_files", "left_out"),
    [
        (
            {".trainhubignore": "a.txt\n", ".amlignore": "b.txt\n", ".gitignore": "c.txt\n"},
            {"a.txt"},
        ),
        ({".amlignore": "b.txt\n", ".gitignore": "c.txt\n"}, {"b.txt"}),
        ({".gitignore": "c.txt\n"}, {"c.txt"}),
        ({".gitignore": "*.txt\n!b.txt\n"}, {"a.txt", "c.txt"}),
        ({}, set()),
    ],
)
def test_ignore_file_precedence(
    tmp_path: Path, ignore_files: dict[str, str], left_out: set[str]
) -> None:
    root = make(tmp_path, {"a.txt": "", "b.txt": "", "c.txt": "", **ignore_files})
    snap = pack(root)
    with tarfile.open(snap.path) as tar:
        names = set(tar.getnames())
    snap.remove()
    assert {"a.txt", "b.txt", "c.txt"} - names == left_out
    assert snap.ignore_file == (next(iter(ignore_files)) if ignore_files else None)


def test_too_many_files_names_the_largest(tmp_path: Path) -> None:
    root = make(tmp_path, {f"data/{i}.csv": "x" * i for i in range(30)} | {"train.py": ""})
    with pytest.raises(SnapshotError) as err:
        pack(root, max_files=20)
    text = str(err.value)
    assert "31 files (the limit is 20)" in text
    assert "data/29.csv" in text and "data/ (30 files)" in text and ".trainhubignore" in text


def test_too_many_bytes_names_the_largest(tmp_path: Path) -> None:
    root = make(tmp_path, {"weights/huge.bin": "x" * 3_000_000, "train.py": "print()"})
    with pytest.raises(SnapshotError) as err:
        pack(root, max_bytes=1_000_000)
    assert "weights/huge.bin" in str(err.value) and "the limit is 1.0 MB" in str(err.value)


def test_links_inside_are_kept_and_links_out_refused(tmp_path: Path) -> None:
    root = make(tmp_path / "p", {"conf/real.yaml": "a: 1"})
    os.symlink("conf/real.yaml", root / "alias.yaml")
    snap = pack(root)
    with tarfile.open(snap.path) as tar:
        assert tar.getmember("alias.yaml").linkname == "conf/real.yaml"
    snap.remove()
    os.symlink("/etc/passwd", root / "passwd")
    with pytest.raises(SnapshotError, match="outside source_directory"):
        pack(root)


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="is not a folder"):
        pack(tmp_path / "nope")
