"""The RFC 8226 TNAuthList: SPC, TN and TN-range entries, their DER form and TN scope.

Why a real ASN.1 library for TNAuthList. The extension is small, and hand-written byte slicing
(``value[6:]``) is what most SHAKEN code does. That slicing is exactly how the malformed
certificates in the wild got through: an IA5String where a SEQUENCE belongs, an SPC without its
``[0]`` tag, a length byte missing. RFC 8226 Appendix A defines the type with EXPLICIT tags, a
CHOICE, a size constraint and a permitted alphabet; ``pyasn1_modules.rfc8226`` carries that
definition verbatim and pyasn1's DER codec enforces it, so the decoder rejects what the ASN.1
rejects and the encoder cannot produce anything else. We add only the rules ASN.1 cannot express
(a range must not lengthen its numbers, RFC 8226 section 9) and a short diagnosis so that the
error message names the defect instead of quoting a decoder stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1_modules import rfc8226

from shaken.core.der import TlvError, children, read_tlv, tag_name
from shaken.core.errors import ConfigurationError, TNAuthListError

__all__ = ["TNAUTHLIST_OID", "Spc", "TNAuthList", "TNEntry", "Tn", "TnRange"]

#: id-pe-TNAuthList, RFC 8226 section 9.
TNAUTHLIST_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.26")

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


def _diagnose(data: bytes) -> str | None:
    """Name the structural defect of a TNAuthList that failed to decode, when we can see it."""
    if not data:
        return "empty TNAuthList value"
    if data[0] != 0x30:
        if all(0x20 <= b < 0x7F for b in data):
            return f"TNAuthList is ASCII text ({data[:32]!r}), not DER"
        return f"TNAuthList must start with a SEQUENCE (0x30), found {tag_name(data[0])}"
    try:
        _tag, content, length = read_tlv(data, 0)
        if content + length < len(data):
            return f"{len(data) - content - length} trailing byte(s) after the SEQUENCE"
        for index, (tag, _pos, inner, size) in enumerate(children(data, content, length)):
            if tag not in (0xA0, 0xA1, 0xA2):
                return (
                    f"entry {index} is a bare {tag_name(tag)}, not tagged [0] spc, "
                    "[1] range or [2] one"
                )
            wrapped, inner_content, inner_size = read_tlv(data[: inner + size], inner)
            expected = 0x30 if tag == 0xA1 else 0x16
            if wrapped != expected:
                return (
                    f"entry {index} {tag_name(tag)} wraps {tag_name(wrapped)}, "
                    f"expected {tag_name(expected)}"
                )
            if inner_content + inner_size != inner + size:
                return f"entry {index} has bytes after its {tag_name(wrapped)}"
    except TlvError as exc:
        return f"malformed DER in TNAuthList: {exc}"
    return None
