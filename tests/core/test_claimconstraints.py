"""JWTClaimConstraints (RFC 8226 section 8) and EnhancedJWTClaimConstraints (RFC 9118)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shaken.core.claimconstraints import (
    OID_ENHANCED_JWT_CLAIM_CONSTRAINTS,
    OID_JWT_CLAIM_CONSTRAINTS,
    ClaimConstraintError,
    ClaimConstraints,
    constraints_of,
    decode_constraints,
    encode_constraints,
    evaluate,
)
from tests.core.test_certs import RFC9118_CERT

BASE = {"iat": 1, "orig": {"tn": "1"}, "dest": {"tn": ["2"]}}


def _cert(*extensions: tuple[x509.ObjectIdentifier, bytes]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SHAKEN 1234")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
    )
    for oid, der in extensions:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, der), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_rfc9118_example_certificate_decodes_and_reencodes() -> None:
    cert = x509.load_pem_x509_certificate(RFC9118_CERT)
    constraints = constraints_of(cert)
    assert constraints == ClaimConstraints(
        must_include=("confidence",),
        permitted={"confidence": ("high", "medium")},
        must_exclude=("priority",),
        enhanced=True,
    )
    raw = cert.extensions.get_extension_for_oid(OID_ENHANCED_JWT_CLAIM_CONSTRAINTS).value
    assert isinstance(raw, x509.UnrecognizedExtension)
    assert encode_constraints(constraints) == raw.value


def test_rfc9118_example_semantics() -> None:
    cert = x509.load_pem_x509_certificate(RFC9118_CERT)
    constraints = constraints_of(cert)
    assert constraints is not None
    assert evaluate(constraints, {**BASE, "confidence": "high"}) == []
    rules = [v.rule for v in evaluate(constraints, {**BASE, "confidence": "low", "priority": 1})]
    assert rules == ["permittedValues", "mustExclude"]
    assert [v.rule for v in evaluate(constraints, BASE)] == ["mustInclude"]


def test_permitted_json_values_compare_canonically() -> None:
    pinned = ClaimConstraints(
        must_include=("rcd",),
        permitted={"rcd": ('{ "nam" : "Acme Bank", "icn":"https://a/x.png"}',)},
    )
    assert evaluate(pinned, {**BASE, "rcd": {"icn": "https://a/x.png", "nam": "Acme Bank"}}) == []
    broken = evaluate(pinned, {**BASE, "rcd": {"nam": "Acme Bank Fraud"}})
    assert [(v.rule, v.claim) for v in broken] == [("permittedValues", "rcd")]


def test_missing_must_include_means_baseline_claims() -> None:
    pinned = ClaimConstraints(permitted={"crn": ("Appointment",)})
    assert [v.claim for v in evaluate(pinned, {"iat": 1})] == ["orig", "dest"]
    assert evaluate(pinned, BASE) == []  # crn absent: permittedValues do not require it


def test_both_extensions_are_refused() -> None:
    der8226 = encode_constraints(ClaimConstraints(must_include=("rcd",)))
    der9118 = encode_constraints(ClaimConstraints(must_exclude=("rcd",), enhanced=True))
    cert = _cert(
        (OID_JWT_CLAIM_CONSTRAINTS, der8226), (OID_ENHANCED_JWT_CLAIM_CONSTRAINTS, der9118)
    )
    with pytest.raises(ClaimConstraintError, match="RFC 9118 section 6"):
        constraints_of(cert)


def test_must_exclude_of_a_baseline_claim_voids_the_extension() -> None:
    der = encode_constraints(ClaimConstraints(must_exclude=("rcd", "iat"), enhanced=True))
    assert constraints_of(_cert((OID_ENHANCED_JWT_CLAIM_CONSTRAINTS, der))) is None


def test_rfc8226_extension_round_trip() -> None:
    constraints = ClaimConstraints(
        must_include=("rcd", "rcdi"), permitted={"rcdi": ('{"/icn":"sha256-x"}',)}
    )
    cert = _cert((OID_JWT_CLAIM_CONSTRAINTS, encode_constraints(constraints)))
    assert constraints_of(cert) == constraints


@pytest.mark.parametrize(
    "der",
    [b"", b"\x30\x00", b"\x30\x02\xa0\x00", b"\x31\x00", b"\x30\x06\xa0\x04\x30\x02\x16\x00\x00"],
)
def test_malformed_extension_values_are_errors(der: bytes) -> None:
    with pytest.raises(ClaimConstraintError):
        decode_constraints(der, enhanced=True)


def test_must_exclude_needs_the_enhanced_extension() -> None:
    with pytest.raises(ValueError):
        ClaimConstraints(must_exclude=("rcd",))
