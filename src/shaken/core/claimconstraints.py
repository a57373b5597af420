"""JWT claim constraints in certificates: RFC 8226 section 8 and RFC 9118, parsed and enforced.

A CA that vetted what a signer may assert pins it in the signer's certificate: the
JWTClaimConstraints extension (``id-pe 27``, RFC 8226 section 8) lists claims the PASSporT
must include (``mustInclude``) and, for some claims, the only values they may take
(``permittedValues``); the EnhancedJWTClaimConstraints extension (``id-pe 33``, RFC 9118
section 3) adds ``mustExclude``, claims that must not appear. Branded calling uses them to pin
the ``rcd`` (and ``rcdi``) values a delegate certificate vouches for (RFC 9795's claim
constraints for RCD).

Rules followed (RFC 9118 sections 3, 4 and 6; RFC 8226 section 8):

* ``mustInclude`` absent means only ``iat``, ``orig`` and ``dest`` are required.
* A present claim named in ``permittedValues`` must equal one of the listed values exactly.
  The values are UTF8Strings; a string claim is compared as it is, and a claim whose value is
  a JSON object or array (``rcd``, ``rcdi``) is compared by its RFC 8785 (JCS) canonical form
  with the canonical form of each listed value that parses as JSON, since a string compare of
  two serializations of the same object would depend on member order and whitespace.
* ``mustExclude`` naming ``iat``, ``orig`` or ``dest`` would make every PASSporT invalid, so the
  certificate is treated as if the extension were absent (RFC 9118 section 3).
* Both extensions in one certificate is an error (RFC 9118 section 6): the certificate's
  constraints are unreadable and :class:`ClaimConstraintError` says so.

The ASN.1 of RFC 8226 comes from ``pyasn1_modules.rfc8226``. ``pyasn1_modules`` has no RFC 9118
module, so :class:`EnhancedJWTClaimConstraints` is declared here from RFC 9118 section 8
(``EXPLICIT TAGS``, the same building blocks); the RFC 9118 section 5 example certificate is a
test vector for it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cryptography import x509
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import char, constraint, namedtype, tag, univ
from pyasn1_modules import rfc8226

from shaken.core.errors import CertificateError
from shaken.core.rcd import jcs

__all__ = [
    "BASELINE_CLAIMS",
    "OID_ENHANCED_JWT_CLAIM_CONSTRAINTS",
    "OID_JWT_CLAIM_CONSTRAINTS",
    "ClaimConstraintError",
    "ClaimConstraints",
    "EnhancedJWTClaimConstraints",
    "Violation",
    "constraints_of",
    "decode_constraints",
    "encode_constraints",
    "evaluate",
]

OID_JWT_CLAIM_CONSTRAINTS = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.27")
OID_ENHANCED_JWT_CLAIM_CONSTRAINTS = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.33")
#: Claims every PASSporT carries; RFC 8226 section 8 requires them when mustInclude is absent.
BASELINE_CLAIMS = ("iat", "orig", "dest")

_MAX = constraint.ValueSizeConstraint(1, float("inf"))


class JWTClaimValues(univ.Sequence):  # type: ignore[misc]
    """RFC 9118: ``SEQUENCE { claim, values SEQUENCE SIZE (1..MAX) OF UTF8String }``."""

    componentType = namedtype.NamedTypes(  # noqa: N815
        namedtype.NamedType("claim", rfc8226.JWTClaimName()),
        namedtype.NamedType(
            "values", univ.SequenceOf(componentType=char.UTF8String()).subtype(sizeSpec=_MAX)
        ),
    )


class JWTClaimValuesList(univ.SequenceOf):  # type: ignore[misc]
    """RFC 9118: ``SEQUENCE SIZE (1..MAX) OF JWTClaimValues``."""

    componentType = JWTClaimValues()  # noqa: N815
    sizeSpec = _MAX  # noqa: N815


def _tagged(kind: Any, number: int) -> Any:
    return kind.subtype(explicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, number))


class EnhancedJWTClaimConstraints(univ.Sequence):  # type: ignore[misc]
    """RFC 9118 section 8: mustInclude [0], permittedValues [1], mustExclude [2], one present."""

    componentType = namedtype.NamedTypes(  # noqa: N815
        namedtype.OptionalNamedType("mustInclude", _tagged(rfc8226.JWTClaimNames(), 0)),
        namedtype.OptionalNamedType("permittedValues", _tagged(JWTClaimValuesList(), 1)),
        namedtype.OptionalNamedType("mustExclude", _tagged(rfc8226.JWTClaimNames(), 2)),
    )


class ClaimConstraintError(CertificateError):
    """A claim-constraints extension that cannot be read (bad DER, or both extensions)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimConstraints:
    """The constraints of one certificate, whichever extension carried them."""

    must_include: tuple[str, ...] = ()
    permitted: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    must_exclude: tuple[str, ...] = ()
    #: True for EnhancedJWTClaimConstraints (RFC 9118), False for RFC 8226's.
    enhanced: bool = False

    def __post_init__(self) -> None:
        if not (self.must_include or self.permitted or self.must_exclude):
            raise ValueError("claim constraints need mustInclude, permittedValues or mustExclude")
        if self.must_exclude and not self.enhanced:
            raise ValueError("mustExclude exists only in EnhancedJWTClaimConstraints (RFC 9118)")

    def describe(self) -> list[str]:
        """Human lines for ``cert inspect``."""
        kind = "EnhancedJWTClaimConstraints" if self.enhanced else "JWTClaimConstraints"
        out = [kind]
        if self.must_include:
            out.append(f"  mustInclude: {', '.join(self.must_include)}")
        for claim, values in self.permitted.items():
            out.append(f"  permittedValues {claim}: {' | '.join(values)}")
        if self.must_exclude:
            out.append(f"  mustExclude: {', '.join(self.must_exclude)}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "extension": "EnhancedJWTClaimConstraints" if self.enhanced else "JWTClaimConstraints",
            "mustInclude": list(self.must_include),
            "permittedValues": {k: list(v) for k, v in self.permitted.items()},
            "mustExclude": list(self.must_exclude),
        }


def _names(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value)


def decode_constraints(der: bytes, *, enhanced: bool) -> ClaimConstraints:
    """One extension value (DER) as :class:`ClaimConstraints`.

    :raises ClaimConstraintError: not DER of the ASN.1 type, trailing bytes, or no component.
    """
    spec: Any = EnhancedJWTClaimConstraints() if enhanced else rfc8226.JWTClaimConstraints()
    what = "EnhancedJWTClaimConstraints" if enhanced else "JWTClaimConstraints"
    try:
        value, rest = der_decoder.decode(der, asn1Spec=spec)
    except (PyAsn1Error, ValueError, TypeError) as exc:
        raise ClaimConstraintError(f"the {what} extension is not valid DER: {exc}") from None
    if rest:
        raise ClaimConstraintError(f"the {what} extension has {len(rest)} trailing bytes")
    if der_encoder.encode(value) != der:
        raise ClaimConstraintError(f"the {what} extension is not DER (it re-encodes differently)")
    include = _names(value["mustInclude"]) if value["mustInclude"].isValue else ()
    permitted: dict[str, tuple[str, ...]] = {}
    if value["permittedValues"].isValue:
        member = "values" if enhanced else "permitted"
        for entry in value["permittedValues"]:
            claim = str(entry["claim"])
            if claim in permitted:
                raise ClaimConstraintError(f"the {what} extension lists {claim!r} twice")
            permitted[claim] = tuple(str(v) for v in entry[member])
    exclude: tuple[str, ...] = ()
    if enhanced and value["mustExclude"].isValue:
        exclude = _names(value["mustExclude"])
    try:
        return ClaimConstraints(
            must_include=include,
            permitted=MappingProxyType(permitted),
            must_exclude=exclude,
            enhanced=enhanced,
        )
    except ValueError as exc:
        raise ClaimConstraintError(f"the {what} extension: {exc}") from None


def encode_constraints(constraints: ClaimConstraints) -> bytes:
    """The DER extension value of ``constraints`` (the toolkit's CA issues these)."""
    if constraints.enhanced:
        value: Any = EnhancedJWTClaimConstraints()
        values_type: Any = JWTClaimValues
        list_type: Any = JWTClaimValuesList
        member = "values"
    else:
        value = rfc8226.JWTClaimConstraints()
        values_type = rfc8226.JWTClaimPermittedValues
        list_type = rfc8226.JWTClaimPermittedValuesList
        member = "permitted"
    if constraints.must_include:
        names = value["mustInclude"]
        for name in constraints.must_include:
            names.append(rfc8226.JWTClaimName(name))
    if constraints.permitted:
        entries = value["permittedValues"]
        assert isinstance(entries, list_type)
        for claim, allowed in constraints.permitted.items():
            entry = values_type()
            entry["claim"] = claim
            for item in allowed:
                entry[member].append(char.UTF8String(item))
            entries.append(entry)
    if constraints.must_exclude:
        names = value["mustExclude"]
        for name in constraints.must_exclude:
            names.append(rfc8226.JWTClaimName(name))
    return bytes(der_encoder.encode(value))


def constraints_of(certificate: x509.Certificate) -> ClaimConstraints | None:
    """The claim constraints of ``certificate``, or None when it carries none that apply.

    Parsed once per certificate (a verifier sees the same few signing certificates on every
    call, and the ASN.1 decode costs more than the rest of a branding verdict).

    :raises ClaimConstraintError: both extensions (RFC 9118 section 6), or one is malformed.
    """
    return _constraints_of(certificate)


@functools.lru_cache(maxsize=4096)
def _constraints_of(certificate: x509.Certificate) -> ClaimConstraints | None:
    found: dict[bool, bytes] = {}
    for extension in certificate.extensions:
        if extension.oid == OID_JWT_CLAIM_CONSTRAINTS:
            found[False] = _raw(extension)
        elif extension.oid == OID_ENHANCED_JWT_CLAIM_CONSTRAINTS:
            found[True] = _raw(extension)
    if len(found) == 2:
        raise ClaimConstraintError(
            "the certificate has both JWTClaimConstraints and EnhancedJWTClaimConstraints"
            " (RFC 9118 section 6 forbids it)"
        )
    if not found:
        return None
    enhanced, der = next(iter(found.items()))
    constraints = decode_constraints(der, enhanced=enhanced)
    if any(name in BASELINE_CLAIMS for name in constraints.must_exclude):
        # RFC 9118 section 3: treat the certificate as if the extension were absent.
        return None
    return constraints


def _raw(extension: x509.Extension[x509.ExtensionType]) -> bytes:
    value = extension.value
    if isinstance(value, x509.UnrecognizedExtension):
        return value.value
    return value.public_bytes()


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken constraint: which rule, which claim, and a sentence."""

    rule: str  # "mustInclude" | "permittedValues" | "mustExclude"
    claim: str
    detail: str


def _canonical(value: Any) -> bytes:
    return jcs(value)


def _permitted(actual: Any, allowed: Sequence[str]) -> bool:
    if isinstance(actual, str):
        return actual in allowed
    try:
        mine = _canonical(actual)
    except (TypeError, ValueError):
        return False
    for item in allowed:
        try:
            theirs = _canonical(json.loads(item))
        except (ValueError, TypeError, RecursionError):
            continue
        if theirs == mine:
            return True
    return False


def evaluate(constraints: ClaimConstraints, claims: Mapping[str, Any]) -> list[Violation]:
    """Every constraint ``claims`` (the decoded PASSporT payload) breaks, in rule order."""
    out: list[Violation] = []
    required = constraints.must_include or BASELINE_CLAIMS
    for name in required:
        if name not in claims:
            out.append(
                Violation("mustInclude", name, f"the certificate requires the claim {name!r}")
            )
    for name, allowed in constraints.permitted.items():
        if name in claims and not _permitted(claims[name], allowed):
            out.append(
                Violation(
                    "permittedValues",
                    name,
                    f"the claim {name!r} is not one of the {len(allowed)} value(s) the"
                    " certificate permits",
                )
            )
    for name in constraints.must_exclude:
        if name in claims:
            out.append(
                Violation("mustExclude", name, f"the certificate forbids the claim {name!r}")
            )
    return out
