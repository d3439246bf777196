"""The server's own log lines, on stdout: ``key=value`` (logfmt) by default, one JSON object a line
with ``TRAINHUB_LOG_FORMAT=json``, so that a log shipper (journald, Loki, Docker's json-file driver)
can read fields instead of parsing sentences.

Every line has ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``msg``; uvicorn's access lines
add ``client``, ``method``, ``path`` and ``status``. Secret values (the admin and metrics tokens)
and passwords in URLs are masked in every line, whatever logged them.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from trainhub.settings import mask_url_password

MASK = "********"


class StructuredFormatter(logging.Formatter):
    def __init__(self, fmt: str, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.json = fmt == "json"
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self._clean(record.getMessage()),
        }
        fields.update(_access_fields(record))
        if record.exc_info:
            fields["error"] = self._clean(self.formatException(record.exc_info))
        if self.json:
            return json.dumps(fields, ensure_ascii=False)
        return " ".join(f"{key}={_logfmt(value)}" for key, value in fields.items())

    def _clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return mask_url_password(text)


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """uvicorn's access line, ``'%s - "%s %s HTTP/%s" %d'``, as fields (the query string is left
    out: only the path)."""
    if record.name != "uvicorn.access" or not isinstance(record.args, tuple):
        return {}
    if len(record.args) != 5:
        return {}
    client, method, path, _version, status = record.args
    return {
        "client": str(client),
        "method": str(method),
        "path": str(path).split("?", 1)[0],
        "status": status,
    }


def _logfmt(value: Any) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\n\t\\'):
        return text
    return json.dumps(text, ensure_ascii=False)


def configure(fmt: str, secrets: Iterable[str] = ()) -> None:
    """One stdout handler on the root logger; uvicorn's loggers pass their lines up to it (start
    uvicorn with ``log_config=None``)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(StructuredFormatter(fmt, secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.INFO)
