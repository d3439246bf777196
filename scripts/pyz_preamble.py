"""Run by shiv's bootstrap inside ``trainhub.pyz``, before trainhub is imported.

The single file carries compiled dependencies (msgspec, cryptography, argon2, numpy...) built for one
CPython minor version on one platform (those of the machine that ran ``scripts/build-pyz``): on any
other interpreter they would fail to import with a confusing traceback, so this says plainly which
Python the file needs. ``scripts/build-pyz`` writes what it was built for beside this file.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path


def problem(built: dict[str, str]) -> str | None:
    """Why this interpreter cannot run this file, or None."""
    here = f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"
    if sys.version_info < (3, 11, 4):
        return f"trainhub needs Python >= 3.11.4; this is {here}."
    running = {
        "implementation": platform.python_implementation(),
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "platform": sys.platform,
        "machine": platform.machine(),
    }
    if running != {key: built[key] for key in running}:
        return (
            f"this trainhub.pyz holds compiled dependencies for {built['implementation']} "
            f"{built['python']} on {built['platform']} {built['machine']}; this is "
            f"{here} on {running['platform']} {running['machine']}. "
            f"Start it with python{built['python']}, or build one for this Python with "
            "scripts/build-pyz."
        )
    return None


def main() -> None:
    built = json.loads(Path(__file__).with_name("trainhub-pyz.json").read_text())
    message = problem(built)
    if message:
        sys.exit(f"trainhub.pyz: {message}")


if __name__ == "__main__":  # shiv runs it so (runpy, run_name="__main__")
    main()
