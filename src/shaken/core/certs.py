"""STIR certificates: loading, the RFC 8226 TNAuthList, and the ATIS-1000080 profile.

This module is pure: it takes bytes and certificate objects and returns values. It reads no
files, no clock and no network, and it logs nothing.

Why a real ASN.1 library for TNAuthList. The extension is small, and hand-written byte slicing
(``value[6:]``) is what most SHAKEN code does. That slicing is exactly how the malformed
certificates in the wild got through: an IA5String where a SEQUENCE belongs, an SPC without its
``[0]`` tag, a length byte missing. RFC 8226 Appendix A defines the type with EXPLICIT tags, a
CHOICE, a size constraint and a permitted alphabet; ``pyasn1_modules.rfc8226`` carries that
definition verbatim and pyasn1's DER codec enforces it, so the decoder rejects what the ASN.1
rejects and the encoder cannot produce anything else. We add only the rules ASN.1 cannot express
(a range must not lengthen its numbers, RFC 8226 section 9) and a short diagnosis so that the
error message names the defect instead of quoting a decoder stack.

Why certificates with explicit NULL ECDSA parameters still load. RFC 5758 section 3.2 says the
``ecdsa-with-SHA256`` AlgorithmIdentifier has no parameters; T-Mobile's production STI-CA root
and issuing CA, and a Ribbon issuing CA, encode a NULL there, and current cryptography refuses
to parse such certificates at all. :func:`load_certificates` re-encodes them without the NULL
(nothing else changes), and :func:`issued_over_legacy_encoding` checks a signature over the
original bytes so :mod:`shaken.core.chain` can still validate those paths. A re-encoded
certificate's ``public_bytes()`` and fingerprint are those of the re-encoding.

Why profile checks report instead of raising. ATIS-1000080 v005 is strict and real chains are
not (standards.md section 3.3: a carrier's EE with three key usages and no cRLIssuer). The
verifier decides what to enforce; :func:`profile_findings` only says what is true.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import ExtensionOID, NameOID, SignatureAlgorithmOID
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1_modules import rfc8226

from shaken.core.errors import CertificateError, ConfigurationError, TNAuthListError
from shaken.core.jws import PublicKey, is_es256_public_key, verify_es256

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

#: id-pe-TNAuthList, RFC 8226 section 9.
TNAUTHLIST_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.26")
#: The arc of the US SHAKEN Certificate Policy OIDs (CP v1.1 = .1 ... v1.4 = .4).
SHAKEN_POLICY_ARC = "2.16.840.1.114569.1.1"

_TN_ALPHABET = frozenset("0123456789#*")
_TN_MAX_LEN = 15  # RFC 8226 Appendix A: TelephoneNumber ::= IA5String (SIZE (1..15))


# --------------------------------------------------------------------------------------------
# TNAuthList values (RFC 8226 section 9, Appendix A)
# --------------------------------------------------------------------------------------------


def _check_telephone_number(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a str, got {type(value).__name__}")
    if not 1 <= len(value) <= _TN_MAX_LEN:
        raise ConfigurationError(
            f"{what} {value!r} must have 1 to {_TN_MAX_LEN} characters (RFC 8226 TelephoneNumber)"
        )
    bad = sorted(set(value) - _TN_ALPHABET)
    if bad:
        raise ConfigurationError(
            f"{what} {value!r} has characters {''.join(bad)!r} outside '0123456789#*'"
        )
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Spc:
    """A Service Provider Code entry (``spc [0] ServiceProviderCode``, an IA5String).

    RFC 8226 puts no alphabet or length rule on it; ATIS-1000080 v005 restricts SHAKEN SPCs to
    digits and uppercase letters, which is a *profile* finding, not a decoding error.
    """

    code: str

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not self.code:
            raise ConfigurationError("an SPC must be a non-empty str")
        if not self.code.isascii():
            raise ConfigurationError(f"SPC {self.code!r} is not IA5 (ASCII)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Tn:
    """One telephone number (``one [2] TelephoneNumber``)."""

    number: str

    def __post_init__(self) -> None:
        _check_telephone_number(self.number, "telephone number")


@dataclass(frozen=True, slots=True, kw_only=True)
class TnRange:
    """``range [1] TelephoneNumberRange``: ``count`` consecutive numbers from ``start``.

    RFC 8226 section 9: the count applies to numbers made of digits only and must not lengthen
    the number, so with a start of D digits the last number ``start + count - 1`` stays below
    ``10**D`` (start "10" with count 91 would reach "100" and is invalid). A start holding
    ``*`` or ``#`` cannot be counted and is rejected.
    """

    start: str
    count: int

    def __post_init__(self) -> None:
        _check_telephone_number(self.start, "range start")
        if not self.start.isdigit():
            raise ConfigurationError(
                f"range start {self.start!r} contains '*' or '#'; a count only applies to digits"
            )
        if isinstance(self.count, bool) or not isinstance(self.count, int):
            raise ConfigurationError("range count must be an int")
        if self.count < 2:
            raise ConfigurationError(f"range count {self.count} is below the minimum of 2")
        if int(self.start) + self.count - 1 >= 10 ** len(self.start):
            raise ConfigurationError(
                f"range {self.start} + {self.count} numbers would lengthen the number "
                "(RFC 8226 section 9)"
            )

    @property
    def first(self) -> int:
        return int(self.start)

    @property
    def last(self) -> int:
        return int(self.start) + self.count - 1

    def contains(self, tn: str) -> bool:
        """True when ``tn`` (canonical digits, no '+') is one of the numbers of the range."""
        return len(tn) == len(self.start) and tn.isdigit() and self.first <= int(tn) <= self.last


TNEntry = Spc | TnRange | Tn


def _intervals(entries: tuple[TNEntry, ...], width: int) -> list[tuple[int, int]]:
    """The digit-only TN intervals of ``entries`` for numbers of ``width`` digits, merged."""
    spans: list[tuple[int, int]] = []
    for entry in entries:
        if isinstance(entry, TnRange) and len(entry.start) == width:
            spans.append((entry.first, entry.last))
        elif isinstance(entry, Tn) and len(entry.number) == width and entry.number.isdigit():
            spans.append((int(entry.number), int(entry.number)))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for low, high in spans:
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def _interval_covered(low: int, high: int, merged: list[tuple[int, int]]) -> bool:
    return any(m_low <= low and high <= m_high for m_low, m_high in merged)


@dataclass(frozen=True, slots=True, kw_only=True)
class TNAuthList:
    """An RFC 8226 ``TNAuthorizationList``: SPCs, TN ranges and single TNs (at least one)."""

    entries: tuple[TNEntry, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.entries, tuple):
            raise ConfigurationError("TNAuthList entries must be a tuple")
        if not self.entries:
            raise ConfigurationError("a TNAuthList needs at least one entry (SIZE (1..MAX))")
        for entry in self.entries:
            if not isinstance(entry, Spc | TnRange | Tn):
                raise ConfigurationError(f"not a TN entry: {entry!r}")

    @property
    def spcs(self) -> tuple[str, ...]:
        return tuple(e.code for e in self.entries if isinstance(e, Spc))

    @property
    def spc(self) -> str | None:
        """The first SPC, the one ATIS-1000080 puts in the CN ("SHAKEN <SPC>")."""
        spcs = self.spcs
        return spcs[0] if spcs else None

    @property
    def tn_scoped(self) -> bool:
        """True when the list names numbers (``one`` or ``range``), so a TN check applies."""
        return any(isinstance(e, Tn | TnRange) for e in self.entries)

    def covers(self, tn: str) -> bool:
        """True when ``tn`` is a ``one`` entry or inside a ``range`` entry.

        ``tn`` must already be canonical (RFC 8224 section 8.3: digits, '#', '*', no '+').
        SPC entries never cover a TN: a verifier cannot map a TN to an SPC.
        """
        for entry in self.entries:
            if isinstance(entry, Tn) and entry.number == tn:
                return True
            if isinstance(entry, TnRange) and entry.contains(tn):
                return True
        return False

    def encompasses(self, other: TNAuthList) -> bool:
        """RFC 9060 section 4: every entry of ``other`` lies inside this list.

        SPCs compare by equality; numbers and ranges by interval inclusion in the union of this
        list's ``one`` and ``range`` entries of the same length, so adjacent ranges together
        can encompass a wider child range.
        """
        for entry in other.entries:
            if isinstance(entry, Spc):
                if entry.code not in self.spcs:
                    return False
            elif isinstance(entry, Tn):
                if not entry.number.isdigit():
                    if entry not in self.entries:
                        return False
                elif not self.covers(entry.number):
                    return False
            elif not _interval_covered(
                entry.first, entry.last, _intervals(self.entries, len(entry.start))
            ):
                return False
        return True

    def to_der(self) -> bytes:
        """DER of the ``TNAuthorizationList`` (the extension's OCTET STRING content)."""
        value = rfc8226.TNAuthorizationList()
        for index, entry in enumerate(self.entries):
            choice = rfc8226.TNEntry()
            if isinstance(entry, Spc):
                choice["spc"] = entry.code
            elif isinstance(entry, Tn):
                choice["one"] = entry.number
            else:
                tn_range = choice["range"]
                tn_range["start"] = entry.start
                tn_range["count"] = entry.count
            value[index] = choice
        return bytes(der_encoder.encode(value))

    @classmethod
    def from_der(cls, data: bytes) -> TNAuthList:
        """Decode DER; raise :class:`TNAuthListError` naming the defect, and nothing else."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TNAuthListError(f"TNAuthList must be bytes, got {type(data).__name__}")
        data = bytes(data)
        try:
            decoded, rest = der_decoder.decode(data, asn1Spec=rfc8226.TNAuthorizationList())
        except PyAsn1Error as exc:
            raise TNAuthListError(
                _diagnose(data) or f"not a DER TNAuthorizationList: {exc}"
            ) from exc
        except Exception as exc:
            # A third-party decoder fed hostile bytes can fail in ways it does not document
            # (recursion, index, unicode errors); the contract of this function is one error type.
            raise TNAuthListError(
                _diagnose(data) or f"not a DER TNAuthorizationList ({type(exc).__name__}: {exc})"
            ) from exc
        if rest:
            raise TNAuthListError(
                f"{len(rest)} trailing byte(s) after the TNAuthorizationList SEQUENCE"
            )
        try:
            value = cls(entries=tuple(_entry_from_asn1(item) for item in decoded))
        except ConfigurationError as exc:
            raise TNAuthListError(f"invalid TNAuthList entry: {exc}") from exc
        except (PyAsn1Error, UnicodeError, ValueError, TypeError) as exc:
            raise TNAuthListError(f"invalid TNAuthList entry: {exc}") from exc
        # pyasn1's DER decoder tolerates some BER (long-form lengths); certificates are DER
        # (RFC 5280 section 4.1), so the value must be the one canonical encoding.
        if value.to_der() != data:
            raise TNAuthListError("TNAuthList is BER, not DER (a non-minimal encoding)")
        return value


def _entry_from_asn1(item: object) -> TNEntry:
    name = item.getName()  # type: ignore[attr-defined]
    component = item.getComponent()  # type: ignore[attr-defined]
    if name == "spc":
        return Spc(code=bytes(component.asOctets()).decode("ascii"))
    if name == "one":
        return Tn(number=bytes(component.asOctets()).decode("ascii"))
    if name == "range":
        return TnRange(
            start=bytes(component["start"].asOctets()).decode("ascii"),
            count=int(component["count"]),
        )
    raise TNAuthListError(f"unknown TNEntry alternative {name!r}")


# --------------------------------------------------------------------------------------------
# A minimal DER TLV reader: diagnosis messages and raw extension access only. All decoding of
# meaning goes through pyasn1 or cryptography.
# --------------------------------------------------------------------------------------------

_UNIVERSAL_NAMES = {
    0x01: "BOOLEAN",
    0x02: "INTEGER",
    0x03: "BIT STRING",
    0x04: "OCTET STRING",
    0x05: "NULL",
    0x06: "OBJECT IDENTIFIER",
    0x0C: "UTF8String",
    0x13: "PrintableString",
    0x16: "IA5String",
    0x30: "SEQUENCE",
    0x31: "SET",
}


class _TlvError(Exception):
    pass


def _read_tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag byte, content offset, content length) of the TLV at ``offset``; single-byte tags."""
    if offset + 2 > len(data):
        raise _TlvError(f"truncated header at offset {offset}")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise _TlvError(f"multi-byte tag at offset {offset}")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4:
            raise _TlvError(f"unsupported length form 0x{first:02x} at offset {offset + 1}")
        if pos + n > len(data):
            raise _TlvError(f"truncated length at offset {offset + 1}")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise _TlvError(
            f"length {length} at offset {offset + 1} overruns the {len(data) - pos} byte(s) left"
        )
    return tag, pos, length


def _children(data: bytes, start: int, length: int) -> Iterator[tuple[int, int, int, int]]:
    """(tag, tlv offset, content offset, content length) for each TLV inside a constructed one."""
    pos, end = start, start + length
    while pos < end:
        tag, content, size = _read_tlv(data[:end], pos)
        yield tag, pos, content, size
        pos = content + size


def _tag_name(tag: int) -> str:
    if tag & 0xC0 == 0x80:
        return f"[{tag & 0x1F}]"
    return _UNIVERSAL_NAMES.get(tag, f"tag 0x{tag:02x}")


def _diagnose(data: bytes) -> str | None:
    """Name the structural defect of a TNAuthList that failed to decode, when we can see it."""
    if not data:
        return "empty TNAuthList value"
    if data[0] != 0x30:
        if all(0x20 <= b < 0x7F for b in data):
            return f"TNAuthList is ASCII text ({data[:32]!r}), not DER"
        return f"TNAuthList must start with a SEQUENCE (0x30), found {_tag_name(data[0])}"
    try:
        _tag, content, length = _read_tlv(data, 0)
        if content + length < len(data):
            return f"{len(data) - content - length} trailing byte(s) after the SEQUENCE"
        for index, (tag, _pos, inner, size) in enumerate(_children(data, content, length)):
            if tag not in (0xA0, 0xA1, 0xA2):
                return (
                    f"entry {index} is a bare {_tag_name(tag)}, not tagged [0] spc, "
                    "[1] range or [2] one"
                )
            wrapped, inner_content, inner_size = _read_tlv(data[: inner + size], inner)
            expected = 0x30 if tag == 0xA1 else 0x16
            if wrapped != expected:
                return (
                    f"entry {index} {_tag_name(tag)} wraps {_tag_name(wrapped)}, "
                    f"expected {_tag_name(expected)}"
                )
            if inner_content + inner_size != inner + size:
                return f"entry {index} has bytes after its {_tag_name(wrapped)}"
    except _TlvError as exc:
        return f"malformed DER in TNAuthList: {exc}"
    return None


def _decode_oid(content: bytes) -> str:
    if not content:
        raise _TlvError("empty OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if content[-1] & 0x80:
        raise _TlvError("truncated OBJECT IDENTIFIER")
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])


def _raw_extensions(tbs: bytes) -> dict[str, tuple[bool, bytes]]:
    """Extension OID -> (critical, extnValue bytes) straight from the TBSCertificate DER.

    Used where the exact encoding matters (the KeyUsage BIT STRING) or where cryptography
    refuses to parse the extensions at all.
    """
    _tag, content, length = _read_tlv(tbs, 0)
    for tag, _pos, inner, size in _children(tbs, content, length):
        if tag != 0xA3:  # extensions [3] EXPLICIT Extensions (RFC 5280 section 4.1)
            continue
        seq_tag, seq_content, seq_len = _read_tlv(tbs[: inner + size], inner)
        if seq_tag != 0x30:
            raise _TlvError("extensions are not a SEQUENCE")
        found: dict[str, tuple[bool, bytes]] = {}
        for ext_tag, _p, ext_content, ext_len in _children(tbs, seq_content, seq_len):
            if ext_tag != 0x30:
                raise _TlvError("an extension is not a SEQUENCE")
            parts = list(_children(tbs, ext_content, ext_len))
            if len(parts) not in (2, 3) or parts[0][0] != 0x06 or parts[-1][0] != 0x04:
                raise _TlvError("an extension is not SEQUENCE {OID, [BOOLEAN], OCTET STRING}")
            oid = _decode_oid(tbs[parts[0][2] : parts[0][2] + parts[0][3]])
            critical = len(parts) == 3 and tbs[parts[1][2] : parts[1][2] + parts[1][3]] != b"\x00"
            found[oid] = (critical, tbs[parts[-1][2] : parts[-1][2] + parts[-1][3]])
        return found
    return {}


# --------------------------------------------------------------------------------------------
# Loading certificates
# --------------------------------------------------------------------------------------------

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


def _der_tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _tlvs(data: bytes, start: int, length: int) -> list[bytes]:
    return [
        data[pos : content + size] for _tag, pos, content, size in _children(data, start, length)
    ]


def _rewrite_signature_field(tbs: bytes, rewrite: Callable[[bytes], bytes | None]) -> bytes | None:
    """``tbs`` with its ``signature`` AlgorithmIdentifier rewritten, or None if unchanged."""
    tag, start, length = _read_tlv(tbs, 0)
    if tag != 0x30 or start + length != len(tbs):
        return None
    fields = _tlvs(tbs, start, length)
    index = 2 if fields and fields[0][0] == 0xA0 else 1  # after [0] version and the serial
    if len(fields) <= index:
        return None
    replaced = rewrite(fields[index])
    if replaced is None:
        return None
    return _der_tlv(0x30, b"".join([*fields[:index], replaced, *fields[index + 1 :]]))


def _drop_null(algorithm: bytes) -> bytes | None:
    content = algorithm[2:]
    header_ok = algorithm[:2] == bytes([0x30, len(content)])
    if header_ok and content.endswith(_NULL) and content[:-2] in _ECDSA_SHA2_OIDS:
        return _der_tlv(0x30, content[:-2])
    return None


def _add_null(algorithm: bytes) -> bytes | None:
    content = algorithm[2:]
    if algorithm[:2] == bytes([0x30, len(content)]) and content in _ECDSA_SHA2_OIDS:
        return _der_tlv(0x30, content + _NULL)
    return None


def _without_ecdsa_null_parameters(der: bytes) -> bytes | None:
    try:
        tag, start, length = _read_tlv(der, 0)
        if tag != 0x30 or start + length != len(der):
            return None
        parts = _tlvs(der, start, length)
        if len(parts) != 3:
            return None
        tbs = _rewrite_signature_field(parts[0], _drop_null)
        algorithm = _drop_null(parts[1])
    except _TlvError:
        return None
    if tbs is None and algorithm is None:
        return None
    return _der_tlv(0x30, (tbs or parts[0]) + (algorithm or parts[1]) + parts[2])


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
        tag, start, length = _read_tlv(der, 0)
        if tag != 0x30 or start + length != len(der):
            return None
        parts = list(_children(der, start, length))
    except _TlvError:
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
    except _TlvError:
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
            raw = _raw_extensions(cert.tbs_certificate_bytes).get(oid.dotted_string)
        except _TlvError as exc:
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


# --------------------------------------------------------------------------------------------
# ATIS-1000080 v005 / US SHAKEN CP profile findings
# --------------------------------------------------------------------------------------------


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


class CertRole(enum.StrEnum):
    ROOT = "root"
    INTERMEDIATE = "intermediate"
    LEAF = "leaf"


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One profile rule the certificate breaks. ``rule`` is a stable id from :data:`RULES`."""

    rule: str
    severity: Severity
    message: str


#: Every rule id :func:`profile_findings` can emit, with the text it checks and its source.
RULES: dict[str, str] = {
    # ATIS-1000080 section 6.4.1 unless marked; vN = the version that introduced the rule.
    "atis_version": "version is v3",
    "atis_serial_number": "serial number greater than zero, at least 8 octets (v004)",
    "atis_serial_number_size": "serial holds at least 64 bits of CSPRNG output (v005)",
    "atis_signature_algorithm": "ecdsa-with-SHA256; SHA-384 from P-384 CAs (SHAKEN CP 1.4 6.1.5)",
    "atis_subject_public_key": "id-ecPublicKey P-256; CAs may use P-384 (SHAKEN CP 1.4 6.1.5)",
    "atis_subject_dn": "subject DN has C and CN (v003)",
    "atis_subject_o_required": "subject DN has exactly one O (v004)",
    "atis_subject_c_iso": "C is one ISO 3166-1 alpha-2 code (v005)",
    "atis_issuer_dn": "issuer DN has C, CN and O",
    "atis_subject_cn": "CN contains 'SHAKEN'",
    "atis_subject_cn_root": "a root CN contains 'ROOT', any case (v005)",
    "atis_subject_cn_spc": "an EE CN contains 'SHAKEN', one space, the TNAuthList SPC (v004)",
    "atis_subject_cn_spc_exact": "an EE CN is exactly 'SHAKEN <SPC>' (v004 example, CP 1.4)",
    "shaken_subject_rdn_unknown": "subject only CN, C, O, L, ST, serialNumber (PKI practice)",
    "atis_ext_basic_constraints": "BasicConstraints present, critical, cA TRUE only for CAs",
    "atis_ext_key_usage": "KeyUsage present and critical",
    "atis_ext_key_usage_value": "KeyUsage exactly digitalSignature (EE) or keyCertSign (CA, v005)",
    "rfc5280_key_usage_encoding": "KeyUsage BIT STRING has no trailing zero bits (X.690 11.2.2)",
    "atis_subject_key_identifier": "SubjectKeyIdentifier present",
    "atis_subject_key_identifier_size": "SKI is 160 bits long (v004)",
    "atis_subject_key_identifier_hash": "SKI is the SHA-1 of the public key (v004)",
    "atis_ext_authority_key_identifier": "AKI keyIdentifier present, equal to the issuer SKI",
    "atis_ext_certificate_policies": "CertificatePolicies present with exactly one policy OID",
    "shaken_certificate_policies_id": f"that OID is a SHAKEN CP ({SHAKEN_POLICY_ARC}.x)",
    "shaken_certificate_policies_version": "that OID is not a superseded CP (1.1, 1.2)",
    "atis_certificate_policy_critical": "CertificatePolicies should be non-critical",
    "atis_root_certificate_policies": "a root has no CertificatePolicies (v005)",
    "atis_ext_crl_distribution": "CRLDP with exactly one DistributionPoint naming an HTTP URL",
    "atis_ext_crl_distribution_struct": "that DistributionPoint carries a cRLIssuer (v004)",
    "atis_root_crl_distribution": "a root has no CRLDP (v005)",
    "atis_tn_auth_list": "an EE TNAuthList holds exactly one SPC and no TN entries",
    "atis_tn_auth_list_spc_format": "the SPC has only digits and uppercase letters (v005)",
    "atis_tn_auth_list_ca": "no TNAuthList in CA certificates (RFC 9060 delegation aside)",
    "atis_ext_not_specified": "no extension beyond KU, BC, CP, SKI, AKI, CRLDP, TNAuthList (v005)",
}

_ALLOWED_EXTENSIONS = frozenset(
    {
        ExtensionOID.KEY_USAGE.dotted_string,
        ExtensionOID.BASIC_CONSTRAINTS.dotted_string,
        ExtensionOID.CERTIFICATE_POLICIES.dotted_string,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER.dotted_string,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER.dotted_string,
        ExtensionOID.CRL_DISTRIBUTION_POINTS.dotted_string,
        TNAUTHLIST_OID.dotted_string,
    }
)
_SUPERSEDED_POLICIES = frozenset({f"{SHAKEN_POLICY_ARC}.1", f"{SHAKEN_POLICY_ARC}.2"})
_SUBJECT_ATTRIBUTES = frozenset(
    {
        NameOID.COMMON_NAME,
        NameOID.COUNTRY_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.LOCALITY_NAME,
        NameOID.STATE_OR_PROVINCE_NAME,
        NameOID.SERIAL_NUMBER,
    }
)
_KU_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)
_SPC_FORMAT = re.compile(r"[0-9A-Z]+")
_ISO_ALPHA2 = re.compile(r"[A-Z]{2}")


def infer_role(cert: x509.Certificate) -> CertRole:
    """Root if a self-signed CA, intermediate if another CA, else leaf (BasicConstraints)."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except (x509.ExtensionNotFound, ValueError):
        is_ca = False
    if not is_ca:
        return CertRole.LEAF
    return CertRole.ROOT if _self_signed(cert) else CertRole.INTERMEDIATE


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return issued_over_legacy_encoding(cert, cert)
    return True


def _attr_values(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    values = []
    for attribute in name.get_attributes_for_oid(oid):
        value = attribute.value
        values.append(value if isinstance(value, str) else bytes(value).decode("latin-1"))
    return values


class _Collector:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def error(self, rule: str, message: str) -> None:
        self.findings.append(Finding(rule=rule, severity=Severity.ERROR, message=message))

    def warning(self, rule: str, message: str) -> None:
        self.findings.append(Finding(rule=rule, severity=Severity.WARNING, message=message))


def profile_findings(
    cert: x509.Certificate,
    *,
    role: CertRole | None = None,
    issuer: x509.Certificate | None = None,
) -> tuple[Finding, ...]:
    """Every ATIS-1000080 v005 / US SHAKEN CP rule ``cert`` breaks, in a stable order.

    ``role`` defaults to :func:`infer_role`. ``issuer``, when given, lets the AKI be matched
    against the issuer's SKI. Rule ids are listed in :data:`RULES`; effective dates of the
    rules are not applied (this is the current profile). Never raises.
    """
    role = role if role is not None else infer_role(cert)
    out = _Collector()
    is_ca = role is not CertRole.LEAF
    _check_basics(cert, role, out)
    _check_names(cert, role, out)
    try:
        extensions: x509.Extensions | None = cert.extensions
    except ValueError as exc:
        extensions = None
        out.error("atis_ext_not_specified", f"extensions do not parse: {exc}")
    try:
        raw = _raw_extensions(cert.tbs_certificate_bytes)
    except _TlvError as exc:
        raw = {}
        out.error("atis_ext_not_specified", f"extensions are not valid DER: {exc}")
    if extensions is not None:
        _check_constraints(cert, extensions, raw, is_ca, out)
        _check_key_ids(cert, extensions, role, issuer, out)
        _check_policies_and_crldp(extensions, role, out)
    _check_tnauthlist(cert, role, out)
    unexpected = sorted(oid for oid in raw if oid not in _ALLOWED_EXTENSIONS)
    if unexpected:
        out.error(
            "atis_ext_not_specified",
            f"extensions outside the ATIS-1000080 v005 set: {', '.join(unexpected)}",
        )
    return tuple(out.findings)


def _check_basics(cert: x509.Certificate, role: CertRole, out: _Collector) -> None:
    if cert.version is not x509.Version.v3:
        out.error("atis_version", f"version is {cert.version.name}, not v3")
    serial = cert.serial_number
    if serial <= 0:
        out.error("atis_serial_number", f"serial number {serial} is not greater than zero")
    elif serial.bit_length() <= 56:
        # Fewer than 8 octets: the v004 reading of "64 bits of CSPRNG output".
        out.error(
            "atis_serial_number",
            f"serial number has {(serial.bit_length() + 8) // 8} octets, fewer than 8",
        )
    elif serial.bit_length() < 64:
        # A number below 2**63 cannot carry 64 bits of CSPRNG output (ATIS-1000080 v005).
        out.error(
            "atis_serial_number_size",
            f"serial number has {serial.bit_length()} bits, fewer than 64",
        )
    try:
        sig_oid = cert.signature_algorithm_oid
    except ValueError as exc:
        out.error("atis_signature_algorithm", f"signature algorithm unreadable: {exc}")
    else:
        allowed = {SignatureAlgorithmOID.ECDSA_WITH_SHA256, SignatureAlgorithmOID.ECDSA_WITH_SHA384}
        if sig_oid not in allowed:
            out.error(
                "atis_signature_algorithm",
                f"signature algorithm {sig_oid.dotted_string} ({sig_oid._name}) is not "
                "ecdsa-with-SHA256",
            )
    algorithm, curve = _spki_algorithm(cert.tbs_certificate_bytes)
    curves = {_P256: "P-256"} if role is CertRole.LEAF else {_P256: "P-256", _P384: "P-384"}
    if algorithm != _ID_EC_PUBLIC_KEY:
        out.error(
            "atis_subject_public_key", f"public key algorithm {algorithm} is not id-ecPublicKey"
        )
    elif curve not in curves:
        out.error(
            "atis_subject_public_key",
            f"public key curve {curve} is not {' or '.join(curves.values())}",
        )


_ID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_P256 = "1.2.840.10045.3.1.7"
_P384 = "1.3.132.0.34"


def _spki(tbs: bytes) -> bytes:
    """The SubjectPublicKeyInfo TLV of a TBSCertificate (RFC 5280 section 4.1)."""
    tag, start, length = _read_tlv(tbs, 0)
    if tag != 0x30:
        raise _TlvError("TBSCertificate is not a SEQUENCE")
    fields = _tlvs(tbs, start, length)
    index = 6 if fields and fields[0][0] == 0xA0 else 5
    if len(fields) <= index or fields[index][0] != 0x30:
        raise _TlvError("no SubjectPublicKeyInfo")
    return fields[index]


def _spki_algorithm(tbs: bytes) -> tuple[str | None, str | None]:
    """(algorithm OID, named-curve OID) of the subject key; None where absent or unreadable."""
    try:
        spki = _spki(tbs)
        _tag, start, length = _read_tlv(spki, 0)
        algorithm = _tlvs(spki, start, length)[0]
        _tag, a_start, a_length = _read_tlv(algorithm, 0)
        parts = list(_children(algorithm, a_start, a_length))
    except (_TlvError, IndexError):
        return None, None
    oids = [_decode_oid(algorithm[c : c + n]) if t == 0x06 else None for t, _p, c, n in parts]
    return (oids[0] if oids else None), (oids[1] if len(oids) > 1 else None)


def _check_names(cert: x509.Certificate, role: CertRole, out: _Collector) -> None:
    subject = cert.subject
    countries = _attr_values(subject, NameOID.COUNTRY_NAME)
    common_names = _attr_values(subject, NameOID.COMMON_NAME)
    organizations = _attr_values(subject, NameOID.ORGANIZATION_NAME)
    if not countries or not common_names:
        missing = [n for n, v in (("C", countries), ("CN", common_names)) if not v]
        out.error("atis_subject_dn", f"subject DN lacks {' and '.join(missing)}")
    if len(organizations) != 1:
        out.error(
            "atis_subject_o_required", f"subject DN has {len(organizations)} O attributes, not 1"
        )
    if len(countries) != 1 or not _ISO_ALPHA2.fullmatch(countries[0]):
        out.error(
            "atis_subject_c_iso", f"subject C {countries!r} is not one ISO 3166-1 alpha-2 code"
        )
    issuer = cert.issuer
    missing_issuer = [
        label
        for label, oid in (
            ("C", NameOID.COUNTRY_NAME),
            ("CN", NameOID.COMMON_NAME),
            ("O", NameOID.ORGANIZATION_NAME),
        )
        if not issuer.get_attributes_for_oid(oid)
    ]
    if missing_issuer:
        out.error("atis_issuer_dn", f"issuer DN lacks {', '.join(missing_issuer)}")
    cn = common_names[0] if common_names else ""
    if "SHAKEN" not in cn:
        out.error("atis_subject_cn", f"CN {cn!r} does not contain 'SHAKEN'")
    if role is CertRole.ROOT and "ROOT" not in cn.upper():
        out.error("atis_subject_cn_root", f"root CN {cn!r} does not contain 'ROOT'")
    unknown = sorted(
        {
            attribute.oid._name
            if attribute.oid._name != "Unknown OID"
            else attribute.oid.dotted_string
            for attribute in subject
            if attribute.oid not in _SUBJECT_ATTRIBUTES
        }
    )
    if unknown:
        out.warning(
            "shaken_subject_rdn_unknown",
            f"subject has attributes beyond CN, C, O, L, ST, serialNumber: {', '.join(unknown)}",
        )


def _check_constraints(
    cert: x509.Certificate,
    extensions: x509.Extensions,
    raw: dict[str, tuple[bool, bytes]],
    is_ca: bool,
    out: _Collector,
) -> None:
    try:
        bc = extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        out.error("atis_ext_basic_constraints", "BasicConstraints extension is absent")
    else:
        if not bc.critical:
            out.error("atis_ext_basic_constraints", "BasicConstraints is not critical")
        if bc.value.ca is not is_ca:
            out.error(
                "atis_ext_basic_constraints",
                f"BasicConstraints cA is {bc.value.ca} for a {'CA' if is_ca else 'leaf'}",
            )
    try:
        ku = extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        out.error("atis_ext_key_usage", "KeyUsage extension is absent")
    else:
        if not ku.critical:
            out.error("atis_ext_key_usage", "KeyUsage is not critical")
        flags = {flag for flag in _KU_FLAGS if getattr(ku.value, flag)}
        if ku.value.key_agreement:
            flags |= {f for f in ("encipher_only", "decipher_only") if getattr(ku.value, f)}
        wanted = {"key_cert_sign"} if is_ca else {"digital_signature"}
        if flags != wanted:
            out.error(
                "atis_ext_key_usage_value",
                f"KeyUsage is {{{', '.join(sorted(flags))}}}, expected exactly "
                f"{next(iter(wanted))}",
            )
        encoded = raw.get(ExtensionOID.KEY_USAGE.dotted_string)
        if encoded is not None and not _der_named_bits_ok(encoded[1]):
            out.error(
                "rfc5280_key_usage_encoding",
                f"KeyUsage BIT STRING {encoded[1].hex()} keeps trailing zero bits (not DER)",
            )


def _der_named_bits_ok(value: bytes) -> bool:
    """X.690 11.2.2: a DER named-bit BIT STRING has its trailing zero bits removed."""
    if len(value) < 3 or value[0] != 0x03 or value[1] != len(value) - 2:
        return False
    unused, bits = value[2], value[3:]
    if not bits:
        return unused == 0
    last = bits[-1]
    if unused > 7 or last == 0:
        return False
    trailing = (last & -last).bit_length() - 1
    return unused == trailing


def _check_key_ids(
    cert: x509.Certificate,
    extensions: x509.Extensions,
    role: CertRole,
    issuer: x509.Certificate | None,
    out: _Collector,
) -> None:
    ski: bytes | None = None
    try:
        ski = extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        out.error("atis_subject_key_identifier", "SubjectKeyIdentifier extension is absent")
    if ski is not None and len(ski) != 20:
        out.error(
            "atis_subject_key_identifier_size", f"SKI has {len(ski) * 8} bits, not 160 (SHA-1)"
        )
    elif ski is not None and ski not in _sha1_key_ids(cert):
        # A 160-bit SKI made some other way still works for path building, so only a warning.
        out.warning(
            "atis_subject_key_identifier_hash",
            f"SKI {ski.hex()} is not the SHA-1 of the public key",
        )
    try:
        aki = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        if role is not CertRole.ROOT:
            out.error("atis_ext_authority_key_identifier", "AuthorityKeyIdentifier is absent")
        return
    if aki.key_identifier is None:
        out.error(
            "atis_ext_authority_key_identifier", "AuthorityKeyIdentifier has no keyIdentifier"
        )
        return
    if role is CertRole.ROOT:
        if ski is not None and aki.key_identifier != ski:
            out.error(
                "atis_ext_authority_key_identifier", "root AKI keyIdentifier differs from its SKI"
            )
        return
    if issuer is not None:
        try:
            issuer_ski = issuer.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            ).value.digest
        except (x509.ExtensionNotFound, ValueError):
            issuer_ski = None
        if issuer_ski is not None and issuer_ski != aki.key_identifier:
            out.error(
                "atis_ext_authority_key_identifier",
                f"AKI {aki.key_identifier.hex()} differs from the issuer SKI {issuer_ski.hex()}",
            )


def _sha1_key_ids(cert: x509.Certificate) -> tuple[bytes, ...]:
    """SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2 method 1) and of the whole SPKI."""
    try:
        spki = _spki(cert.tbs_certificate_bytes)
        _tag, start, length = _read_tlv(spki, 0)
        bits = _tlvs(spki, start, length)[1]
        _tag, b_start, b_length = _read_tlv(bits, 0)
    except (_TlvError, IndexError):
        return ()
    key_bits = bits[b_start + 1 : b_start + b_length]  # after the unused-bits octet
    return hashlib.sha1(key_bits).digest(), hashlib.sha1(spki).digest()


def _check_policies_and_crldp(extensions: x509.Extensions, role: CertRole, out: _Collector) -> None:
    try:
        policies_ext = extensions.get_extension_for_class(x509.CertificatePolicies)
    except x509.ExtensionNotFound:
        policies_ext = None
    if role is CertRole.ROOT:
        if policies_ext is not None:
            out.error("atis_root_certificate_policies", "a root carries CertificatePolicies")
    elif policies_ext is None:
        out.error("atis_ext_certificate_policies", "CertificatePolicies extension is absent")
    else:
        oids = [info.policy_identifier.dotted_string for info in policies_ext.value]
        if len(oids) != 1:
            out.error(
                "atis_ext_certificate_policies",
                f"CertificatePolicies has {len(oids)} policies, not exactly one",
            )
        elif not oids[0].startswith(SHAKEN_POLICY_ARC + "."):
            out.error(
                "shaken_certificate_policies_id",
                f"policy {oids[0]} is not a SHAKEN CP OID ({SHAKEN_POLICY_ARC}.x)",
            )
        elif oids[0] in _SUPERSEDED_POLICIES:
            out.warning(
                "shaken_certificate_policies_version",
                f"policy {oids[0]} names a superseded SHAKEN CP version (current: 1.3, 1.4)",
            )
        if policies_ext.critical:
            out.warning("atis_certificate_policy_critical", "CertificatePolicies is critical")

    try:
        crldp: x509.CRLDistributionPoints | None = extensions.get_extension_for_class(
            x509.CRLDistributionPoints
        ).value
    except x509.ExtensionNotFound:
        crldp = None
    if role is CertRole.ROOT:
        if crldp is not None:
            out.error("atis_root_crl_distribution", "a root carries CRL Distribution Points")
        return
    if crldp is None:
        out.error("atis_ext_crl_distribution", "CRL Distribution Points extension is absent")
        return
    points = list(crldp)
    if len(points) != 1:
        out.error(
            "atis_ext_crl_distribution",
            f"CRL Distribution Points has {len(points)} DistributionPoints, not 1",
        )
        return
    point = points[0]
    uris = [
        n.value
        for n in point.full_name or ()
        if isinstance(n, x509.UniformResourceIdentifier)
        and n.value.lower().startswith(("http://", "https://"))
    ]
    if not uris:
        out.error("atis_ext_crl_distribution", "the DistributionPoint names no HTTP(S) URL")
    if not point.crl_issuer:
        out.error("atis_ext_crl_distribution_struct", "the DistributionPoint has no cRLIssuer")


def _check_tnauthlist(cert: x509.Certificate, role: CertRole, out: _Collector) -> None:
    try:
        tnal = tnauthlist_of(cert)
        problem: str | None = None
    except CertificateError as exc:
        tnal, problem = None, str(exc)
    if role is not CertRole.LEAF:
        if tnal is not None or problem is not None:
            out.error(
                "atis_tn_auth_list_ca",
                "a CA certificate carries a TNAuthList (allowed only for RFC 9060 delegation)",
            )
        return
    common_names = _attr_values(cert.subject, NameOID.COMMON_NAME)
    cn = common_names[0] if common_names else ""
    if tnal is None:
        reason = problem if problem is not None else "TNAuthList extension is absent"
        out.error("atis_tn_auth_list", reason)
        out.error("atis_subject_cn_spc", f"CN {cn!r} cannot be checked: no usable SPC ({reason})")
        return
    spc = tnal.spc
    if len(tnal.entries) != 1 or spc is None:
        kinds = ", ".join(type(e).__name__ for e in tnal.entries)
        out.error("atis_tn_auth_list", f"TNAuthList has entries ({kinds}), not exactly one SPC")
    if spc is None:
        out.error("atis_subject_cn_spc", f"CN {cn!r} cannot be checked: TNAuthList has no SPC")
        return
    if not _SPC_FORMAT.fullmatch(spc):
        out.error(
            "atis_tn_auth_list_spc_format",
            f"SPC {spc!r} has characters other than digits and uppercase letters",
        )
    expected = f"SHAKEN {spc}"
    if not re.search(rf"(?<!\S){re.escape(expected)}(?!\S)", cn):
        out.error("atis_subject_cn_spc", f"CN {cn!r} does not contain {expected!r}")
    elif cn != expected:
        out.warning("atis_subject_cn_spc_exact", f"CN {cn!r} has more than {expected!r}")
