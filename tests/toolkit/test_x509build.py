"""The builders make ATIS-1000080 v005 certificates, CSRs with a TNAuthList, RFC 5280 CRLs."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shaken.core.certs import (
    TNAUTHLIST_OID,
    CertRole,
    Spc,
    TNAuthList,
    TnRange,
    profile_findings,
    tnauthlist_of,
)
from shaken.core.chain import TrustAnchors, validate_chain
from shaken.core.errors import ConfigurationError
from shaken.core.jws import generate_private_key
from shaken.toolkit.x509build import (
    SHAKEN_CP_1_4,
    RevokedEntry,
    build_certificate,
    build_crl,
    build_csr,
    build_tls_ca,
    build_tls_server_certificate,
    check_spc,
    random_serial,
    shaken_name,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
START, END = NOW - timedelta(days=1), NOW + timedelta(days=365)


def _hierarchy() -> tuple[
    x509.Certificate, x509.Certificate, x509.Certificate, ec.EllipticCurvePrivateKey
]:
    root_key, inter_key, leaf_key, pa_key = (generate_private_key() for _ in range(4))
    pa = build_certificate(
        subject=shaken_name("TEST STI-PA CRL", "Example STI-PA (TEST ONLY)"),
        public_key=pa_key.public_key(),
        issuer=None,
        issuer_key=pa_key,
        not_before=START,
        not_after=END,
        ca=True,
    )
    root = build_certificate(
        subject=shaken_name("TEST SHAKEN ROOT CA", "Example STI-CA (TEST ONLY)"),
        public_key=root_key.public_key(),
        issuer=None,
        issuer_key=root_key,
        not_before=START,
        not_after=END,
        ca=True,
    )
    inter = build_certificate(
        subject=shaken_name("TEST SHAKEN Intermediate CA", "Example STI-CA (TEST ONLY)"),
        public_key=inter_key.public_key(),
        issuer=root,
        issuer_key=root_key,
        not_before=START,
        not_after=END,
        ca=True,
        crl_url="https://sti-pa.example.test/crl",
        crl_issuer=pa.subject,
    )
    leaf = build_certificate(
        subject=shaken_name("SHAKEN 709J", "Example Carrier"),
        public_key=leaf_key.public_key(),
        issuer=inter,
        issuer_key=inter_key,
        not_before=START,
        not_after=END,
        ca=False,
        crl_url="https://sti-pa.example.test/crl",
        crl_issuer=pa.subject,
        tnauthlist=TNAuthList(entries=(Spc(code="709J"),)),
    )
    return root, inter, leaf, inter_key


def test_hierarchy_has_no_profile_findings_and_validates() -> None:
    root, inter, leaf, _key = _hierarchy()
    assert profile_findings(root, role=CertRole.ROOT) == ()
    assert profile_findings(inter, role=CertRole.INTERMEDIATE, issuer=root) == ()
    assert profile_findings(leaf, role=CertRole.LEAF, issuer=inter) == ()
    chain = validate_chain([leaf, inter], TrustAnchors(certificates=(root,)), at=NOW)
    assert chain.anchor == root


def test_profile_fields_are_exact() -> None:
    root, inter, leaf, _key = _hierarchy()
    for cert in (root, inter, leaf):
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).critical
        assert cert.extensions.get_extension_for_class(x509.KeyUsage).critical
        assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    with pytest.raises(x509.ExtensionNotFound):
        root.extensions.get_extension_for_class(x509.CertificatePolicies)
    with pytest.raises(x509.ExtensionNotFound):
        root.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    for cert in (inter, leaf):
        policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
        assert [p.policy_identifier.dotted_string for p in policies] == [SHAKEN_CP_1_4]
        (point,) = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert point.crl_issuer is not None and len(point.crl_issuer) == 1
    assert tnauthlist_of(leaf) == TNAuthList(entries=(Spc(code="709J"),))
    leaf_tnal = leaf.extensions.get_extension_for_oid(TNAUTHLIST_OID)
    assert not leaf_tnal.critical


def test_serials_carry_64_random_bits() -> None:
    serials = {random_serial() for _ in range(200)}
    assert len(serials) == 200
    assert all(s.bit_length() == 65 for s in serials)  # the fixed top bit above 64 random bits
    low_bits = {s & 0xFFFF for s in serials}
    assert len(low_bits) > 150  # the low bits vary: they are random, not a counter


def test_csr_carries_subject_and_tnauthlist() -> None:
    key = generate_private_key()
    csr = build_csr(key, spc="1234", org="Example SP", country="CA")
    assert csr.is_signature_valid
    attrs = {a.oid: a.value for a in csr.subject}
    assert attrs == {
        NameOID.COMMON_NAME: "SHAKEN 1234",
        NameOID.ORGANIZATION_NAME: "Example SP",
        NameOID.COUNTRY_NAME: "CA",
    }
    ext = csr.extensions.get_extension_for_oid(TNAUTHLIST_OID)
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert ext.value.value.hex() == "3008a0061604" + b"1234".hex()  # standards.md section 3.2


@pytest.mark.parametrize(
    ("spc", "country"),
    [("12a4", "US"), ("", "US"), ("12 4", "US"), ("1234", "usa"), ("1234", "us")],
)
def test_csr_refuses_what_the_profile_forbids(spc: str, country: str) -> None:
    with pytest.raises(ConfigurationError):
        build_csr(generate_private_key(), spc=spc, org="Example", country=country)


def test_check_spc() -> None:
    assert check_spc("709J") == "709J"
    with pytest.raises(ConfigurationError):
        check_spc("709j")


def test_refuses_other_curves_and_naive_times() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    common = {
        "subject": shaken_name("TEST SHAKEN ROOT CA", "Example"),
        "issuer": None,
        "ca": True,
    }
    with pytest.raises(ConfigurationError, match="P-256"):
        build_certificate(
            public_key=p384.public_key(), issuer_key=p384, not_before=START, not_after=END, **common
        )
    key = generate_private_key()
    with pytest.raises(ConfigurationError, match="timezone"):
        build_certificate(
            public_key=key.public_key(),
            issuer_key=key,
            not_before=START.replace(tzinfo=None),
            not_after=END,
            **common,
        )
    with pytest.raises(ConfigurationError, match="after"):
        build_certificate(
            public_key=key.public_key(), issuer_key=key, not_before=END, not_after=START, **common
        )


def test_delegation_ca_and_delegate_keep_tn_scope() -> None:
    root, inter, _leaf, inter_key = _hierarchy()
    ca_key, leaf_key = generate_private_key(), generate_private_key()
    scope = TNAuthList(entries=(Spc(code="709J"), TnRange(start="12025550100", count=100)))
    ca = build_certificate(
        subject=shaken_name("SHAKEN 709J TEST Delegation CA", "Example Carrier"),
        public_key=ca_key.public_key(),
        issuer=inter,
        issuer_key=inter_key,
        not_before=START,
        not_after=END,
        ca=True,
        path_length=0,
        tnauthlist=scope,
    )
    delegate = build_certificate(
        subject=shaken_name("SHAKEN 709J", "Example Carrier"),
        public_key=leaf_key.public_key(),
        issuer=ca,
        issuer_key=ca_key,
        not_before=START,
        not_after=END,
        ca=False,
        tnauthlist=TNAuthList(entries=(TnRange(start="12025550150", count=10),)),
    )
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    child = tnauthlist_of(delegate)
    assert child is not None and scope.encompasses(child)
    validate_chain([delegate, ca, inter], TrustAnchors(certificates=(root,)), at=NOW)


def test_indirect_crl_shape() -> None:
    _root, inter, leaf, _key = _hierarchy()
    pa_key = generate_private_key()
    pa = build_certificate(
        subject=shaken_name("TEST STI-PA CRL", "Example STI-PA (TEST ONLY)"),
        public_key=pa_key.public_key(),
        issuer=None,
        issuer_key=pa_key,
        not_before=START,
        not_after=END,
        ca=True,
    )
    entry = RevokedEntry(
        serial=leaf.serial_number,
        revoked_at=NOW,
        reason=x509.ReasonFlags.key_compromise,
        certificate_issuer=inter.subject,
    )
    crl = build_crl(
        issuer=pa,
        issuer_key=pa_key,
        revoked=[entry],
        this_update=NOW,
        next_update=NOW + timedelta(days=7),
        crl_number=5,
        indirect_url="https://sti-pa.example.test/crl",
    )
    assert crl.is_signature_valid(pa_key.public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 5
    idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    assert idp.critical and idp.value.indirect_crl
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert (
        aki.key_identifier == x509.SubjectKeyIdentifier.from_public_key(pa_key.public_key()).digest
    )
    revoked = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    assert revoked is not None
    issuer_ext = revoked.extensions.get_extension_for_class(x509.CertificateIssuer)
    assert issuer_ext.critical
    assert list(issuer_ext.value) == [x509.DirectoryName(inter.subject)]
    assert revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )
    with pytest.raises(ConfigurationError):
        build_crl(issuer=pa, issuer_key=pa_key, revoked=[], this_update=NOW, next_update=NOW)


def test_tls_certificates_for_loopback() -> None:
    ca_key, key = generate_private_key(), generate_private_key()
    ca = build_tls_ca(ca_key, cn="TEST lab TLS CA", org="Lab", not_before=START, not_after=END)
    server = build_tls_server_certificate(
        key.public_key(),
        hosts=["127.0.0.1", "localhost", "127.0.0.1"],
        org="Lab",
        ca=ca,
        ca_key=ca_key,
        not_before=START,
        not_after=END,
    )
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    server.verify_directly_issued_by(ca)
    with pytest.raises(ConfigurationError):
        build_tls_server_certificate(
            key.public_key(),
            hosts=[],
            org="Lab",
            ca=ca,
            ca_key=ca_key,
            not_before=START,
            not_after=END,
        )
