"""An installed trainhub (``pip install .``, not editable) carries the dashboard's files."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_template_and_static_folder_is_installed_with_the_package() -> None:
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "data-files"
    ]
    covered = {Path(pattern).parent for patterns in listed.values() for pattern in patterns}
    for top in ("templates", "static"):
        folders = {p.relative_to(ROOT) for p in (ROOT / top).rglob("*") if p.is_dir()}
        folders.add(Path(top))
        holding_files = {f for f in folders if any(x.is_file() for x in (ROOT / f).iterdir())}
        assert holding_files <= covered, (
            f"not installed: {sorted(map(str, holding_files - covered))}"
        )
    for destination, patterns in listed.items():
        for pattern in patterns:
            assert destination == "share/trainhub/" + str(Path(pattern).parent), destination
