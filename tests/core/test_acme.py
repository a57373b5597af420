"""The ACME and ATC wire values: JWK thumbprints, fingerprints, TNAuthList encodings, JWS."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from shaken.core.acme import (
    decode_tnauthlist_value,
    encode_tnauthlist,
    fingerprint,
    fingerprint_matches,
    jwk_of,
    jwk_public_key,
    jwk_thumbprint,
    make_atc_token,
    parse_jws,
    read_atc_token,
    sign_jws,
)
from shaken.core.certs import Spc, TNAuthList
from shaken.core.errors import CertificateError
from shaken.core.jws import b64url_decode, generate_private_key, spki_der

SPC_818H = TNAuthList(entries=(Spc(code="818H"),))


def test_tnauthlist_encodings_match_the_deployed_value() -> None:
    # The reference's value for SPC 818H (iconectiv, Peeringhub): DER 30 08 a0 06 16 04 '818H'.
    assert SPC_818H.to_der() == bytes.fromhex("3008a006160438313848")
    assert encode_tnauthlist(SPC_818H, "base64") == "MAigBhYEODE4SA=="
    assert encode_tnauthlist(SPC_818H, "base64url") == "MAigBhYEODE4SA"
    for text in ("MAigBhYEODE4SA==", "MAigBhYEODE4SA"):
        assert decode_tnauthlist_value(text) == SPC_818H


def test_tnauthlist_values_that_are_not_base64_are_refused() -> None:
    for bad in ("", "MAig*hYE", "not base64!", 5):
        with pytest.raises(CertificateError):
            decode_tnauthlist_value(bad)


def _key_with_leading_zero() -> object:
    while True:
        key = generate_private_key()
        x = key.public_key().public_numbers().x
        if x < 1 << 248:
            return key


def test_jwk_coordinates_keep_leading_zeros_erratum_7565() -> None:
    key = _key_with_leading_zero()
    jwk = jwk_of(key.public_key())  # type: ignore[attr-defined]
    assert len(b64url_decode(jwk["x"])) == 32
    assert jwk_public_key(jwk).public_numbers() == key.public_key().public_numbers()  # type: ignore[attr-defined]
    canonical = json.dumps(
        {"crv": "P-256", "kty": "EC", "x": jwk["x"], "y": jwk["y"]}, separators=(",", ":")
    ).encode()
    assert jwk_thumbprint(key.public_key()) == hashlib.sha256(canonical).digest()  # type: ignore[attr-defined]


def test_fingerprints_in_both_modes_and_cases_are_recognized() -> None:
    key = generate_private_key().public_key()
    thumb = fingerprint(key)
    spki = fingerprint(key, mode="spki", case="lower")
    assert thumb.startswith("SHA256 ") and len(thumb) == 7 + 32 * 3 - 1
    assert spki == "SHA256 " + ":".join(f"{b:02x}" for b in hashlib.sha256(spki_der(key)).digest())
    assert fingerprint_matches(thumb, key) == "jwk_thumbprint"
    assert fingerprint_matches(spki, key) == "spki"
    assert fingerprint_matches(thumb.lower(), key) == "jwk_thumbprint"
    assert fingerprint_matches(fingerprint(generate_private_key().public_key()), key) is None


@pytest.mark.parametrize("mode", ["rfc", "protected_only"])
def test_post_as_get_signatures_verify_in_the_mode_they_were_made(mode: str) -> None:
    key = generate_private_key()
    body = sign_jws(key, {"alg": "ES256", "url": "https://x/"}, None, empty_payload_signing=mode)
    jws = parse_jws(json.dumps(body).encode())
    assert jws.post_as_get
    assert jws.verify(key.public_key()) == mode
    assert jws.verify(generate_private_key().public_key()) is None


def test_a_payload_signature_never_verifies_over_the_header_alone() -> None:
    key = generate_private_key()
    body = sign_jws(key, {"alg": "ES256"}, {"a": 1})
    jws = parse_jws(json.dumps(body).encode())
    assert jws.verify(key.public_key()) == "rfc"
    assert jws.payload_json() == {"a": 1}


def test_an_spc_token_reads_back_as_the_sti_pa_signed_it() -> None:
    key = generate_private_key()
    token = make_atc_token(
        key,
        x5u="https://pa.example/cert.crt",
        tkvalue="MAigBhYEODE4SA==",
        fingerprint="SHA256 AA",
        exp=2000000000,
        jti="1",
    )
    atc = read_atc_token(token)
    assert (atc.alg, atc.x5u, atc.exp, atc.jti, atc.tktype) == (
        "ES256",
        "https://pa.example/cert.crt",
        2000000000,
        "1",
        "TNAuthList",
    )
    assert atc.tnauthlist() == SPC_818H
    assert atc.verify(key.public_key())
    assert not atc.verify(generate_private_key().public_key())
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "ES256", "typ": "JWT", "x5u": "https://pa.example/cert.crt"}
