"""STIR certificates: TNAuthList codec (RFC 8226), loading, and ATIS-1000080 profile findings."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from shaken.core.certs import (
    RULES,
    SHAKEN_POLICY_ARC,
    TNAUTHLIST_OID,
    CertRole,
    Severity,
    Spc,
    StirCertificate,
    Tn,
    TNAuthList,
    TnRange,
    crl_distribution_points,
    crl_issuer_names,
    infer_role,
    issued_over_legacy_encoding,
    legacy_tbs_certificate_bytes,
    load_certificates,
    profile_findings,
    tnauthlist_of,
)
from shaken.core.errors import CertificateError, ConfigurationError, TNAuthListError
from shaken.testing import StiPki, make_sti_pki

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

# standards.md section 3.2 / 5.3 (V-R12)
SPC_1234 = bytes.fromhex("3008a006160431323334")
SPC_709J = bytes.fromhex("3008a00616043730394a")
SPC_RANGE_ONE_B64 = "MCugBxYFYm9ndXOhEjAQFgo1NzE1NTUxMjEyAgIDFKIMFgo3MDM1NTUxMjEy"
SPC_RANGE_ONE_HEX = (
    "302ba0071605626f677573a1123010160a3537313535353132313202020314a20c160a37303335353531323132"
)

# standards.md section 5.3, V-R11: the RFC 9118 section 5 example end-entity certificate.
RFC9118_CERT = b"""-----BEGIN CERTIFICATE-----
MIICpzCCAk2gAwIBAgIUH7Zd3rQ5AsvOlzLnzUHhrVhDSlswCgYIKoZIzj0EAwIw
KTELMAkGA1UEBhMCVVMxGjAYBgNVBAMMEUJPR1VTIFNIQUtFTiBST09UMB4XDTIx
MDcxNTIxNTIxNVoXDTIyMDcxNTIxNTIxNVowbDELMAkGA1UEBhMCVVMxCzAJBgNV
BAgMAlZBMRAwDgYDVQQHDAdIZXJuZG9uMR4wHAYDVQQKDBVCb2d1cyBFeGFtcGxl
IFRlbGVjb20xDTALBgNVBAsMBFZvSVAxDzANBgNVBAMMBlNIQUtFTjBZMBMGByqG
SM49AgEGCCqGSM49AwEHA0IABNR6C6nBWRA/fXTglV03aXkXy8hx9oBttVLhsTZ1
IYVRBao4OZhVf/Xv1a3xLsZ6KfdhuylSeAKuCoSbVGojYDGjggEOMIIBCjAMBgNV
HRMBAf8EAjAAMA4GA1UdDwEB/wQEAwIHgDAdBgNVHQ4EFgQUDlG3dxHyzKL/FZfS
PI7rpuueRbswHwYDVR0jBBgwFoAUlToKtrQeFrwwyXpMj1qu3TQEeoEwQgYJYIZI
AYb4QgENBDUWM1RoaXMgY2VydGlmaWNhdGUgY2Fubm90IGJlIHRydXN0ZWQgZm9y
IGFueSBwdXJwb3NlLjAWBggrBgEFBQcBGgQKMAigBhYEMTIzNDBOBggrBgEFBQcB
IQRCMECgDjAMFgpjb25maWRlbmNloSAwHjAcFgpjb25maWRlbmNlMA4MBGhpZ2gM
Bm1lZGl1baIMMAoWCHByaW9yaXR5MAoGCCqGSM49BAMCA0gAMEUCIQCbNR4QK1um
+0vq2CE1B1/W3avYeREsPi/7RKHffL+5eQIgarHot+X9Rl7SOyNBq5X5JyEMx0SQ
hRLkCY3Zoz2OCNQ=
-----END CERTIFICATE-----
"""


@pytest.fixture(scope="module")
def pki() -> StiPki:
    return make_sti_pki(NOW)


# ------------------------------------------------------------------ DER vectors


def test_spc_1234_vector_decodes_and_encodes() -> None:
    tnal = TNAuthList.from_der(SPC_1234)
    assert tnal.entries == (Spc(code="1234"),)
    assert tnal.spc == "1234"
    assert tnal.spcs == ("1234",)
    assert not tnal.tn_scoped
    assert tnal.to_der() == SPC_1234


def test_spc_709j_vector() -> None:
    tnal = TNAuthList(entries=(Spc(code="709J"),))
    assert tnal.to_der() == SPC_709J
    assert TNAuthList.from_der(SPC_709J) == tnal


@pytest.mark.parametrize("code", ["1", "709J", "OFT01", "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"])
def test_general_spc_rule(code: str) -> None:
    # standards.md 3.2: 30 (L+4) a0 (L+2) 16 L <SPC>
    n = len(code)
    expected = bytes([0x30, n + 4, 0xA0, n + 2, 0x16, n]) + code.encode()
    assert TNAuthList(entries=(Spc(code=code),)).to_der() == expected


def test_spc_range_one_pyasn1_vector() -> None:
    data = base64.b64decode(SPC_RANGE_ONE_B64)
    assert data == bytes.fromhex(SPC_RANGE_ONE_HEX)
    tnal = TNAuthList.from_der(data)
    assert tnal.entries == (
        Spc(code="bogus"),
        TnRange(start="5715551212", count=788),
        Tn(number="7035551212"),
    )
    assert tnal.tn_scoped
    assert tnal.spc == "bogus"
    assert tnal.to_der() == data


def test_rfc9118_example_certificate() -> None:
    (cert,) = load_certificates(RFC9118_CERT)
    assert tnauthlist_of(cert) == TNAuthList(entries=(Spc(code="1234"),))
    stir = StirCertificate.from_x509(cert)
    assert stir.subject == ("CN=SHAKEN,OU=VoIP,O=Bogus Example Telecom,L=Herndon,ST=VA,C=US")
    assert stir.issuer == "CN=BOGUS SHAKEN ROOT,C=US"
    assert stir.spc == "1234"
    assert stir.tnauthlist_error is None
    assert stir.not_before == datetime(2021, 7, 15, 21, 52, 15, tzinfo=UTC)
    assert stir.not_after == datetime(2022, 7, 15, 21, 52, 15, tzinfo=UTC)
    assert stir.serial == 0x1FB65DDEB43902CBCE9732E7CD41E1AD58434A5B
    assert infer_role(cert) is CertRole.LEAF


def test_rfc9118_example_is_an_atis_negative_vector() -> None:
    """standards.md 5.3: no CP, no CRLDP, extra extensions, a CN without the SPC."""
    (cert,) = load_certificates(RFC9118_CERT)
    findings = profile_findings(cert)
    assert {f.rule for f in findings} == {
        "atis_ext_certificate_policies",  # absent
        "atis_ext_crl_distribution",  # absent
        "atis_ext_not_specified",  # Netscape comment + eJWTClaimConstraints
        "atis_subject_cn_spc",  # CN=SHAKEN, SPC 1234
        "atis_issuer_dn",  # issuer has no O
        "shaken_subject_rdn_unknown",  # OU
    }
    by_rule = {f.rule: f for f in findings}
    assert "2.16.840.1.113730.1.13" in by_rule["atis_ext_not_specified"].message
    assert "1.3.6.1.5.5.7.1.33" in by_rule["atis_ext_not_specified"].message
    assert by_rule["shaken_subject_rdn_unknown"].severity is Severity.WARNING
    assert by_rule["atis_subject_cn_spc"].severity is Severity.ERROR
    assert all(f.rule in RULES for f in findings)


# ------------------------------------------------------------------ value rules


@pytest.mark.parametrize(
    ("start", "count"),
    [("10", 91), ("99", 2), ("5", 6), ("0", 11), ("9999999999", 2), ("12", 1), ("12", 0)],
)
def test_invalid_ranges(start: str, count: int) -> None:
    with pytest.raises(ConfigurationError):
        TnRange(start=start, count=count)


@pytest.mark.parametrize(("start", "count"), [("10", 90), ("98", 2), ("0", 10), ("000", 1000)])
def test_ranges_up_to_the_last_number_of_the_same_length(start: str, count: int) -> None:
    tn_range = TnRange(start=start, count=count)
    assert tn_range.contains(start)
    assert tn_range.contains(str(int(start) + count - 1).zfill(len(start)))
    assert not tn_range.contains(str(int(start) + count).zfill(len(start)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start": "12*4", "count": 2},
        {"start": "", "count": 2},
        {"start": "1" * 16, "count": 2},
        {"start": "+1202", "count": 2},
        {"start": "1202", "count": True},
        {"start": "1202", "count": "3"},
    ],
)
def test_range_rejects_malformed_fields(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        TnRange(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("number", ["", "1" * 16, "+12025550100", "1202 555", "abc"])
def test_tn_rejects_non_telephone_numbers(number: str) -> None:
    with pytest.raises(ConfigurationError):
        Tn(number=number)


def test_tn_accepts_star_and_hash() -> None:
    assert Tn(number="*67#").number == "*67#"


@pytest.mark.parametrize("code", ["", "ÄBC"])
def test_spc_must_be_nonempty_ia5(code: str) -> None:
    with pytest.raises(ConfigurationError):
        Spc(code=code)


def test_tnauthlist_needs_entries() -> None:
    with pytest.raises(ConfigurationError):
        TNAuthList(entries=())
    with pytest.raises(ConfigurationError):
        TNAuthList(entries=("1234",))  # type: ignore[arg-type]


def test_der_range_that_lengthens_the_number_is_rejected() -> None:
    # A TNAuthList the ASN.1 accepts but RFC 8226 section 9 forbids: start 10, count 91.
    data = bytes.fromhex("300ba1093007160231300201" + "5b")
    with pytest.raises(TNAuthListError, match="lengthen"):
        TNAuthList.from_der(data)


def test_der_range_count_below_two_is_rejected() -> None:
    data = bytes.fromhex("300ba10930071602313002010" + "1")
    with pytest.raises(TNAuthListError):
        TNAuthList.from_der(data)


# ------------------------------------------------------------------ malformed DER (corpus classes)


@pytest.mark.parametrize(
    ("hexdata", "fragment"),
    [
        ("1604313233344a", "must start with a SEQUENCE (0x30), found IA5String"),
        ("31323334", "ASCII text"),
        ("300613043632324b", "entry 0 is a bare PrintableString"),  # untagged-entry
        ("3008a006163836374a", "overruns"),  # bad-length: the SPC lost its length byte
        ("3008a006160431323334" + "00", "trailing byte"),
        ("", "empty"),
        ("3004a0021300", "wraps PrintableString, expected IA5String"),
        ("30023000", "bare SEQUENCE"),
    ],
)
def test_malformed_der_names_the_defect(hexdata: str, fragment: str) -> None:
    with pytest.raises(TNAuthListError) as info:
        TNAuthList.from_der(bytes.fromhex(hexdata))
    assert fragment in str(info.value)


def test_ber_long_form_length_is_not_der() -> None:
    with pytest.raises(TNAuthListError, match="not DER"):
        TNAuthList.from_der(bytes.fromhex("308108a006160431323334"))


def test_from_der_rejects_non_bytes() -> None:
    with pytest.raises(TNAuthListError):
        TNAuthList.from_der("3008a006160431323334")  # type: ignore[arg-type]


# ------------------------------------------------------------------ hypothesis

_digits = st.text(alphabet="0123456789", min_size=1, max_size=15)
_tn = st.text(alphabet="0123456789#*", min_size=1, max_size=15)
_spc = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), min_size=1, max_size=40)


@st.composite
def _ranges(draw: st.DrawFn) -> TnRange:
    start = draw(_digits)
    room = 10 ** len(start) - int(start)
    if room < 2:
        start = "0" * len(start)
        room = 10 ** len(start)
    count = draw(st.integers(min_value=2, max_value=room))
    return TnRange(start=start, count=count)


_entries = st.one_of(
    st.builds(Spc, code=_spc),
    st.builds(Tn, number=_tn),
    _ranges(),
)


@given(st.lists(_entries, min_size=1, max_size=8))
def test_round_trip_encode_decode(entries: list[Spc | Tn | TnRange]) -> None:
    tnal = TNAuthList(entries=tuple(entries))
    assert TNAuthList.from_der(tnal.to_der()) == tnal


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_tnauthlisterror(data: bytes) -> None:
    try:
        tnal = TNAuthList.from_der(data)
    except TNAuthListError:
        return
    assert tnal.to_der() == data  # anything accepted is canonical DER


@settings(max_examples=500)
@given(st.lists(_entries, min_size=1, max_size=4), st.data())
def test_mutated_encodings_decode_or_raise_tnauthlisterror(
    entries: list[Spc | Tn | TnRange], data: st.DataObject
) -> None:
    encoded = bytearray(TNAuthList(entries=tuple(entries)).to_der())
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        position = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
        encoded[position] = data.draw(st.integers(min_value=0, max_value=255))
    mutated = bytes(encoded[: data.draw(st.integers(min_value=0, max_value=len(encoded)))])
    try:
        tnal = TNAuthList.from_der(mutated)
    except TNAuthListError:
        return
    assert tnal.to_der() == mutated


@given(
    st.lists(
        st.tuples(st.integers(0, 999), st.integers(2, 40)).filter(lambda p: p[0] + p[1] <= 1000),
        min_size=1,
        max_size=4,
    ),
    st.tuples(st.integers(0, 999), st.integers(2, 40)).filter(lambda p: p[0] + p[1] <= 1000),
)
def test_encompasses_matches_brute_force(
    parent_ranges: list[tuple[int, int]], child_range: tuple[int, int]
) -> None:
    parent = TNAuthList(entries=tuple(TnRange(start=f"{s:03d}", count=c) for s, c in parent_ranges))
    child = TNAuthList(entries=(TnRange(start=f"{child_range[0]:03d}", count=child_range[1]),))
    numbers = {n for s, c in parent_ranges for n in range(s, s + c)}
    wanted = set(range(child_range[0], child_range[0] + child_range[1]))
    assert parent.encompasses(child) == wanted.issubset(numbers)


# ------------------------------------------------------------------ scope semantics


def test_covers_one_and_range_entries_only() -> None:
    tnal = TNAuthList(
        entries=(
            Spc(code="1234"),
            TnRange(start="12025550100", count=100),
            Tn(number="12025550999"),
        )
    )
    assert tnal.covers("12025550100")
    assert tnal.covers("12025550199")
    assert not tnal.covers("12025550200")
    assert tnal.covers("12025550999")
    assert not tnal.covers("2025550150")  # different length: not in the range
    assert not tnal.covers("1234")  # an SPC never covers a TN


def test_encompasses_spc_by_equality_and_adjacent_ranges() -> None:
    parent = TNAuthList(
        entries=(
            Spc(code="1234"),
            TnRange(start="2025550100", count=50),
            TnRange(start="2025550150", count=50),
            Tn(number="*67"),
        )
    )
    assert parent.encompasses(TNAuthList(entries=(TnRange(start="2025550120", count=60),)))
    assert parent.encompasses(TNAuthList(entries=(Tn(number="2025550199"), Spc(code="1234"))))
    assert parent.encompasses(TNAuthList(entries=(Tn(number="*67"),)))
    assert not parent.encompasses(TNAuthList(entries=(Tn(number="*68"),)))
    assert not parent.encompasses(TNAuthList(entries=(Spc(code="5678"),)))
    assert not parent.encompasses(TNAuthList(entries=(TnRange(start="2025550190", count=11),)))
    assert parent.encompasses(parent)


# ------------------------------------------------------------------ loading


def test_load_pem_chain_in_order_and_der(pki: StiPki) -> None:
    chain = load_certificates(pki.chain_pem)
    assert chain == (pki.leaf, pki.intermediate)
    der = pki.leaf.public_bytes(serialization.Encoding.DER)
    assert load_certificates(der) == (pki.leaf,)
    noisy = b"subject=...\n" + pki.chain_pem + b"\n-----BEGIN EC PRIVATE KEY-----\nAA==\n"
    assert load_certificates(noisy + b"-----END EC PRIVATE KEY-----\n") == chain


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"not a certificate", "not an X.509 certificate"),
        (b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n", "no CERTIFICATE"),
        (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "base64"),
        (b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n", "PEM block 0"),
    ],
)
def test_load_failures_raise_certificate_error(data: bytes, fragment: str) -> None:
    with pytest.raises(CertificateError) as info:
        load_certificates(data)
    assert fragment in str(info.value)


def test_one_broken_block_fails_the_whole_chain(pki: StiPki) -> None:
    broken = b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"
    with pytest.raises(CertificateError, match="PEM block 1"):
        load_certificates(pki.leaf.public_bytes(serialization.Encoding.PEM) + broken)


def test_tnauthlist_of_absent_and_present(pki: StiPki) -> None:
    assert tnauthlist_of(pki.root) is None
    assert tnauthlist_of(pki.leaf) == TNAuthList(entries=(Spc(code="1234"),))


def _self_signed_leaf(
    *,
    extensions: list[tuple[x509.ExtensionType, bool]],
    cn: str = "SHAKEN 1234",
    key: ec.EllipticCurvePrivateKey | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
    )
    for value, critical in extensions:
        builder = builder.add_extension(value, critical=critical)
    return builder.sign(key, hashes.SHA256())


def test_malformed_tnauthlist_in_a_certificate() -> None:
    bad = x509.UnrecognizedExtension(TNAUTHLIST_OID, bytes.fromhex("300613043632324b"))
    cert = _self_signed_leaf(extensions=[(bad, False)])
    with pytest.raises(TNAuthListError, match="bare PrintableString"):
        tnauthlist_of(cert)
    stir = StirCertificate.from_x509(cert)
    assert stir.tnauthlist is None
    assert stir.spc is None
    assert stir.tnauthlist_error is not None
    assert "bare PrintableString" in stir.tnauthlist_error
    assert any(
        f.rule == "atis_tn_auth_list" and "bare PrintableString" in f.message
        for f in profile_findings(cert, role=CertRole.LEAF)
    )


def test_crl_distribution_points_and_issuer(pki: StiPki) -> None:
    assert crl_distribution_points(pki.leaf) == ("https://sti-pa.example.test/crl",)
    assert crl_issuer_names(pki.leaf) == (pki.sti_pa.subject,)
    assert crl_distribution_points(pki.root) == ()
    assert crl_issuer_names(pki.root) == ()


# ------------------------------------------------------------------ profile findings


def test_generated_pki_is_clean(pki: StiPki) -> None:
    assert profile_findings(pki.root) == ()
    assert profile_findings(pki.intermediate, issuer=pki.root) == ()
    assert profile_findings(pki.leaf, issuer=pki.intermediate) == ()
    assert infer_role(pki.root) is CertRole.ROOT
    assert infer_role(pki.intermediate) is CertRole.INTERMEDIATE
    assert infer_role(pki.leaf) is CertRole.LEAF


def _rules(cert: x509.Certificate, role: CertRole = CertRole.LEAF) -> set[str]:
    return {f.rule for f in profile_findings(cert, role=role)}


def _leaf_extensions(
    key: ec.EllipticCurvePrivateKey, *, tnauthlist: bytes = SPC_1234
) -> list[tuple[x509.ExtensionType, bool]]:
    public = key.public_key()
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            True,
        ),
        (x509.SubjectKeyIdentifier.from_public_key(public), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(public), False),
        (
            x509.CertificatePolicies(
                [x509.PolicyInformation(x509.ObjectIdentifier(SHAKEN_POLICY_ARC + ".4"), None)]
            ),
            False,
        ),
        (
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier("https://sti-pa.example.test/crl")],
                        None,
                        None,
                        [x509.DirectoryName(x509.Name.from_rfc4514_string("CN=STI-PA,C=US"))],
                    )
                ]
            ),
            False,
        ),
        (x509.UnrecognizedExtension(TNAUTHLIST_OID, tnauthlist), False),
    ]


def _replace(
    extensions: list[tuple[x509.ExtensionType, bool]],
    kind: type[x509.ExtensionType],
    new: tuple[x509.ExtensionType, bool] | None,
) -> list[tuple[x509.ExtensionType, bool]]:
    out = [e for e in extensions if not isinstance(e[0], kind)]
    return out + ([new] if new is not None else [])


def test_baseline_handmade_leaf_is_clean() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert _rules(_self_signed_leaf(extensions=_leaf_extensions(key), key=key)) == set()


@pytest.mark.parametrize(
    ("mutate", "rule"),
    [
        (
            lambda e, k: _replace(
                e, x509.BasicConstraints, (x509.BasicConstraints(ca=False, path_length=None), False)
            ),
            "atis_ext_basic_constraints",
        ),
        (lambda e, k: _replace(e, x509.BasicConstraints, None), "atis_ext_basic_constraints"),
        (
            lambda e, k: _replace(
                e,
                x509.KeyUsage,
                (
                    x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                    False,
                ),
            ),
            "atis_ext_key_usage",
        ),
        (
            lambda e, k: _replace(
                e,
                x509.KeyUsage,
                (x509.KeyUsage(True, True, True, False, False, False, False, False, False), True),
            ),
            "atis_ext_key_usage_value",
        ),
        (lambda e, k: _replace(e, x509.SubjectKeyIdentifier, None), "atis_subject_key_identifier"),
        (
            lambda e, k: _replace(
                e, x509.SubjectKeyIdentifier, (x509.SubjectKeyIdentifier(b"\x01" * 8), False)
            ),
            "atis_subject_key_identifier_size",
        ),
        (
            lambda e, k: _replace(
                e, x509.SubjectKeyIdentifier, (x509.SubjectKeyIdentifier(b"\x01" * 20), False)
            ),
            "atis_subject_key_identifier_hash",
        ),
        (
            lambda e, k: _replace(e, x509.AuthorityKeyIdentifier, None),
            "atis_ext_authority_key_identifier",
        ),
        (
            lambda e, k: _replace(e, x509.CertificatePolicies, None),
            "atis_ext_certificate_policies",
        ),
        (
            lambda e, k: _replace(
                e,
                x509.CertificatePolicies,
                (
                    x509.CertificatePolicies(
                        [x509.PolicyInformation(x509.ObjectIdentifier("1.3.6.1.4.1.56223.1"), None)]
                    ),
                    False,
                ),
            ),
            "shaken_certificate_policies_id",
        ),
        (
            lambda e, k: _replace(
                e,
                x509.CertificatePolicies,
                (
                    x509.CertificatePolicies(
                        [
                            x509.PolicyInformation(
                                x509.ObjectIdentifier(SHAKEN_POLICY_ARC + ".1"), None
                            )
                        ]
                    ),
                    False,
                ),
            ),
            "shaken_certificate_policies_version",
        ),
        (
            lambda e, k: _replace(
                e,
                x509.CertificatePolicies,
                (
                    x509.CertificatePolicies(
                        [
                            x509.PolicyInformation(
                                x509.ObjectIdentifier(SHAKEN_POLICY_ARC + ".4"), None
                            )
                        ]
                    ),
                    True,
                ),
            ),
            "atis_certificate_policy_critical",
        ),
        (
            lambda e, k: _replace(e, x509.CRLDistributionPoints, None),
            "atis_ext_crl_distribution",
        ),
        (
            lambda e, k: _replace(
                e,
                x509.CRLDistributionPoints,
                (
                    x509.CRLDistributionPoints(
                        [
                            x509.DistributionPoint(
                                [x509.UniformResourceIdentifier("https://crl.example.test/")],
                                None,
                                None,
                                None,
                            )
                        ]
                    ),
                    False,
                ),
            ),
            "atis_ext_crl_distribution_struct",
        ),
        (
            lambda e, k: _replace(e, x509.UnrecognizedExtension, None),
            "atis_tn_auth_list",
        ),
        (
            lambda e, k: [
                *e,
                (x509.ExtendedKeyUsage([x509.ObjectIdentifier("1.3.6.1.5.5.7.3.2")]), False),
            ],
            "atis_ext_not_specified",
        ),
    ],
)
def test_each_extension_rule_fires(mutate, rule: str) -> None:  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed_leaf(extensions=mutate(_leaf_extensions(key), key), key=key)
    findings = profile_findings(cert, role=CertRole.LEAF)
    assert rule in {f.rule for f in findings}
    assert all(f.rule in RULES for f in findings)


def test_tnauthlist_content_rules() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    lower = TNAuthList(entries=(Spc(code="709j"),)).to_der()
    cert = _self_signed_leaf(
        extensions=_leaf_extensions(key, tnauthlist=lower), key=key, cn="SHAKEN 709j"
    )
    assert _rules(cert) == {"atis_tn_auth_list_spc_format"}
    scoped = TNAuthList(entries=(Spc(code="1234"), Tn(number="12025550100"))).to_der()
    cert = _self_signed_leaf(extensions=_leaf_extensions(key, tnauthlist=scoped), key=key)
    assert _rules(cert) == {"atis_tn_auth_list"}


@pytest.mark.parametrize(
    ("cn", "rules"),
    [
        ("SHAKEN 1234", set()),
        ("Example SHAKEN 1234", {"atis_subject_cn_spc_exact"}),
        ("SHAKEN 12345", {"atis_subject_cn_spc"}),
        ("SHAKEN", {"atis_subject_cn_spc"}),
        ("Example 1234", {"atis_subject_cn", "atis_subject_cn_spc"}),
    ],
)
def test_leaf_cn_rules(cn: str, rules: set[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert _rules(_self_signed_leaf(extensions=_leaf_extensions(key), key=key, cn=cn)) == rules


@pytest.mark.parametrize(
    ("serial", "rule"),
    [
        (1, "atis_serial_number"),
        (2**56 - 1, "atis_serial_number"),
        (2**63 - 1, "atis_serial_number_size"),
    ],
)
def test_serial_number_rules(serial: int, rule: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed_leaf(extensions=_leaf_extensions(key), key=key, serial=serial)
    assert _rules(cert) == {rule}


def test_serial_of_64_bits_passes() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed_leaf(extensions=_leaf_extensions(key), key=key, serial=2**63)
    assert _rules(cert) == set()


def test_p384_key_is_for_cas_only() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = _self_signed_leaf(extensions=_leaf_extensions(key), key=key)
    assert "atis_subject_public_key" in _rules(cert)


def test_ca_rules(pki: StiPki) -> None:
    # The leaf judged as a root breaks the CA rules: cA, key usage, CN, CP, CRLDP, TNAuthList.
    rules = _rules(pki.leaf, CertRole.ROOT)
    assert {
        "atis_ext_basic_constraints",
        "atis_ext_key_usage_value",
        "atis_subject_cn_root",
        "atis_root_certificate_policies",
        "atis_root_crl_distribution",
        "atis_tn_auth_list_ca",
    } <= rules
    # An intermediate checked against the wrong issuer: its AKI does not match.
    wrong_issuer = profile_findings(pki.intermediate, issuer=pki.leaf)
    assert [f.rule for f in wrong_issuer] == ["atis_ext_authority_key_identifier"]


def test_aki_must_match_the_issuer_ski(pki: StiPki) -> None:
    findings = profile_findings(pki.leaf, issuer=pki.root)
    assert [f.rule for f in findings] == ["atis_ext_authority_key_identifier"]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("03020780", True),  # digitalSignature
        ("03020204", True),  # keyCertSign
        ("03020106", True),  # keyCertSign + cRLSign
        ("03020080", False),  # the corpus defect: unused bits 0, should be 7
        ("03020104", False),
        ("030100", True),  # empty
        ("03020000", False),
    ],
)
def test_key_usage_der_named_bits(value: str, ok: bool) -> None:
    from shaken.core.certprofile import _der_named_bits_ok

    assert _der_named_bits_ok(bytes.fromhex(value)) is ok


def test_findings_never_raise_on_odd_certificates() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    bare = _self_signed_leaf(extensions=[], key=key, cn="x")
    rules = _rules(bare)
    assert {"atis_ext_basic_constraints", "atis_ext_key_usage", "atis_tn_auth_list"} <= rules
    # no O in subject, v3 with nothing else: still findings, no exception
    assert all(isinstance(f.message, str) and f.message for f in profile_findings(bare))


# ------------------------------------------------------------------ legacy NULL parameters


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def test_root_signed_over_null_parameters_loads_and_is_a_root(pki: StiPki) -> None:
    tbs = legacy_tbs_certificate_bytes(pki.root)
    assert tbs is not None
    assert bytes.fromhex("300c06082a8648ce3d0403020500") in tbs
    signature = pki.root_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    null_algorithm = bytes.fromhex("300c06082a8648ce3d0403020500")
    der = _der(0x30, tbs + null_algorithm + _der(0x03, b"\x00" + signature))
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(der)  # what current cryptography does with it
    (root,) = load_certificates(der)
    assert root.tbs_certificate_bytes == pki.root.tbs_certificate_bytes
    assert legacy_tbs_certificate_bytes(root) == tbs
    assert issued_over_legacy_encoding(root, root)
    assert not issued_over_legacy_encoding(root, pki.intermediate)
    assert infer_role(root) is CertRole.ROOT
    assert profile_findings(root) == ()
    # A broken signature is not repaired into validity.
    forged = _der(0x30, tbs + null_algorithm + _der(0x03, b"\x00" + signature[:-1] + b"\x00"))
    (copy,) = load_certificates(forged)
    assert not issued_over_legacy_encoding(copy, copy)
    assert infer_role(copy) is CertRole.INTERMEDIATE  # a CA that is not self-signed


def test_every_emitted_rule_is_registered() -> None:
    import re
    from pathlib import Path

    from shaken.core import certprofile as certs

    source = Path(certs.__file__).read_text(encoding="utf-8")
    emitted = set(re.findall(r'out\.(?:error|warning)\(\s*"([a-z0-9_]+)"', source))
    assert emitted == set(RULES)
