"""The test kit's STI PKI follows the ATIS-1000080 v005 profile and is usable end to end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shaken.core.certs import (
    CertRole,
    Spc,
    Tn,
    TNAuthList,
    TnRange,
    crl_distribution_points,
    crl_issuer_names,
    infer_role,
    load_certificates,
    profile_findings,
    tnauthlist_of,
)
from shaken.core.chain import check_delegation, validate_chain
from shaken.core.errors import ConfigurationError
from shaken.testing import SHAKEN_CP_1_4, StiPki, make_sti_pki

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki() -> StiPki:
    return make_sti_pki(NOW, spc="709J", org="Example Carrier")


def test_every_certificate_passes_the_profile(pki: StiPki) -> None:
    assert profile_findings(pki.root, role=CertRole.ROOT) == ()
    assert profile_findings(pki.intermediate, role=CertRole.INTERMEDIATE, issuer=pki.root) == ()
    assert profile_findings(pki.leaf, role=CertRole.LEAF, issuer=pki.intermediate) == ()


def test_roles_and_names(pki: StiPki) -> None:
    assert infer_role(pki.root) is CertRole.ROOT
    assert infer_role(pki.intermediate) is CertRole.INTERMEDIATE
    assert infer_role(pki.leaf) is CertRole.LEAF
    assert pki.leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "SHAKEN 709J"
    assert pki.leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "Example Carrier"
    )
    for ca in (pki.root, pki.intermediate, pki.sti_pa):
        assert "TEST" in ca.subject.rfc4514_string()
    assert "ROOT" in pki.root.subject.rfc4514_string()


def test_exact_profile_fields(pki: StiPki) -> None:
    for cert in (pki.root, pki.intermediate, pki.leaf):
        assert cert.version is x509.Version.v3
        assert cert.serial_number.bit_length() >= 64
        assert cert.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert isinstance(key.curve, ec.SECP256R1)
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).critical
        assert cert.extensions.get_extension_for_class(x509.KeyUsage).critical
    leaf_ku = pki.leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert leaf_ku.digital_signature and not leaf_ku.key_cert_sign
    for ca in (pki.root, pki.intermediate):
        ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.key_cert_sign and not ku.digital_signature and not ku.crl_sign
    for cert in (pki.intermediate, pki.leaf):
        policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
        assert [p.policy_identifier.dotted_string for p in policies] == [SHAKEN_CP_1_4]
        assert crl_distribution_points(cert) == ("https://sti-pa.example.test/crl",)
        assert crl_issuer_names(cert) == (pki.sti_pa.subject,)
    assert tnauthlist_of(pki.leaf) == TNAuthList(entries=(Spc(code="709J"),))
    assert tnauthlist_of(pki.intermediate) is None


def test_validity_is_around_now(pki: StiPki) -> None:
    assert pki.leaf.not_valid_before_utc == NOW - timedelta(days=1)
    assert pki.leaf.not_valid_after_utc == NOW + timedelta(days=365)
    for ca in (pki.root, pki.intermediate):
        assert ca.not_valid_before_utc <= NOW - timedelta(days=365)
        assert ca.not_valid_after_utc >= NOW + timedelta(days=365 * 4)


def test_pem_outputs(pki: StiPki) -> None:
    assert load_certificates(pki.chain_pem) == (pki.leaf, pki.intermediate)
    assert load_certificates(pki.root_pem) == (pki.root,)
    assert load_certificates(pki.sti_pa_pem) == (pki.sti_pa,)
    key = serialization.load_pem_private_key(pki.leaf_key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == pki.leaf.public_key()
    assert pki.trust_anchors.certificates == (pki.root,)


def test_each_call_makes_fresh_keys() -> None:
    a, b = make_sti_pki(NOW), make_sti_pki(NOW)
    assert a.leaf.public_key() != b.leaf.public_key()
    assert a.root.serial_number != b.root.serial_number


def test_crls(pki: StiPki) -> None:
    crl = x509.load_der_x509_crl(pki.crl([pki.leaf.serial_number, 7]))
    assert crl.issuer == pki.intermediate.subject
    assert crl.is_signature_valid(pki.intermediate.public_key())  # type: ignore[arg-type]
    assert crl.last_update_utc == NOW
    assert crl.next_update_utc == NOW + timedelta(days=1)
    assert {r.serial_number for r in crl} == {pki.leaf.serial_number, 7}
    pa = x509.load_der_x509_crl(
        pki.sti_pa_crl(at=NOW - timedelta(hours=1), next_update=NOW + timedelta(hours=5))
    )
    assert pa.issuer == pki.sti_pa.subject
    assert pa.is_signature_valid(pki.sti_pa.public_key())  # type: ignore[arg-type]
    assert len(pa) == 0
    assert pa.next_update_utc == NOW + timedelta(hours=5)


def test_tn_scoped_leaf() -> None:
    entries = (Spc(code="1234"), TnRange(start="12025550100", count=100))
    pki = make_sti_pki(NOW, tn_entries=entries)
    assert tnauthlist_of(pki.leaf) == TNAuthList(entries=entries)
    assert {f.rule for f in profile_findings(pki.leaf)} == {"atis_tn_auth_list"}


def test_delegate(pki: StiPki) -> None:
    delegation = pki.delegate((Tn(number="12025550100"),))
    assert load_certificates(delegation.chain_pem) == (
        delegation.leaf,
        delegation.ca,
        pki.intermediate,
    )
    assert tnauthlist_of(delegation.ca) == TNAuthList(
        entries=(Spc(code="709J"), Tn(number="12025550100"))
    )
    assert infer_role(delegation.ca) is CertRole.INTERMEDIATE
    chain = validate_chain(load_certificates(delegation.chain_pem), pki.trust_anchors, at=NOW)
    check_delegation(chain)
    key = serialization.load_pem_private_key(delegation.leaf_key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == delegation.leaf.public_key()
    with pytest.raises(ConfigurationError):
        pki.delegate(())


def test_naive_now_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        make_sti_pki(datetime(2025, 3, 1))
