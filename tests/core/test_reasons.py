from __future__ import annotations

import pytest

from shaken.core.reasons import REASONS, Reason, Verstat

# Every Reason named in docs/architecture.md section 3, with its SIP code and verstat.
ARCHITECTURE_TABLE = {
    "missing_identity": (428, Verstat.NO_VALIDATION),
    "no_caller_id": (433, Verstat.NO_VALIDATION),
    "invalid_header": (438, Verstat.NO_VALIDATION),
    "missing_info": (436, Verstat.NO_VALIDATION),
    "compact_form": (438, Verstat.NO_VALIDATION),
    "invalid_token": (438, Verstat.NO_VALIDATION),
    "bad_passport_header": (436, Verstat.NO_VALIDATION),
    "x5u_info_mismatch": (436, Verstat.NO_VALIDATION),
    "unsupported_typ": (437, Verstat.NO_VALIDATION),
    "unsupported_alg": (437, Verstat.NO_VALIDATION),
    "missing_claim": (438, Verstat.NO_VALIDATION),
    "invalid_attest": (438, Verstat.NO_VALIDATION),
    "stale_iat": (403, Verstat.NO_VALIDATION),
    "stale_date": (403, Verstat.NO_VALIDATION),
    "orig_mismatch": (438, Verstat.NO_VALIDATION),
    "dest_mismatch": (438, Verstat.NO_VALIDATION),
    "x5u_rejected": (436, Verstat.NO_VALIDATION),
    "cert_fetch_failed": (436, Verstat.NO_VALIDATION),
    "cert_unparseable": (437, Verstat.FAILED),
    "cert_untrusted": (437, Verstat.FAILED),
    "cert_expired": (437, Verstat.FAILED),
    "cert_revoked": (437, Verstat.FAILED),
    "cert_no_tnauthlist": (437, Verstat.FAILED),
    "tn_out_of_scope": (437, Verstat.FAILED),
    "bad_signature": (438, Verstat.FAILED),
    "replayed": (438, Verstat.FAILED),
}

PHRASES = {
    403: "Stale Date",
    428: "Use Identity Header",
    433: "Anonymity Disallowed",
    436: "Bad Identity Info",
    437: "Unsupported Credential",
    438: "Invalid Identity Header",
}


def test_every_reason_has_exactly_one_row() -> None:
    assert set(REASONS) == set(Reason)


@pytest.mark.parametrize("name", sorted(ARCHITECTURE_TABLE))
def test_architecture_reasons_exist_with_their_codes(name: str) -> None:
    code, verstat = ARCHITECTURE_TABLE[name]
    info = REASONS[Reason(name)]
    assert (info.sip_code, info.verstat) == (code, verstat)


@pytest.mark.parametrize("reason", list(Reason))
def test_phrases_are_the_rfc_8224_ones(reason: Reason) -> None:
    info = REASONS[reason]
    assert info.phrase == PHRASES[info.sip_code]
    assert info.rfc9410_text == info.phrase
    assert info.description.endswith(".")


def test_reason_values_are_stable_snake_case() -> None:
    for reason in Reason:
        assert reason.value == reason.name.lower()
