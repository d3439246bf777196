"""The README stays true: its curl walk-through runs verbatim, and every setting is documented."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import TOKEN, Server

README = Path(__file__).resolve().parent.parent / "README.md"


def _walkthrough() -> str:
    text = README.read_text()
    section = text.split("## Walk-through with curl", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "the walk-through has no bash block"
    return match.group(1)


def run_walkthrough(url: str, cwd: Path) -> None:
    """Run the walk-through against the server at ``url`` (token ``TOKEN``) and check what it
    prints: tests/test_serve_script.py runs it against ``scripts/serve`` too."""
    script = _walkthrough()
    # Only the two lines a reader edits: where the server is and the token it printed.
    script = script.replace(
        "export TRAINHUB_URL=http://127.0.0.1:8000", f"export TRAINHUB_URL={url}"
    )
    script = script.replace("export TOKEN=th_paste_the_token_here", f"export TOKEN={TOKEN}")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert "training with ['--lr', '0.1', '--verbose']" in out
    assert "\nCompleted\n" in out
    assert '"path":"outputs/model.txt"' in out
    assert out.rstrip().endswith("weights")
    assert (cwd / "model.txt").read_text() == "weights\n"


def test_curl_walkthrough_works_verbatim(server: Server, tmp_path: Path) -> None:
    run_walkthrough(server.url, tmp_path)


def _settings_table() -> list[str]:
    """The variables of the README's settings table (the "## Settings" section), in order."""
    section = README.read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(TRAINHUB_\w+)` \|", section, flags=re.MULTILINE)


def test_trainhub_settings_matches_the_readme_table() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "trainhub", "settings", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRAINHUB_")},
    )
    variables = [row["variable"] for row in json.loads(shown.stdout)]
    table = _settings_table()
    assert sorted(set(variables) - set(table)) == [], "settings missing from the README's table"
    assert sorted(set(table) - set(variables)) == [], "the README's table names settings gone"
    assert len(table) == len(set(table)), "a setting is in the README's table twice"
