"""JSON API v1."""

from __future__ import annotations

from typing import Any

import msgspec

from trainhub.spec import SpecError


def decode(raw: bytes, kind: type[Any]) -> Any:
    """A JSON body as ``kind``; a 422 naming what is wrong otherwise."""
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise SpecError(None, f"Invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise SpecError(None, f"The body is not valid JSON: {exc}") from None
