from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shaken.core.context import SipContext
from shaken.core.errors import SigningError
from shaken.core.identity import IdentityHeader
from shaken.core.jws import generate_private_key
from shaken.core.passport import decode_token
from shaken.services.signing import Credential, SigningPolicy, SigningService, TnRule

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
MAIN = Credential(key=generate_private_key(), x5u="https://cr.example.test/main.pem")
OTHER = Credential(key=generate_private_key(), x5u="https://cr.example.test/other.pem")


def _policy(**kw: object) -> SigningPolicy:
    args: dict[str, object] = {
        "credential": MAIN,
        "attest": "A",
        "tns": {"12025550142": TnRule(attest="B", credential=OTHER)},
        "ranges": (SigningPolicy.range_of("12025550100", 100, TnRule()),),
    }
    args.update(kw)
    return SigningPolicy(**args)  # type: ignore[arg-type]


def _claims(identity: str) -> dict[str, object]:
    return dict(decode_token(IdentityHeader.parse(identity).token).payload)


def test_tn_entry_overrides_range_and_profile() -> None:
    policy = _policy()
    assert policy.choose("12025550142") == (OTHER, "B")
    assert policy.choose("12025550150") == (MAIN, "A")
    assert policy.rule_for("12025550200") is None
    assert policy.rule_for("2025550150") is None  # same value, other length: not in range


def test_unknown_tns_are_signed_at_c_or_refused() -> None:
    with pytest.raises(SigningError, match="unknown TNs are not signed"):
        _policy().choose("13035550100")
    assert _policy(unknown_tn_attest="C").choose("13035550100") == (MAIN, "C")


def test_sign_request_takes_pai_then_from_and_adds_date() -> None:
    service = SigningService(_policy(unknown_tn_attest="C"))
    context = SipContext(
        from_header="<sip:+13035550100@pbx.example.test>;tag=1",
        pai=("<tel:+12025550150>",),
        to="<sip:+12025550199@example.test;user=phone>",
    )
    signed = service.sign_request(context, now=NOW)
    assert (signed.orig, signed.dest, signed.attest) == ("12025550150", ("12025550199",), "A")
    assert signed.date == "Sun, 22 Nov 2026 12:00:00 GMT"
    claims = _claims(signed.identity)
    assert claims["orig"] == {"tn": "12025550150"} and claims["iat"] == int(NOW.timestamp())
    no_pai = service.sign_request(
        SipContext(from_header="<tel:+13035550100>", to="<tel:12025550199>", date="x"), now=NOW
    )
    assert no_pai.attest == "C" and no_pai.date is None


def test_a_client_may_lower_attestation_but_not_raise_it() -> None:
    service = SigningService(_policy(unknown_tn_attest="C"))
    assert service.sign(orig="12025550150", dest="1", attest="C", now=NOW).attest == "C"
    assert service.sign(orig="13035550100", dest="1", attest="A", now=NOW).attest == "C"
    with pytest.raises(SigningError):
        service.sign(orig="12025550150", dest="1", attest="X", now=NOW)


def test_missing_parties_are_signing_errors() -> None:
    service = SigningService(_policy())
    with pytest.raises(SigningError):
        service.sign_request(SipContext(to="<tel:1>"), now=NOW)
    with pytest.raises(SigningError):
        service.sign_request(SipContext(from_header="<tel:12025550150>"), now=NOW)
    with pytest.raises(SigningError):
        SigningService(SigningPolicy(attest="A", unknown_tn_attest="C")).sign(
            orig="1", dest="2", now=NOW
        )
