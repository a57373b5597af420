"""PASSporT (RFC 8225) with the SHAKEN (RFC 8588), div (RFC 8946) and rcd (RFC 9795) claims.

Decoding is split from validation on purpose. :func:`decode_token` only checks what any compact
JWS must be: three base64url segments whose first two are JSON objects without duplicate member
names. The verification pipeline then checks the header (:meth:`PassportHeader.from_json`) and
the claims (:meth:`PassportClaims.from_json`) in the order docs/architecture.md section 3
fixes, so that the
first failing check names the Reason. The signature is always checked over the segments as
received; canonical JSON (RFC 8225 section 9) is used only when *we* produce segments, or when
the compact form must be rebuilt from SIP (RFC 8224 section 5.1).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from shaken.core.errors import PassportError
from shaken.core.jws import b64url_decode, b64url_encode
from shaken.core.reasons import Reason
from shaken.core.tn import PartyIdentity

__all__ = [
    "ATTESTATION_LEVELS",
    "UUID_PATTERN",
    "DecodedToken",
    "PassportClaims",
    "PassportHeader",
    "canonical_json",
    "decode_json_segment",
    "decode_token",
    "encode_segments",
    "header_segment",
    "rebuild_compact_signing_input",
]

ATTESTATION_LEVELS = ("A", "B", "C")
UUID_PATTERN = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def _empty_mapping() -> Mapping[Any, Any]:
    return MappingProxyType({})


# One encoder for every call: json.dumps builds a new one whenever options are given.
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def canonical_json(obj: Any) -> bytes:
    """RFC 8225 section 9: keys sorted by code point, no whitespace, UTF-8, recursively."""
    return _ENCODER.encode(obj).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate member name {dup!r}")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every call: json.loads would build a new one each time it gets hooks.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def _strict_json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        obj = _DECODER.decode(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PassportError(
            Reason.INVALID_TOKEN, f"the PASSporT {what} is not JSON: {exc}"
        ) from None
    if not isinstance(obj, dict):
        raise PassportError(Reason.INVALID_TOKEN, f"the PASSporT {what} is not a JSON object")
    return obj


def decode_json_segment(segment: str, what: str) -> dict[str, Any]:
    """One base64url JWS segment that must hold a JSON object without duplicate members.

    :raises PassportError: ``invalid_token``.
    """
    try:
        raw = b64url_decode(segment)
    except ValueError as exc:
        raise PassportError(Reason.INVALID_TOKEN, f"the PASSporT {what} is {exc}") from None
    return _strict_json_object(raw, what)


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodedToken:
    """A compact JWS split and decoded, with the exact received segments."""

    header_b64: str
    payload_b64: str
    signature_b64: str
    header: Mapping[str, Any]
    payload: Mapping[str, Any]
    signature: bytes

    @property
    def signing_input(self) -> bytes:
        """RFC 7515 section 5.2 step 8: ASCII(header_b64 "." payload_b64), as received."""
        return f"{self.header_b64}.{self.payload_b64}".encode("ascii")


def decode_token(token: str) -> DecodedToken:
    """Split and decode a full-form PASSporT.

    :raises PassportError: ``compact_form`` when the header and payload segments are empty;
        ``invalid_token`` for anything that is not three base64url segments of JSON objects.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise PassportError(
            Reason.INVALID_TOKEN, f"a PASSporT has 3 segments, this one has {len(parts)}"
        )
    header_b64, payload_b64, signature_b64 = parts
    if not header_b64 and not payload_b64:
        raise PassportError(Reason.COMPACT_FORM, "compact form PASSporT (no header and payload)")
    try:
        header_raw = b64url_decode(header_b64)
        payload_raw = b64url_decode(payload_b64)
        signature = b64url_decode(signature_b64)
    except ValueError as exc:
        raise PassportError(Reason.INVALID_TOKEN, f"a PASSporT segment is {exc}") from None
    header = _strict_json_object(header_raw, "header")
    payload = _strict_json_object(payload_raw, "payload")
    return DecodedToken(
        header_b64=header_b64,
        payload_b64=payload_b64,
        signature_b64=signature_b64,
        header=MappingProxyType(header),
        payload=MappingProxyType(payload),
        signature=signature,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PassportHeader:
    """The JOSE protected header of a PASSporT (RFC 8225 section 4, RFC 8224 section 4.1)."""

    alg: str = "ES256"
    typ: str = "passport"
    ppt: str | None = "shaken"
    x5u: str
    extra: Mapping[str, Any] = field(default_factory=_empty_mapping)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, require_ppt: bool = True) -> PassportHeader:
        """Read a decoded header.

        :raises PassportError: ``bad_passport_header`` (436, ATIS-1000082 E9) when alg, typ,
            x5u, or (``require_ppt``) ppt is missing or not a string.
        """
        required = ("alg", "typ", "x5u", "ppt") if require_ppt else ("alg", "typ", "x5u")
        for name in required:
            if not isinstance(obj.get(name), str):
                raise PassportError(
                    Reason.BAD_PASSPORT_HEADER,
                    f"the PASSporT header has no string '{name}'",
                    member=name,
                )
        ppt = obj.get("ppt")
        if ppt is not None and not isinstance(ppt, str):
            raise PassportError(
                Reason.BAD_PASSPORT_HEADER, "the PASSporT header 'ppt' is not a string"
            )
        extra = {k: v for k, v in obj.items() if k not in ("alg", "typ", "ppt", "x5u")}
        return cls(
            alg=obj["alg"], typ=obj["typ"], ppt=ppt, x5u=obj["x5u"], extra=MappingProxyType(extra)
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(alg=self.alg, typ=self.typ, x5u=self.x5u)
        if self.ppt is not None:
            out["ppt"] = self.ppt
        return out


def _identity_object(value: Any, claim: str) -> PartyIdentity:
    """``orig``/``div``: exactly one of ``{"tn": str}`` or ``{"uri": str}`` (RFC 8225 5.2.1)."""
    if not isinstance(value, Mapping):
        raise PassportError(Reason.INVALID_CLAIM, f"'{claim}' is not a JSON object", claim=claim)
    tn, uri = value.get("tn"), value.get("uri")
    if (tn is None) == (uri is None):
        raise PassportError(
            Reason.INVALID_CLAIM, f"'{claim}' must have exactly one of 'tn' and 'uri'", claim=claim
        )
    if tn is not None:
        if not isinstance(tn, str) or not tn:
            raise PassportError(Reason.INVALID_CLAIM, f"'{claim}.tn' is not a non-empty string")
        return PartyIdentity(tn=tn)
    if not isinstance(uri, str) or not uri:
        raise PassportError(Reason.INVALID_CLAIM, f"'{claim}.uri' is not a non-empty string")
    return PartyIdentity(uri=uri)


def _string_list(value: Any, name: str) -> tuple[str, ...]:
    # RFC 8225 makes dest.tn/dest.uri arrays; RFC 8946's div-o example sends a bare string.
    # Lenient on input (standards.md V8), strict on output.
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PassportError(Reason.INVALID_CLAIM, f"'{name}' is not an array of strings")
    return tuple(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class PassportClaims:
    """PASSporT claims. Known claims are typed; all others stay in ``extra``, untouched."""

    orig: PartyIdentity
    dest_tn: tuple[str, ...] = ()
    dest_uri: tuple[str, ...] = ()
    iat: int
    attest: str | None = None
    origid: str | None = None
    div: PartyIdentity | None = None
    div_hi: str | None = None
    opt: str | None = None
    rcd: Mapping[str, Any] | None = None
    rcdi: Mapping[str, Any] | None = None
    crn: str | None = None
    extra: Mapping[str, Any] = field(default_factory=_empty_mapping)

    def __post_init__(self) -> None:
        if not self.dest_tn and not self.dest_uri:
            raise ValueError("dest needs at least one tn or uri")
        if isinstance(self.iat, bool) or not isinstance(self.iat, int):
            raise ValueError("iat must be an integer")
        if self.attest is not None and self.attest not in ATTESTATION_LEVELS:
            raise ValueError("attest must be A, B or C")

    @property
    def origid_is_uuid(self) -> bool:
        return self.origid is not None and UUID_PATTERN.fullmatch(self.origid) is not None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, ppt: str | None) -> PassportClaims:
        """Read decoded claims, checking what ``ppt`` requires.

        SHAKEN (RFC 8588, ATIS-1000082 E14/E19) requires attest, dest, iat, orig and origid;
        ``div`` (RFC 8946) requires dest, iat, orig and div.

        :raises PassportError: ``missing_claim``, ``invalid_claim`` or ``invalid_attest``.
        """
        required = ["dest", "iat", "orig"]
        if ppt == "shaken":
            required += ["attest", "origid"]
        elif ppt in ("div", "div-o"):
            required.append("div")
        missing = [name for name in sorted(required) if name not in obj]
        if missing:
            raise PassportError(
                Reason.MISSING_CLAIM,
                f"the PASSporT lacks the claim(s) {', '.join(missing)}",
                missing=missing,
            )
        iat = obj["iat"]
        if isinstance(iat, bool) or not isinstance(iat, int):
            raise PassportError(
                Reason.INVALID_CLAIM, "'iat' is not an integer NumericDate", claim="iat"
            )
        attest = obj.get("attest")
        if attest is not None and attest not in ATTESTATION_LEVELS:
            raise PassportError(
                Reason.INVALID_ATTEST, f"'attest' is {attest!r}, not A, B or C", attest=attest
            )
        origid = obj.get("origid")
        if origid is not None and not isinstance(origid, str):
            raise PassportError(Reason.INVALID_CLAIM, "'origid' is not a string", claim="origid")
        orig = _identity_object(obj["orig"], "orig")
        dest = obj["dest"]
        if not isinstance(dest, Mapping):
            raise PassportError(Reason.INVALID_CLAIM, "'dest' is not a JSON object", claim="dest")
        dest_tn = _string_list(dest["tn"], "dest.tn") if "tn" in dest else ()
        dest_uri = _string_list(dest["uri"], "dest.uri") if "uri" in dest else ()
        if not dest_tn and not dest_uri:
            raise PassportError(Reason.INVALID_CLAIM, "'dest' names no tn and no uri")
        div = div_hi = None
        if "div" in obj:
            div = _identity_object(obj["div"], "div")
            hi = obj["div"].get("hi")
            if hi is not None and not isinstance(hi, str):
                raise PassportError(Reason.INVALID_CLAIM, "'div.hi' is not a string")
            div_hi = hi
        opt = obj.get("opt")
        if opt is not None and not isinstance(opt, str):
            raise PassportError(Reason.INVALID_CLAIM, "'opt' is not a string")
        rcd, rcdi, crn = obj.get("rcd"), obj.get("rcdi"), obj.get("crn")
        if rcd is not None and not isinstance(rcd, Mapping):
            raise PassportError(Reason.INVALID_CLAIM, "'rcd' is not a JSON object")
        if isinstance(rcd, Mapping) and "nam" in rcd and not isinstance(rcd["nam"], str):
            raise PassportError(Reason.INVALID_CLAIM, "'rcd.nam' is not a string")
        if rcdi is not None and not isinstance(rcdi, Mapping):
            raise PassportError(Reason.INVALID_CLAIM, "'rcdi' is not a JSON object")
        if crn is not None and not isinstance(crn, str):
            raise PassportError(Reason.INVALID_CLAIM, "'crn' is not a string")
        known = {"orig", "dest", "iat", "attest", "origid", "div", "opt", "rcd", "rcdi", "crn"}
        extra = {k: v for k, v in obj.items() if k not in known}
        return cls(
            orig=orig,
            dest_tn=dest_tn,
            dest_uri=dest_uri,
            iat=iat,
            attest=attest,
            origid=origid,
            div=div,
            div_hi=div_hi,
            opt=opt,
            rcd=rcd,
            rcdi=rcdi,
            crn=crn,
            extra=MappingProxyType(extra),
        )

    def canonical(self) -> bytes:
        """The claims in RFC 8225 section 9 canonical JSON."""
        return canonical_json(self.to_json())

    def to_json(self) -> dict[str, Any]:
        """The claims as JSON values, dest arrays sorted (RFC 8225 section 5.2.1)."""
        out: dict[str, Any] = dict(self.extra)
        out["orig"] = _party_json(self.orig)
        dest: dict[str, Any] = {}
        if self.dest_tn:
            dest["tn"] = sorted(self.dest_tn)
        if self.dest_uri:
            dest["uri"] = sorted(self.dest_uri)
        out["dest"] = dest
        out["iat"] = self.iat
        if self.attest is not None:
            out["attest"] = self.attest
        if self.origid is not None:
            out["origid"] = self.origid
        if self.div is not None:
            div = _party_json(self.div)
            if self.div_hi is not None:
                div["hi"] = self.div_hi
            out["div"] = div
        if self.opt is not None:
            out["opt"] = self.opt
        if self.rcd is not None:
            out["rcd"] = dict(self.rcd)
        if self.rcdi is not None:
            out["rcdi"] = dict(self.rcdi)
        if self.crn is not None:
            out["crn"] = self.crn
        return out


def _party_json(party: PartyIdentity) -> dict[str, Any]:
    if party.tn is not None:
        return {"tn": party.tn}
    if party.uri is not None:
        return {"uri": party.uri}
    raise ValueError("an anonymous identity cannot be a PASSporT claim")


def encode_segments(header: PassportHeader, claims: PassportClaims) -> tuple[str, str]:
    """The base64url header and payload segments, from canonical JSON."""
    if header.extra:
        header_b64 = b64url_encode(canonical_json(header.to_json()))
    else:
        header_b64 = header_segment(alg=header.alg, typ=header.typ, ppt=header.ppt, x5u=header.x5u)
    return header_b64, b64url_encode(canonical_json(claims.to_json()))


def header_segment(
    *, x5u: str, ppt: str | None = "shaken", alg: str = "ES256", typ: str = "passport"
) -> str:
    """The base64url header segment of a plain PASSporT header, encoded once per credential.

    Only short values are cached (a real x5u is well under :data:`_CACHED_SEGMENT_CHARS`), so
    the cache is bounded in bytes, not just in entries.
    """
    if len(x5u) + len(ppt or "") + len(alg) + len(typ) > _CACHED_SEGMENT_CHARS:
        return _header_segment.__wrapped__(x5u, ppt, alg, typ)
    return _header_segment(x5u, ppt, alg, typ)


_CACHED_SEGMENT_CHARS = 600


@functools.lru_cache(maxsize=1024)
def _header_segment(x5u: str, ppt: str | None, alg: str, typ: str) -> str:
    header = PassportHeader(alg=alg, typ=typ, ppt=ppt, x5u=x5u)
    return b64url_encode(canonical_json(header.to_json()))


def rebuild_compact_signing_input(
    *,
    alg: str | None,
    ppt: str | None,
    x5u: str,
    orig: PartyIdentity,
    dest: PartyIdentity,
    iat: int | str,
) -> bytes:
    """Rebuild the signing input of a compact-form PASSporT from SIP (RFC 8224 section 5.1).

    The header is ``{"alg", ["ppt",] "typ":"passport", "x5u": info}`` and the payload holds
    ``dest`` (from To), ``iat`` (from Date) and ``orig`` (from From/PAI), in canonical JSON.
    ``iat`` may be given as a string: the RFC 8224 section 5.1 example only verifies that way.
    """
    header: dict[str, Any] = {"alg": alg or "ES256", "typ": "passport", "x5u": x5u}
    if ppt is not None:
        header["ppt"] = ppt
    dest_obj = {"tn": [dest.tn]} if dest.tn is not None else {"uri": [dest.uri]}
    payload = {"dest": dest_obj, "iat": iat, "orig": _party_json(orig)}
    return (
        b64url_encode(canonical_json(header)) + "." + b64url_encode(canonical_json(payload))
    ).encode("ascii")
