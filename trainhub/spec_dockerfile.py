"""``custom_dockerfile``: a Dockerfile's text in the spec (Azure ML's ``docker.base_dockerfile``).

The server builds it into the environment's image, with nothing beside it in the build context (as
in Azure ML v1). What can be told from the text alone is checked at submit, so a mistake is a 422
naming the field rather than a run failing minutes later: its size, that it starts with ``FROM``,
that every instruction is one Docker knows, and that ``COPY``/``ADD`` do not ask for files of a
context it does not have. The ``FROM`` images are read here too: the node gets them (present, or
pulled) before the build, and their ids enter the image's hash.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from trainhub.spec_errors import SpecError, shown

MAX_DOCKERFILE_BYTES = 64 * 1024
INSTRUCTIONS = frozenset(
    "ADD ARG CMD COPY ENTRYPOINT ENV EXPOSE FROM HEALTHCHECK LABEL MAINTAINER ONBUILD RUN SHELL "
    "STOPSIGNAL USER VOLUME WORKDIR".split()
)
_DIRECTIVE = re.compile(r"^#\s*([A-Za-z]+)\s*=\s*(\S+)\s*$")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_REMOTE = ("http://", "https://", "git@")


@dataclass(frozen=True)
class Instruction:
    line: int  # where it starts, counted from 1
    keyword: str  # upper case
    arguments: str


@dataclass(frozen=True)
class BaseImage:
    line: int
    image: str  # with the build arguments' defaults filled in


def instructions(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile as Docker's parser reads them: parser directives (``#
    escape=`` changes the line-continuation character), comments, and lines joined where one ends
    with the escape character."""
    escape = "\\"
    lines = text.splitlines()
    start = 0
    for start, line in enumerate(lines):  # noqa: B007 - the first line after the directives
        found = _DIRECTIVE.match(line)
        if found is None:
            break
        if found.group(1).lower() == "escape" and found.group(2) in ("\\", "`"):
            escape = found.group(2)
    else:
        start = len(lines)
    out: list[Instruction] = []
    parts: list[str] = []
    first = 0
    for number, raw in enumerate(lines[start:], start=start + 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may sit between continued lines too
        if not parts:
            first = number
        if line.endswith(escape):
            parts.append(line[: -len(escape)])
            continue
        parts.append(line)
        joined = " ".join(parts)
        parts = []
        keyword, _, arguments = joined.partition(" ")
        out.append(Instruction(first, keyword.upper(), arguments.strip()))
    if parts:
        joined = " ".join(parts)
        keyword, _, arguments = joined.partition(" ")
        out.append(Instruction(first, keyword.upper(), arguments.strip()))
    return out


def base_images(text: str) -> list[BaseImage]:
    """The images the Dockerfile builds ``FROM``, once each: not ``scratch``, not an earlier stage,
    and not one whose name still holds a variable after the global ``ARG`` defaults (the engine
    resolves those itself)."""
    defaults: dict[str, str] = {}
    stages: set[str] = set()
    found: list[BaseImage] = []
    seen_from = False
    for ins in instructions(text):
        if ins.keyword == "ARG" and not seen_from:
            for word in ins.arguments.split():
                name, has_value, value = word.partition("=")
                if has_value:
                    defaults[name] = value.strip("\"'")
        if ins.keyword != "FROM":
            continue
        seen_from = True
        words = [w for w in ins.arguments.split() if not w.startswith("--")]
        if not words:
            continue
        if len(words) >= 3 and words[1].lower() == "as":
            stages.add(words[2].lower())
        image = _VARIABLE.sub(
            lambda m: defaults.get(m.group(1) or m.group(2), m.group(0)), words[0]
        )
        if image.lower() in stages or image == "scratch" or "$" in image:
            continue
        if all(b.image != image for b in found):
            found.append(BaseImage(ins.line, image))
    return found


def check_dockerfile(field: str, text: str) -> None:
    """The checks of a Dockerfile's text that need no engine; each problem names ``field``."""
    size = len(text.encode())
    if size > MAX_DOCKERFILE_BYTES:
        raise SpecError(
            field,
            f"{field}: a Dockerfile of at most {MAX_DOCKERFILE_BYTES} bytes (this one has {size})",
        )
    if "\x00" in text:
        raise SpecError(field, f"{field}: a Dockerfile is text; this one holds a NUL character")
    found = instructions(text)
    leading = [ins for ins in found if ins.keyword != "ARG"]
    if not leading or leading[0].keyword != "FROM":
        what = f"line {leading[0].line} is {leading[0].keyword}" if leading else "it has no FROM"
        raise SpecError(
            field,
            f"{field}: a Dockerfile starts with FROM <image> (only ARG may come before it); {what}",
        )
    for ins in found:
        where = f"{field}: line {ins.line}"
        if ins.keyword not in INSTRUCTIONS:
            raise SpecError(field, f"{where}: unknown instruction {shown(ins.keyword)}")
        if ins.keyword == "FROM" and not [w for w in ins.arguments.split() if w[:2] != "--"]:
            raise SpecError(field, f"{where}: FROM needs an image")
        if ins.keyword in ("COPY", "ADD") and _needs_context(ins):
            raise SpecError(
                field,
                f"{where}: {ins.keyword} {shown(ins.arguments)} copies files from the build "
                "context, and a Dockerfile environment has none (as in Azure ML v1): copy from an "
                "image or stage (COPY --from=...), download with ADD <url>, or put the files in the "
                "source directory",
            )


def _needs_context(ins: Instruction) -> bool:
    """``COPY`` without ``--from``, or ``ADD`` of something that is not a URL."""
    words = ins.arguments.split()
    flags = [w for w in words if w.startswith("--")]
    rest = " ".join(w for w in words if not w.startswith("--"))
    if ins.keyword == "COPY":
        return not any(f.startswith("--from=") for f in flags)
    try:
        listed = json.loads(rest) if rest.startswith("[") else rest.split()
    except json.JSONDecodeError:
        listed = rest.split()
    sources = [str(s) for s in listed[:-1]]
    return not sources or not all(s.startswith(_REMOTE) for s in sources)
