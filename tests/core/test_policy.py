from __future__ import annotations

from dataclasses import replace

import pytest

from shaken.core.errors import ConfigurationError
from shaken.core.policy import (
    Action,
    ActionPolicy,
    OutcomeAction,
    decide,
    reason_header,
    tag_verstat,
)
from shaken.core.reasons import REASONS, Reason, Verstat, sip_phrase
from shaken.core.result import Outcome, VerificationResult

VERIFIED_A = VerificationResult(verstat=Verstat.PASSED, outcome=Outcome.VERIFIED, attest="A")
VERIFIED_C = VerificationResult(verstat=Verstat.PASSED, outcome=Outcome.VERIFIED, attest="C")
BAD_SIG = VerificationResult(
    verstat=Verstat.FAILED, outcome=Outcome.FAILED, reason=Reason.BAD_SIGNATURE
)
MISSING = VerificationResult(
    verstat=Verstat.NO_VALIDATION, outcome=Outcome.MISSING, reason=Reason.MISSING_IDENTITY
)


def test_default_is_continue_with_verstat() -> None:
    d = decide(BAD_SIG, ActionPolicy(), display_name="Bob")
    assert d.action is Action.CONTINUE and d.allowed
    assert d.display_name == "Bob" and d.verstat is Verstat.FAILED and d.tag_verstat


def test_reject_uses_the_reason_code_or_a_configured_one() -> None:
    p = ActionPolicy(failed=OutcomeAction(action=Action.REJECT))
    d = decide(BAD_SIG, p)
    assert (d.sip_code, d.sip_phrase, d.allowed) == (438, "Invalid Identity Header", False)
    p = ActionPolicy(failed=OutcomeAction(action=Action.REJECT, reject_code=603))
    assert (decide(BAD_SIG, p).sip_code, decide(BAD_SIG, p).sip_phrase) == (603, "Decline")
    p = ActionPolicy(missing=OutcomeAction(action=Action.REJECT))
    assert decide(MISSING, p).sip_code == 428


def test_continue_with_reason_rfc9410_and_sip_token() -> None:
    p = ActionPolicy(failed=OutcomeAction(action=Action.CONTINUE_WITH_REASON))
    assert decide(BAD_SIG, p).reason_header == 'STIR;cause=438;text="Invalid Identity Header"'
    p = ActionPolicy(
        failed=OutcomeAction(action=Action.CONTINUE_WITH_REASON), reason_protocol="SIP"
    )
    assert decide(BAD_SIG, p).reason_header == 'SIP;cause=438;text="Invalid Identity Header"'
    assert reason_header(Reason.CERT_FETCH_FAILED, ppi="..sig") == (
        'STIR;cause=436;text="Bad Identity Info";ppi="..sig"'
    )


def test_alert_prefix_suffix_per_outcome_and_attest() -> None:
    p = ActionPolicy(
        verified=OutcomeAction(action=Action.ALERT, display_prefix="(Verified) "),
        by_attest={"C": OutcomeAction(action=Action.ALERT, display_suffix=" [gateway]")},
        failed=OutcomeAction(action=Action.ALERT, display_prefix="[SPAM?] "),
        by_reason={Reason.BAD_SIGNATURE: OutcomeAction(action=Action.REJECT, reject_code=607)},
    )
    assert decide(VERIFIED_A, p, display_name="Alice").display_name == "(Verified) Alice"
    assert decide(VERIFIED_C, p, display_name="Alice").display_name == "Alice [gateway]"
    assert decide(BAD_SIG, p).sip_code == 607
    stale = VerificationResult(
        verstat=Verstat.NO_VALIDATION, outcome=Outcome.FAILED, reason=Reason.STALE_IAT
    )
    assert decide(stale, p, display_name=None).display_name == "[SPAM?] "


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<tel:+12155551212>", "<tel:+12155551212;verstat=TN-Validation-Passed>"),
        (
            '"Bob" <sip:+12155551212@example.com;user=phone>;tag=1',
            '"Bob" <sip:+12155551212;verstat=TN-Validation-Passed@example.com;user=phone>;tag=1',
        ),
        (
            "<tel:+12155551212;verstat=No-TN-Validation;npdi>",
            "<tel:+12155551212;verstat=TN-Validation-Passed;npdi>",
        ),
        (
            "sip:+12155551212@example.com;tag=9",
            "<sip:+12155551212;verstat=TN-Validation-Passed@example.com>;tag=9",
        ),
    ],
)
def test_tag_verstat(value: str, expected: str) -> None:
    assert tag_verstat(value, Verstat.PASSED) == expected


def test_tag_verstat_with_display_name() -> None:
    assert tag_verstat('"Bob" <tel:+1>', Verstat.FAILED, display_name="[SPAM?] Bob") == (
        '"[SPAM?] Bob" <tel:+1;verstat=TN-Validation-Failed>'
    )


def test_bad_configuration() -> None:
    with pytest.raises(ConfigurationError):
        OutcomeAction(action=Action.REJECT, reject_code=200)
    with pytest.raises(ConfigurationError):
        ActionPolicy(reason_protocol="Q.850")


# --------------------------------------------------------- branded calling presentation


def _branded_result(status: str = "verified", **claims: object) -> VerificationResult:
    from shaken.core.branding import judge
    from shaken.core.rcd import content_digest

    logo = "https://brand.example.test/acme.png"
    payload: dict[str, object] = {
        "iat": 1,
        "orig": {"tn": "1"},
        "dest": {"tn": ["2"]},
        "rcd": {"nam": "Acme Bank", "icn": logo},
        "rcdi": {"/icn": content_digest(b"logo")},
        "crn": 'Fraud "alert"',
    }
    payload.update(claims)
    body = b"logo" if status == "verified" else b"changed"
    verdict = judge(payload, None, {logo: body})
    assert verdict.status.value == status, verdict.detail
    return VerificationResult(
        verstat=Verstat.PASSED, outcome=Outcome.VERIFIED, attest="A", rcd=verdict
    )


@pytest.mark.parametrize(
    ("mode", "shown"),
    [("off", "John"), ("replace", "Acme Bank"), ("prefix", "(Verified) Acme Bank")],
)
def test_verified_brand_replaces_or_prefixes_the_display_name(mode: str, shown: str) -> None:
    decision = decide(_branded_result(), ActionPolicy(rcd_display=mode), display_name="John")
    assert decision.display_name == shown
    assert decision.brand_presented is (mode != "off")
    assert decision.call_info is None


def test_unverified_brand_is_never_presented() -> None:
    policy = ActionPolicy(rcd_display="replace", rcd_call_info=True)
    decision = decide(_branded_result("integrity_failed"), policy, display_name="John")
    assert decision.display_name == "John" and decision.call_info is None
    failed = replace(
        _branded_result(),
        outcome=Outcome.FAILED,
        reason=Reason.BAD_SIGNATURE,
        verstat=Verstat.FAILED,
    )
    decision = decide(failed, policy, display_name="John")
    assert decision.display_name == "John" and decision.call_info is None


def test_call_info_of_a_verified_brand_is_rfc_9796_shaped() -> None:
    from shaken.core.rcd import content_digest

    decision = decide(_branded_result(), ActionPolicy(rcd_call_info=True))
    assert decision.call_info == (
        "<https://brand.example.test/acme.png>;purpose=icon"
        f';integrity="{content_digest(b"logo")}";verified=true'
        ';call-reason="Fraud \\"alert\\""'
    )
    # The display name takes the verified name with its quotes escaped by the SIP layer.
    quoted = decide(
        _branded_result(rcd={"nam": 'Acme "Bank"', "icn": "https://brand.example.test/acme.png"}),
        ActionPolicy(rcd_display="replace"),
    )
    assert quoted.display_name == 'Acme "Bank"'
    assert tag_verstat("<tel:+1>", Verstat.PASSED, display_name=quoted.display_name).startswith(
        '"Acme \\"Bank\\"" <tel:+1'
    )


def test_rcd_display_mode_is_checked() -> None:
    with pytest.raises(ConfigurationError):
        ActionPolicy(rcd_display="shout")


# Issue 9 item 7: every configured reject_code gets its registered reason phrase.
@pytest.mark.parametrize(
    ("code", "phrase"),
    [
        (428, "Use Identity Header"),
        (433, "Anonymity Disallowed"),
        (436, "Bad Identity Info"),
        (437, "Unsupported Credential"),
        (438, "Invalid Identity Header"),
        (480, "Temporarily Unavailable"),
        (486, "Busy Here"),
        (603, "Decline"),
        (607, "Unwanted"),
        (608, "Rejected"),
        (499, "Request Failure"),  # unregistered: its class (RFC 3261 section 21)
    ],
)
def test_9_7_reject_code_gets_its_rfc_reason_phrase(code: int, phrase: str) -> None:
    # MISSING's own Reason is 428: a different configured code must not read "Forbidden".
    for result in (MISSING, BAD_SIG):
        p = ActionPolicy(
            missing=OutcomeAction(action=Action.REJECT, reject_code=code),
            failed=OutcomeAction(action=Action.REJECT, reject_code=code),
        )
        d = decide(result, p)
        assert (d.sip_code, d.sip_phrase) == (code, phrase)


def test_9_7_reject_phrase_still_overrides_the_table() -> None:
    p = ActionPolicy(
        failed=OutcomeAction(action=Action.REJECT, reject_code=438, reject_phrase="No")
    )
    assert decide(BAD_SIG, p).sip_phrase == "No"
    p = ActionPolicy(failed=OutcomeAction(action=Action.REJECT, reject_code=603, reject_phrase="X"))
    assert decide(BAD_SIG, p).sip_phrase == "X"


def test_9_7_one_phrase_table_agrees_with_the_reasons() -> None:
    # A Reason's own phrase is the registered one, except RFC 8224's 403 "Stale Date".
    for info in REASONS.values():
        if info.sip_code != 403:
            assert sip_phrase(info.sip_code) == info.phrase
    assert sip_phrase(503) == "Service Unavailable" and sip_phrase(302) == "Moved Temporarily"
