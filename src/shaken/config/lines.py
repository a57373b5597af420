"""Where each key of a TOML document sits, so configuration errors can name the line.

``tomllib`` gives values, not positions, and no maintained TOML library exposes line numbers
for keys; this scanner covers what a hand-written configuration uses (table headers with bare,
quoted or dotted names, ``key = value`` lines, dotted keys, multi-line arrays and strings). A
key it cannot place is reported without a line, never wrongly.
"""

from __future__ import annotations

import re

__all__ = ["key_at", "key_lines"]

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"' + r"|'[^']*'"
_KEY_PART = rf"(?:{_BARE}|{_QUOTED})"
_DOTTED = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_TABLE = re.compile(rf"^\s*\[\s*({_DOTTED})\s*\]\s*(?:#.*)?$")
_ARRAY_TABLE = re.compile(rf"^\s*\[\[\s*({_DOTTED})\s*\]\]\s*(?:#.*)?$")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART = re.compile(rf"{_BARE}|{_QUOTED}")


def _split(dotted: str) -> tuple[str, ...]:
    parts = []
    for match in _PART.finditer(dotted):
        part = match.group(0)
        if part[0] in "\"'":
            part = part[1:-1]
            if match.group(0)[0] == '"':
                part = part.encode("raw_unicode_escape").decode("unicode_escape")
        parts.append(part)
    return tuple(parts)


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each table and key path to its 1-based line number (the first, if repeated)."""
    lines: dict[tuple[str, ...], int] = {}
    for path, number in _scan(text):
        lines.setdefault(path, number)
    return lines


def key_at(text: str, line: int) -> tuple[str, ...] | None:
    """The table or key path written on ``line`` (1-based), if the line names one.

    For a document ``tomllib`` refuses, such as one that sets a key twice: its error gives the
    line only, and the operator needs the key.
    """
    for path, number in _scan(text):
        if number == line:
            return path
    return None


def _scan(text: str) -> list[tuple[tuple[str, ...], int]]:
    """Every table header and key assignment, in order, with its line number."""
    found: list[tuple[tuple[str, ...], int]] = []
    table: tuple[str, ...] = ()
    in_multiline: str | None = None
    depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline is not None:
            if in_multiline in line:
                in_multiline = None
            continue
        if depth > 0:
            depth += line.count("[") - line.count("]")
            continue
        match = _ARRAY_TABLE.match(line) or _TABLE.match(line)
        if match:
            table = _split(match.group(1))
            found.append((table, number))
            continue
        match = _ASSIGN.match(line)
        if match is None:
            continue
        path = table + _split(match.group(1))
        found.append((path, number))
        rest = line[match.end() :]
        for quote in ('"""', "'''"):
            if rest.count(quote) == 1:
                in_multiline = quote
        value = rest.split("#", 1)[0]
        depth = max(0, value.count("[") - value.count("]"))
    return found
