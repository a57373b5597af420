"""The values STI certificate acquisition puts on the wire: JWKs, fingerprints, JWS, ATC tokens.

Pure (bytes and keys in, values out) and shared by the two sides the project has: the ACME
client and STI-PA client of :mod:`shaken.adapters` and the test STI-PA and ACME STI-CA of
:mod:`shaken.toolkit`, so both sides compute a fingerprint or a JWS signing input the same way.

Where deployed systems disagree with the RFCs, each variant is a named choice here; the RFC
behaviour is the default and readers accept every variant:

* the TNAuthList identifier value and the ATC ``tkvalue`` (RFC 9448 section 3: base64url of
  the DER ``TNAuthorizationList``); the iconectiv STI-PA and Peeringhub use padded standard
  base64 (:data:`TNAUTHLIST_ENCODINGS`; :func:`decode_tnauthlist_value` reads both);
* the ATC ``fingerprint`` of the ACME account key (RFC 9447 section 4: ``SHA256`` and
  colon-separated hex): over the RFC 7638 JWK thumbprint input (RFC 8555 section 8.1), or over
  the SubjectPublicKeyInfo DER as the Peeringhub toolkit computes it (:data:`FINGERPRINT_MODES`;
  :func:`fingerprint_matches` accepts both, in either case);
* the signing input of a POST-as-GET (empty payload): RFC 7515 section 5.1 signs
  ``protected.`` (the empty payload after the dot); Peeringhub documents ``protected`` alone
  (:data:`EMPTY_PAYLOAD_SIGNING`).

The EC coordinates of a JWK are always the full 32 bytes (RFC 7518 section 6.2.1.2, RFC 8555
erratum 7565): stripping leading zeros changes the thumbprint for one key in 256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shaken.core.certs import TNAuthList
from shaken.core.errors import CertificateError, ConfigurationError, PassportError
from shaken.core.jws import (
    PrivateKey,
    PublicKey,
    b64url_decode,
    b64url_encode,
    is_es256_public_key,
    public_key_coordinates,
    public_key_from_coordinates,
    sign_es256,
    spki_der,
    verify_es256,
)
from shaken.core.passport import canonical_json, decode_token

__all__ = [
    "EMPTY_PAYLOAD_SIGNING",
    "FINGERPRINT_MODES",
    "TNAUTHLIST_ENCODINGS",
    "AtcToken",
    "Jws",
    "decode_tnauthlist_value",
    "encode_tnauthlist",
    "fingerprint",
    "fingerprint_matches",
    "jwk_of",
    "jwk_public_key",
    "jwk_thumbprint",
    "make_atc_token",
    "parse_jws",
    "read_atc_token",
    "sign_jws",
]

TNAUTHLIST_ENCODINGS = ("base64url", "base64")
FINGERPRINT_MODES = ("jwk_thumbprint", "spki")
EMPTY_PAYLOAD_SIGNING = ("rfc", "protected_only")
_COORDINATE = 32
_FROM_URLSAFE = str.maketrans("-_", "+/")


# ------------------------------------------------------------------------------------ JWK


def jwk_of(key: PublicKey) -> dict[str, str]:
    """The public JWK of a P-256 key (RFC 7518 section 6.2), coordinates at full length."""
    if not is_es256_public_key(key):
        raise ConfigurationError("ACME and STI account keys are P-256 EC keys (ATIS-1000080)")
    x, y = public_key_coordinates(key)
    return {"kty": "EC", "crv": "P-256", "x": b64url_encode(x), "y": b64url_encode(y)}


def jwk_public_key(jwk: Mapping[str, Any]) -> PublicKey:
    """The P-256 key a JWK describes (extra members such as ``kid`` are ignored).

    :raises CertificateError: not an EC P-256 JWK with 32-byte coordinates on the curve.
    """
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise CertificateError("the JWK is not an EC P-256 key (only ES256 is accepted)")
    try:
        x = b64url_decode(str(jwk["x"]))
        y = b64url_decode(str(jwk["y"]))
    except (KeyError, ValueError) as exc:
        raise CertificateError(f"the JWK coordinates are not base64url: {exc}") from None
    if len(x) != _COORDINATE or len(y) != _COORDINATE:
        raise CertificateError("the JWK coordinates are not 32 bytes each (RFC 7518 6.2.1.2)")
    try:
        return public_key_from_coordinates(x, y)
    except ValueError as exc:
        raise CertificateError(f"the JWK is not a point on P-256: {exc}") from None


def jwk_thumbprint(key: PublicKey) -> bytes:
    """The RFC 7638 SHA-256 thumbprint: the required members, sorted, no whitespace."""
    return hashlib.sha256(canonical_json(jwk_of(key))).digest()


def _colon_hex(digest: bytes, case: str) -> str:
    text = ":".join(f"{b:02X}" for b in digest)
    return text.lower() if case == "lower" else text


def fingerprint(key: PublicKey, *, mode: str = "jwk_thumbprint", case: str = "upper") -> str:
    """The ATC ``fingerprint`` of an ACME account key: ``SHA256 AA:BB:...`` (RFC 9447 4)."""
    if mode == "jwk_thumbprint":
        digest = jwk_thumbprint(key)
    elif mode == "spki":
        digest = hashlib.sha256(spki_der(key)).digest()
    else:
        raise ConfigurationError(f"fingerprint mode {mode!r} is not one of {FINGERPRINT_MODES}")
    if case not in ("upper", "lower"):
        raise ConfigurationError("fingerprint case is 'upper' or 'lower'")
    return f"SHA256 {_colon_hex(digest, case)}"


def fingerprint_matches(text: object, key: PublicKey) -> str | None:
    """Which mode ``text`` is the fingerprint of ``key`` in (case-insensitive), or None."""
    if not isinstance(text, str):
        return None
    value = text.strip().upper()
    for mode in FINGERPRINT_MODES:
        if value == fingerprint(key, mode=mode):
            return mode
    return None


# ----------------------------------------------------------------------------- TNAuthList


def encode_tnauthlist(tnauthlist: TNAuthList, encoding: str = "base64url") -> str:
    """The identifier ``value`` / ATC ``tkvalue`` of a TNAuthList (RFC 9448 section 3)."""
    der = tnauthlist.to_der()
    if encoding == "base64url":
        return b64url_encode(der)
    if encoding == "base64":
        return base64.b64encode(der).decode("ascii")
    raise ConfigurationError(f"TNAuthList encoding {encoding!r} is not one of base64url, base64")


def decode_tnauthlist_value(text: object) -> TNAuthList:
    """Read an identifier value or ``tkvalue`` in any deployed encoding.

    Base64url (with or without padding) and standard base64 both decode; the DER must be an
    RFC 8226 TNAuthorizationList.

    :raises CertificateError: neither encoding, or not a TNAuthList.
    """
    if not isinstance(text, str) or not text or not text.isascii():
        raise CertificateError("the TNAuthList value is not a base64 string")
    raw = text.strip()
    try:
        standard = raw.translate(_FROM_URLSAFE)
        der = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CertificateError(f"the TNAuthList value is not base64 or base64url: {exc}") from None
    return TNAuthList.from_der(der)


# ------------------------------------------------------------------------------------ JWS


@dataclass(frozen=True, slots=True, kw_only=True)
class Jws:
    """A flattened JSON JWS (RFC 7515 section 7.2.2), as ACME sends it (RFC 8555 6.2)."""

    protected: Mapping[str, Any]
    protected_b64: str
    payload: bytes
    payload_b64: str
    signature: bytes

    @property
    def post_as_get(self) -> bool:
        """An empty payload: RFC 8555 section 6.3."""
        return self.payload_b64 == ""

    def payload_json(self) -> dict[str, Any]:
        """The payload as a JSON object (``{}`` for an empty one)."""
        if not self.payload:
            return {}
        try:
            value = json.loads(self.payload)
        except ValueError as exc:
            raise CertificateError(f"the JWS payload is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise CertificateError("the JWS payload is not a JSON object")
        return value

    def verify(self, key: PublicKey) -> str | None:
        """Which signing input the signature covers (``rfc`` or ``protected_only``), or None."""
        rfc = f"{self.protected_b64}.{self.payload_b64}".encode("ascii")
        if verify_es256(key, rfc, self.signature):
            return "rfc"
        if self.post_as_get and verify_es256(
            key, self.protected_b64.encode("ascii"), self.signature
        ):
            return "protected_only"
        return None


def sign_jws(
    key: PrivateKey,
    protected: Mapping[str, Any],
    payload: Mapping[str, Any] | None,
    *,
    empty_payload_signing: str = "rfc",
) -> dict[str, str]:
    """A flattened JWS for an ACME request; ``payload`` None is a POST-as-GET."""
    if empty_payload_signing not in EMPTY_PAYLOAD_SIGNING:
        raise ConfigurationError(f"empty payload signing is one of {EMPTY_PAYLOAD_SIGNING}")
    protected_b64 = b64url_encode(json.dumps(dict(protected), separators=(",", ":")).encode())
    payload_b64 = "" if payload is None else b64url_encode(json.dumps(dict(payload)).encode())
    if payload is None and empty_payload_signing == "protected_only":
        signing_input = protected_b64
    else:
        signing_input = f"{protected_b64}.{payload_b64}"
    signature = sign_es256(key, signing_input.encode("ascii"), deterministic=False)
    return {
        "protected": protected_b64,
        "payload": payload_b64,
        "signature": b64url_encode(signature),
    }


def parse_jws(body: bytes) -> Jws:
    """Parse a flattened JSON JWS request body.

    :raises CertificateError: not JSON, missing members, not base64url, not JSON inside.
    """
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise CertificateError(f"the request body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CertificateError("the request body is not a JSON object")
    members = {k: value.get(k) for k in ("protected", "payload", "signature")}
    if not all(isinstance(v, str) for v in members.values()):
        raise CertificateError("a flattened JWS needs protected, payload and signature strings")
    if "header" in value:
        raise CertificateError("an ACME JWS has no unprotected header (RFC 8555 6.2)")
    protected_b64, payload_b64, signature_b64 = (str(members[k]) for k in members)
    try:
        protected = json.loads(b64url_decode(protected_b64))
        payload = b64url_decode(payload_b64) if payload_b64 else b""
        signature = b64url_decode(signature_b64)
    except ValueError as exc:
        raise CertificateError(f"a JWS member is not base64url JSON: {exc}") from None
    if not isinstance(protected, dict):
        raise CertificateError("the JWS protected header is not a JSON object")
    return Jws(
        protected=protected,
        protected_b64=protected_b64,
        payload=payload,
        payload_b64=payload_b64,
        signature=signature,
    )


# ------------------------------------------------------------------------------ ATC tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class AtcToken:
    """A decoded SPC token (RFC 9448 section 4, the STI-PA's ``token``), not yet trusted.

    ``signing_input`` and ``signature`` let the caller verify it with the key of the
    certificate at ``x5u`` once it has fetched and validated that certificate.
    """

    token: str
    alg: str | None
    x5u: str | None
    exp: int | None
    jti: str | None
    tktype: str | None
    tkvalue: str | None
    ca: bool
    fingerprint: str | None
    claims: Mapping[str, Any]
    signing_input: bytes
    signature: bytes

    def tnauthlist(self) -> TNAuthList:
        """The TNAuthList ``tkvalue`` names (any deployed encoding)."""
        return decode_tnauthlist_value(self.tkvalue)

    def verify(self, key: PublicKey) -> bool:
        return verify_es256(key, self.signing_input, self.signature)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_atc_token(token: str) -> AtcToken:
    """Decode an SPC token's header and claims (nothing is verified here).

    :raises CertificateError: not a JWT of JSON objects, or ``atc`` is not an object.
    """
    try:
        decoded = decode_token(token.strip())
    except PassportError as exc:
        raise CertificateError(f"the SPC token is not a signed JWT: {exc.detail}") from None
    claims = decoded.payload
    atc = claims.get("atc")
    if not isinstance(atc, dict):
        raise CertificateError("the SPC token has no 'atc' claim object (RFC 9448 section 4)")
    ca = atc.get("ca", False)
    return AtcToken(
        token=token.strip(),
        alg=decoded.header.get("alg") if isinstance(decoded.header.get("alg"), str) else None,
        x5u=decoded.header.get("x5u") if isinstance(decoded.header.get("x5u"), str) else None,
        exp=_int_or_none(claims.get("exp")),
        jti=claims.get("jti") if isinstance(claims.get("jti"), str) else None,
        tktype=atc.get("tktype") if isinstance(atc.get("tktype"), str) else None,
        tkvalue=atc.get("tkvalue") if isinstance(atc.get("tkvalue"), str) else None,
        ca=ca is True,
        fingerprint=atc.get("fingerprint") if isinstance(atc.get("fingerprint"), str) else None,
        claims=dict(claims),
        signing_input=f"{decoded.header_b64}.{decoded.payload_b64}".encode("ascii"),
        signature=decoded.signature,
    )


def make_atc_token(
    key: PrivateKey,
    *,
    x5u: str,
    tkvalue: str,
    fingerprint: str,
    exp: int,
    jti: str,
    ca: bool = False,
    iat: int | None = None,
) -> str:
    """Sign an SPC token the way the iconectiv STI-PA does (ES256, ``x5u``, ``exp``, ``jti``)."""
    header = {"alg": "ES256", "typ": "JWT", "x5u": x5u}
    claims: dict[str, Any] = {
        "exp": exp,
        "jti": jti,
        "atc": {"tktype": "TNAuthList", "tkvalue": tkvalue, "ca": ca, "fingerprint": fingerprint},
    }
    if iat is not None:
        claims["iat"] = iat
    signing_input = (
        f"{b64url_encode(canonical_json(header))}.{b64url_encode(canonical_json(claims))}"
    )
    signature = sign_es256(key, signing_input.encode("ascii"))
    return f"{signing_input}.{b64url_encode(signature)}"
