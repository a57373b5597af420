"""The rules the REST adapter asks the services for: the signing iat, the request's fault."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shaken.core.reasons import Reason, Verstat
from shaken.core.result import Outcome, VerificationResult
from shaken.core.verify import SHAKEN
from shaken.services.request_faults import request_fault
from shaken.services.signing import signing_time

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("offset", "kept"),
    [
        (0, True),
        (-SHAKEN.max_iat_age, True),
        (-SHAKEN.max_iat_age - 1, False),
        (SHAKEN.max_future_skew, True),
        (SHAKEN.max_future_skew + 1, False),
    ],
)
def test_a_client_iat_is_signed_while_a_verifier_would_accept_it(offset: int, kept: bool) -> None:
    iat = (NOW + timedelta(seconds=offset)).timestamp()
    when = signing_time(iat, now=NOW, freshness=SHAKEN)
    assert when == (datetime.fromtimestamp(iat, UTC) if kept else NOW)


def test_only_a_value_that_is_no_identity_header_is_the_requests_fault() -> None:
    def failed(reason: Reason) -> VerificationResult:
        return VerificationResult(verstat=Verstat.FAILED, outcome=Outcome.FAILED, reason=reason)

    fault = request_fault(failed(Reason.INVALID_HEADER))
    assert fault is not None and fault.parameter == "identity"
    for reason in (Reason.STALE_IAT, Reason.CERT_UNTRUSTED):
        assert request_fault(failed(reason)) is None
    verified = VerificationResult(verstat=Verstat.PASSED, outcome=Outcome.VERIFIED)
    assert request_fault(verified) is None
