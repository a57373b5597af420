from __future__ import annotations

import os
from pathlib import Path

import pytest

from shaken.adapters.cli import main
from shaken.core.jws import generate_private_key, private_key_pem
from shaken.testing import make_sti_pki


@pytest.fixture
def config(tmp_path: Path) -> Path:
    from datetime import UTC, datetime

    pki = make_sti_pki(datetime.now(UTC))
    key = tmp_path / "sp.key"
    key.write_bytes(private_key_pem(generate_private_key()))
    os.chmod(key, 0o600)
    (tmp_path / "roots.pem").write_bytes(pki.root_pem)
    file = tmp_path / "shaken.toml"
    file.write_text(
        '[attestation]\nprivate_key = "sp.key"\nx5u = "https://cr.example.com/sp.pem"\n'
        'attest = "A"\n[verification]\ntrust_anchors = ["roots.pem"]\n'
        '[profile.trunk]\nbehavior = "verify"\nmax_iat_age = 30\n'
    )
    return file


def test_check_ok(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(config)]) == 0
    assert "OK (profiles: trunk)" in capsys.readouterr().out


def test_check_finds_key_permissions_and_bad_files(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chmod(config.parent / "sp.key", 0o644)
    (config.parent / "roots.pem").write_text("not a certificate")
    assert main(["config", "check", str(config)]) == 1
    out = capsys.readouterr().out
    assert ":2: attestation.private_key:" in out and "chmod 600" in out
    assert ":6: verification.trust_anchors:" in out


def test_check_reports_syntax_with_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[verification]\nmax_iat_age = 0\nfailure_action = "reject"\n')
    assert main(["config", "check", str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(":2: verification.max_iat_age: must be at least 1, got 0")
    assert out[1].endswith(":3: verification.failure_action: unknown key")


def test_show_effective(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--effective", "trunk", str(config)]) == 0
    out = capsys.readouterr().out
    assert "verification.max_iat_age = 30    # [profile.trunk] line 9" in out
    assert "verification.max_future_skew = 10    # default" in out
    assert "on.failed = continue" in out
    assert main(["config", "show", "--effective", "nope", str(config)]) == 1
    assert main(["config", "show", str(config)]) == 0
