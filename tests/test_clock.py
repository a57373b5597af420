"""Time comes from an injected clock everywhere: no command or service reads the wall clock.

A test bound to a date is a time bomb when the code under it reads the real clock (``shaken
cache import`` once refused a CRL made for a fixed test date as soon as that date passed).
Every read of the wall clock in ``src/`` goes through :class:`shaken.services.ports.SystemClock`,
and every command takes the clock :func:`shaken.adapters.cli.main` is given.
"""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shaken.adapters.cli import UsageError, main, parse_time
from shaken.core.identity import IdentityHeader
from shaken.core.passport import decode_token
from shaken.testing import make_sti_pki
from tests.support.fakes import ManualClock

SRC = Path(__file__).resolve().parents[1] / "src" / "shaken"
WALL_CLOCK = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "time_ns"),
}
#: The one place allowed to read the wall clock.
OWNER = SRC / "services" / "ports.py"

# A moment far from today in both directions, so nothing here can pass by luck.
PAST = datetime(2019, 3, 4, 5, 6, 7, tzinfo=UTC)


def _wall_clock_reads(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            value = node.func.value
            if isinstance(value, ast.Name) and (value.id, node.func.attr) in WALL_CLOCK:
                found.append(f"{path.relative_to(SRC)}:{node.lineno} {value.id}.{node.func.attr}()")
    return found


def test_only_the_system_clock_reads_the_wall_clock() -> None:
    reads = [r for p in sorted(SRC.rglob("*.py")) if p != OWNER for r in _wall_clock_reads(p)]
    assert reads == []
    assert _wall_clock_reads(OWNER), "SystemClock no longer reads the clock: update this test"


def test_sign_takes_the_injected_clock(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pki = make_sti_pki(PAST)
    key = tmp_path / "sp.key"
    key.write_bytes(pki.leaf_key_pem)
    argv = [
        "sign",
        "--key",
        str(key),
        "--x5u",
        "https://cr.example.test/sp.pem",
        "--orig",
        "12025550100",
        "--dest",
        "12025550101",
    ]
    assert main(argv, clock=ManualClock(PAST)) == 0
    value = capsys.readouterr().out.strip()
    claims = decode_token(IdentityHeader.parse(value).token).payload
    assert claims["iat"] == int(PAST.timestamp())


def test_verify_judges_freshness_by_the_injected_clock(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pki = make_sti_pki(PAST)
    key, chain, root = tmp_path / "sp.key", tmp_path / "chain.pem", tmp_path / "root.pem"
    key.write_bytes(pki.leaf_key_pem)
    chain.write_bytes(pki.chain_pem)
    root.write_bytes(pki.root_pem)
    clock = ManualClock(PAST)
    assert (
        main(
            [
                "sign",
                "--key",
                str(key),
                "--x5u",
                "https://cr.example.test/sp.pem",
                "--orig",
                "12025550100",
                "--dest",
                "12025550101",
            ],
            clock=clock,
        )
        == 0
    )
    value = capsys.readouterr().out.strip()
    verify = [
        "verify",
        "--identity",
        value,
        "--orig",
        "12025550100",
        "--dest",
        "12025550101",
        "--cert",
        str(chain),
        "--ca",
        str(root),
        "--json",
    ]
    assert main(verify, clock=clock) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True
    clock.advance(seconds=61)
    assert main(verify, clock=clock) == 1
    assert json.loads(capsys.readouterr().out)["reason"] == "stale_iat"


def test_ca_and_lab_material_is_dated_by_the_injected_clock(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["lab", "init", str(tmp_path / "lab")], clock=ManualClock(PAST)) == 0
    capsys.readouterr()
    assert main(["cert", "inspect", "--json", str(tmp_path / "lab" / "repo" / "sp.pem")]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    not_before = datetime.fromisoformat(first["not_before"])
    assert abs(not_before - PAST) <= timedelta(days=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1551675967", PAST),
        ("2019-03-04T05:06:07Z", PAST),
        ("2019-03-04T05:06:07", PAST),  # UTC when it names no zone
        ("2019-03-04T06:06:07+01:00", PAST),
    ],
)
def test_at_takes_epoch_seconds_or_iso_8601(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


def test_at_refuses_anything_else() -> None:
    with pytest.raises(UsageError, match="ISO 8601"):
        parse_time("yesterday")
