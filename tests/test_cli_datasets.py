"""``trainhub datasets list|show|download`` as a person types them, against the real server: names
with their latest versions (filtered), a version with its versions and runs, a file dataset's files
downloaded byte for byte below their common folder, and the refusals (an unknown name or version,
a tabular dataset to download), each one line on stderr and exit status 1."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import TOKEN, Server
from tests.helpers import cli_for, make_snapshot, submit_raw, wait_for_status
from tests.test_pages_datasets import DEFAULT, make_dataset
from tests.test_pages_datastores import put

Cli = Callable[..., subprocess.CompletedProcess[str]]
FILES = {"pics/cat.bin": bytes(range(256)) * 9, "pics/deep/dog.txt": b"woof", "notes.txt": b"n"}


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    """Two versions of a file dataset and a tabular one, made through the API."""
    key = uuid.uuid4().hex[:8]
    with server.client() as api:
        for path, content in FILES.items():
            put(api, DEFAULT, f"cli-{key}/{path}", content)
        make_dataset(api, kind="file", paths=[f"cli-{key}/pics/**"], name=f"photos-{key}")
        make_dataset(
            api,
            kind="file",
            paths=[f"cli-{key}/pics/*.bin"],
            name=f"photos-{key}",
            createNewVersion=True,
            tags={"stage": "clean"},
        )
        make_dataset(api, kind="tabular", paths=[f"cli-{key}/notes.txt"], name=f"notes-{key}")
    return key


def succeeding(run: Cli) -> Cli:
    def ok(*args: str) -> subprocess.CompletedProcess[str]:
        done = run(*args)
        assert done.returncode == 0, done.stderr + done.stdout
        return done

    return ok


@pytest.fixture
def cli(server: Server) -> Cli:
    return succeeding(cli_for(server.url, TOKEN))


def test_list_shows_each_names_latest_version(
    server: Server, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: the table's cells are not cut
    cli = succeeding(cli_for(server.url, TOKEN))
    listed = json.loads(cli("datasets", "list", "--contains", key, "--json").stdout)
    assert sorted((d["name"], d["version"], d["versions"]) for d in listed) == [
        (f"notes-{key}", 1, 1),
        (f"photos-{key}", 2, 2),
    ]
    only = json.loads(cli("datasets", "list", "--contains", f"PHOTOS-{key}", "--json").stdout)
    assert [d["name"] for d in only] == [f"photos-{key}"]
    table = cli("datasets", "list", "--contains", f"photos-{key}").stdout
    assert f"photos-{key}" in table and "workspaceblobstore" in table
    assert f"notes-{key}" not in table
    none = cli("datasets", "list", "--contains", f"nothing-{key}").stdout
    assert none.strip() == "No dataset's name contains that."


def test_show_a_version_with_its_versions_and_runs(cli: Cli, key: str) -> None:
    latest = json.loads(cli("datasets", "show", f"photos-{key}", "--json").stdout)
    assert (latest["version"], latest["versions"], latest["runs"]) == (2, [2, 1], [])
    assert latest["tags"] == {"stage": "clean"}
    first = cli("datasets", "show", f"photos-{key}", "--version", "1").stdout
    assert f"Dataset:     photos-{key} version 1" in first
    assert f"Paths:       cli-{key}/pics/**" in first
    assert "Versions:    2, 1" in first and "Runs:        none yet" in first
    assert f"/datasets/photos-{key}?version=1" in first  # its page


@pytest.mark.docker
def test_show_lists_the_runs_that_read_the_dataset(
    server: Server, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with server.client() as api:
        dataset = api.get(f"/api/v1/datasets/photos-{key}", params={"version": 1}).json()
        reference = {"name": "pics", "mode": "download", "dataset": {"id": dataset["id"]}}
        spec = {"entry_script": "t.py", "arguments": [{"$data_reference": reference}]}
        snapshot = make_snapshot(
            {"t.py": "import os, sys\nprint(sorted(os.listdir(sys.argv[1])))\n"}
        )
        submitted = submit_raw(api, spec, snapshot, f"cli-lineage-{key}")
        assert submitted.status_code == 201, submitted.text
        run_id = submitted.json()["runId"]
        assert wait_for_status(api, run_id, timeout=120)["status"] == "Completed"
    monkeypatch.setenv("COLUMNS", "200")
    cli = succeeding(cli_for(server.url, TOKEN))
    shown = json.loads(cli("datasets", "show", f"photos-{key}", "--json").stdout)
    assert [
        (u["runId"], u["direction"], u["mode"], u["dataset"]["version"]) for u in shown["runs"]
    ] == [(run_id, "input", "download", 1)]
    table = cli("datasets", "show", f"photos-{key}").stdout.splitlines()
    (row,) = [line for line in table if run_id in line]
    assert f"cli-lineage-{key}" in row and "Completed" in row and "input" in row and "pics" in row


def test_download_writes_the_files_below_their_common_folder(
    cli: Cli, key: str, tmp_path: Path
) -> None:
    whole = json.loads(
        cli(
            "datasets",
            "download",
            f"photos-{key}",
            str(tmp_path / "v1"),
            "--version",
            "1",
            "--json",
        ).stdout
    )
    assert (whole["version"], len(whole["files"])) == (1, 2)
    assert (tmp_path / "v1" / "cat.bin").read_bytes() == FILES["pics/cat.bin"]
    assert (tmp_path / "v1" / "deep" / "dog.txt").read_bytes() == b"woof"
    latest = cli("datasets", "download", f"photos-{key}", str(tmp_path / "v2")).stdout
    assert f"Downloaded photos-{key} version 2 (1 file) to {tmp_path / 'v2'}" in latest
    assert sorted(p.name for p in (tmp_path / "v2").rglob("*")) == ["cat.bin"]


def test_refusals_are_one_line_and_exit_one(server: Server, key: str, tmp_path: Path) -> None:
    run = cli_for(server.url, TOKEN)
    unknown = run("datasets", "show", f"no-such-{key}")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith(f"error: No dataset 'no-such-{key}' is registered")
    assert len(unknown.stderr.strip().splitlines()) == 1
    version = run("datasets", "show", f"photos-{key}", "--version", "7")
    assert version.returncode == 1 and "version 7" in version.stderr
    tabular = run("datasets", "download", f"notes-{key}", str(tmp_path / "t"))
    assert tabular.returncode == 1 and "is a tabular dataset" in tabular.stderr
    assert "to_pandas_dataframe()" in tabular.stderr and not (tmp_path / "t").exists()
    bad = run("datasets", "show", f"photos-{key}", "--version", "0")
    assert bad.returncode == 2 and "--version" in bad.stderr


@pytest.mark.parametrize("verb", ["list", "show", "download"])
def test_every_verb_has_help(verb: str) -> None:
    shown = cli_for("http://127.0.0.1:9", "no-server-needed")("datasets", verb, "--help")
    assert shown.returncode == 0 and "Usage:" in shown.stdout and "--json" in shown.stdout
