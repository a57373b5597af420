"""The ``shaken`` command line, run in-process and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shaken.adapters.cli import main
from shaken.testing import make_sti_pki

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
EPOCH = str(int(NOW.timestamp()))
X5U = "https://cr.example.test/sp.pem"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    pki = make_sti_pki(NOW)
    out = {"key": d / "sp-key.pem", "chain": d / "chain.pem", "root": d / "root.pem"}
    out["key"].write_bytes(pki.leaf_key_pem)
    out["chain"].write_bytes(pki.chain_pem)
    out["root"].write_bytes(pki.root_pem)
    out["der"] = d / "leaf.der"
    from cryptography.hazmat.primitives.serialization import Encoding

    out["der"].write_bytes(pki.leaf.public_bytes(Encoding.DER))
    out["junk"] = d / "junk.pem"
    out["junk"].write_bytes(b"not a certificate")
    return out


def _sign(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(
        [
            "sign",
            "--key",
            str(files["key"]),
            "--x5u",
            X5U,
            "--orig",
            "+1 202 555 0100",
            "--dest",
            "12025550101",
            "--attest",
            "B",
            "--iat",
            EPOCH,
        ]
    )
    assert code == 0
    return capsys.readouterr().out.strip()


def test_sign_then_verify_json(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    value = _sign(files, capsys)
    assert value.endswith(f";info=<{X5U}>;alg=ES256;ppt=shaken")
    code = main(
        [
            "verify",
            "--identity",
            value,
            "--orig",
            "12025550100",
            "--dest",
            "12025550101",
            "--cert",
            str(files["chain"]),
            "--ca",
            str(files["root"]),
            "--at",
            EPOCH,
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["verstat"] == "TN-Validation-Passed" and out["reason"] is None
    assert (out["attest"], out["orig"], out["dest"], out["x5u"]) == (
        "B",
        "12025550100",
        ["12025550101"],
        X5U,
    )
    assert out["sip_code"] is None


def test_verify_human_output_and_failure_exit(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    value = _sign(files, capsys)
    code = main(
        [
            "verify",
            "--identity",
            value,
            "--orig",
            "12025550199",
            "--dest",
            "12025550101",
            "--cert",
            str(files["chain"]),
            "--ca",
            str(files["root"]),
            "--at",
            EPOCH,
        ]
    )
    text = capsys.readouterr().out
    assert code == 1
    assert "FAIL [0] orig_matches" in text and "orig_mismatch (438 Invalid Identity Header)" in text


def test_verify_several_identities(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    value = _sign(files, capsys)
    code = main(
        [
            "verify",
            "--identity",
            "garbage",
            "--identity",
            value,
            "--orig",
            "12025550100",
            "--dest",
            "12025550101",
            "--cert",
            str(files["chain"]),
            "--ca",
            str(files["root"]),
            "--at",
            EPOCH,
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["identity_index"] == 1


def test_verify_without_cert_refuses_loopback_before_connecting(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path]
) -> None:
    from shaken.core.jws import load_private_key
    from shaken.core.sign import sign_shaken

    value = sign_shaken(
        key=load_private_key(files["key"].read_bytes()),
        x5u="https://127.0.0.1:8443/sp.pem",
        orig="12025550100",
        dest="12025550101",
        attest="A",
        iat=int(EPOCH),
    )
    code = main(
        [
            "verify",
            "--identity",
            value,
            "--orig",
            "12025550100",
            "--dest",
            "12025550101",
            "--ca",
            str(files["root"]),
            "--at",
            EPOCH,
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["reason"] == "x5u_rejected" and out["sip_code"] == 436


def test_verify_missing_identity_is_428(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["verify", "--identity", "", "--orig", "1", "--dest", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["sip_code"] in (428, 438)


def test_usage_errors_exit_2(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sign", "--key", "/nonexistent", "--x5u", X5U, "--orig", "1", "--dest", "2"]) == 2
    assert (
        main(["sign", "--key", str(files["junk"]), "--x5u", X5U, "--orig", "1", "--dest", "2"]) == 2
    )
    assert (
        main(
            [
                "sign",
                "--key",
                str(files["key"]),
                "--x5u",
                X5U,
                "--orig",
                "1",
                "--dest",
                "2",
                "--origid",
                "x",
            ]
        )
        == 2
    )
    with pytest.raises(SystemExit) as exc:
        main(["verify", "--orig", "1"])
    assert exc.value.code == 2
    capsys.readouterr()


def test_decode(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    value = _sign(files, capsys)
    assert main(["decode", value]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["header"]["x5u"] == X5U and out["claims"]["attest"] == "B"
    assert out["parameters"]["ppt"] == "shaken" and out["signature_bytes"] == 64
    assert main(["decode", "not;a header"]) == 1


def test_cert_inspect_json_many_files(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["cert", "inspect", "--json", str(files["chain"]), str(files["der"]), str(files["junk"])]
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 2  # one unreadable file
    leaf, inter, der, junk = lines
    assert leaf["spc"] == "1234" and leaf["tnauthlist"] == [{"spc": "1234"}]
    assert [f for f in leaf["findings"] if f["severity"] == "error"] == []
    assert inter["tnauthlist"] == {"error": "absent: no TNAuthList extension"}
    assert der["file"].endswith("leaf.der") and der["spc"] == "1234"
    assert "error" in junk
    for rec in (leaf, inter, der):
        assert {"file", "subject", "spc", "tnauthlist", "findings"} <= set(rec)


def test_cert_inspect_human(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cert", "inspect", str(files["chain"])]) == 0
    assert "SPC:      1234" in capsys.readouterr().out


def test_console_script_demo_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "shaken.adapters.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "VERIFIED" in proc.stdout and "bad_signature -> SIP 438" in proc.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 9 item 7: ``shaken --version``, from the one version the package has."""
    from shaken import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"shaken {__version__}"


def test_a_stale_token_says_how_old_it_is(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 9 item 7: a four-year-old token said "+127600948 s from now"."""
    from datetime import timedelta

    from tests.support.fakes import ManualClock

    signed_at = datetime(2022, 11, 22, 12, 0, 0, tzinfo=UTC)
    pki = make_sti_pki(signed_at)
    key = tmp_path / "sp.key"
    key.write_bytes(pki.leaf_key_pem)
    chain, root = tmp_path / "chain.pem", tmp_path / "root.pem"
    chain.write_bytes(pki.chain_pem)
    root.write_bytes(pki.root_pem)
    clock = ManualClock(signed_at)
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
    clock.advance(days=4 * 365 + 1)
    code = main(
        [
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
        ],
        clock=clock,
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "is 4.0 years old (window 60 s, future skew 10 s)" in out
    assert "(2022-11-22T12:00:00Z)" in out
    assert "s from now" not in out
    early = signed_at - timedelta(minutes=5)
    code = main(
        [
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
            "--at",
            early.isoformat(),
        ]
    )
    assert code == 1
    assert "is 5 min in the future" in capsys.readouterr().out
