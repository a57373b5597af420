"""No adapter or service reads configuration as ``table.get(key, default)``.

The loader turns every section into frozen typed settings whose defaults are written once
(:mod:`shaken.config.typed`); an adapter that reads ``settings.lifecycle.get("keep", 5)``
writes a default a second time, and the two drift apart. This scan finds ``.get(`` on a
configuration table: ``settings.<table>`` (a :class:`~shaken.config.Settings` mapping field),
``<effective>.verification`` or ``.attestation`` of an effective profile, an entry of such a
table, and any local name bound to one of these. ``.get`` on wire data (JSON bodies, headers,
Redis payloads, ASGI scopes) is not a configuration table and is left alone.
"""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import pytest

from shaken.config import EffectiveProfile, Settings

SRC = Path(__file__).resolve().parents[2] / "src" / "shaken"
SCANNED = ("adapters", "services")


def _mapping_fields(cls: type, *, leave: tuple[str, ...]) -> frozenset[str]:
    return frozenset(
        f.name for f in fields(cls) if str(f.type).startswith("Mapping") and f.name not in leave
    )


#: ``lines`` holds line numbers, ``origin`` where each value came from: neither is a setting.
SETTINGS_TABLES = _mapping_fields(Settings, leave=("lines",))
EFFECTIVE_TABLES = _mapping_fields(EffectiveProfile, leave=("origin",))
#: Calls that return a Settings or an EffectiveProfile.
#: A parameter named after a table and typed as a table (``Mapping[str, Any]``, ``Any`` or
#: not at all) holds one.
TABLE_NAMES = SETTINGS_TABLES | EFFECTIVE_TABLES
SETTINGS_CALLS = frozenset({"load_config", "parse_config", "load_checked"})
EFFECTIVE_CALLS = frozenset({"effective_profile"})


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _called(node: ast.AST) -> str | None:
    return _name(node.func) if isinstance(node, ast.Call) else None


class _Scope:
    """The names of one function (or module) bound to settings, effective profiles and tables."""

    def __init__(self) -> None:
        self.settings: set[str] = {"settings"}
        self.effective: set[str] = {"effective"}
        self.tables: set[str] = set()

    def is_settings(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Attribute) and node.attr == "settings":
            return True
        return (isinstance(node, ast.Name) and node.id in self.settings) or (
            _called(node) in SETTINGS_CALLS
        )

    def is_effective(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Attribute) and node.attr == "effective":
            return True
        return (isinstance(node, ast.Name) and node.id in self.effective) or (
            _called(node) in EFFECTIVE_CALLS
        )

    def is_table(self, node: ast.AST) -> bool:
        """A configuration table, or one entry of a table of them (``settings.tns[tn]``)."""
        if isinstance(node, ast.Name):
            return node.id in self.tables
        if isinstance(node, ast.Attribute):
            return (node.attr in SETTINGS_TABLES and self.is_settings(node.value)) or (
                node.attr in EFFECTIVE_TABLES and self.is_effective(node.value)
            )
        if isinstance(node, ast.Subscript):
            return self.is_table(node.value)
        return False

    def iterated_tables(self, iterable: ast.AST, target: ast.AST) -> list[str]:
        """The names a loop over a table binds to its entries (``for n, v in t.items()``)."""
        if not isinstance(iterable, ast.Call) or not isinstance(iterable.func, ast.Attribute):
            return []
        method, owner = iterable.func.attr, iterable.func.value
        if not self.is_table(owner):
            return []
        if method == "values" and isinstance(target, ast.Name):
            return [target.id]
        if method == "items" and isinstance(target, ast.Tuple) and len(target.elts) == 2:
            value = target.elts[1]
            return [value.id] if isinstance(value, ast.Name) else []
        return []

    def bind(self, target: ast.AST, value: ast.AST) -> bool:
        """Note what ``target = value`` binds; True when it added a name."""
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
            changed = False
            for t, v in zip(target.elts, value.elts, strict=False):
                changed |= self.bind(t, v)
            return changed
        if not isinstance(target, ast.Name):
            return False
        for kind, test in (
            (self.tables, self.is_table),
            (self.settings, self.is_settings),
            (self.effective, self.is_effective),
        ):
            if target.id not in kind and test(value):
                kind.add(target.id)
                return True
        return False


def _bindings(node: ast.AST) -> list[tuple[ast.AST, ast.AST, bool]]:
    """(target, value, is_loop) of every assignment and loop directly in ``node``'s scope."""
    found: list[tuple[ast.AST, ast.AST, bool]] = []
    for child in _walk_scope(node):
        if isinstance(child, ast.Assign):
            found += [(t, child.value, False) for t in child.targets]
        elif isinstance(child, ast.AnnAssign | ast.NamedExpr) and child.value is not None:
            found.append((child.target, child.value, False))
        elif isinstance(child, ast.For | ast.AsyncFor | ast.comprehension):
            found.append((child.target, child.iter, True))
    return found


def _walk_scope(node: ast.AST) -> list[ast.AST]:
    """Every node of ``node``'s own scope; nested functions are scopes of their own, but see
    the names of the one around them (a closure reads them)."""
    out: list[ast.AST] = []
    todo = list(ast.iter_child_nodes(node))
    while todo:
        child = todo.pop()
        out.append(child)
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            todo.extend(ast.iter_child_nodes(child))
    return out


def _scan(node: ast.AST, outer: _Scope | None, found: list[tuple[int, str]]) -> None:
    scope = _Scope()
    if outer is not None:
        scope.settings |= outer.settings
        scope.effective |= outer.effective
        scope.tables |= outer.tables
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        arguments = node.args
        for arg in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs):
            kind = ast.unparse(arg.annotation) if arg.annotation is not None else ""
            if kind == "Settings":
                scope.settings.add(arg.arg)
            elif kind == "EffectiveProfile":
                scope.effective.add(arg.arg)
            elif arg.arg in TABLE_NAMES and (kind in ("", "Any") or kind.endswith(", Any]")):
                scope.tables.add(arg.arg)  # def renew(lifecycle: Any): a table passed on
    bindings = _bindings(node)
    changed = True
    while changed:  # until no binding adds a name (a binding may use a later one's name)
        changed = False
        for target, value, loop in bindings:
            if loop:
                for name in scope.iterated_tables(value, target):
                    if name not in scope.tables:
                        scope.tables.add(name)
                        changed = True
            else:
                changed |= scope.bind(target, value)
    for child in _walk_scope(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            _scan(child, scope, found)
        elif (
            isinstance(child, ast.Call)
            and isinstance(child.func, ast.Attribute)
            and child.func.attr == "get"
            and scope.is_table(child.func.value)
        ):
            found.append((child.lineno, ast.unparse(child)))


def table_reads(source: str) -> list[tuple[int, str]]:
    """(line, call) of every ``.get(`` on a configuration table in ``source``."""
    found: list[tuple[int, str]] = []
    _scan(ast.parse(source), None, found)
    return sorted(found)


def _tree_reads() -> set[tuple[str, str]]:
    reads: set[tuple[str, str]] = set()
    for package in SCANNED:
        for file in sorted((SRC / package).rglob("*.py")):
            name = file.relative_to(SRC).as_posix()
            reads |= {(name, call) for _, call in table_reads(file.read_text(encoding="utf-8"))}
    return reads


#: Reads not converted yet, each to go. This set may only shrink (it is empty).
NOT_YET: set[tuple[str, str]] = set()


def test_no_adapter_or_service_reads_a_configuration_table_with_get() -> None:
    assert _tree_reads() == NOT_YET


@pytest.mark.parametrize(
    "source",
    [
        "def f(settings):\n    return settings.lifecycle.get('watch_interval', 1.0)\n",
        "def f(self):\n    return self.runtime.settings.server.get('call_log')\n",
        "def f(settings):\n    lifecycle = settings.lifecycle\n    return lifecycle.get('keep', 5)\n",
        "def f(s: Settings):\n    a, acme = s.sti_pa, s.acme\n    return acme.get('country')\n",
        "def f(settings):\n    return [v.get('attest') for tn, v in settings.tns.items()]\n",
        "def f(settings):\n    for v in settings.tn_ranges.values():\n        v.get('start')\n",
        "def f(settings):\n    return settings.brands['b'].get('ppt')\n",
        "def f(path):\n    settings = load_config(path)\n    return settings.acme.get('spc')\n",
        "def f(s):\n    glob = effective_profile(s, None)\n    return glob.verification.get('x')\n",
        "def f(p: EffectiveProfile):\n    return p.attestation.get('x5u')\n",
        "def f(settings):\n    lc = settings.lifecycle\n    def g():\n        return lc.get('keep')\n",
        "def f(lifecycle: Any):\n    return lifecycle.get('watch_interval', 1.0)\n",
        "def f(acme: Mapping[str, Any]):\n    return acme.get('country')\n",
    ],
)
def test_the_scan_finds_a_table_read(source: str) -> None:
    """The scan can fail: each of these is a configuration read it must report."""
    assert len(table_reads(source)) == 1


@pytest.mark.parametrize(
    "source",
    [
        "def f(data):\n    return data.get('status')\n",
        "def f(response):\n    return response.headers.get('location')\n",
        "def f(self, tn):\n    return self.tns.get(tn)\n",  # a SigningPolicy's rules
        "def f(scope):\n    return scope.get('client')\n",
        "def f(settings):\n    return settings.lines.get(('tn',))\n",
        "def f(effective, k):\n    return effective.origin.get(k)\n",
        "def f(settings):\n    return settings.server_settings.call_log\n",
        "def f(server: RedisServer):\n    return server.get('key')\n",
        "def f(brands: Mapping[str, Brand], name):\n    return brands.get(name)\n",
    ],
)
def test_the_scan_leaves_wire_data_alone(source: str) -> None:
    assert table_reads(source) == []
