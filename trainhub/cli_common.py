"""What the ``trainhub`` client verbs share: the workspace from the config, SDK errors turned into
one line on stderr and exit status 1, and JSON output."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, NoReturn

import click


def workspace() -> Any:
    from trainhub.sdk.workspace import Workspace

    return Workspace.from_config()


def fail(exc: Exception) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


def client_call(fn: Any) -> Any:
    """``fn(workspace)``, with an SDK error ending the command with its message."""
    from trainhub.sdk.errors import TrainhubError

    try:
        return fn(workspace())
    except TrainhubError as exc:
        fail(exc)


def client_command(fn: Any) -> Any:
    """Turn SDK errors into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from trainhub.sdk.errors import TrainhubError

        try:
            return fn(*args, **kwargs)
        except TrainhubError as exc:
            fail(exc)

    return wrapper


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))
