"""The STI-AS: claims, a key, an x5u and a time give an Identity header value.

RFC 8224 section 6.1 and RFC 8588: the protected header is
``{"alg":"ES256","ppt":"shaken","typ":"passport","x5u":...}``, the claims are canonical JSON
(RFC 8225 section 9), the signature is deterministic ECDSA (RFC 8225 section 4.2) and the value
is ``<jws>;info=<x5u>;alg=ES256;ppt=shaken``. Diverted calls get a ``div`` PASSporT (RFC 8946
section 3) signed by the diverting party.

The origid is a UUIDv4 unless the caller gives one (RFC 8588 section 10: opaque and unique per
call); it is the only randomness here and needs no I/O.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from shaken.core.errors import ConfigurationError, SigningError
from shaken.core.fastinit import positional_constructor
from shaken.core.identity import IdentityHeader
from shaken.core.jws import PrivateKey, b64url_encode, sign_es256
from shaken.core.passport import (
    ATTESTATION_LEVELS,
    UUID_PATTERN,
    PassportClaims,
    PassportHeader,
    encode_segments,
    header_segment,
)
from shaken.core.tn import PartyIdentity, canonicalize_tn

__all__ = ["new_origid", "sign_div", "sign_passport", "sign_rcd", "sign_shaken"]


def sign_passport(header: PassportHeader, claims: PassportClaims, key: PrivateKey) -> str:
    """The full-form PASSporT: ``header.payload.signature`` in base64url."""
    header_b64, payload_b64 = encode_segments(header, claims)
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    return f"{header_b64}.{payload_b64}.{b64url_encode(sign_es256(key, signing_input))}"


def _party(value: PartyIdentity | str, what: str) -> PartyIdentity:
    if isinstance(value, PartyIdentity):
        if value.anonymous:
            raise SigningError(f"cannot sign for an anonymous {what}")
        return value
    return PartyIdentity(tn=_tn(value, what))


def _dest(
    value: PartyIdentity | str | Sequence[PartyIdentity | str],
) -> tuple[list[str], list[str]]:
    items = [value] if isinstance(value, (str, PartyIdentity)) else list(value)
    if not items:
        raise SigningError("dest names no party")
    tns: list[str] = []
    uris: list[str] = []
    for item in items:
        party = _party(item, "dest")
        if party.tn is not None:
            tns.append(party.tn)
        elif party.uri is not None:
            uris.append(party.uri)
    return tns, uris


def _iat(now: datetime | None, iat: int | None) -> int:
    if iat is not None:
        if isinstance(iat, bool) or not isinstance(iat, int) or iat <= 0:
            raise SigningError(f"iat must be a positive integer, not {iat!r}")
        return iat
    if now is None:
        raise ConfigurationError("give now or iat")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ConfigurationError("now must be a timezone-aware datetime")
    return int(now.timestamp())


#: IdentityHeader(token, info, alg, ppt, extra), positionally: one per signed call
#: (:mod:`shaken.core.fastinit` says why).
_make_identity_header: Callable[..., IdentityHeader] = positional_constructor(IdentityHeader)


def _identity(token: str, x5u: str, ppt: str) -> str:
    return _make_identity_header(token, x5u, "ES256", ppt, ()).format()


def _check_x5u(x5u: str) -> None:
    if not x5u or any(ch in x5u for ch in "<> \t\r\n;"):
        raise SigningError(f"x5u {x5u!r} is not a usable URL")


def new_origid() -> str:
    """A fresh origid: a random (version 4) UUID in its RFC 4122 text form.

    Formatted by hand: building a ``uuid.UUID`` object costs more than the rest of the claims.
    """
    b = bytearray(secrets.token_bytes(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _tn(value: str, what: str) -> str:
    tn = value if value.isdigit() and value.isascii() else canonicalize_tn(value)
    if not tn:
        raise SigningError(f"{what} {value!r} has no telephone number digits")
    if len(tn) > 15:
        raise SigningError(f"{what} {value!r} is longer than 15 digits (E.164)")
    return tn


def sign_shaken(
    *,
    key: PrivateKey,
    x5u: str,
    orig: PartyIdentity | str,
    dest: PartyIdentity | str | Sequence[PartyIdentity | str],
    attest: str,
    now: datetime | None = None,
    iat: int | None = None,
    origid: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """Sign a SHAKEN PASSporT and return the Identity header value.

    :param orig: the calling TN (any punctuation; canonicalized) or a :class:`PartyIdentity`.
    :param dest: the called TN(s) or identities.
    :param attest: ``A``, ``B`` or ``C`` (RFC 8588 section 4).
    :param now: the signing time (``iat``), unless ``iat`` is given.
    :param origid: a UUID; a fresh UUIDv4 when omitted.
    :raises SigningError: bad claims. :raises ConfigurationError: bad key or time.
    """
    if attest not in ATTESTATION_LEVELS:
        raise SigningError(f"attest must be A, B or C, not {attest!r}")
    if origid is None:
        origid = new_origid()
    elif not UUID_PATTERN.fullmatch(origid):
        raise SigningError(f"origid {origid!r} is not a UUID (RFC 8588 section 10)")
    _check_x5u(x5u)
    # The common call (one TN each way, no extra claims) goes straight to the claims JSON;
    # the general one goes through PassportClaims. Both give the same canonical payload.
    if isinstance(orig, str) and isinstance(dest, str) and not extra_claims:
        # RFC 8225 section 9 canonical JSON, written out: every value here is digits, '#',
        # '*', A/B/C, an integer or a hex UUID, none of which JSON escapes, and the keys are
        # in code-point order. test_sign.py checks this equals canonical_json of the claims.
        payload = (
            f'{{"attest":"{attest}","dest":{{"tn":["{_tn(dest, "dest")}"]}},'
            f'"iat":{_iat(now, iat)},"orig":{{"tn":"{_tn(orig, "orig")}"}},'
            f'"origid":"{origid}"}}'
        ).encode("ascii")
    else:
        tns, uris = _dest(dest)
        extra = dict(extra_claims or {})
        clash = set(extra) & {"attest", "dest", "iat", "orig", "origid"}
        if clash:
            raise SigningError(f"extra claims may not replace {', '.join(sorted(clash))}")
        payload = PassportClaims(
            orig=_party(orig, "orig"),
            dest_tn=tuple(tns),
            dest_uri=tuple(uris),
            iat=_iat(now, iat),
            attest=attest,
            origid=origid,
            extra=extra,
        ).canonical()
    header_b64 = header_segment(x5u=x5u, ppt="shaken")
    payload_b64 = b64url_encode(payload)
    signing_input = f"{header_b64}.{payload_b64}"
    signature = b64url_encode(sign_es256(key, signing_input.encode("ascii")))
    # RFC 8224 section 4 / reference S12: <jws>;info=<x5u>;alg=ES256;ppt=shaken
    return f"{signing_input}.{signature};info=<{x5u}>;alg=ES256;ppt=shaken"


def sign_div(
    *,
    key: PrivateKey,
    x5u: str,
    orig: PartyIdentity | str,
    diverted_from: PartyIdentity | str,
    dest: PartyIdentity | str | Sequence[PartyIdentity | str],
    now: datetime | None = None,
    iat: int | None = None,
    history_index: str | None = None,
) -> str:
    """Sign a ``div`` PASSporT (RFC 8946 section 3) for a call retargeted to ``dest``.

    ``orig`` is copied unchanged from the original PASSporT; ``diverted_from`` is its dest (the
    number that forwarded the call); ``iat`` SHOULD be kept from the original. The key must
    have authority over ``diverted_from``.
    """
    _check_x5u(x5u)
    tns, uris = _dest(dest)
    div = _party(diverted_from, "div")
    claims = PassportClaims(
        orig=_party(orig, "orig"),
        dest_tn=tuple(tns),
        dest_uri=tuple(uris),
        iat=_iat(now, iat),
        div=div,
        div_hi=history_index,
    )
    if div.tn is not None and div.tn in tns:
        raise SigningError("a div PASSporT is only for a changed dest (RFC 8946 section 3)")
    header = PassportHeader(alg="ES256", typ="passport", ppt="div", x5u=x5u)
    return _identity(sign_passport(header, claims, key), x5u, "div")


def sign_rcd(
    *,
    key: PrivateKey,
    x5u: str,
    orig: PartyIdentity | str,
    dest: PartyIdentity | str | Sequence[PartyIdentity | str],
    claims: Mapping[str, Any],
    now: datetime | None = None,
    iat: int | None = None,
) -> str:
    """Sign a separate ``ppt: "rcd"`` PASSporT (RFC 9795 section 4) carrying ``claims``.

    ``claims`` holds ``rcd`` (required) and optionally ``rcdi`` and ``crn``; orig, dest and
    iat are those of the call's SHAKEN PASSporT. Full form, like every extension PASSporT.
    """
    _check_x5u(x5u)
    if "rcd" not in claims:
        raise SigningError("an rcd PASSporT needs the 'rcd' claim")
    unknown = set(claims) - {"rcd", "rcdi", "crn"}
    if unknown:
        raise SigningError(f"an rcd PASSporT carries rcd, rcdi and crn, not {sorted(unknown)}")
    tns, uris = _dest(dest)
    passport = PassportClaims(
        orig=_party(orig, "orig"),
        dest_tn=tuple(tns),
        dest_uri=tuple(uris),
        iat=_iat(now, iat),
        rcd=claims["rcd"],
        rcdi=claims.get("rcdi"),
        crn=claims.get("crn"),
    )
    header = PassportHeader(alg="ES256", typ="passport", ppt="rcd", x5u=x5u)
    return _identity(sign_passport(header, passport, key), x5u, "rcd")
