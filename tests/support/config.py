"""Editing a lab's ``shaken.toml`` for a test: the tables a test does not want left out."""

from __future__ import annotations

from collections.abc import Callable


def without_tables(text: str, drop: Callable[[str], bool]) -> str:
    """``text`` (TOML) without each table whose header line (stripped) ``drop`` selects."""
    kept, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            skipping = drop(line.strip())
        if not skipping:
            kept.append(line)
    return "".join(kept)


def without_actions(text: str) -> str:
    """A lab configuration without its PASS / STOP / ALERT ``[verification.on.*]`` tables:
    for tests that start from the global defaults (every outcome continues)."""
    return without_tables(text, lambda header: header.startswith("[verification.on."))
