"""Interoperability with PyJWT (``jwt``), a generic JWS implementation.

PyJWT decodes and verifies our PASSporTs as ES256 JWTs with the leaf's public key, and we verify
what PyJWT signs once it is wrapped as an Identity header value. PyJWT writes the header with
``typ`` and ``alg`` first unless it sorts keys (``sort_headers``, default True) and writes the
claims in the caller's order: neither is RFC 8225 canonical JSON, so these tests also show that
we verify over the segments as received.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

import shaken
from shaken.core.jws import b64url_decode, b64url_encode
from shaken.core.passport import canonical_json, decode_token
from shaken.core.reasons import Reason
from shaken.core.sign import sign_shaken
from shaken.testing import StiPki, make_sti_pki

jwt = pytest.importorskip("jwt", reason="PyJWT not installed")

# PyJWT refuses an iat in the future of the real clock, so NOW is in the past.
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
X5U = "https://cr.example.test/sp.pem"
ORIG, DEST = "12025550100", "12025550101"
ORIGID = "123e4567-e89b-12d3-a456-426655440000"
PARAMS = f";info=<{X5U}>;alg=ES256;ppt=shaken"


@pytest.fixture(scope="module")
def pki() -> StiPki:
    return make_sti_pki(NOW)


@pytest.fixture(scope="module")
def other() -> StiPki:
    return make_sti_pki(NOW)


def verify(pki: StiPki, value: str, **overrides: Any) -> shaken.VerificationResult:
    args: dict[str, Any] = {
        "orig": ORIG,
        "dest": DEST,
        "certificate": pki.chain_pem,
        "trust_anchors": pki.root_pem,
        "now": NOW,
    }
    args.update(overrides)
    return shaken.verify_identity(value, **args)


def _ours(pki: StiPki, signer: str) -> str:
    if signer == "recipe":
        value = shaken.sign_identity(
            key=pki.leaf_key_pem, x5u=X5U, orig=ORIG, dest=DEST, attest="A", now=NOW, origid=ORIGID
        )
    else:
        value = sign_shaken(
            key=pki.leaf_key,
            x5u=X5U,
            orig=ORIG,
            dest=[DEST, "12025550102"],
            attest="B",
            now=NOW,
            origid=ORIGID,
            extra_claims={"rcdi": {"/nam": "sha256-abc"}},
        )
    return value.split(";")[0]


# --------------------------------------------------------------------------------------------
# Ours, verified by PyJWT.


@pytest.mark.parametrize("signer", ["recipe", "core-with-extra-claim"])
def test_pyjwt_verifies_our_passport(pki: StiPki, signer: str) -> None:
    token = _ours(pki, signer)
    decoded = jwt.decode_complete(token, pki.leaf.public_key(), algorithms=["ES256"])
    assert decoded["header"] == {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": X5U}
    assert jwt.get_unverified_header(token) == decoded["header"]
    payload = decoded["payload"]
    assert payload["iat"] == int(NOW.timestamp())
    assert payload["orig"] == {"tn": ORIG}
    assert payload["origid"] == ORIGID
    if signer == "recipe":
        assert (payload["attest"], payload["dest"]) == ("A", {"tn": [DEST]})
    else:
        assert (payload["attest"], payload["dest"]) == ("B", {"tn": [DEST, "12025550102"]})
        assert payload["rcdi"] == {"/nam": "sha256-abc"}


def test_pyjwt_rejects_our_passport_tampered_or_with_another_key(
    pki: StiPki, other: StiPki
) -> None:
    token = _ours(pki, "recipe")
    head, body, sig = token.split(".")
    raw = bytearray(b64url_decode(sig))
    raw[5] ^= 0x80
    flipped = f"{head}.{body}.{b64url_encode(bytes(raw))}"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(flipped, pki.leaf.public_key(), algorithms=["ES256"])
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other.leaf.public_key(), algorithms=["ES256"])
    # And the untampered token still verifies: the failures above are the tampering.
    assert jwt.decode(token, pki.leaf.public_key(), algorithms=["ES256"])["orig"] == {"tn": ORIG}


# --------------------------------------------------------------------------------------------
# PyJWT's, verified by us.


def _claims() -> dict[str, Any]:
    """Claims in a non-canonical order (PyJWT keeps the caller's order)."""
    return {
        "orig": {"tn": ORIG},
        "dest": {"tn": [DEST]},
        "iat": int(NOW.timestamp()),
        "origid": ORIGID,
        "attest": "A",
    }


VARIANTS: dict[str, dict[str, Any]] = {
    "sorted-headers": {"headers": {"ppt": "shaken", "typ": "passport", "x5u": X5U}},
    "unsorted-headers": {
        "headers": {"ppt": "shaken", "typ": "passport", "x5u": X5U},
        "sort_headers": False,
    },
    "extra-kid-header": {"headers": {"ppt": "shaken", "typ": "passport", "x5u": X5U, "kid": "k1"}},
    "pem-key": {"headers": {"ppt": "shaken", "typ": "passport", "x5u": X5U}, "pem": True},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_we_verify_pyjwt_passport(pki: StiPki, variant: str) -> None:
    spec = dict(VARIANTS[variant])
    key: Any = pki.leaf_key_pem if spec.pop("pem", False) else pki.leaf_key
    token = jwt.encode(_claims(), key, algorithm="ES256", **spec)
    decoded = decode_token(token)
    # PyJWT's payload is not canonical JSON: we must verify the bytes as received.
    assert decoded.payload_b64 != b64url_encode(canonical_json(dict(decoded.payload)))
    if variant == "unsorted-headers":
        assert list(decoded.header) == ["typ", "alg", "ppt", "x5u"]
    if variant == "extra-kid-header":
        assert decoded.header["kid"] == "k1"
    result = verify(pki, token + PARAMS)
    assert result.verified, f"{result.reason}: {result.detail}"
    assert (result.attest, result.orig, result.dest, result.origid) == (
        "A",
        ORIG,
        (DEST,),
        ORIGID,
    )


@pytest.mark.parametrize("forgery", ["attest-changed", "same-claims-canonical-json"])
def test_pyjwt_passport_with_another_payload_fails_with_us(pki: StiPki, forgery: str) -> None:
    """Changing the payload segment breaks the signature, even when it only re-serializes the
    same claims canonically: the signature covers the bytes, not the JSON value."""
    token = jwt.encode(
        _claims(),
        pki.leaf_key,
        algorithm="ES256",
        headers={"ppt": "shaken", "typ": "passport", "x5u": X5U},
    )
    head, body, sig = token.split(".")
    claims = {**_claims(), "attest": "C"} if forgery == "attest-changed" else _claims()
    forged = b64url_encode(canonical_json(claims))
    assert forged != body
    result = verify(pki, f"{head}.{forged}.{sig}{PARAMS}")
    assert result.reason is Reason.BAD_SIGNATURE
    assert verify(pki, token + PARAMS).verified


def test_pyjwt_default_typ_is_not_a_passport(pki: StiPki) -> None:
    """Without ``typ`` in ``headers`` PyJWT writes ``"typ": "JWT"``, which we refuse (437)."""
    token = jwt.encode(
        _claims(), pki.leaf_key, algorithm="ES256", headers={"ppt": "shaken", "x5u": X5U}
    )
    assert jwt.get_unverified_header(token)["typ"] == "JWT"
    result = verify(pki, token + PARAMS)
    assert result.reason is Reason.UNSUPPORTED_TYP
    assert result.sip_code == 437


def test_pyjwt_passport_signed_with_another_key_fails_with_us(pki: StiPki, other: StiPki) -> None:
    token = jwt.encode(
        _claims(),
        other.leaf_key,
        algorithm="ES256",
        headers={"ppt": "shaken", "typ": "passport", "x5u": X5U},
    )
    assert verify(pki, token + PARAMS).reason is Reason.BAD_SIGNATURE
    assert verify(other, token + PARAMS).verified
