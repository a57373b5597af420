"""Profile-correct builders for SHAKEN certificates, CSRs and CRLs (and a lab's TLS certificates).

This is the single place the project builds X.509 objects: the test STI-CA of
:mod:`shaken.toolkit.ca`, the lab, and the public test kit :mod:`shaken.testing` all call it,
so a fix to the profile lands everywhere at once. It is pure (no files, no clock): the caller
passes keys, names and times.

What "profile-correct" means here is ATIS-1000080 v005 section 6.4.1 with the US SHAKEN CP 1.4,
the table :func:`shaken.core.certs.profile_findings` checks:

* v3, ``ecdsa-with-SHA256``, P-256 keys, a positive serial with 64 bits of CSPRNG output;
* subject ``C``, ``O`` and ``CN`` (the root's CN says ROOT, an SP's CN is ``SHAKEN <SPC>``);
* critical BasicConstraints; critical KeyUsage of exactly keyCertSign (CAs) or exactly
  digitalSignature (end entities); the SHA-1 SKI; an AKI equal to the issuer's SKI;
* below the root: one CertificatePolicies OID (the SHAKEN CP) and one CRL Distribution Point
  naming the STI-PA's CRL URL with the STI-PA as ``cRLIssuer``;
* in end entities the TNAuthList (RFC 8226) with the SPC; nothing else.

The SHAKEN CRL is an *indirect* CRL (RFC 5280 section 5): the STI-PA signs it and it revokes
certificates other CAs issued. :func:`build_crl` can mark it as such (an IssuingDistributionPoint
with ``indirectCRL`` and a ``certificateIssuer`` on each entry), which OpenSSL needs before it
accepts a CRL from someone other than the certificate's issuer.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shaken.core.certs import TNAUTHLIST_OID, Spc, TNAuthList
from shaken.core.claimconstraints import (
    OID_ENHANCED_JWT_CLAIM_CONSTRAINTS,
    OID_JWT_CLAIM_CONSTRAINTS,
    ClaimConstraints,
    encode_constraints,
)
from shaken.core.errors import ConfigurationError

__all__ = [
    "SHAKEN_CP_1_4",
    "RevokedEntry",
    "build_certificate",
    "build_crl",
    "build_csr",
    "build_tls_ca",
    "build_tls_server_certificate",
    "certificates_pem",
    "check_spc",
    "key_usage",
    "random_serial",
    "shaken_name",
]

#: US SHAKEN Certificate Policy v1.4 (2023-06-06), the policy OID our CA certificates carry.
SHAKEN_CP_1_4 = "2.16.840.1.114569.1.1.4"

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey


def random_serial() -> int:
    """A serial holding 64 bits of CSPRNG output (ATIS-1000080 v005 section 6.4.1.1).

    A leading one bit is set above the random bits: lint tools (zlint, ours) judge the 64 bits
    by the number's length, and a random 64-bit value is shorter than 64 bits half the time.
    The result is positive and 9 octets long in DER, well within RFC 5280's 20.
    """
    return (1 << 64) | secrets.randbits(64)


def shaken_name(cn: str, org: str, country: str = "US") -> x509.Name:
    """A subject with C, O and CN, the attributes ATIS-1000080 v004+ requires."""
    if not (len(country) == 2 and country.isascii() and country.isalpha() and country.isupper()):
        raise ConfigurationError(
            f"country {country!r} is not an ISO 3166-1 alpha-2 code such as US (ATIS v005)"
        )
    if not cn or not org:
        raise ConfigurationError("a SHAKEN subject needs a non-empty CN and O")
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    """A KeyUsage with only the named bits (the profile allows exactly one per role)."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _require_p256(key: PrivateKey | PublicKey, what: str) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) or not (
        isinstance(key.curve, ec.SECP256R1)
    ):
        raise ConfigurationError(f"{what} must be a P-256 EC key (ATIS-1000080, RFC 8226)")


def _ski(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key())


def build_certificate(
    *,
    subject: x509.Name,
    public_key: PublicKey,
    issuer: x509.Certificate | None,
    issuer_key: PrivateKey,
    not_before: datetime,
    not_after: datetime,
    ca: bool,
    path_length: int | None = None,
    usage: x509.KeyUsage | None = None,
    policy: str | None = SHAKEN_CP_1_4,
    crl_url: str | None = None,
    crl_issuer: x509.Name | None = None,
    tnauthlist: TNAuthList | None = None,
    serial: int | None = None,
    claim_constraints: ClaimConstraints | None = None,
) -> x509.Certificate:
    """One certificate of the ATIS-1000080 v005 profile (section 6.4.1).

    ``issuer`` None makes a self-signed root: no AKI, no CertificatePolicies, no CRLDP (v005
    forbids the last two in roots). Below a root the AKI and ``policy`` are added; pass
    ``policy=None`` only for certificates outside the SHAKEN profile (the STI-PA's). ``usage``
    defaults to exactly keyCertSign for CAs and digitalSignature for end entities.

    ``claim_constraints`` adds JWTClaimConstraints (RFC 8226 section 8) or, when they are
    ``enhanced``, EnhancedJWTClaimConstraints (RFC 9118), non-critical and in end-entity
    certificates only (RFC 9118 section 3): how a CA pins the ``rcd`` values it vetted. The
    ATIS-1000080 v005 base profile allows neither, so such a certificate is a delegate /
    branded-calling certificate by construction.
    """
    if claim_constraints is not None and ca:
        raise ConfigurationError("claim constraints belong in end-entity certificates only")
    _require_p256(public_key, "the subject key")
    if not_before.tzinfo is None or not_after.tzinfo is None:
        raise ConfigurationError("certificate validity needs timezone-aware datetimes")
    if not_after <= not_before:
        raise ConfigurationError("notAfter must be after notBefore")
    if crl_issuer is not None and crl_url is None:
        raise ConfigurationError("a cRLIssuer needs a CRL distribution point URL")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(public_key)
        .serial_number(serial if serial is not None else random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            usage if usage is not None else key_usage(key_cert_sign=ca, digital_signature=not ca),
            critical=True,
        )
        # v004: the SKI is the 160-bit SHA-1 of the public key (RFC 5280 4.2.1.2 method 1).
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(issuer)),
            critical=False,
        )
        if policy is not None:
            builder = builder.add_extension(
                x509.CertificatePolicies(
                    [x509.PolicyInformation(x509.ObjectIdentifier(policy), None)]
                ),
                critical=False,
            )
    if crl_url is not None:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=[x509.DirectoryName(crl_issuer)] if crl_issuer else None,
                    )
                ]
            ),
            critical=False,
        )
    if tnauthlist is not None:
        # RFC 8226 section 9 leaves criticality open; ATIS examples and real STI-CAs mark it
        # non-critical, so verifiers that do not know the OID still parse the certificate.
        builder = builder.add_extension(
            x509.UnrecognizedExtension(TNAUTHLIST_OID, tnauthlist.to_der()), critical=False
        )
    if claim_constraints is not None:
        oid = (
            OID_ENHANCED_JWT_CLAIM_CONSTRAINTS
            if claim_constraints.enhanced
            else OID_JWT_CLAIM_CONSTRAINTS
        )
        builder = builder.add_extension(
            x509.UnrecognizedExtension(oid, encode_constraints(claim_constraints)), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def build_csr(
    key: PrivateKey,
    *,
    spc: str,
    org: str,
    country: str = "US",
    tnauthlist: TNAuthList | None = None,
    cn_suffix: str | None = None,
    crl_url: str | None = None,
) -> x509.CertificateSigningRequest:
    """A CSR for an SP certificate: subject ``CN=SHAKEN <SPC>, O, C`` and a TNAuthList request.

    The TNAuthList defaults to the single SPC, what ATIS-1000080 puts in an SP certificate; it
    travels as a requested extension so the CA (and ACME's ``TNAuthList`` identifier, RFC 9448)
    can read it. ``cn_suffix`` makes the CN ``SHAKEN <SPC> <suffix>``, for CAs that refuse a
    subject they issued before (Peeringhub); ``crl_url`` requests a CRL Distribution Point, for
    CAs that copy it from the CSR rather than adding the STI-PA's themselves.
    """
    _require_p256(key, "the CSR key")
    check_spc(spc)
    requested = tnauthlist if tnauthlist is not None else TNAuthList(entries=(Spc(code=spc),))
    cn = f"SHAKEN {spc}" if not cn_suffix else f"SHAKEN {spc} {cn_suffix}"
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(shaken_name(cn, org, country))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.UnrecognizedExtension(TNAUTHLIST_OID, requested.to_der()), critical=False
        )
    )
    if crl_url is not None:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256())


def check_spc(spc: str) -> str:
    """ATIS-1000080 v005: an SPC has only digits and uppercase letters."""
    if not spc or not spc.isascii() or not all(c.isdigit() or c.isupper() for c in spc):
        raise ConfigurationError(
            f"SPC {spc!r} must be digits and uppercase letters only (ATIS-1000080 v005)"
        )
    return spc


@dataclass(frozen=True, slots=True, kw_only=True)
class RevokedEntry:
    """One CRL entry. ``certificate_issuer`` names the CA that issued the serial; an indirect
    CRL needs it because serials are only unique per issuer (RFC 5280 section 5.3.3)."""

    serial: int
    revoked_at: datetime
    reason: x509.ReasonFlags | None = None
    certificate_issuer: x509.Name | None = None


def build_crl(
    *,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    revoked: Iterable[RevokedEntry],
    this_update: datetime,
    next_update: datetime,
    crl_number: int | None = None,
    indirect_url: str | None = None,
) -> x509.CertificateRevocationList:
    """A v2 CRL signed by ``issuer``, with its AKI (RFC 5280 section 5.2.1).

    ``crl_number`` adds the CRLNumber extension. ``indirect_url`` marks the CRL indirect: a
    critical IssuingDistributionPoint with that URL and ``indirectCRL`` TRUE, and each entry's
    ``certificate_issuer`` as a critical certificateIssuer entry extension (RFC 5280 sections
    5.2.5 and 5.3.3).
    """
    if next_update <= this_update:
        raise ConfigurationError("a CRL's nextUpdate must be after its thisUpdate")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(issuer)),
            critical=False,
        )
    )
    if crl_number is not None:
        builder = builder.add_extension(x509.CRLNumber(crl_number), critical=False)
    if indirect_url is not None:
        builder = builder.add_extension(
            x509.IssuingDistributionPoint(
                full_name=[x509.UniformResourceIdentifier(indirect_url)],
                relative_name=None,
                only_contains_user_certs=False,
                only_contains_ca_certs=False,
                only_some_reasons=None,
                indirect_crl=True,
                only_contains_attribute_certs=False,
            ),
            critical=True,
        )
    for entry in revoked:
        item = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
        )
        if entry.reason is not None:
            item = item.add_extension(x509.CRLReason(entry.reason), critical=False)
        if indirect_url is not None and entry.certificate_issuer is not None:
            item = item.add_extension(
                x509.CertificateIssuer([x509.DirectoryName(entry.certificate_issuer)]),
                critical=True,
            )
        builder = builder.add_revoked_certificate(item.build())
    return builder.sign(issuer_key, hashes.SHA256())


# --------------------------------------------------------------------------------------------
# TLS certificates for a lab's certificate repository (Web PKI shape, not the SHAKEN profile)
# --------------------------------------------------------------------------------------------


def build_tls_ca(
    key: PrivateKey, *, cn: str, org: str, not_before: datetime, not_after: datetime
) -> x509.Certificate:
    """A self-signed TLS CA for a lab, strict enough for OpenSSL's X509_STRICT checks."""
    name = shaken_name(cn, org)
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def build_tls_server_certificate(
    public_key: PublicKey,
    *,
    hosts: Sequence[str],
    org: str,
    ca: x509.Certificate,
    ca_key: PrivateKey,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A TLS server certificate for ``hosts`` (IP literals become IP SANs, the rest DNS SANs)."""
    if not hosts:
        raise ConfigurationError("a TLS server certificate needs at least one host name")
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return (
        x509.CertificateBuilder()
        .subject_name(shaken_name(hosts[0], org))
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(ca)),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def certificates_pem(*certificates: x509.Certificate) -> bytes:
    """PEM of the certificates in order: an ``application/pem-certificate-chain`` body."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
