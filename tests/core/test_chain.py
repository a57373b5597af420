"""Path validation at an explicit time, CRLs (direct and the STI-PA indirect CRL), TN authority."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shaken.core.certs import (
    TNAUTHLIST_OID,
    Spc,
    Tn,
    TnRange,
    legacy_tbs_certificate_bytes,
    load_certificates,
)
from shaken.core.chain import (
    TrustAnchors,
    ValidatedChain,
    check_delegation,
    check_tn_scope,
    require_tnauthlist,
    validate_chain,
)
from shaken.core.errors import ChainError, ConfigurationError
from shaken.core.reasons import Reason
from shaken.testing import StiPki, make_sti_pki

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki() -> StiPki:
    return make_sti_pki(NOW)


def _validate(pki: StiPki, at: datetime = NOW, **kwargs: object) -> ValidatedChain:
    return validate_chain([pki.leaf, pki.intermediate], pki.trust_anchors, at=at, **kwargs)  # type: ignore[arg-type]


def _reason(excinfo: pytest.ExceptionInfo[ChainError]) -> Reason:
    return excinfo.value.reason


# ------------------------------------------------------------------ trust and time


def test_valid_chain_ends_at_the_anchor(pki: StiPki) -> None:
    chain = _validate(pki)
    assert chain.certificates == (pki.leaf, pki.intermediate, pki.root)
    assert chain.leaf == pki.leaf
    assert chain.anchor == pki.root


def test_expired_leaf(pki: StiPki) -> None:
    at = NOW + timedelta(days=366)
    with pytest.raises(ChainError) as info:
        _validate(pki, at)
    assert _reason(info) is Reason.CERT_EXPIRED
    fields = info.value.fields
    assert fields["depth"] == 0
    assert fields["subject"] == "CN=SHAKEN 1234,O=Example Telecom,C=US"
    assert fields["not_after"] == pki.leaf.not_valid_after_utc
    assert fields["not_before"] == pki.leaf.not_valid_before_utc
    assert fields["at"] == at
    assert "expired" in info.value.detail


def test_expired_intermediate() -> None:
    pki = make_sti_pki(NOW, intermediate_validity=(timedelta(days=30), timedelta(days=10)))
    with pytest.raises(ChainError) as info:
        _validate(pki, NOW + timedelta(days=20))
    assert _reason(info) is Reason.CERT_EXPIRED
    assert info.value.fields["depth"] == 1
    assert "Intermediate" in info.value.fields["subject"]


def test_expired_root() -> None:
    pki = make_sti_pki(NOW, root_validity=(timedelta(days=30), timedelta(days=10)))
    with pytest.raises(ChainError) as info:
        _validate(pki, NOW + timedelta(days=20))
    assert _reason(info) is Reason.CERT_EXPIRED
    assert info.value.fields["depth"] == 2


def test_not_yet_valid(pki: StiPki) -> None:
    with pytest.raises(ChainError) as info:
        _validate(pki, NOW - timedelta(days=2))
    assert _reason(info) is Reason.CERT_EXPIRED
    assert "not yet valid" in info.value.detail
    assert info.value.fields["depth"] == 0


def test_validity_edges_are_inclusive(pki: StiPki) -> None:
    _validate(pki, pki.leaf.not_valid_before_utc)
    _validate(pki, pki.leaf.not_valid_after_utc)


def test_untrusted_root(pki: StiPki) -> None:
    other = make_sti_pki(NOW)
    with pytest.raises(ChainError) as info:
        validate_chain([pki.leaf, pki.intermediate], other.trust_anchors, at=NOW)
    assert _reason(info) is Reason.CERT_UNTRUSTED
    assert info.value.fields["subject"] == "CN=SHAKEN 1234,O=Example Telecom,C=US"
    assert info.value.fields["cause"]


def test_expired_but_also_untrusted_is_untrusted(pki: StiPki) -> None:
    other = make_sti_pki(NOW)
    with pytest.raises(ChainError) as info:
        validate_chain(
            [pki.leaf, pki.intermediate], other.trust_anchors, at=NOW + timedelta(days=400)
        )
    assert _reason(info) is Reason.CERT_UNTRUSTED


def test_missing_intermediate(pki: StiPki) -> None:
    with pytest.raises(ChainError) as info:
        validate_chain([pki.leaf], pki.trust_anchors, at=NOW)
    assert _reason(info) is Reason.CERT_UNTRUSTED


def test_intermediates_in_any_order(pki: StiPki) -> None:
    delegation = pki.delegate((TnRange(start="2025550100", count=100),))
    chain = validate_chain(
        [delegation.leaf, pki.intermediate, delegation.ca], pki.trust_anchors, at=NOW
    )
    assert chain.certificates == (delegation.leaf, delegation.ca, pki.intermediate, pki.root)


def test_extra_unrelated_certificates_are_ignored(pki: StiPki) -> None:
    other = make_sti_pki(NOW)
    chain = validate_chain(
        [pki.leaf, other.intermediate, other.leaf, pki.intermediate], pki.trust_anchors, at=NOW
    )
    assert chain.certificates == (pki.leaf, pki.intermediate, pki.root)


def test_forged_leaf_signature_is_untrusted(pki: StiPki) -> None:
    # Same names and extensions, signed by a key the intermediate does not hold.
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    forged = (
        x509.CertificateBuilder()
        .subject_name(pki.leaf.subject)
        .issuer_name(pki.leaf.issuer)
        .public_key(rogue_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(rogue_key, hashes.SHA256())
    )
    with pytest.raises(ChainError) as info:
        validate_chain([forged, pki.intermediate], pki.trust_anchors, at=NOW)
    assert _reason(info) is Reason.CERT_UNTRUSTED


def test_leaf_as_issuer_is_rejected(pki: StiPki) -> None:
    # A certificate "issued" by the SP's leaf key: cA FALSE must stop the path.
    key = ec.generate_private_key(ec.SECP256R1())
    child = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=SHAKEN 9999,O=Child,C=US"))
        .issuer_name(pki.leaf.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(pki.leaf_key, hashes.SHA256())
    )
    with pytest.raises(ChainError) as info:
        validate_chain([child, pki.leaf, pki.intermediate], pki.trust_anchors, at=NOW)
    assert _reason(info) is Reason.CERT_UNTRUSTED


def test_critical_certificate_policies_do_not_break_the_path(pki: StiPki) -> None:
    # Real STI leaves mark CertificatePolicies critical; the verifier must still process them.
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=SHAKEN 1234,O=Example,C=US"))
        .issuer_name(pki.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.CertificatePolicies(
                [x509.PolicyInformation(x509.ObjectIdentifier("2.16.840.1.114569.1.1.4"), None)]
            ),
            critical=True,
        )
        .add_extension(
            x509.UnrecognizedExtension(TNAUTHLIST_OID, bytes.fromhex("3008a006160431323334")),
            critical=False,
        )
        .sign(pki.intermediate_key, hashes.SHA256())
    )
    assert validate_chain([leaf, pki.intermediate], pki.trust_anchors, at=NOW).leaf == leaf


def test_naive_time_is_a_configuration_error(pki: StiPki) -> None:
    with pytest.raises(ConfigurationError):
        _validate(pki, datetime(2025, 3, 1, 12, 0))


def test_empty_chain_is_a_configuration_error(pki: StiPki) -> None:
    with pytest.raises(ConfigurationError):
        validate_chain([], pki.trust_anchors, at=NOW)


def test_trust_anchors_construction(pki: StiPki) -> None:
    with pytest.raises(ConfigurationError):
        TrustAnchors(certificates=())
    with pytest.raises(ConfigurationError):
        TrustAnchors.from_pem(b"no certificates here")
    anchors = TrustAnchors.from_pem(pki.root_pem + make_sti_pki(NOW).root_pem)
    assert len(anchors.certificates) == 2
    assert anchors.certificates[0] == pki.root


def test_aware_non_utc_time_is_converted(pki: StiPki) -> None:
    from datetime import timezone

    eastern = timezone(timedelta(hours=-5))
    # pki.leaf expires at NOW + 365 days: one hour before that, in UTC-5, is still valid.
    at = (pki.leaf.not_valid_after_utc - timedelta(hours=1)).astimezone(eastern)
    _validate(pki, at)
    with pytest.raises(ChainError):
        _validate(pki, (pki.leaf.not_valid_after_utc + timedelta(hours=1)).astimezone(eastern))


# ------------------------------------------------------------------ CRLs


def test_revoked_leaf_via_direct_crl(pki: StiPki) -> None:
    crl = pki.crl([pki.leaf.serial_number])
    with pytest.raises(ChainError) as info:
        _validate(pki, crls=[crl])
    assert _reason(info) is Reason.CERT_REVOKED
    assert info.value.fields["depth"] == 0
    assert info.value.fields["serial"] == pki.leaf.serial_number


def test_direct_crl_in_pem(pki: StiPki) -> None:
    crl = x509.load_der_x509_crl(pki.crl([pki.leaf.serial_number]))
    with pytest.raises(ChainError) as info:
        _validate(pki, crls=[crl.public_bytes(serialization.Encoding.PEM)])
    assert _reason(info) is Reason.CERT_REVOKED


def test_crl_not_listing_the_leaf_passes(pki: StiPki) -> None:
    _validate(pki, crls=[pki.crl([12345])])


def test_revoked_intermediate_via_sti_pa_crl(pki: StiPki) -> None:
    crl = pki.sti_pa_crl([pki.intermediate.serial_number])
    with pytest.raises(ChainError) as info:
        _validate(pki, crls=[crl], crl_signers=[pki.sti_pa])
    assert _reason(info) is Reason.CERT_REVOKED
    assert info.value.fields["depth"] == 1


def test_indirect_crl_with_crl_issuer(pki: StiPki) -> None:
    crl = pki.sti_pa_crl([pki.leaf.serial_number])
    with pytest.raises(ChainError) as info:
        _validate(pki, crls=[crl], crl_signers=[pki.sti_pa])
    assert _reason(info) is Reason.CERT_REVOKED
    assert info.value.fields["depth"] == 0
    # The STI-PA is also accepted when it is one of the trust anchors.
    anchors = TrustAnchors(certificates=(pki.root, pki.sti_pa))
    with pytest.raises(ChainError):
        validate_chain([pki.leaf, pki.intermediate], anchors, at=NOW, crls=[crl])


def test_indirect_crl_needs_a_trusted_signer(pki: StiPki) -> None:
    # Without the STI-PA certificate nobody vouches for the CRL: it does not apply.
    _validate(pki, crls=[pki.sti_pa_crl([pki.leaf.serial_number])])


def test_indirect_crl_from_an_issuer_not_named_in_crldp(pki: StiPki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string("CN=Another CRL Signer,O=Example (TEST ONLY),C=US")
    signer = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name)
        .last_update(NOW)
        .next_update(NOW + timedelta(days=1))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(pki.leaf.serial_number)
            .revocation_date(NOW)
            .build()
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    # A trusted signer, but the leaf's CRLDP names the STI-PA as cRLIssuer, not this one.
    _validate(pki, crls=[crl], crl_signers=[signer])


def test_indirect_crl_signed_by_an_impostor_of_the_sti_pa(pki: StiPki) -> None:
    # Another PKI's STI-PA has the same name but not the trusted key.
    impostor = make_sti_pki(NOW)
    assert impostor.sti_pa.subject == pki.sti_pa.subject
    crl = impostor.sti_pa_crl([pki.leaf.serial_number])
    _validate(pki, crls=[crl], crl_signers=[pki.sti_pa])


def test_crl_with_a_bad_signature_is_ignored(pki: StiPki) -> None:
    # Issuer name of the intermediate, signed by another key.
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.intermediate.subject)
        .last_update(NOW)
        .next_update(NOW + timedelta(days=1))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(pki.leaf.serial_number)
            .revocation_date(NOW)
            .build()
        )
    )
    forged = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    _validate(pki, crls=[forged.public_bytes(serialization.Encoding.DER)])
    with pytest.raises(ChainError) as info:
        _validate(pki, crls=[forged.public_bytes(serialization.Encoding.DER)], require_crl=True)
    assert _reason(info) is Reason.CERT_UNTRUSTED
    assert "no CRL" in info.value.detail


def test_stale_crl(pki: StiPki) -> None:
    stale = pki.sti_pa_crl([], at=NOW - timedelta(days=3), next_update=NOW - timedelta(days=2))
    _validate(pki, crls=[stale], crl_signers=[pki.sti_pa])  # not required: nothing to say
    with pytest.raises(ChainError) as info:
        _validate(pki, crls=[stale], crl_signers=[pki.sti_pa], require_crl=True)
    assert _reason(info) is Reason.CERT_UNTRUSTED
    assert "nextUpdate" in info.value.detail


def test_stale_crl_listing_the_serial_still_revokes(pki: StiPki) -> None:
    stale = pki.sti_pa_crl(
        [pki.leaf.serial_number], at=NOW - timedelta(days=3), next_update=NOW - timedelta(days=2)
    )
    with pytest.raises(ChainError) as info:
        _validate(pki, crls=[stale], crl_signers=[pki.sti_pa])
    assert _reason(info) is Reason.CERT_REVOKED


def test_require_crl_without_crl(pki: StiPki) -> None:
    with pytest.raises(ChainError) as info:
        _validate(pki, require_crl=True)
    assert _reason(info) is Reason.CERT_UNTRUSTED
    assert info.value.fields["depth"] == 0


def test_require_crl_satisfied_by_the_sti_pa_crl(pki: StiPki) -> None:
    chain = _validate(pki, crls=[pki.sti_pa_crl([])], crl_signers=[pki.sti_pa], require_crl=True)
    assert chain.leaf == pki.leaf


def test_require_crl_checks_the_intermediate_too(pki: StiPki) -> None:
    # A direct CRL covers the leaf only; the intermediate (issued by the root) is uncovered.
    with pytest.raises(ChainError) as info:
        _validate(pki, crls=[pki.crl([])], require_crl=True)
    assert info.value.fields["depth"] == 1


def test_malformed_crl(pki: StiPki) -> None:
    good = pki.sti_pa_crl([])
    _validate(pki, crls=[b"garbage", good], crl_signers=[pki.sti_pa])
    with pytest.raises(ChainError) as info:
        _validate(pki, crls=[b"garbage", good], crl_signers=[pki.sti_pa], require_crl=True)
    assert _reason(info) is Reason.CERT_UNTRUSTED
    assert "does not parse" in info.value.detail


# ------------------------------------------------------------------ TN authority


def test_spc_only_chain_imposes_no_tn_check(pki: StiPki) -> None:
    chain = _validate(pki)
    check_tn_scope(chain, "12025550100")
    check_delegation(chain)
    assert require_tnauthlist(chain.leaf).spc == "1234"


def test_delegate_in_and_out_of_scope(pki: StiPki) -> None:
    delegation = pki.delegate((TnRange(start="12025550100", count=100),))
    chain = validate_chain(
        [delegation.leaf, delegation.ca, pki.intermediate], pki.trust_anchors, at=NOW
    )
    check_delegation(chain)
    check_tn_scope(chain, "12025550100")
    check_tn_scope(chain, "12025550199")
    with pytest.raises(ChainError) as info:
        check_tn_scope(chain, "12025550200")
    assert _reason(info) is Reason.TN_OUT_OF_SCOPE
    assert info.value.fields == {
        "tn": "12025550200",
        "depth": 0,
        "subject": delegation.leaf.subject.rfc4514_string(),
    }


def test_parent_scope_limits_the_child(pki: StiPki) -> None:
    # The delegation CA allows fewer numbers than the leaf claims: both the encompassing rule
    # and the per-level scope check catch it.
    delegation = pki.delegate(
        (TnRange(start="12025550100", count=100),),
        ca_entries=(Spc(code="1234"), TnRange(start="12025550100", count=10)),
    )
    chain = validate_chain(
        [delegation.leaf, delegation.ca, pki.intermediate], pki.trust_anchors, at=NOW
    )
    with pytest.raises(ChainError) as info:
        check_delegation(chain)
    assert _reason(info) is Reason.CERT_UNTRUSTED
    assert info.value.fields["depth"] == 0
    check_tn_scope(chain, "12025550105")
    with pytest.raises(ChainError) as scope:
        check_tn_scope(chain, "12025550150")
    assert scope.value.fields["depth"] == 1


def test_tn_scoped_leaf_without_delegation() -> None:
    pki = make_sti_pki(NOW, tn_entries=(Spc(code="1234"), Tn(number="12025550100")))
    chain = _validate(pki)
    check_tn_scope(chain, "12025550100")
    with pytest.raises(ChainError) as info:
        check_tn_scope(chain, "12025550101")
    assert _reason(info) is Reason.TN_OUT_OF_SCOPE


def _leaf_with_tnauthlist(pki: StiPki, value: bytes | None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=SHAKEN 1234,O=Example,C=US"))
        .issuer_name(pki.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if value is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(TNAUTHLIST_OID, value), critical=False
        )
    return builder.sign(pki.intermediate_key, hashes.SHA256())


def test_require_tnauthlist_absent_or_malformed(pki: StiPki) -> None:
    with pytest.raises(ChainError) as absent:
        require_tnauthlist(_leaf_with_tnauthlist(pki, None))
    assert _reason(absent) is Reason.CERT_NO_TNAUTHLIST
    with pytest.raises(ChainError) as malformed:
        require_tnauthlist(_leaf_with_tnauthlist(pki, bytes.fromhex("300613043632324b")))
    assert _reason(malformed) is Reason.CERT_NO_TNAUTHLIST
    assert "bare PrintableString" in malformed.value.detail


def test_malformed_tnauthlist_fails_scope_closed(pki: StiPki) -> None:
    leaf = _leaf_with_tnauthlist(pki, bytes.fromhex("3008a006163836374a"))
    chain = validate_chain([leaf, pki.intermediate], pki.trust_anchors, at=NOW)
    with pytest.raises(ChainError) as info:
        check_tn_scope(chain, "12025550100")
    assert _reason(info) is Reason.TN_OUT_OF_SCOPE


def test_delegation_requires_aki_to_match_parent_ski(pki: StiPki) -> None:
    delegation = pki.delegate((Tn(number="12025550100"),))
    # Re-issue the delegate without an AKI: same issuer key, so the path still validates.
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(delegation.leaf.subject)
        .issuer_name(delegation.ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.UnrecognizedExtension(
                TNAUTHLIST_OID,
                delegation.leaf.extensions.get_extension_for_oid(TNAUTHLIST_OID).value.value,  # type: ignore[attr-defined]
            ),
            critical=False,
        )
        .sign(delegation.ca_key, hashes.SHA256())
    )
    chain = validate_chain([leaf, delegation.ca, pki.intermediate], pki.trust_anchors, at=NOW)
    with pytest.raises(ChainError) as info:
        check_delegation(chain)
    assert "AKI" in info.value.detail


# ------------------------------------------------------------------ OpenSSL agrees


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_verifies_the_generated_pki(pki: StiPki, tmp_path: Path) -> None:
    (tmp_path / "root.pem").write_bytes(pki.root_pem)
    (tmp_path / "inter.pem").write_bytes(pki.intermediate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(pki.leaf.public_bytes(serialization.Encoding.PEM))
    command = [
        "openssl",
        "verify",
        "-x509_strict",
        "-attime",
        str(int(NOW.timestamp())),
        "-CAfile",
        str(tmp_path / "root.pem"),
        "-untrusted",
        str(tmp_path / "inter.pem"),
        str(tmp_path / "leaf.pem"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")
    # And OpenSSL rejects it once the leaf has expired, as validate_chain does.
    command[4] = str(int((NOW + timedelta(days=366)).timestamp()))
    expired = subprocess.run(command, capture_output=True, text=True, check=False)
    assert expired.returncode != 0


# ------------------------------------------------------------------ legacy NULL-parameter CAs


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _legacy_signed(cert: x509.Certificate, issuer_key: ec.EllipticCurvePrivateKey) -> bytes:
    """``cert`` re-signed the way some STI-CAs do: ecdsa-with-SHA256 with NULL parameters."""
    tbs = legacy_tbs_certificate_bytes(cert)
    assert tbs is not None
    signature = issuer_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    algorithm = bytes.fromhex("300c06082a8648ce3d0403020500")
    return _der(0x30, tbs + algorithm + _der(0x03, b"\x00" + signature))


def test_legacy_intermediate_under_an_anchor(pki: StiPki) -> None:
    (intermediate,) = load_certificates(_legacy_signed(pki.intermediate, pki.root_key))
    assert intermediate.tbs_certificate_bytes == pki.intermediate.tbs_certificate_bytes
    chain = validate_chain([pki.leaf, intermediate], pki.trust_anchors, at=NOW)
    assert chain.certificates == (pki.leaf, intermediate, pki.root)
    with pytest.raises(ChainError) as revoked:
        validate_chain(
            [pki.leaf, intermediate],
            pki.trust_anchors,
            at=NOW,
            crls=[pki.sti_pa_crl([intermediate.serial_number])],
            crl_signers=[pki.sti_pa],
        )
    assert revoked.value.reason is Reason.CERT_REVOKED


def test_legacy_leaf(pki: StiPki) -> None:
    (leaf,) = load_certificates(_legacy_signed(pki.leaf, pki.intermediate_key))
    chain = validate_chain([leaf, pki.intermediate], pki.trust_anchors, at=NOW)
    assert chain.certificates == (leaf, pki.intermediate, pki.root)
    with pytest.raises(ChainError) as info:
        validate_chain([leaf, pki.intermediate], pki.trust_anchors, at=NOW + timedelta(days=400))
    assert info.value.reason is Reason.CERT_EXPIRED


def test_legacy_encoding_does_not_bypass_signatures(pki: StiPki) -> None:
    rogue = ec.generate_private_key(ec.SECP256R1())
    (intermediate,) = load_certificates(_legacy_signed(pki.intermediate, rogue))
    with pytest.raises(ChainError) as info:
        validate_chain([pki.leaf, intermediate], pki.trust_anchors, at=NOW)
    assert info.value.reason is Reason.CERT_UNTRUSTED
    (leaf,) = load_certificates(_legacy_signed(pki.leaf, rogue))
    with pytest.raises(ChainError) as info:
        validate_chain([leaf, pki.intermediate], pki.trust_anchors, at=NOW)
    assert info.value.reason is Reason.CERT_UNTRUSTED


def test_legacy_leaf_cannot_be_issued_by_a_non_ca(pki: StiPki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    child = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=SHAKEN 9999,O=Child,C=US"))
        .issuer_name(pki.leaf.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(pki.leaf_key, hashes.SHA256())
    )
    (legacy_child,) = load_certificates(_legacy_signed(child, pki.leaf_key))
    with pytest.raises(ChainError) as info:
        validate_chain([legacy_child, pki.leaf, pki.intermediate], pki.trust_anchors, at=NOW)
    assert info.value.reason is Reason.CERT_UNTRUSTED
