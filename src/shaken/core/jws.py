"""ES256 for compact JWS (RFC 7515, RFC 7518 section 3.4): the only user of cryptography.hazmat.

A JWS ECDSA signature is the 64-byte concatenation R || S (each 32 bytes, big-endian), not the
DER ``ECDSA-Sig-Value`` that ``cryptography`` produces and expects; this module converts between
the two and rejects any other length (RFC 7518 section 3.4). Keeping every hazmat call
here means the rest of the core handles keys as opaque objects and bytes.
"""

from __future__ import annotations

import binascii

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
)

from shaken.core.errors import ConfigurationError

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey

_SIGNATURE_SIZE = 64
_COORDINATE_SIZE = 32
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
# RFC 8225 section 4.2: deterministic ECDSA (RFC 6979) SHOULD be used "if or when supported".
_ECDSA_SHA256_DETERMINISTIC = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 section 2)."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode()


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_PADDING = ("", None, "==", "=")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding; raises ``ValueError`` on anything else.

    Padding, the standard alphabet's ``+`` and ``/``, and whitespace are refused: a PASSporT
    segment must be exactly what RFC 7515 produces, so its bytes are signed as received.
    """
    pad = _PADDING[len(text) % 4]
    if pad is None:
        raise ValueError("impossible base64url length")
    if not text.isascii() or "=" in text or "+" in text or "/" in text:
        raise ValueError("not unpadded base64url")
    try:
        return binascii.a2b_base64(
            (text + pad).encode("ascii").translate(_FROM_URLSAFE), strict_mode=True
        )
    except binascii.Error as exc:
        raise ValueError(f"not base64url: {exc}") from None


def _require_p256(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> None:
    if not isinstance(key.curve, ec.SECP256R1):
        raise ConfigurationError(f"ES256 needs a P-256 key, not {key.curve.name}")


def _der_to_jose(der: bytes) -> bytes:
    """``ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`` (DER) to R || S.

    Our own signer's output for P-256 always has short-form lengths, so the two integers are
    sliced out directly (four times faster than the generic decoder, which is kept as the
    fallback for anything of another shape).
    """
    if len(der) >= 8 and der[0] == 0x30 and der[1] == len(der) - 2 and der[2] == 0x02:
        lr = der[3]
        if 4 + lr + 2 <= len(der) and der[4 + lr] == 0x02 and 6 + lr + der[5 + lr] == len(der):
            r = der[4 : 4 + lr].lstrip(b"\0")
            s = der[6 + lr :].lstrip(b"\0")
            if len(r) <= _COORDINATE_SIZE and len(s) <= _COORDINATE_SIZE:
                return r.rjust(_COORDINATE_SIZE, b"\0") + s.rjust(_COORDINATE_SIZE, b"\0")
    r_int, s_int = decode_dss_signature(der)
    return r_int.to_bytes(_COORDINATE_SIZE, "big") + s_int.to_bytes(_COORDINATE_SIZE, "big")


def _der_integer(value: bytes) -> bytes:
    value = value.lstrip(b"\0") or b"\0"
    if value[0] & 0x80:
        value = b"\0" + value
    return b"\x02" + bytes((len(value),)) + value


def _jose_to_der(signature: bytes) -> bytes:
    """R || S to ``ECDSA-Sig-Value`` DER (short-form lengths always suffice for P-256)."""
    body = _der_integer(signature[:_COORDINATE_SIZE]) + _der_integer(signature[_COORDINATE_SIZE:])
    return b"\x30" + bytes((len(body),)) + body


def sign_es256(key: PrivateKey, signing_input: bytes, *, deterministic: bool = True) -> bytes:
    """Sign ``signing_input`` and return the 64-byte JOSE R || S signature."""
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError(f"ES256 needs an EC private key, not {type(key).__name__}")
    if not isinstance(key.curve, ec.SECP256R1):
        _require_p256(key)
    algorithm = _ECDSA_SHA256_DETERMINISTIC if deterministic else _ECDSA_SHA256
    return _der_to_jose(key.sign(signing_input, algorithm))


def verify_es256(key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
    """True when ``signature`` (64-byte R || S) is a valid ES256 signature of the input."""
    if len(signature) != _SIGNATURE_SIZE:
        return False
    try:
        key.verify(_jose_to_der(signature), signing_input, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


def is_es256_public_key(key: object) -> bool:
    """True for a P-256 public key (what a SHAKEN certificate must carry)."""
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)


def load_private_key(data: bytes, password: bytes | None = None) -> PrivateKey:
    """Load a P-256 private key from PEM (PKCS#8 or SEC1) or DER.

    :raises ConfigurationError: not a key, or not a P-256 EC key.
    """
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=password)
        else:
            key = serialization.load_der_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"cannot load the private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError(f"ES256 needs an EC private key, not {type(key).__name__}")
    _require_p256(key)
    return key


def load_public_key(data: bytes) -> PublicKey:
    """Load a P-256 public key from PEM or DER SubjectPublicKeyInfo."""
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"cannot load the public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigurationError(f"ES256 needs an EC public key, not {type(key).__name__}")
    _require_p256(key)
    return key


def generate_private_key() -> PrivateKey:
    """A fresh P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def same_public_key(a: PublicKey, b: PublicKey) -> bool:
    """True when both are the same EC point (a signing key matches its certificate)."""
    fmt = serialization.PublicFormat.UncompressedPoint
    enc = serialization.Encoding.X962
    return a.public_bytes(enc, fmt) == b.public_bytes(enc, fmt)


def certificate_pem(certificate: x509.Certificate) -> bytes:
    """A certificate as PEM (kept here so only this module touches hazmat serialization)."""
    return certificate.public_bytes(serialization.Encoding.PEM)


def public_key_coordinates(key: PublicKey) -> tuple[bytes, bytes]:
    """The P-256 point as its 32-byte big-endian x and y (a JWK's ``x`` and ``y``)."""
    _require_p256(key)
    numbers = key.public_numbers()
    return numbers.x.to_bytes(_COORDINATE_SIZE, "big"), numbers.y.to_bytes(_COORDINATE_SIZE, "big")


def public_key_from_coordinates(x: bytes, y: bytes) -> PublicKey:
    """The P-256 public key of a point; ``ValueError`` when it is not on the curve."""
    if len(x) != _COORDINATE_SIZE or len(y) != _COORDINATE_SIZE:
        raise ValueError("P-256 coordinates are 32 bytes each")
    return ec.EllipticCurvePublicNumbers(
        int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
    ).public_key()


def spki_der(key: PublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo of a public key."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
