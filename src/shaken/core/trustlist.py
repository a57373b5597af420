"""STI-PA style trust lists: a signed JWT that lists the approved STI-CA root certificates.

The STI-PA publishes its list of approved STI-CAs as ``GET /api/v1/ca-list`` answering
``{"caList": "<signed JWT>"}``, and the JWT holds PEM certificates (the list Asterisk's
res_stir_shaken reads too). The exact claim names are not public, so the
reader is lenient and the writer is explicit:

* written: an ES256 JWS with header ``{"alg":"ES256","typ":"JWT"[,"x5u":...]}`` and claims
  ``{"caList": [PEM, ...], "iat": N[, "exp": N]}``;
* read: the bare JWS or the ``{"caList": "<JWS>"}`` JSON wrapper; the certificates from the
  first of the claims ``caList``, ``trustList`` or ``certs`` that is a list of PEM strings (a
  single string holding several PEM blocks is accepted too).

The signature is checked against the STI-PA certificate when one is given; ``exp`` is checked
against ``now``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from shaken.core.certs import load_certificates
from shaken.core.errors import CertificateError, ConfigurationError, PassportError
from shaken.core.jws import (
    PrivateKey,
    PublicKey,
    b64url_encode,
    certificate_pem,
    sign_es256,
    verify_es256,
)
from shaken.core.passport import canonical_json, decode_token

__all__ = ["TrustList", "make_trust_list", "read_trust_list"]

_CLAIMS = ("caList", "trustList", "certs")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustList:
    """The roots a trust list names, and whether its signature was checked."""

    certificates: tuple[x509.Certificate, ...]
    signature_checked: bool
    issued_at: int | None = None
    expires_at: int | None = None


def make_trust_list(
    certificates: Sequence[x509.Certificate],
    key: PrivateKey,
    *,
    iat: int,
    exp: int | None = None,
    x5u: str | None = None,
) -> str:
    """Sign a trust list (the compact JWS), as an STI-PA publishes it."""
    if not certificates:
        raise ConfigurationError("a trust list names at least one certificate")
    header: dict[str, object] = {"alg": "ES256", "typ": "JWT"}
    if x5u is not None:
        header["x5u"] = x5u
    claims: dict[str, object] = {
        "caList": [certificate_pem(c).decode("ascii") for c in certificates],
        "iat": iat,
    }
    if exp is not None:
        claims["exp"] = exp
    signing_input = (
        f"{b64url_encode(canonical_json(header))}.{b64url_encode(canonical_json(claims))}"
    )
    signature = b64url_encode(sign_es256(key, signing_input.encode("ascii")))
    return f"{signing_input}.{signature}"


def _jws_text(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = text.strip()
    if text.startswith("{"):
        try:
            wrapper = json.loads(text)
        except ValueError as exc:
            raise CertificateError(f"the trust list is not JSON: {exc}") from None
        inner = wrapper.get("caList") if isinstance(wrapper, dict) else None
        if not isinstance(inner, str):
            raise CertificateError("the trust list JSON has no 'caList' string")
        return inner.strip()
    return text


def read_trust_list(
    data: bytes | str,
    *,
    signer: x509.Certificate | PublicKey | None,
    now: datetime,
) -> TrustList:
    """Read a trust list; verify it with ``signer`` (the STI-PA certificate) when given.

    :raises CertificateError: malformed, bad signature, expired, or no certificates.
    """
    if now.tzinfo is None:
        raise ConfigurationError("now must be a timezone-aware datetime")
    try:
        token = decode_token(_jws_text(data))
    except PassportError as exc:
        raise CertificateError(f"the trust list is not a signed JWT: {exc.detail}") from None
    if token.header.get("alg") != "ES256":
        raise CertificateError(f"trust list alg {token.header.get('alg')!r} is not ES256")
    checked = False
    if signer is not None:
        key = signer.public_key() if isinstance(signer, x509.Certificate) else signer
        if not isinstance(key, PublicKey) or not verify_es256(
            key, token.signing_input, token.signature
        ):
            raise CertificateError("the trust list signature does not verify with the STI-PA key")
        checked = True
    claims = token.payload
    exp = claims.get("exp")
    if isinstance(exp, int) and not isinstance(exp, bool) and exp < now.timestamp():
        raise CertificateError(f"the trust list expired at {exp}")
    pems: list[str] | None = None
    for name in _CLAIMS:
        value = claims.get(name)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            pems = value
            break
    if pems is None:
        raise CertificateError(f"the trust list has none of the claims {', '.join(_CLAIMS)}")
    certificates: list[x509.Certificate] = []
    for pem in pems:
        certificates.extend(load_certificates(pem.encode("ascii", "replace")))
    iat = claims.get("iat")
    return TrustList(
        certificates=tuple(certificates),
        signature_checked=checked,
        issued_at=iat if isinstance(iat, int) and not isinstance(iat, bool) else None,
        expires_at=exp if isinstance(exp, int) and not isinstance(exp, bool) else None,
    )
