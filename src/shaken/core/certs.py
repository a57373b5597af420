"""STIR certificates: loading PEM chains and DER, the extensions a verifier reads, and the
values of one certificate (:class:`StirCertificate`).

This module is pure: it takes bytes and certificate objects and returns values. It reads no
files, no clock and no network, and it logs nothing. The TNAuthList lives in
:mod:`shaken.core.tnauthlist` and the ATIS-1000080 profile findings in
:mod:`shaken.core.certprofile`; their names are also exported here, the one place callers
import STIR certificate types from.

Why certificates with explicit NULL ECDSA parameters still load. RFC 5758 section 3.2 says the
``ecdsa-with-SHA256`` AlgorithmIdentifier has no parameters; T-Mobile's production STI-CA root
and issuing CA, and a Ribbon issuing CA, encode a NULL there, and current cryptography refuses
to parse such certificates at all. :func:`load_certificates` re-encodes them without the NULL
(nothing else changes), and :func:`issued_over_legacy_encoding` checks a signature over the
original bytes so :mod:`shaken.core.chain` can still validate those paths. A re-encoded
certificate's ``public_bytes()`` and fingerprint are those of the re-encoding.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.oid import SignatureAlgorithmOID

from shaken.core.der import TlvError, children, der_tlv, raw_extensions, read_tlv, tlvs
from shaken.core.errors import CertificateError
from shaken.core.jws import PublicKey, is_es256_public_key, verify_es256
from shaken.core.tnauthlist import TNAUTHLIST_OID, Spc, Tn, TNAuthList, TNEntry, TnRange

__all__ = [
    "RULES",
    "SHAKEN_POLICY_ARC",
    "TNAUTHLIST_OID",
    "CertRole",
    "Finding",
    "Severity",
    "Spc",
    "StirCertificate",
    "TNAuthList",
    "TNEntry",
    "Tn",
    "TnRange",
    "crl_distribution_points",
    "crl_issuer_names",
    "infer_role",
    "issued_over_legacy_encoding",
    "legacy_tbs_certificate_bytes",
    "load_certificates",
    "profile_findings",
    "tnauthlist_of",
]

#: The arc of the US SHAKEN Certificate Policy OIDs (CP v1.1 = .1 ... v1.4 = .4).
SHAKEN_POLICY_ARC = "2.16.840.1.114569.1.1"

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.DOTALL)


def load_certificates(data: bytes) -> tuple[x509.Certificate, ...]:
    """Every CERTIFICATE block of a PEM chain, in order, or a single DER certificate.

    An x5u response is ``application/pem-certificate-chain`` (leaf first) per ATIS-1000080,
    but DER is common in the wild. A block that does not parse is an error rather than skipped:
    skipping the leaf would silently promote an intermediate to signer.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CertificateError(f"certificate data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.strip():
        raise CertificateError("no certificate: the data is empty")
    if b"-----BEGIN" in data:
        blocks = [m for m in _PEM_BLOCK.finditer(data) if m.group(1) == b"CERTIFICATE"]
        if not blocks:
            labels = sorted({m.group(1).decode("ascii") for m in _PEM_BLOCK.finditer(data)})
            raise CertificateError(
                f"PEM data has no CERTIFICATE block (found: {', '.join(labels) or 'none'})"
            )
        certificates = []
        for index, match in enumerate(blocks):
            try:
                der = base64.b64decode(b"".join(match.group(2).split()), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise CertificateError(f"PEM block {index} is not valid base64: {exc}") from exc
            certificates.append(_load_der(der, f"PEM block {index}"))
        return tuple(certificates)
    return (_load_der(data, "DER data"),)


def _load_der(der: bytes, where: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        error = exc
    # RFC 5758 section 3.2: ecdsa-with-SHA* AlgorithmIdentifiers MUST omit the parameters.
    # Some production STI-CAs (T-Mobile's root and issuing CA, a Ribbon issuing CA) encode an
    # explicit NULL, which cryptography no longer parses. We re-encode without it so the
    # certificate can be read; its signature still covers the original bytes, which
    # shaken.core.chain verifies through legacy_tbs_certificate_bytes().
    repaired = _without_ecdsa_null_parameters(der)
    if repaired is not None:
        try:
            return x509.load_der_x509_certificate(repaired)
        except ValueError:
            pass
    raise CertificateError(f"{where} is not an X.509 certificate: {error}") from error


# The OBJECT IDENTIFIER TLVs of ecdsa-with-SHA224/256/384/512 (RFC 5758 section 3.2).
_ECDSA_SHA2_OIDS = frozenset(bytes.fromhex("06082a8648ce3d0403") + bytes([n]) for n in (1, 2, 3, 4))
_NULL = b"\x05\x00"


def _rewrite_signature_field(tbs: bytes, rewrite: Callable[[bytes], bytes | None]) -> bytes | None:
    """``tbs`` with its ``signature`` AlgorithmIdentifier rewritten, or None if unchanged."""
    tag, start, length = read_tlv(tbs, 0)
    if tag != 0x30 or start + length != len(tbs):
        return None
    fields = tlvs(tbs, start, length)
    index = 2 if fields and fields[0][0] == 0xA0 else 1  # after [0] version and the serial
    if len(fields) <= index:
        return None
    replaced = rewrite(fields[index])
    if replaced is None:
        return None
    return der_tlv(0x30, b"".join([*fields[:index], replaced, *fields[index + 1 :]]))


def _drop_null(algorithm: bytes) -> bytes | None:
    content = algorithm[2:]
    header_ok = algorithm[:2] == bytes([0x30, len(content)])
    if header_ok and content.endswith(_NULL) and content[:-2] in _ECDSA_SHA2_OIDS:
        return der_tlv(0x30, content[:-2])
    return None


def _add_null(algorithm: bytes) -> bytes | None:
    content = algorithm[2:]
    if algorithm[:2] == bytes([0x30, len(content)]) and content in _ECDSA_SHA2_OIDS:
        return der_tlv(0x30, content + _NULL)
    return None


def _without_ecdsa_null_parameters(der: bytes) -> bytes | None:
    try:
        tag, start, length = read_tlv(der, 0)
        if tag != 0x30 or start + length != len(der):
            return None
        parts = tlvs(der, start, length)
        if len(parts) != 3:
            return None
        tbs = _rewrite_signature_field(parts[0], _drop_null)
        algorithm = _drop_null(parts[1])
    except TlvError:
        return None
    if tbs is None and algorithm is None:
        return None
    return der_tlv(0x30, (tbs or parts[0]) + (algorithm or parts[1]) + parts[2])


def issued_over_legacy_encoding(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """``parent`` signed ``child`` over the NULL-parameter encoding of its TBSCertificate.

    The names must chain and the signature must verify with ``parent``'s key over the bytes of
    :func:`legacy_tbs_certificate_bytes`. Only ecdsa-with-SHA256 by a P-256 key is handled,
    the one combination seen with this encoding (T-Mobile, Ribbon); the check goes through
    :mod:`shaken.core.jws`, the core's only user of the cryptography primitives.
    """
    if child.issuer != parent.subject:
        return False
    tbs = legacy_tbs_certificate_bytes(child)
    try:
        if tbs is None or child.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
            return False
        key = parent.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return False
    raw = _ecdsa_signature_raw(child.signature)
    if raw is None or not is_es256_public_key(key):
        return False
    return verify_es256(cast(PublicKey, key), tbs, raw)


def _ecdsa_signature_raw(der: bytes) -> bytes | None:
    """DER ``ECDSA-Sig-Value`` (SEQUENCE of r, s) as the 64-byte r || s of P-256."""
    try:
        tag, start, length = read_tlv(der, 0)
        if tag != 0x30 or start + length != len(der):
            return None
        parts = list(children(der, start, length))
    except TlvError:
        return None
    if len(parts) != 2 or any(part[0] != 0x02 for part in parts):
        return None
    values = [int.from_bytes(der[c : c + n], "big", signed=True) for _t, _p, c, n in parts]
    if any(not 0 < v < 2**256 for v in values):
        return None
    return b"".join(v.to_bytes(32, "big") for v in values)


def legacy_tbs_certificate_bytes(cert: x509.Certificate) -> bytes | None:
    """The TBSCertificate as signed by a CA that encodes ECDSA parameters as NULL.

    For a certificate that :func:`load_certificates` had to re-encode, this restores the
    bytes its issuer actually signed; None when the signature field has no such variant.
    A signature check over these bytes is as strong as the normal one: only the encoding of an
    absent parameter differs.
    """
    try:
        return _rewrite_signature_field(cert.tbs_certificate_bytes, _add_null)
    except TlvError:
        return None


def tnauthlist_of(cert: x509.Certificate) -> TNAuthList | None:
    """The certificate's TNAuthList; None when absent, :class:`TNAuthListError` if malformed."""
    raw = _extension_bytes(cert, TNAUTHLIST_OID)
    return None if raw is None else TNAuthList.from_der(raw)


def _extension_bytes(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None
    except ValueError:
        # cryptography could not parse some *other* extension; read ours from the raw DER.
        try:
            raw = raw_extensions(cert.tbs_certificate_bytes).get(oid.dotted_string)
        except TlvError as exc:
            raise CertificateError(f"certificate extensions do not parse: {exc}") from exc
        return None if raw is None else raw[1]
    value = ext.value
    if isinstance(value, x509.UnrecognizedExtension):
        return value.value
    return value.public_bytes()


def _crl_distribution_points(cert: x509.Certificate) -> x509.CRLDistributionPoints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise CertificateError(f"certificate extensions do not parse: {exc}") from exc


def crl_distribution_points(cert: x509.Certificate) -> tuple[str, ...]:
    """The URIs of the CRL Distribution Points ``fullName``s (the SHAKEN CRL URL at the STI-PA)."""
    points = _crl_distribution_points(cert)
    if points is None:
        return ()
    return tuple(
        name.value
        for point in points
        for name in point.full_name or ()
        if isinstance(name, x509.UniformResourceIdentifier)
    )


def crl_issuer_names(cert: x509.Certificate) -> tuple[x509.Name, ...]:
    """The ``cRLIssuer`` directory names of the CRL Distribution Points (ATIS-1000080 v004+).

    A CRL signed by one of these names (the STI-PA) may revoke this certificate: an indirect
    CRL, RFC 5280 section 5.
    """
    points = _crl_distribution_points(cert)
    if points is None:
        return ()
    return tuple(
        name.value
        for point in points
        for name in point.crl_issuer or ()
        if isinstance(name, x509.DirectoryName)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class StirCertificate:
    """A parsed certificate with the STIR facts a verifier and a CLI want at hand.

    Built by :meth:`from_x509`, which never raises for a certificate cryptography parsed: a
    broken TNAuthList is recorded in ``tnauthlist_error`` so the caller decides what it means.
    """

    certificate: x509.Certificate = field(repr=False)
    subject: str
    issuer: str
    spc: str | None
    tnauthlist: TNAuthList | None
    tnauthlist_error: str | None
    not_before: datetime
    not_after: datetime
    serial: int

    @classmethod
    def from_x509(cls, cert: x509.Certificate) -> StirCertificate:
        tnauthlist: TNAuthList | None = None
        error: str | None = None
        try:
            tnauthlist = tnauthlist_of(cert)
        except CertificateError as exc:
            error = str(exc)
        return cls(
            certificate=cert,
            subject=_rfc4514(cert.subject),
            issuer=_rfc4514(cert.issuer),
            spc=tnauthlist.spc if tnauthlist is not None else None,
            tnauthlist=tnauthlist,
            tnauthlist_error=error,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            serial=cert.serial_number,
        )


def _rfc4514(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except ValueError:
        return repr(name)


# The profile findings import this module, so they are re-exported after everything above.
from shaken.core.certprofile import (  # noqa: E402
    RULES,
    CertRole,
    Finding,
    Severity,
    infer_role,
    profile_findings,
)
