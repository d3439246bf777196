"""The spec's errors, shared by :mod:`trainhub.spec` and :mod:`trainhub.spec_datarefs`.

Every problem in a submitted spec is a :class:`SpecError` naming its field (the API answers 422
with it); the helpers here write the offending value into the sentence safely.
"""

from __future__ import annotations


class SpecError(ValueError):
    """A spec problem, with the field it concerns (dotted path) and a sentence for the user."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class NotSupportedYet(SpecError):
    """A valid field whose capability is not available on this server yet."""


def has_control_character(text: str) -> bool:
    """A newline, a tab, an escape...: such a value would be read as more than it shows."""
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


def shown(value: str, limit: int = 60) -> str:
    """``value`` quoted for an error message, escaped and cut short."""
    return repr(value if len(value) <= limit else value[:limit] + "...")
