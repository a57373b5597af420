"""The test STI-CA: what it issues passes our lint, our chain validation and ``openssl verify``;
revocation goes through the STI-PA's indirect CRL; the trust list reads back."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shaken.core.certs import (
    CertRole,
    Spc,
    Tn,
    TNAuthList,
    TnRange,
    load_certificates,
    profile_findings,
    tnauthlist_of,
)
from shaken.core.chain import TrustAnchors, check_delegation, validate_chain
from shaken.core.errors import ChainError, ConfigurationError
from shaken.core.reasons import Reason
from shaken.core.trustlist import read_trust_list
from shaken.toolkit.ca import CaSettings, TestCa, parse_serial
from shaken.toolkit.x509build import build_csr

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")

NOW = datetime.now(UTC).replace(microsecond=0)  # openssl verify checks against its own clock
CRL_URL = "https://repo.example.test:8443/crl.der"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    base = tmp_path_factory.mktemp("ca")
    settings = CaSettings(
        repository_url="https://repo.example.test:8443/", crl_url=CRL_URL, publish_dir="../repo"
    )
    return TestCa.init(base / "ca", now=NOW, settings=settings)


def _csr(
    spc: str = "709J", org: str = "Example Carrier (TEST ONLY)"
) -> x509.CertificateSigningRequest:
    return build_csr(ec.generate_private_key(ec.SECP256R1()), spc=spc, org=org)


def test_layout_and_key_modes(ca: TestCa) -> None:
    names = {p.name for p in ca.directory.iterdir()}
    assert {
        "root.pem",
        "root.key",
        "intermediate.pem",
        "intermediate.key",
        "sti-pa.pem",
        "sti-pa.key",
        "index.json",
        "crl.der",
        "crl.pem",
        "trust-list.jwt",
        "issued",
        "README.txt",
    } <= names
    for key in ("root.key", "intermediate.key", "sti-pa.key"):
        assert stat.S_IMODE((ca.directory / key).stat().st_mode) == 0o600, key
    assert "TEST MATERIAL" in (ca.directory / "README.txt").read_text()
    index = json.loads((ca.directory / "index.json").read_text())
    assert index["settings"]["crl_url"] == CRL_URL
    assert "TEST MATERIAL" in index["notice"]
    assert not list(ca.directory.glob(".*.tmp"))  # atomic writes leave no temp files


def test_hierarchy_follows_the_profile(ca: TestCa) -> None:
    assert profile_findings(ca.root, role=CertRole.ROOT) == ()
    assert profile_findings(ca.intermediate, role=CertRole.INTERMEDIATE, issuer=ca.root) == ()
    for cert in (ca.root, ca.intermediate, ca.sti_pa):
        assert "TEST" in cert.subject.rfc4514_string()
        assert cert.serial_number.bit_length() >= 64
    (point,) = ca.intermediate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for n in point.full_name or ()] == [CRL_URL]
    assert point.crl_issuer == [x509.DirectoryName(ca.sti_pa.subject)]


def test_issued_sp_certificate(ca: TestCa) -> None:
    issued = ca.issue(_csr(), now=NOW)
    leaf = issued.certificate
    assert profile_findings(leaf, role=CertRole.LEAF, issuer=ca.intermediate) == ()
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "SHAKEN 709J"
    assert tnauthlist_of(leaf) == TNAuthList(entries=(Spc(code="709J"),))
    assert load_certificates(issued.chain_path.read_bytes()) == (leaf, ca.intermediate)
    assert issued.path.name == f"{leaf.serial_number:x}.pem"
    assert issued.chain_path.name == f"{leaf.serial_number:x}-chain.pem"
    published = ca.publish_dir
    assert published is not None
    assert (published / issued.path.name).read_bytes() == issued.chain_pem
    assert issued.published_url == f"https://repo.example.test:8443/{issued.path.name}"
    chain = validate_chain(issued.chain, TrustAnchors(certificates=(ca.root,)), at=NOW)
    assert chain.anchor == ca.root
    record = ca.records[issued.serial_hex]
    assert record["kind"] == "sp" and record["revoked"] is None


def test_issue_checks_the_request(ca: TestCa) -> None:
    with pytest.raises(ConfigurationError, match="differs"):
        ca.issue(_csr(spc="709J"), now=NOW, spc="1234")
    no_org = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "SHAKEN 1234")]))
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    with pytest.raises(ConfigurationError, match="no TNAuthList SPC"):
        ca.issue(no_org, now=NOW)
    with pytest.raises(ConfigurationError, match="no O"):
        ca.issue(no_org, now=NOW, spc="1234")
    p384 = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "X")]))
        .sign(ec.generate_private_key(ec.SECP384R1()), hashes.SHA256())
    )
    with pytest.raises(ConfigurationError, match="P-256"):
        ca.issue(p384, now=NOW, spc="1234")


def test_delegate_certificate(ca: TestCa) -> None:
    entries = (TnRange(start="12025550100", count=100), Tn(number="12025550300"))
    issued = ca.issue(_csr(), now=NOW, tn_entries=entries)
    assert issued.delegation_ca is not None
    assert len(issued.chain) == 3
    parent = tnauthlist_of(issued.delegation_ca)
    child = tnauthlist_of(issued.certificate)
    assert parent == TNAuthList(entries=(Spc(code="709J"), *entries))
    assert child == TNAuthList(entries=entries)
    assert parent.encompasses(child)
    chain = validate_chain(issued.chain, TrustAnchors(certificates=(ca.root,)), at=NOW)
    check_delegation(chain)
    # ATIS-1000080 v005 predates delegation: these deviations are the expected ones.
    leaf_rules = {f.rule for f in profile_findings(issued.certificate, issuer=issued.delegation_ca)}
    assert leaf_rules == {"atis_tn_auth_list", "atis_subject_cn_spc"}
    ca_rules = {f.rule for f in profile_findings(issued.delegation_ca, issuer=ca.intermediate)}
    assert ca_rules == {"atis_tn_auth_list_ca"}
    kinds = {ca.records[f"{c.serial_number:x}"]["kind"] for c in issued.chain[:2]}
    assert kinds == {"delegate", "delegation-ca"}


def test_tn_entries_from_the_csr_make_a_delegate(ca: TestCa) -> None:
    requested = TNAuthList(entries=(Spc(code="709J"), TnRange(start="12025550100", count=10)))
    csr = build_csr(
        ec.generate_private_key(ec.SECP256R1()), spc="709J", org="Ex", tnauthlist=requested
    )
    issued = ca.issue(csr, now=NOW)
    assert tnauthlist_of(issued.certificate) == TNAuthList(
        entries=(TnRange(start="12025550100", count=10),)
    )


def test_revocation_through_the_sti_pa_crl(ca: TestCa) -> None:
    issued = ca.issue(_csr(), now=NOW)
    other = ca.issue(_csr(), now=NOW)
    anchors = TrustAnchors(certificates=(ca.root,))
    before = x509.load_der_x509_crl((ca.directory / "crl.der").read_bytes())
    validate_chain(
        issued.chain,
        anchors,
        at=NOW,
        crls=[before.public_bytes(serialization.Encoding.DER)],
        crl_signers=[ca.sti_pa],
        require_crl=True,
    )
    crl = ca.revoke(issued.certificate.serial_number, now=NOW, reason="keyCompromise")
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == before.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
    assert crl.issuer == ca.sti_pa.subject
    assert crl.is_signature_valid(ca.sti_pa.public_key())  # type: ignore[arg-type]
    published = (ca.directory / "crl.der").read_bytes()
    assert ca.publish_dir is not None and (ca.publish_dir / "crl.der").read_bytes() == published
    with pytest.raises(ChainError) as info:
        validate_chain(issued.chain, anchors, at=NOW, crls=[published], crl_signers=[ca.sti_pa])
    assert info.value.reason is Reason.CERT_REVOKED
    # The same CRL from an unknown signer proves nothing; other certificates stay good.
    validate_chain(issued.chain, anchors, at=NOW, crls=[published])
    validate_chain(other.chain, anchors, at=NOW, crls=[published], crl_signers=[ca.sti_pa])
    entry = crl.get_revoked_certificate_by_serial_number(issued.certificate.serial_number)
    assert entry is not None
    names = entry.extensions.get_extension_for_class(x509.CertificateIssuer).value
    assert list(names) == [x509.DirectoryName(ca.intermediate.subject)]
    assert ca.records[issued.serial_hex]["revoked"]["reason"] == "keyCompromise"
    with pytest.raises(ConfigurationError, match="already revoked"):
        ca.revoke(issued.certificate.serial_number, now=NOW)
    with pytest.raises(ConfigurationError, match="not issued"):
        ca.revoke(12345, now=NOW)
    with pytest.raises(ConfigurationError, match="reason"):
        ca.revoke(other.certificate.serial_number, now=NOW, reason="because")


def test_revoking_the_intermediate_revokes_every_chain(tmp_path: Path) -> None:
    ca = TestCa.init(tmp_path / "ca", now=NOW)
    issued = ca.issue(_csr(), now=NOW)
    crl = ca.revoke(ca.intermediate.serial_number, now=NOW, reason="cACompromise")
    with pytest.raises(ChainError) as info:
        validate_chain(
            issued.chain,
            TrustAnchors(certificates=(ca.root,)),
            at=NOW,
            crls=[crl.public_bytes(serialization.Encoding.DER)],
            crl_signers=[ca.sti_pa],
        )
    assert info.value.reason is Reason.CERT_REVOKED
    assert info.value.fields["depth"] == 1


def test_crl_renewal_and_reopen(ca: TestCa) -> None:
    first = ca.publish_crl(now=NOW)
    reopened = TestCa.open(ca.directory)
    second = reopened.publish_crl(now=NOW + timedelta(hours=1), days=2)
    number = x509.CRLNumber
    assert (
        second.extensions.get_extension_for_class(number).value.crl_number
        == first.extensions.get_extension_for_class(number).value.crl_number + 1
    )
    assert second.next_update_utc == NOW + timedelta(hours=1, days=2)
    assert x509.load_pem_x509_crl((ca.directory / "crl.pem").read_bytes()) == second


def test_trust_list(ca: TestCa, tmp_path: Path) -> None:
    ca.write_trust_list(now=NOW, path=tmp_path / "tl.jwt", days=10)
    trust = read_trust_list((tmp_path / "tl.jwt").read_bytes(), signer=ca.sti_pa, now=NOW)
    assert trust.signature_checked
    assert trust.certificates == (ca.root,)
    assert trust.expires_at == int((NOW + timedelta(days=10)).timestamp())
    default = read_trust_list(
        (ca.directory / "trust-list.jwt").read_bytes(), signer=ca.sti_pa, now=NOW
    )
    assert default.certificates == (ca.root,)
    with pytest.raises(Exception, match="signature"):
        read_trust_list((tmp_path / "tl.jwt").read_bytes(), signer=ca.root, now=NOW)


def test_the_trust_loader_accepts_our_trust_list(ca: TestCa) -> None:
    """``shaken ca trust-list`` output, read the way the verifier reads trust at start-up."""
    from shaken.adapters.trust_loader import TrustSources, load_trust

    sources = TrustSources(
        trust_list=ca.directory / "trust-list.jwt", sti_pa_cert=ca.directory / "sti-pa.pem"
    )
    loaded = load_trust(sources, now=NOW)
    assert loaded.anchors == (ca.root,)
    assert loaded.crl_signers == (ca.sti_pa,)  # the STI-PA also signs the SHAKEN CRL
    assert "signature checked" in loaded.source


def test_init_refuses_a_used_directory_and_open_a_stranger(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(ConfigurationError, match="not empty"):
        TestCa.init(tmp_path / "busy", now=NOW)
    with pytest.raises(ConfigurationError, match="not a CA directory"):
        TestCa.open(tmp_path)
    with pytest.raises(ConfigurationError, match="end with"):
        CaSettings(repository_url="https://example.test")


def test_parse_serial() -> None:
    assert parse_serial("0x1A2b") == 0x1A2B
    assert parse_serial("1a:2b") == 0x1A2B
    with pytest.raises(ConfigurationError):
        parse_serial("xyz")


# --------------------------------------------------------------------------------------------
# openssl


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=30, check=False)


@needs_openssl
def test_openssl_verifies_what_we_issue(ca: TestCa) -> None:
    issued = ca.issue(_csr(), now=NOW)
    proc = openssl(
        "verify",
        "-x509_strict",
        "-CAfile",
        str(ca.directory / "root.pem"),
        "-untrusted",
        str(ca.directory / "intermediate.pem"),
        str(issued.path),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith(": OK")


@needs_openssl
def test_openssl_verifies_a_delegate_chain(ca: TestCa) -> None:
    issued = ca.issue(_csr(), now=NOW, tn_entries=(TnRange(start="12025550100", count=100),))
    proc = openssl(
        "verify",
        "-x509_strict",
        "-CAfile",
        str(ca.directory / "root.pem"),
        "-untrusted",
        str(issued.chain_path),
        str(issued.path),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_openssl
def test_openssl_refuses_another_root(ca: TestCa, tmp_path: Path) -> None:
    stranger = TestCa.init(tmp_path / "other", now=NOW)
    issued = ca.issue(_csr(), now=NOW)
    proc = openssl(
        "verify",
        "-x509_strict",
        "-CAfile",
        str(stranger.directory / "root.pem"),
        "-untrusted",
        str(ca.directory / "intermediate.pem"),
        str(issued.path),
    )
    assert proc.returncode != 0


@needs_openssl
def test_openssl_checks_the_crl_signature(ca: TestCa) -> None:
    ca.publish_crl(now=NOW)
    crl = str(ca.directory / "crl.der")
    ok = openssl(
        "crl",
        "-verify",
        "-inform",
        "DER",
        "-in",
        crl,
        "-noout",
        "-CAfile",
        str(ca.directory / "sti-pa.pem"),
    )
    assert ok.returncode == 0 and "verify OK" in ok.stdout + ok.stderr, ok.stdout + ok.stderr
    wrong = openssl(
        "crl",
        "-verify",
        "-inform",
        "DER",
        "-in",
        crl,
        "-noout",
        "-CAfile",
        str(ca.directory / "root.pem"),
    )
    assert wrong.returncode != 0 and "verify OK" not in wrong.stdout + wrong.stderr
