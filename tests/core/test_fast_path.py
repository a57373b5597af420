"""The fast path must agree with prepare() + complete() whenever it answers.

The recognizer reads the common shape of SHAKEN traffic without the strict parsers, and the
fast path runs the checks of the general pipeline (the same functions) in one pass. These tests
generate requests around that shape (valid ones and every kind of near miss) and require that
the recognizer either declines or produces exactly the objects of the strict parsers, and that
the fast path either declines (None) or returns exactly the result the general pipeline
returns, check for check.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from shaken.core.context import SipContext, format_sip_date
from shaken.core.identity import IdentityHeader
from shaken.core.jws import b64url_encode, sign_es256
from shaken.core.passport import PassportClaims, PassportHeader, canonical_json, decode_token
from shaken.core.tn import NANP
from shaken.core.verify import (
    SHAKEN,
    DatePolicy,
    Plan,
    VerificationProfile,
    _recognize,
    _verify_common,
    complete,
    prepare,
    validate_certificate,
)
from shaken.testing import make_sti_pki

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
PKI = make_sti_pki(NOW)
OTHER = make_sti_pki(NOW)
VALIDATED = validate_certificate(PKI.chain_pem, PKI.trust_anchors, now=NOW)
X5U = "https://cr.example.test/sp.pem"
UUID = "123e4567-e89b-12d3-a456-426655440000"
MISSING = object()

HEADERS = {
    "plain": {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": X5U},
    "typ-jwt": {"alg": "ES256", "ppt": "shaken", "typ": "JWT", "x5u": X5U},
    "extra-kid": {"alg": "ES256", "kid": "k", "ppt": "shaken", "typ": "passport", "x5u": X5U},
    "ppt-div": {"alg": "ES256", "ppt": "div", "typ": "passport", "x5u": X5U},
    "no-x5u": {"alg": "ES256", "ppt": "shaken", "typ": "passport"},
    "other-x5u": {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": X5U + "x"},
}
PARAMS = [
    f";info=<{X5U}>;alg=ES256;ppt=shaken",
    f';info=<{X5U}>;alg=ES256;ppt="shaken"',
    f";info=<{X5U}>;ppt=shaken",
    f";info=<{X5U}>;alg=ES384;ppt=shaken",
    f";info=<{X5U}>;alg=ES256;ppt=shaken;x=1",
    ";alg=ES256;ppt=shaken",
    f";info=<{X5U}x>;alg=ES256;ppt=shaken",
    f";info=<{X5U}>;alg=ES256;ppt=div",
]
PARTIES = [
    "<tel:12025550100>",
    "<tel:+12025550100>",
    '"Alice" <sip:+12025550100@sbc.example.test;user=phone>;tag=9',
    "<sip:2025550100@pbx.example.test>",
    "<tel:+1-202-555-0100>",
    "<sip:anonymous@anonymous.invalid>",
    "<sip:alice@example.test>",
    "<tel:12025550199>",
]
CALLED = [
    "<tel:12025550101>",
    "<sip:+12025550101@sbc.example.test;user=phone>",
    "<sip:2025550101@pbx.example.test>",
    "<tel:12025550188>",
]
PROFILES: list[VerificationProfile] = [
    SHAKEN,
    replace(SHAKEN, numbering_plan=NANP),
    replace(SHAKEN, date_policy=DatePolicy.IGNORE),
    replace(SHAKEN, date_policy=DatePolicy.REQUIRE),
    replace(SHAKEN, check_dest=False),
    replace(SHAKEN, full_form_only=False),
    replace(SHAKEN, max_iat_age=30, max_future_skew=0),
    replace(SHAKEN, caller_sources=("from",)),
]


Pick = Callable[[Any, list[Any]], Any]


def build_request(pick: Pick) -> tuple[SipContext, str, VerificationProfile, datetime]:
    """One request around the common shape; ``pick(valid, variants)`` chooses each part."""
    header = HEADERS[pick("plain", sorted(set(HEADERS) - {"plain"}))]
    claims: dict[str, Any] = {
        "attest": pick("A", ["B", "C", "D", "a", MISSING]),
        "dest": pick(
            {"tn": ["12025550101"]},
            [
                {"tn": ["12025550102", "12025550101"]},
                {"tn": []},
                {"tn": "12025550101"},
                {"tn": [5]},
                {"uri": ["sip:b@x"]},
                MISSING,
            ],
        ),
        "iat": int(NOW.timestamp()) + pick(0, [-29, -59, -61, 9, 11]),
        "orig": pick(
            {"tn": "12025550100"},
            [
                {"tn": "+1-202-555-0100"},
                {"tn": "2025550100"},
                {"tn": ""},
                {"uri": "sip:a@x"},
                "12025550100",
                MISSING,
            ],
        ),
        "origid": pick(UUID, ["not-a-uuid", 5, MISSING]),
    }
    claims["iat"] = pick(claims["iat"], [str(claims["iat"]), True, 1.5])
    if pick(False, [True]):
        claims["rcd"] = {"nam": "Alice"}
    claims = {k: v for k, v in claims.items() if v is not MISSING}
    h = b64url_encode(canonical_json(header))
    payload = canonical_json(claims)
    shape = pick("canonical", ["duplicate-member", "spaced", "colon-in-value"])
    if shape == "duplicate-member":  # same claims, "attest" repeated: must never pass
        payload = payload.replace(b'{"attest":', b'{"attest":"B","attest":', 1)
    elif shape == "spaced":  # valid JSON, not canonical: the general decoder decides
        payload = payload.replace(b'"iat":', b'"iat": ', 1)
    elif shape == "colon-in-value":
        claims["origid"] = 'x":y'
        payload = canonical_json(claims)
    p = b64url_encode(payload)
    key = pick(PKI.leaf_key, [OTHER.leaf_key])
    token = f"{h}.{p}.{b64url_encode(sign_es256(key, f'{h}.{p}'.encode()))}"
    value = token + pick(PARAMS[0], PARAMS[1:])
    identities = [value, value] if pick(False, [True]) else [value]
    context = SipContext(
        identity=tuple(identities),
        from_header=pick(PARTIES[0], PARTIES[1:]),
        pai=tuple(pick([], [[party] for party in PARTIES] + [PARTIES[:2]])),
        to=pick(CALLED[0], CALLED[1:]),
        date=pick(None, [format_sip_date(NOW), format_sip_date(NOW - timedelta(seconds=90))]),
    )
    material = pick("validated", ["bytes", "expired", "none"])
    now = NOW + timedelta(seconds=pick(0, [5]))
    return context, material, pick(PROFILES[0], PROFILES[1:]), now


def _material(kind: str) -> Any:
    if kind == "validated":
        return VALIDATED
    if kind == "expired":
        return replace(VALIDATED, valid_until=NOW - timedelta(seconds=1))
    if kind == "bytes":
        return PKI.chain_pem
    return None


def _general(
    context: SipContext, certs: dict[str, Any], profile: VerificationProfile, now: datetime
) -> Any:
    step = prepare(context, now=now, profile=profile)
    if not isinstance(step, Plan):
        return step
    return complete(step, certs, PKI.trust_anchors, now=now)


def try_verify_common(
    context: SipContext, certificate_for: Any, *, now: datetime, profile: VerificationProfile
) -> Any:
    return _verify_common(context, certificate_for, now, profile, None)


def _recognizer_agrees(value: str) -> None:
    """The recognizer declines, or gives what the strict parsers give."""
    common = _recognize(value)
    if common is None:
        return
    header = IdentityHeader.parse(value)
    token = decode_token(header.token)
    ph = PassportHeader.from_json(token.header)
    claims = PassportClaims.from_json(token.payload, ppt=ph.ppt)
    assert common.parsed() == (header, token, claims)
    assert common.passport_header == ph
    assert (common.attest, common.iat, common.origid) == (claims.attest, claims.iat, claims.origid)
    assert (common.orig, common.dest_tn) == (claims.orig, claims.dest_tn + claims.dest_uri)
    assert (common.signing_input, common.signature) == (token.signing_input, token.signature)


def _agree(request: tuple[SipContext, str, VerificationProfile, datetime]) -> bool:
    """Check one request; True when the fast path answered."""
    context, kind, profile, now = request
    material = _material(kind)
    certs = {X5U: material} if material is not None else {}
    for value in context.identity:
        _recognizer_agrees(value)
    fast = try_verify_common(context, certs.get, now=now, profile=profile)
    general = _general(context, certs, profile, now)
    if fast is not None:
        assert general.verified
        assert fast.to_dict() == general.to_dict()
        assert fast == general
    return fast is not None


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_fast_path_agrees_with_the_general_pipeline(data: st.DataObject) -> None:
    """Hypothesis explores mixes of near misses (it favours rare variants)."""
    answered = _agree(
        build_request(lambda valid, variants: data.draw(st.sampled_from([valid, *variants])))
    )
    event("fast path answered" if answered else "fast path declined")


def test_fast_path_agrees_on_mostly_valid_requests() -> None:
    """Seeded sampling with each part valid 92% of the time: many answers, every near miss."""
    rng = random.Random(8224)

    def pick(valid: Any, variants: list[Any]) -> Any:
        return valid if rng.random() < 0.92 else rng.choice(variants)

    answered = sum(_agree(build_request(pick)) for _ in range(1500))
    assert answered > 400  # the fast path must actually be exercised (531 with this seed)


def test_fast_path_is_taken_for_the_common_shape() -> None:
    from shaken.core.sign import sign_shaken

    for party in PARTIES[:4]:
        value = sign_shaken(
            key=PKI.leaf_key, x5u=X5U, orig="12025550100", dest="12025550101", attest="A", now=NOW
        )
        context = SipContext(identity=(value,), from_header=party, to=CALLED[0])
        profile = replace(SHAKEN, numbering_plan=NANP)
        fast = try_verify_common(context, {X5U: VALIDATED}.get, now=NOW, profile=profile)
        assert fast is not None and fast.verified, party
        assert fast == _general(context, {X5U: VALIDATED}, profile, NOW)
        assert IdentityHeader.parse(value).info == X5U
