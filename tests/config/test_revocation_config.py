"""One revocation setting, and ``config check`` refusing a revocation setup that cannot work.

Issue 9 item 3: ``crl_files`` without the STI-PA certificate passed ``config check`` while no
CRL could ever be checked. ``revocation = "off" | "soft" | "hard"`` is the one setting now;
``require_crl`` and ``crl_unavailable`` stay accepted as its old spellings, which ``config
check`` explains, and the composition root builds the cache from the same rule.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shaken.adapters.cli import main
from shaken.adapters.wiring import build_runtime
from shaken.config import load_config
from shaken.config.schema import revocation_conflict, revocation_of, revocation_spellings
from shaken.core.jws import generate_private_key, private_key_pem
from shaken.services.cert_cache import RevocationMode
from shaken.testing import StiPki, make_sti_pki
from tests.support.fakes import ManualClock

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki() -> StiPki:
    return make_sti_pki(NOW)


@pytest.fixture
def directory(tmp_path: Path, pki: StiPki) -> Path:
    key = tmp_path / "sp.key"
    key.write_bytes(private_key_pem(generate_private_key()))
    os.chmod(key, 0o600)
    (tmp_path / "roots.pem").write_bytes(pki.root_pem)
    (tmp_path / "sti-pa.pem").write_bytes(pki.sti_pa_pem)
    (tmp_path / "crl.der").write_bytes(pki.sti_pa_crl(next_update=NOW + timedelta(days=7)))
    return tmp_path


def _write(directory: Path, verification: str) -> Path:
    file = directory / "shaken.toml"
    file.write_text(
        '[attestation]\nprivate_key = "sp.key"\nx5u = "https://cr.example.com/sp.pem"\n'
        f'[verification]\ntrust_anchors = ["roots.pem"]\n{verification}\n'
    )
    return file


def _check(file: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["config", "check", str(file)], clock=ManualClock(NOW))
    return code, capsys.readouterr().out


@pytest.mark.parametrize(
    ("values", "mode"),
    [
        ({}, "soft"),
        ({"revocation": "off"}, "off"),
        ({"revocation": "hard"}, "hard"),
        ({"require_crl": True}, "hard"),
        ({"require_crl": False}, "soft"),
        ({"crl_unavailable": "fail"}, "hard"),
        ({"crl_unavailable": "pass"}, "soft"),
        ({"require_crl": True, "crl_unavailable": "pass"}, "hard"),  # they were ORed
        ({"revocation": "soft", "require_crl": False, "crl_unavailable": "pass"}, "soft"),
    ],
)
def test_9_3_one_revocation_setting_with_its_old_spellings(
    values: dict[str, object], mode: str
) -> None:
    assert revocation_of(values) == mode


def test_9_3_contradicting_spellings_and_old_ones_are_named() -> None:
    assert revocation_conflict({"revocation": "soft", "require_crl": True}) is not None
    assert revocation_conflict({"revocation": "hard", "crl_unavailable": "fail"}) is None
    assert [k for k, _ in revocation_spellings({"require_crl": True})] == ["require_crl"]


@pytest.mark.parametrize(
    ("verification", "mode"),
    [
        ("", RevocationMode.SOFT),
        ('revocation = "off"', RevocationMode.OFF),
        ('revocation = "hard"', RevocationMode.HARD),
        ("require_crl = true", RevocationMode.HARD),
        ('crl_unavailable = "fail"', RevocationMode.HARD),
    ],
)
def test_9_3_the_runtime_uses_the_one_setting(
    directory: Path, verification: str, mode: RevocationMode
) -> None:
    file = _write(directory, 'sti_pa_certificate = "sti-pa.pem"\n' + verification)
    runtime = build_runtime(load_config(file), clock=ManualClock(NOW), now=NOW)
    assert runtime.cache.settings.revocation is mode


def test_9_3_crl_files_are_read_into_the_crl_cache(directory: Path) -> None:
    """Before, crl_files was accepted by the schema and never read."""
    file = _write(directory, 'sti_pa_certificate = "sti-pa.pem"\ncrl_files = ["crl.der"]')
    runtime = build_runtime(load_config(file), clock=ManualClock(NOW), now=NOW)
    (local,) = runtime.cache.crl_cache.local_records()
    assert local.url == f"file:{directory / 'crl.der'}"


def test_9_3_config_check_refuses_crl_files_without_a_crl_signer(
    directory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _check(_write(directory, 'crl_files = ["crl.der"]'), capsys)
    assert code == 1
    assert ":6: verification.crl_files:" in out and "could never apply" in out
    assert "ATIS-1000080 section 6.4.1" in out
    code, out = _check(
        _write(directory, 'sti_pa_certificate = "sti-pa.pem"\ncrl_files = ["crl.der"]'), capsys
    )
    assert code == 0 and "OK" in out


@pytest.mark.parametrize(
    "setting", ['revocation = "hard"', 'revocation = "soft"', "require_crl = true"]
)
def test_9_3_config_check_refuses_explicit_revocation_without_a_crl_signer(
    directory: Path, capsys: pytest.CaptureFixture[str], setting: str
) -> None:
    code, out = _check(_write(directory, setting), capsys)
    key = setting.split(" ", 1)[0]
    assert code == 1 and f":6: verification.{key}:" in out
    assert "cannot check SHAKEN CRLs without the STI-PA certificate" in out


def test_9_3_config_check_explains_the_default_and_the_old_spellings(
    directory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _check(_write(directory, ""), capsys)
    assert code == 0 and 'note: revocation is "soft" by default' in out
    assert "warning:crl_unavailable" in out
    code, out = _check(
        _write(directory, 'sti_pa_certificate = "sti-pa.pem"\ncrl_unavailable = "fail"'), capsys
    )
    assert code == 0
    assert 'verification.crl_unavailable: note: the old spelling of revocation = "hard"' in out


def test_9_3_config_check_refuses_contradictions_and_ignored_crl_files(
    directory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _check(
        _write(
            directory, 'sti_pa_certificate = "sti-pa.pem"\nrevocation = "soft"\nrequire_crl = true'
        ),
        capsys,
    )
    assert code == 1 and "contradict each other" in out
    code, out = _check(_write(directory, 'revocation = "off"\ncrl_files = ["crl.der"]'), capsys)
    assert code == 1 and 'revocation = "off" ignores them' in out
    code, out = _check(
        _write(directory, 'sti_pa_certificate = "sti-pa.pem"\ncrl_files = ["roots.pem"]'), capsys
    )
    assert code == 1 and "roots.pem is not a CRL" in out


def test_9_3_the_refresh_interval_is_at_most_a_day(
    directory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _check(_write(directory, "crl_refresh = 86401"), capsys)
    assert code == 1 and "verification.crl_refresh: must be at least 60 and at most 86400" in out
    file = _write(directory, 'sti_pa_certificate = "sti-pa.pem"\ncrl_refresh = 600')
    runtime = build_runtime(load_config(file), clock=ManualClock(NOW), now=NOW)
    assert runtime.cache.crl_cache.refresh_interval == timedelta(minutes=10)
