from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shaken.core.context import SipContext
from shaken.core.errors import SigningError
from shaken.core.identity import IdentityHeader
from shaken.core.jws import generate_private_key
from shaken.core.passport import decode_token
from shaken.core.rcd import content_digest
from shaken.core.verify import SHAKEN
from shaken.services.signing import Brand, Credential, SigningPolicy, SigningService, TnRule

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


# ------------------------------------------------------------------- branded calling (RFC 9795)


LOGO_URL = "https://brand.example.test/acme.png"
ACME = Brand(
    name="acme",
    rcd={"nam": "Acme Bank", "icn": LOGO_URL},
    crn="Fraud alert",
    call_reasons=("Appointment reminder",),
    label="[brand.acme]",
).with_content({LOGO_URL: b"logo-bytes"})


def _branded(**kw: object) -> SigningService:
    rule = TnRule(brand=ACME, label='[tn."12025550142"]')
    return SigningService(_policy(tns={"12025550142": rule}, **kw))


def test_branded_tn_signs_rcd_rcdi_and_crn_in_the_shaken_passport() -> None:
    signed = _branded().sign(orig="12025550142", dest="12025550199", now=NOW)
    claims = _claims(signed.identity)
    assert claims["rcd"] == {"nam": "Acme Bank", "icn": LOGO_URL}
    assert claims["rcdi"] == {"/icn": content_digest(b"logo-bytes")}
    assert claims["crn"] == "Fraud alert"
    assert signed.brand == "Acme Bank" and signed.rcd_identity is None
    # An unbranded number of the same policy gets a plain SHAKEN PASSporT.
    plain = _claims(_branded().sign(orig="12025550150", dest="12025550199", now=NOW).identity)
    assert not {"rcd", "rcdi", "crn"} & set(plain)


def test_request_may_repeat_vetted_values_and_reasons_only() -> None:
    service = _branded()
    signed = service.sign(
        orig="12025550142", dest="1", now=NOW, rcd={"nam": "Acme Bank"}, crn="Appointment reminder"
    )
    claims = _claims(signed.identity)
    assert claims["rcd"] == {"nam": "Acme Bank"} and "rcdi" not in claims
    assert claims["crn"] == "Appointment reminder"
    with pytest.raises(SigningError, match=r"rcd\.nam is not what \[brand\.acme\] vetted"):
        service.sign(orig="12025550142", dest="1", now=NOW, rcd={"nam": "Acme Bank Refunds"})
    with pytest.raises(SigningError, match=r"rcd\.icn"):
        service.sign(
            orig="12025550142",
            dest="1",
            now=NOW,
            rcd={"nam": "Acme Bank", "icn": "https://evil.example/x.png"},
        )
    with pytest.raises(SigningError, match="not a call reason"):
        service.sign(orig="12025550142", dest="1", now=NOW, crn="You won a prize")
    with pytest.raises(SigningError, match="no vetted brand"):
        service.sign(orig="12025550150", dest="1", now=NOW, rcd={"nam": "Acme Bank"})
    with pytest.raises(SigningError, match="no vetted brand"):
        service.sign(orig="12025550150", dest="1", now=NOW, crn="Fraud alert")


def test_profile_brand_and_separate_rcd_passport() -> None:
    from dataclasses import replace

    both = replace(ACME, ppt="both")
    service = SigningService(_policy(brand=both))
    signed = service.sign(orig="12025550150", dest="12025550199", now=NOW)
    assert "rcd" in _claims(signed.identity)
    assert signed.rcd_identity is not None
    header = IdentityHeader.parse(signed.rcd_identity)
    assert header.ppt == "rcd"
    token = decode_token(header.token)
    assert token.header["ppt"] == "rcd"
    assert token.payload["rcd"] == {"nam": "Acme Bank", "icn": LOGO_URL}
    assert token.payload["orig"] == {"tn": "12025550150"}
    assert "attest" not in token.payload
    only = SigningService(_policy(brand=replace(ACME, ppt="rcd")))
    signed = only.sign(orig="12025550150", dest="12025550199", now=NOW)
    assert "rcd" not in _claims(signed.identity) and signed.rcd_identity is not None
    assert SHAKEN.accepted_ppt == ("shaken", "div")  # rcd PASSporTs are not SHAKEN candidates


def test_brand_without_its_content_cannot_sign() -> None:
    from dataclasses import replace

    unloaded = replace(ACME, rcdi=None)
    service = SigningService(_policy(brand=unloaded))
    with pytest.raises(SigningError, match="not loaded"):
        service.sign(orig="12025550150", dest="1", now=NOW)
    nameonly = Brand(name="n", rcd={"nam": "Acme"})
    assert nameonly.ready
    assert "rcdi" not in _claims(
        SigningService(_policy(brand=nameonly)).sign(orig="12025550150", dest="1", now=NOW).identity
    )


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"rcd": {"icn": LOGO_URL}}, "no 'nam'"),
        ({"rcd": {"nam": "A", "jcd": ["vcard", []], "jcl": LOGO_URL}}, "MUST NOT"),
        ({"rcd": {"nam": "A"}, "crn": "x" * 65}, "over the limit"),
        ({"rcd": {"nam": "A"}, "ppt": "div"}, "brand ppt"),
    ],
)
def test_bad_brands_are_configuration_errors(kw: dict[str, object], match: str) -> None:
    from shaken.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=match):
        Brand(name="bad", **kw)  # type: ignore[arg-type]
