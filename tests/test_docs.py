"""The project explains itself: every design citation in the code points into ``docs/``.

A user's clone holds only the repository, so a docstring that cites a design document must
cite one that ships with it, at a section that exists.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"
CITATION = re.compile(
    r"docs/architecture\.md sections? (\d+(?:\.\d+)?)(?:\s*(?:to|-|and)\s*(\d+))?"
)


def _sources() -> list[Path]:
    return sorted((ROOT / "src" / "shaken").rglob("*.py"))


def _sections() -> set[str]:
    headings = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", ARCHITECTURE.read_text(), re.M)
    return set(headings)


def test_the_architecture_document_has_its_numbered_sections() -> None:
    sections = _sections()
    assert {"1", "2", "3", "4", "5", "6", "6.1", "6.2", "7", "8", "9"} <= sections


def test_every_citation_names_an_existing_section() -> None:
    sections = _sections()
    cited: dict[str, list[str]] = {}
    for path in [*_sources(), ROOT / "README.md"]:
        text = path.read_text()
        for match in CITATION.finditer(text):
            for number in filter(None, match.groups()):
                cited.setdefault(number, []).append(str(path.relative_to(ROOT)))
    assert cited, "no citation found: the pattern no longer matches the docstrings"
    missing = {number: files for number, files in cited.items() if number not in sections}
    assert not missing, f"cited sections that docs/architecture.md does not have: {missing}"


def test_no_citation_points_outside_the_repository() -> None:
    outside = re.compile(r"DESIGN\.md|reference/[a-z]+\.md|\.\./shared")
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _sources()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if outside.search(line)
    ]
    assert not found, f"citations of documents a clone does not have: {found}"
