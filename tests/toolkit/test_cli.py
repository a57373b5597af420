"""The toolkit's CLI commands, run through ``shaken.adapters.cli.main`` (and ``lab up`` as a real
process): files, modes, contents and exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import stat
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from shaken.adapters.cli import main
from shaken.core.certs import (
    TNAUTHLIST_OID,
    Spc,
    TNAuthList,
    TnRange,
    load_certificates,
    profile_findings,
    tnauthlist_of,
)
from shaken.core.jws import load_private_key
from shaken.testing import make_sti_pki

Capture = pytest.CaptureFixture[str]


def run(capsys: Capture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_key_new(tmp_path: Path, capsys: Capture) -> None:
    key = tmp_path / "keys" / "sp.key"
    code, out, _ = run(capsys, "key", "new", str(key))
    assert code == 0 and "0600" in out
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_bytes()
    load_private_key(first)  # a P-256 PEM key
    code, _, err = run(capsys, "key", "new", str(key))
    assert code == 2 and "not overwriting" in err
    assert key.read_bytes() == first
    code, _, _ = run(capsys, "key", "new", str(key), "--force")
    assert code == 0 and key.read_bytes() != first
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_key_new_under_a_permissive_umask(tmp_path: Path, capsys: Capture) -> None:
    old = os.umask(0)
    try:
        code, _, _ = run(capsys, "key", "new", str(tmp_path / "k.pem"))
    finally:
        os.umask(old)
    assert code == 0
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600


def test_csr_new(tmp_path: Path, capsys: Capture) -> None:
    key = tmp_path / "sp.key"
    run(capsys, "key", "new", str(key))
    code, out, _ = run(capsys, "csr", "new", "--key", str(key), "--spc", "709J", "--org", "Ex Co")
    assert code == 0
    csr = x509.load_pem_x509_csr(out.encode())
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=SHAKEN 709J,O=Ex Co,C=US"
    assert csr.public_key() == load_private_key(key.read_bytes()).public_key()
    value = csr.extensions.get_extension_for_oid(TNAUTHLIST_OID).value
    assert isinstance(value, x509.UnrecognizedExtension)
    assert TNAuthList.from_der(value.value) == TNAuthList(entries=(Spc(code="709J"),))
    target = tmp_path / "sp.csr"
    argv = ["csr", "new", "--key", str(key), "--spc", "1234", "--org", "X", "--country", "CA"]
    code, _, _ = run(capsys, *argv, "--out", str(target))
    assert code == 0
    assert x509.load_pem_x509_csr(target.read_bytes()).subject.rfc4514_string() == (
        "CN=SHAKEN 1234,O=X,C=CA"
    )


@pytest.mark.parametrize(
    "extra",
    [["--spc", "12a4", "--org", "X"], ["--spc", "1234", "--org", "X", "--country", "USA"]],
)
def test_csr_new_refuses_bad_values(tmp_path: Path, capsys: Capture, extra: list[str]) -> None:
    key = tmp_path / "sp.key"
    run(capsys, "key", "new", str(key))
    code, out, err = run(capsys, "csr", "new", "--key", str(key), *extra)
    assert code == 2 and out == "" and err.startswith("shaken:")


def test_csr_new_with_a_missing_key(tmp_path: Path, capsys: Capture) -> None:
    code, _, err = run(
        capsys, "csr", "new", "--key", str(tmp_path / "no.key"), "--spc", "1", "--org", "X"
    )
    assert code == 2 and "cannot read" in err


def test_ca_workflow(tmp_path: Path, capsys: Capture) -> None:
    ca, repo = tmp_path / "ca", tmp_path / "repo"
    code, out, _ = run(
        capsys,
        "ca",
        "init",
        str(ca),
        "--repo-url",
        "https://cr.example.test:8443",
        "--publish-dir",
        "../repo",
    )
    assert code == 0 and "TEST MATERIAL" in out
    index = json.loads((ca / "index.json").read_text())
    assert index["settings"]["crl_url"] == "https://cr.example.test:8443/crl.der"
    run(capsys, "key", "new", str(tmp_path / "sp.key"))
    run(
        capsys,
        "csr",
        "new",
        "--key",
        str(tmp_path / "sp.key"),
        "--spc",
        "709J",
        "--org",
        "Ex",
        "--out",
        str(tmp_path / "sp.csr"),
    )

    code, out, _ = run(
        capsys,
        "ca",
        "issue",
        str(tmp_path / "sp.csr"),
        "--ca",
        str(ca),
        "--out",
        str(tmp_path / "chain.pem"),
    )
    assert code == 0 and "SP certificate" in out
    chain = load_certificates((tmp_path / "chain.pem").read_bytes())
    leaf = chain[0]
    assert profile_findings(leaf, issuer=chain[1]) == ()
    serial = f"{leaf.serial_number:x}"
    assert f"published    https://cr.example.test:8443/{serial}.pem" in out
    assert (repo / f"{serial}.pem").read_bytes() == (tmp_path / "chain.pem").read_bytes()

    code, out, _ = run(
        capsys,
        "ca",
        "issue",
        str(tmp_path / "sp.csr"),
        "--ca",
        str(ca),
        "--tn-range",
        "12025550100:100",
        "--tn-range",
        "12025550300-12025550309",
        "--tn",
        "12025550500",
    )
    assert code == 0 and "delegate certificate (RFC 9060)" in out
    match = re.search(r"\(RFC 9060\) ([0-9a-f]+): ", out)
    assert match is not None, out
    delegate_serial = match.group(1)
    delegate = load_certificates((ca / "issued" / f"{delegate_serial}.pem").read_bytes())[0]
    entries = tnauthlist_of(delegate)
    assert entries is not None and TnRange(start="12025550300", count=10) in entries.entries

    code, out, _ = run(capsys, "ca", "revoke", serial, "--ca", str(ca), "--reason", "superseded")
    assert code == 0 and f"revoked {serial}" in out
    crl = x509.load_der_x509_crl((repo / "crl.der").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    code, _, err = run(capsys, "ca", "revoke", str(tmp_path / "chain.pem"), "--ca", str(ca))
    assert code == 2 and "already revoked" in err

    code, out, _ = run(
        capsys, "ca", "crl", "--ca", str(ca), "--days", "2", "--out", str(tmp_path / "crl.der")
    )
    assert code == 0 and "(1 revoked)" in out
    assert x509.load_der_x509_crl((tmp_path / "crl.der").read_bytes()) == x509.load_der_x509_crl(
        (ca / "crl.der").read_bytes()
    )
    code, out, _ = run(capsys, "ca", "trust-list", "--ca", str(ca))
    assert code == 0 and (ca / "trust-list.jwt").is_file()


def make_csr(tmp_path: Path, capsys: Capture) -> Path:
    run(capsys, "key", "new", str(tmp_path / "sp.key"), "--force")
    csr = tmp_path / "sp.csr"
    argv = ["--key", str(tmp_path / "sp.key"), "--spc", "1234", "--org", "X", "--out", str(csr)]
    run(capsys, "csr", "new", *argv)
    return csr


@pytest.mark.parametrize(
    "argv",
    [
        ["ca", "issue", "{tmp}/missing.csr", "--ca", "{tmp}/ca"],
        ["ca", "issue", "{tmp}/sp.csr", "--ca", "{tmp}"],  # not a CA directory
        ["ca", "issue", "{tmp}/sp.csr", "--ca", "{tmp}/ca", "--tn-range", "12025550100:1"],
        ["ca", "issue", "{tmp}/sp.csr", "--ca", "{tmp}/ca", "--tn-range", "120-12"],
        ["ca", "issue", "{tmp}/sp.csr", "--ca", "{tmp}/ca", "--tn", "+1202"],
        ["ca", "issue", "{tmp}/sp.key", "--ca", "{tmp}/ca"],  # not a CSR
        ["ca", "revoke", "zz", "--ca", "{tmp}/ca"],
        ["ca", "init", "{tmp}/ca"],  # exists
        ["ca", "init", "{tmp}/new", "--country", "usa"],
        ["lab", "up", "{tmp}"],
        ["cert", "lint"],
        ["repo", "serve", "{tmp}/absent", "--port", "0"],
        ["repo", "serve", "{tmp}", "--port", "0", "--tls-cert", "{tmp}/sp.key"],
        ["repo", "serve", "{tmp}", "--port", "0", "--max-age", "-1"],
    ],
)
def test_usage_errors(tmp_path: Path, capsys: Capture, argv: list[str]) -> None:
    assert main(["ca", "init", str(tmp_path / "ca")]) == 0
    make_csr(tmp_path, capsys)
    code, _, err = run(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 2, argv
    assert err.startswith("shaken: "), err


@pytest.mark.parametrize("argv", [["ca"], ["key"], ["lab", "init"], ["repo", "serve"]])
def test_incomplete_commands_exit_2(argv: list[str], capsys: Capture) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    capsys.readouterr()


def test_cert_lint(tmp_path: Path, capsys: Capture) -> None:
    pki = make_sti_pki(datetime.now(UTC))
    good = tmp_path / "good.pem"
    good.write_bytes(pki.chain_pem)
    code, out, _ = run(capsys, "cert", "lint", str(good))
    assert code == 0 and "2 certificates: 0 errors, 0 warnings" in out
    tn_scoped = make_sti_pki(
        pki.now, tn_entries=(Spc(code="1234"), TnRange(start="12025550100", count=2))
    )
    bad = tmp_path / "bad.pem"
    bad.write_bytes(tn_scoped.chain_pem)
    code, out, _ = run(capsys, "cert", "lint", "--json", str(bad), str(good))
    assert code == 1
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in records] == [str(bad), str(bad), str(good), str(good)]
    assert {f["rule"] for f in records[0]["findings"]} == {"atis_tn_auth_list"}
    junk = tmp_path / "junk.pem"
    junk.write_text("nothing here")
    code, _, err = run(capsys, "cert", "lint", str(junk), str(good))
    assert code == 2 and "junk.pem" in err
    code, _, err = run(capsys, "cert", "lint", str(tmp_path / "absent.pem"))
    assert code == 2 and "cannot read" in err


def test_cert_lint_corpus_flag(tmp_path: Path, capsys: Capture) -> None:
    samples = (
        Path(__file__).resolve().parents[2].parent
        / "shared"
        / "corpus"
        / "shaken-pki-reports"
        / "pem-samples"
    )
    if not (samples / "index.csv").is_file():
        pytest.skip(f"shared corpus not found at {samples}")
    code, out, _ = run(capsys, "cert", "lint", "--json", "--corpus", str(samples))
    assert code == 0
    summary = json.loads(out.splitlines()[-1])["corpus"]
    assert summary["samples"] == 65 and summary["agreement"] >= 0.95
    code, _, err = run(capsys, "cert", "lint", "--corpus", str(tmp_path))
    assert code == 2 and "index.csv" in err


def test_lab_init(tmp_path: Path, capsys: Capture) -> None:
    lab = tmp_path / "lab"
    code, out, _ = run(
        capsys,
        "lab",
        "init",
        str(lab),
        "--spc",
        "709J",
        "--repo-port",
        "9443",
        "--rest-port",
        "8081",
    )
    assert code == 0 and "TEST MATERIAL" in out
    assert "x5u           https://127.0.0.1:9443/sp.pem" in out
    config = (lab / "shaken.toml").read_text()
    assert 'rest = ["http:127.0.0.1:8081"]' in config
    assert 'x5u = "https://127.0.0.1:9443/sp.pem"' in config
    leaf = load_certificates((lab / "sp" / "sp.pem").read_bytes())[0]
    assert leaf.subject.rfc4514_string() == "CN=SHAKEN 709J,O=Example Lab SP (TEST ONLY),C=US"
    code, _, err = run(capsys, "lab", "init", str(lab))
    assert code == 2 and "not empty" in err


def test_lab_up_serves_until_interrupted(tmp_path: Path, capsys: Capture) -> None:
    lab = tmp_path / "lab"
    assert main(["lab", "init", str(lab)]) == 0
    capsys.readouterr()
    command = [
        sys.executable,
        "-m",
        "shaken.adapters.cli",
        "lab",
        "up",
        str(lab),
        "--port",
        "0",
        "--quiet",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C"):
                break
        urls = [line.split()[1] for line in lines if line.startswith("repository ")]
        assert [u.rsplit("/", 1)[1] for u in urls] == ["sp.pem", "crl.der"]
        assert any(line.startswith("note: shaken.toml") for line in lines)  # port 0 is not 8443
        assert any("sip-signing" in line and "udp:127.0.0.1:5060" in line for line in lines)
        assert any("sip-verification" in line and "tcp:127.0.0.1:5062" in line for line in lines)
        assert any("rest" in line and "http:127.0.0.1:8080" in line for line in lines)
        context = ssl.create_default_context(cafile=str(lab / "tls" / "ca.pem"))
        with urllib.request.urlopen(urls[0], context=context, timeout=10) as response:
            assert response.headers["Content-Type"] == "application/pem-certificate-chain"
            assert response.read() == (lab / "sp" / "sp.pem").read_bytes()
        process.send_signal(signal.SIGINT)
        out, _err = process.communicate(timeout=20)
        assert process.returncode == 0
        assert "stopped" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_ca_issues_branded_delegate_with_claim_constraints(tmp_path: Path, capsys: Capture) -> None:
    """RFC 9795 section 9: the CA pins the vetted rcd; ``cert inspect`` shows what it pinned."""
    from shaken.core.claimconstraints import constraints_of, evaluate
    from shaken.core.rcd import jcs

    ca = tmp_path / "ca"
    assert run(capsys, "ca", "init", str(ca))[0] == 0
    csr = make_csr(tmp_path, capsys)
    brand = {"nam": "Acme Bank", "icn": "https://brand.example.test/acme.png"}
    (tmp_path / "brand.json").write_text(json.dumps(brand))
    code, out, err = run(
        capsys,
        "ca",
        "issue",
        str(csr),
        "--ca",
        str(ca),
        "--tn",
        "12025550100",
        "--pin-rcd",
        str(tmp_path / "brand.json"),
        "--must-include",
        "rcdi",
        "--must-exclude",
        "div",
        "--out",
        str(tmp_path / "branded.pem"),
    )
    assert code == 0, err
    leaf = load_certificates((tmp_path / "branded.pem").read_bytes())[0]
    constraints = constraints_of(leaf)
    assert constraints is not None and constraints.enhanced
    assert constraints.must_include == ("rcdi", "rcd")
    assert constraints.permitted == {"rcd": (jcs(brand).decode(),)}
    assert constraints.must_exclude == ("div",)
    base = {"iat": 1, "orig": {"tn": "12025550100"}, "dest": {"tn": ["1"]}, "rcdi": {}}
    assert evaluate(constraints, {**base, "rcd": dict(reversed(brand.items()))}) == []
    assert evaluate(constraints, {**base, "rcd": {**brand, "nam": "Acme Refunds"}}) != []

    code, out, _ = run(capsys, "cert", "inspect", str(tmp_path / "branded.pem"))
    assert code == 0
    assert "EnhancedJWTClaimConstraints (RFC 8226 8 / RFC 9118):" in out
    assert 'mustInclude:  ["rcdi", "rcd"]' in out
    assert (
        '"{\\"icn\\":\\"https://brand.example.test/acme.png\\",\\"nam\\":\\"Acme Bank\\"}"' in out
    )
    assert 'mustExclude:  ["div"]' in out
    code, out, _ = run(capsys, "cert", "inspect", "--json", str(tmp_path / "branded.pem"))
    record = json.loads(out.splitlines()[0])
    assert record["claim_constraints"]["permittedValues"]["rcd"] == [jcs(brand).decode()]

    code, _, err = run(
        capsys,
        "ca",
        "issue",
        str(csr),
        "--ca",
        str(ca),
        "--tn",
        "12025550100",
        "--must-exclude",
        "rcd",
        "--claim-constraints",
        "rfc8226",
    )
    assert code == 2 and "RFC 9118" in err
    code, _, err = run(
        capsys,
        "ca",
        "issue",
        str(csr),
        "--ca",
        str(ca),
        "--permit",
        "rcd",
    )
    assert code == 2 and "CLAIM=VALUE" in err
