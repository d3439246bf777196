"""Helpers that keep tests short: build snapshots, submit, wait for a status."""

from __future__ import annotations

import http.client
import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"Completed", "Failed", "Canceled"}


def make_snapshot(files: dict[str, str | bytes]) -> bytes:
    """A .tar.gz of a source folder holding ``files`` (path -> content)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def submit_raw(
    client: httpx.Client,
    estimator: dict[str, Any] | str,
    snapshot: bytes,
    experiment: str = "tests",
) -> httpx.Response:
    body = estimator if isinstance(estimator, str) else json.dumps(estimator)
    return client.post(
        f"/api/v1/experiments/{experiment}/runs",
        files={
            "estimator": (None, body, "application/json"),
            "snapshot": ("snapshot.tar.gz", snapshot, "application/gzip"),
        },
    )


def submit(
    client: httpx.Client,
    script: str,
    *,
    experiment: str = "tests",
    extra_files: dict[str, str | bytes] | None = None,
    **estimator: Any,
) -> dict[str, Any]:
    """Submit ``script`` as train.py; return the run's details (asserting 201)."""
    files: dict[str, str | bytes] = {"train.py": script, **(extra_files or {})}
    spec = {"entry_script": "train.py", **estimator}
    response = submit_raw(client, spec, make_snapshot(files), experiment)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def get_run(client: httpx.Client, run_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def wait_for_status(
    client: httpx.Client, run_id: str, statuses: set[str] | str = TERMINAL, timeout: float = 60
) -> dict[str, Any]:
    wanted = {statuses} if isinstance(statuses, str) else statuses
    deadline = time.monotonic() + timeout
    run = get_run(client, run_id)
    while run["status"] not in wanted:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"run {run_id} is {run['status']}, not {wanted}, after {timeout} s"
            )
        if run["status"] in TERMINAL:
            raise AssertionError(
                f"run {run_id} ended {run['status']} ({run['error']}), wanted {wanted}"
            )
        time.sleep(0.1)
        run = get_run(client, run_id)
    return run


def wait_for_log(client: httpx.Client, run_id: str, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = client.get(f"/api/v1/runs/{run_id}/logs").text
        if text in log:
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the log of {run_id} after {timeout} s: {log!r}")
        time.sleep(0.1)


def history(run: dict[str, Any]) -> list[str]:
    return [event["status"] for event in run["statusHistory"]]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {what}")
        time.sleep(0.1)


def cli_for(url: str, token: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``trainhub ARGS`` as a person would, against the server at ``url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINHUB_")}
    env.update({"TRAINHUB_URL": url, "TRAINHUB_TOKEN": token})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "trainhub", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return cli


def raw_get(url: str, target: str, token: str) -> tuple[int, bytes]:
    """GET ``target`` sent byte for byte as the request target (no client normalises dot segments)."""
    parsed = httpx.URL(url)
    conn = http.client.HTTPConnection(parsed.host, parsed.port, timeout=30)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def db_files(data: Path) -> bytes:
    """The bytes of every file SQLite keeps for the server's database (main file, WAL, shared memory)."""
    return b"".join(p.read_bytes() for p in sorted(data.glob("trainhub.db*")) if p.is_file())


def db_dump(data: Path) -> str:
    """The server's database as SQL text, read through SQLite (so what is still in the WAL counts)."""
    conn = sqlite3.connect(f"file:{data / 'trainhub.db'}?mode=ro", uri=True)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def add_user(
    admin: httpx.Client, name: str, password: str = "a-good-password", role: str = "member"
) -> str:
    """Create a user through the API (with an admin's client); return an API token of theirs."""
    response = admin.post(
        "/api/v1/users", json={"name": name, "password": password, "role": role, "token": True}
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def csrf_of(page: str) -> str:
    """The CSRF token a page carries (in its forms and in the htmx headers on <body>)."""
    import re

    found = re.search(r'name="_csrf_token" value="([^"]+)"', page) or re.search(
        r'"x-csrftoken": "([^"]+)"', page
    )
    assert found, "the page carries no CSRF token"
    return found.group(1)


def login(base_url: str, name: str, password: str = "a-good-password") -> httpx.Client:
    """A browser-like client logged in through the login form. Its POSTs carry the CSRF header."""
    client = httpx.Client(base_url=base_url, timeout=30)
    token = csrf_of(client.get("/login").text)
    response = client.post(
        "/login", data={"name": name, "password": password, "_csrf_token": token, "next": "/"}
    )
    assert response.status_code == 303, response.text
    client.headers["x-csrftoken"] = token
    return client
