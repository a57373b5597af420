"""The conformance manifest through the REST application, as ATIS-1000082 requests.

The cases of ``tests/data/conformance.json`` that a verification request can carry (one
Identity, the caller and called TNs, a time for the Date check) go through the ASGI
application with the lab's configuration, its verification service being the one
``tests/test_conformance_entry_points.py`` builds for the case. The answer must carry the
manifest's verstat and SIP code (``reasoncode``), and the call record its Reason.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import httpx
import pytest

from shaken.adapters.http.app import create_app
from shaken.core.context import SipContext, parse_sip_date
from shaken.core.verify import DatePolicy, VerificationProfile
from tests.core.test_conformance import CASES, NOW, request_of
from tests.core.test_conformance import Lab as ConformanceLab
from tests.support.fakes import ManualClock
from tests.test_conformance_entry_points import _service

from .conftest import LabKit, MemoryCallLog

pytestmark = pytest.mark.anyio

IDS = [c["id"] for c in CASES]
_API_ERRORS = {"missing_identity": "SVC4001", "invalid_header": "SVC4005"}
_TN_URI = re.compile(r"^<(?:sip|tel):\+?(\d+)(?:@[^;>]*)?(?:;user=phone)?>(?:;tag=\w+)?$")


@pytest.fixture(scope="module")
def conformance() -> ConformanceLab:
    return ConformanceLab()


def _body(context: SipContext, profile: VerificationProfile) -> dict[str, Any] | str:
    """The verification request for ``context``, or why REST cannot carry it."""
    if len(context.identity) > 1:
        return "a verificationRequest carries one identity"
    if context.pai or context.request_uri is not None:
        return "a verificationRequest has no P-Asserted-Identity or Request-URI"
    caller = _TN_URI.match(context.from_header or "")
    called = _TN_URI.match(context.to or "")
    if caller is None or called is None:
        return "a verificationRequest names the parties by TN"
    if context.date is None and profile.date_policy is DatePolicy.REQUIRE:
        return "a verificationRequest always has a time (its Date)"
    when = NOW if context.date is None else parse_sip_date(context.date)
    if when is None:
        return "a verificationRequest's time is a number"
    request: dict[str, Any] = {
        "from": {"tn": caller.group(1)},
        "to": {"tn": [called.group(1)]},
        "time": int(when.timestamp()),
    }
    if context.identity:
        request["identity"] = context.identity[0]
    return {"verificationRequest": request}


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_rest_app(case: dict[str, Any], conformance: ConformanceLab, kit: LabKit) -> None:
    request = request_of(case, conformance)
    body = _body(request.context, request.profile)
    if isinstance(body, str):
        pytest.skip(body)
    runtime = kit.runtime()
    service = _service(request, conformance)
    for name, profile in list(runtime.profiles.items()):
        if profile.verifier is not None:
            runtime.profiles[name] = dataclasses.replace(profile, verifier=service)
    calls = MemoryCallLog()
    app = create_app(runtime, call_log=calls, clock=ManualClock(NOW))
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {kit.api_key}"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            for _ in range(2 if request.replay else 1):  # the second sighting is the replay
                response = await client.post("/stir/v1/verification", json=body, headers=headers)
    finally:
        await service.cache.aclose()
        await runtime.aclose()
    api_error = _API_ERRORS.get(case["expect"]["reason"])
    if api_error is not None:
        # ATIS-1000082 E1 and E2: no identity, or one that is not an Identity header value,
        # is an API error of the request, not a verdict about a call.
        assert response.status_code == 400 and api_error in response.text, response.text
        return
    assert response.status_code == 200, response.text
    answer = response.json()["verificationResponse"]
    record = calls.records[-1]
    assert {
        "reason": record.reason,
        "sip_code": answer.get("reasoncode"),
        "verstat": answer["verstat"],
    } == case["expect"]


def test_most_cases_reach_the_rest_app(conformance: ConformanceLab) -> None:
    """The skips above are the few requests a verificationRequest cannot express."""
    skipped = [
        c["id"]
        for c in CASES
        if isinstance(
            _body(request_of(c, conformance).context, request_of(c, conformance).profile), str
        )
    ]
    assert len(skipped) <= len(CASES) // 5, skipped
