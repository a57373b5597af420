"""The toolkit's place in the layers: beside the adapters, never below core or services.

import-linter's contracts (pyproject.toml) cover core/services/adapters; these tests add the
toolkit: core and services must not import it, and it imports neither services nor adapters,
so the public test kit (shaken.testing) can reuse its builders without pulling in I/O layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "shaken"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path",
    sorted([*(SRC / "core").rglob("*.py"), *(SRC / "services").rglob("*.py")]),
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_core_and_services_do_not_import_the_toolkit(path: Path) -> None:
    assert not any(n.startswith("shaken.toolkit") for n in _imports(path))


@pytest.mark.parametrize("path", sorted((SRC / "toolkit").glob("*.py")), ids=lambda p: p.name)
def test_toolkit_stays_beside_the_adapters(path: Path) -> None:
    forbidden = ("shaken.adapters", "shaken.services", "shaken.testing")
    assert not any(n.startswith(forbidden) for n in _imports(path)), path.name


def test_x509build_is_pure() -> None:
    """The builders are shared with shaken.testing: no files, sockets or clocks."""
    names = _imports(SRC / "toolkit" / "x509build.py")
    assert not names & {"os", "socket", "ssl", "http", "pathlib", "time", "subprocess"}
    text = (SRC / "toolkit" / "x509build.py").read_text()
    assert ".now(" not in text and "open(" not in text
