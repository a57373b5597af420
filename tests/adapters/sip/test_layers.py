"""The SIP and HTTP adapters never import one another (docs/architecture.md section 2).

``shaken serve`` (adapters/serve.py) and wiring assemble them; the import-linter contracts in
pyproject.toml cover the layers, this covers the two protocol adapters.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ADAPTERS = Path(__file__).resolve().parents[3] / "src" / "shaken" / "adapters"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    ("package", "other"), [("sip", "shaken.adapters.http"), ("http", "shaken.adapters.sip")]
)
def test_protocol_adapters_stay_apart(package: str, other: str) -> None:
    for path in sorted((ADAPTERS / package).glob("*.py")):
        assert not any(n == other or n.startswith(other + ".") for n in _imports(path)), path.name


@pytest.mark.parametrize("module", ["codec.py", "transactions.py"])
def test_the_sans_io_codec_and_transactions_do_no_io(module: str) -> None:
    names = _imports(ADAPTERS / "sip" / module)
    assert not names & {"asyncio", "socket", "ssl", "time", "logging", "os", "selectors"}


def test_the_handler_awaits_nothing() -> None:
    """It says what a call needs (NeedsCertificates); the transport does the waiting."""
    path = ADAPTERS / "sip" / "handler.py"
    assert not _imports(path) & {"asyncio", "socket", "ssl", "selectors"}
    tree = ast.parse(path.read_text(), filename=str(path))
    waits = (ast.AsyncFunctionDef, ast.Await, ast.AsyncFor, ast.AsyncWith)
    assert not [node.lineno for node in ast.walk(tree) if isinstance(node, waits)]
