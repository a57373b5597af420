"""ES256 against published vectors (RFC 7515 A.3)."""

from __future__ import annotations

import pytest

from shaken.core.errors import ConfigurationError
from shaken.core.jws import (
    b64url_decode,
    b64url_encode,
    generate_private_key,
    load_private_key,
    load_public_key,
    same_public_key,
    sign_es256,
    verify_es256,
)

# RFC 8225 Appendix A.2 public key (K2): verifies the RFC 8225 section 7.1 token.
K2 = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8HNbQd/TmvCKwPKHkMF9fScavGeH
78YTU8qLS8I5HLHSSmlATLcslQMhNC/OhlWBYC626nIlo7XeebYS7Sb37g==
-----END PUBLIC KEY-----
"""
# RFC 8946 Appendix A key pair (K3).
K3_PRIVATE = b"""-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIFKCsFZ4Wsw3ZpBxgc4Z0sOjaXDdMk07Ny1fKg6OntAkoAoGCCqGSM49
AwEHoUQDQgAEmzGM1VsO+3IqbMF54rQMaYKQftO4hUYm9wv5wutLgEd9FsiTy3+4
+Wa2O7pffOXPC0QzO+yD8hGEXGP/2mZo6w==
-----END EC PRIVATE KEY-----
"""
V_R2 = (
    "eyJhbGciOiJFUzI1NiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jZXJ0LmV4YW1wbGUub3JnL3Bhc3Nw"
    "b3J0LmNlciJ9.eyJkZXN0Ijp7InVyaSI6WyJzaXA6YWxpY2VAZXhhbXBsZS5jb20iXX0sImlhdCI6IjE0NDMyMDgzND"
    "UiLCJvcmlnIjp7InRuIjoiMTIxNTU1NTEyMTIifX0.rq3pjT1hoRwakEGjHCnWSwUnshd0-zJ6F1VOgFWSjHBr8Qjpjlk"
    "-cpFYpFYsojNCpTzO3QfPOlckGaS6hEck7w"
)
V_D1 = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jZXJ0LmV4"
    "YW1wbGUub3JnL3Bhc3Nwb3J0LmNlciJ9.eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0biI6WyIxMjE1NTU1MDEzMSJdfSw"
    "iaWF0IjoxNDQzMjA4MzQ1LCJvcmlnIjp7InRuIjoiMTIxNTU1NTAxMjEifSwib3JpZ2lkIjoiMTIzZTQ1NjctZTg5Yi0x"
    "MmQzLWE0NTYtNDI2NjU1NDQwMDAwIn0.BuOEj7jvXtnbzdCr8wbRgkqvUU7mhB96bmzgU5u7kTDmEIpts_ziGWeGPGroP"
    "gI5tb7RWl8HdWk_91EupeMMfA"
)
# RFC 7515 Appendix A.3: ES256 JWS with its JWK converted to a PEM public key.
A3_TOKEN = (
    "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmN"
    "vbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxf"
    "KTUJqPP3-Kg6NU1Q"
)
A3_X = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
A3_Y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"


def _split(token: str) -> tuple[bytes, bytes]:
    h, p, s = token.split(".")
    return f"{h}.{p}".encode(), b64url_decode(s)


def test_rfc8225_full_form_verifies_with_k2() -> None:
    data, sig = _split(V_R2)
    assert verify_es256(load_public_key(K2), data, sig)


def test_derived_shaken_vector_is_reproduced_byte_for_byte() -> None:
    key = load_private_key(K3_PRIVATE)
    data, sig = _split(V_D1)
    assert verify_es256(key.public_key(), data, sig)
    # RFC 6979 deterministic ECDSA: same key and input give the same signature.
    assert sign_es256(key, data) == sig


def test_rfc7515_a3() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64url_decode(A3_X), "big"),
        int.from_bytes(b64url_decode(A3_Y), "big"),
        ec.SECP256R1(),
    )
    data, sig = _split(A3_TOKEN)
    assert verify_es256(numbers.public_key(), data, sig)


def test_flipped_bit_and_wrong_lengths_fail() -> None:
    key = load_private_key(K3_PRIVATE)
    data, sig = _split(V_D1)
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    assert not verify_es256(key.public_key(), data, flipped)
    assert not verify_es256(key.public_key(), data, sig[:63])
    assert not verify_es256(key.public_key(), data, sig + b"\0")
    assert not verify_es256(key.public_key(), data + b"x", sig)


def test_random_key_round_trip_and_key_matching() -> None:
    key = generate_private_key()
    sig = sign_es256(key, b"abc", deterministic=False)
    assert len(sig) == 64
    assert verify_es256(key.public_key(), b"abc", sig)
    assert same_public_key(key.public_key(), key.public_key())
    assert not same_public_key(key.public_key(), generate_private_key().public_key())


@pytest.mark.parametrize("text", ["a=", "a+b", "a/b", "abcde", "é"])
def test_b64url_is_strict(text: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(text)


def test_b64url_round_trip() -> None:
    for n in range(10):
        data = bytes(range(n))
        assert b64url_decode(b64url_encode(data)) == data


def test_non_p256_keys_are_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for pem in (p384, rsa_pem, b"not a key"):
        with pytest.raises(ConfigurationError):
            load_private_key(pem)
