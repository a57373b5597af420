"""The core takes bytes and ``now`` and returns results: no clock reads, files, env or sockets."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "src" / "shaken" / "core"
FORBIDDEN_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "monotonic"),
    ("os", "getenv"),
    ("Path", "read_bytes"),
    ("Path", "read_text"),
}
FORBIDDEN_NAMES = {"open", "print", "input"}
FORBIDDEN_IMPORTS = {"os", "socket", "asyncio", "logging", "time", "subprocess", "sqlite3", "httpx"}
FORBIDDEN_MODULES = {"urllib.request", "http.client"}


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                assert func.id not in FORBIDDEN_NAMES, f"{path.name}:{node.lineno} calls {func.id}"
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                pair = (func.value.id, func.attr)
                assert pair not in FORBIDDEN_CALLS, f"{path.name}:{node.lineno} calls {pair}"
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN_IMPORTS, f"{path.name} imports {name}"
            assert name not in FORBIDDEN_MODULES, f"{path.name} imports {name}"


def test_only_jws_uses_hazmat() -> None:
    users = sorted(p.name for p in CORE.glob("*.py") if "cryptography.hazmat" in p.read_text())
    assert users == ["jws.py"]
