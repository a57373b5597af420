"""ATIS-1000082 verification error cases E1 to E19, one row each (ATIS-1000082).

E1 and E2 are API errors (HTTP 400 SVC4001 / SVC4005); E3 to E19 are verification results in
an HTTP 200 body with reasoncode, reasontext, reasondesc and verstat. Each result row also
checks what the call log received.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from shaken.core.jws import generate_private_key
from shaken.core.reasons import REASONS, Reason
from shaken.testing import make_sti_pki
from tests.adapters.http.conftest import DEST, IN_RANGE, Api, ApiFactory, LabKit

pytestmark = pytest.mark.anyio

Build = Callable[[LabKit, Api], dict[str, Any]]


@dataclass(frozen=True)
class ApiCase:
    """E1/E2: the request gets HTTP 400 with this message id and first variable."""

    case: str
    build: Build
    message_id: str
    variable: str


def _without(name: str) -> Build:
    def build(kit: LabKit, api: Api) -> dict[str, Any]:
        request: dict[str, Any] = {
            "from": {"tn": IN_RANGE},
            "to": {"tn": [DEST]},
            "time": int(time.time()),
            "identity": kit.token(),
        }
        del request[name]
        return request

    return build


def _with(**changes: Any) -> Build:
    def build(kit: LabKit, api: Api) -> dict[str, Any]:
        request: dict[str, Any] = {
            "from": {"tn": IN_RANGE},
            "to": {"tn": [DEST]},
            "time": int(time.time()),
            "identity": kit.token(),
        }
        request.update(changes)
        return request

    return build


API_CASES = [
    ApiCase("E1 from", _without("from"), "SVC4001", "from"),
    ApiCase("E1 to", _without("to"), "SVC4001", "to"),
    ApiCase("E1 time", _without("time"), "SVC4001", "time"),
    ApiCase("E1 identity", _without("identity"), "SVC4001", "identity"),
    ApiCase("E1 from.tn", _with(**{"from": {}}), "SVC4001", "from.tn"),
    ApiCase("E2 short from", _with(**{"from": {"tn": "12"}}), "SVC4005", "from.tn"),
    ApiCase("E2 from letters", _with(**{"from": {"tn": "alice"}}), "SVC4005", "from.tn"),
    ApiCase("E2 from not object", _with(**{"from": "12025550123"}), "SVC4005", "from"),
    ApiCase("E2 empty to", _with(to={"tn": []}), "SVC4005", "to.tn"),
    ApiCase("E2 time zero", _with(time=0), "SVC4005", "time"),
    ApiCase("E2 time float", _with(time=1.5), "SVC4005", "time"),
    ApiCase("E2 time string", _with(time="1700000000"), "SVC4005", "time"),
    ApiCase("E2 empty identity", _with(identity=""), "SVC4005", "identity"),
    ApiCase("E2 identity number", _with(identity=7), "SVC4005", "identity"),
    ApiCase("E2 identity garbage", _with(identity="not an identity"), "SVC4005", "identity"),
    ApiCase("E2 identity newline", _with(identity="a.b.c;\r\nX: y"), "SVC4005", "identity"),
]


@pytest.mark.parametrize("case", API_CASES, ids=lambda c: c.case)
async def test_e1_e2_are_request_errors(kit: LabKit, make_api: ApiFactory, case: ApiCase) -> None:
    api: Api = await make_api()
    response = await api.client.post(
        "/stir/v1/verification",
        json={"verificationRequest": case.build(kit, api)},
        headers=api.auth,
    )
    assert response.status_code == 400
    error = response.json()["requestError"]["serviceException"]
    assert error["messageId"] == case.message_id
    assert error["variables"][0] == case.variable
    assert api.calls.records == []  # an API error is not a decision about a call


def _identity(**token: Any) -> Build:
    def build(kit: LabKit, api: Api) -> dict[str, Any]:
        return {"identity": kit.token(**token)}

    return build


def _raw(make: Callable[[LabKit], str]) -> Build:
    def build(kit: LabKit, api: Api) -> dict[str, Any]:
        return {"identity": make(kit)}

    return build


def _compact(kit: LabKit) -> str:
    signature = kit.token().split(";")[0].split(".")[2]
    return f"..{signature};info=<{kit.x5u}>;alg=ES256;ppt=shaken"


def _untrusted(kit: LabKit, api: Api) -> dict[str, Any]:
    other = make_sti_pki(datetime.now(UTC))
    url = kit.lab.settings.repository_url + "other.pem"
    api.runtime.cache.import_chain(url, other.chain_pem)
    return {"identity": kit.token(header={"x5u": url}, key=other.leaf_key)}


def _stale_time(kit: LabKit, api: Api) -> dict[str, Any]:
    return {"identity": kit.token(), "time_": int(time.time()) - 120}


def _other_caller(kit: LabKit, api: Api) -> dict[str, Any]:
    return {"identity": kit.token(), "orig": "12025550124"}


def _other_callee(kit: LabKit, api: Api) -> dict[str, Any]:
    return {"identity": kit.token(), "dest": "13035550001"}


def _http_x5u(kit: LabKit) -> str:
    url = kit.x5u.replace("https://", "http://")
    return kit.token(header={"x5u": url})


@dataclass(frozen=True)
class ResultCase:
    """E3-E19: HTTP 200 whose body carries the Reason's code, phrase, description, verstat."""

    case: str
    build: Build
    reason: Reason
    extra: dict[str, Any] = field(default_factory=dict)


RESULT_CASES = [
    ResultCase("E3 time not fresh", _stale_time, Reason.STALE_DATE),
    ResultCase("E4 compact form", _raw(_compact), Reason.COMPACT_FORM),
    ResultCase(
        "E5 ppt param not shaken",
        _raw(lambda k: k.token(params=f";info=<{k.x5u}>;alg=ES256;ppt=foo")),
        Reason.UNSUPPORTED_PPT,
    ),
    ResultCase(
        "E6 no info param",
        _raw(lambda k: k.token(params=";alg=ES256;ppt=shaken")),
        Reason.MISSING_INFO,
    ),
    ResultCase("E7 invalid info URI", _raw(_http_x5u), Reason.X5U_REJECTED),
    ResultCase(
        "E8 info not dereferenceable",
        _raw(lambda k: k.token(header={"x5u": k.dead_x5u})),
        Reason.CERT_FETCH_FAILED,
    ),
    ResultCase(
        "E9 header without x5u",
        _raw(
            lambda k: k.token(drop_header=["x5u"], params=f";info=<{k.x5u}>;alg=ES256;ppt=shaken")
        ),
        Reason.BAD_PASSPORT_HEADER,
    ),
    ResultCase("E9 header without typ", _identity(drop_header=["typ"]), Reason.BAD_PASSPORT_HEADER),
    ResultCase(
        "E10 x5u differs from info",
        _raw(
            lambda k: k.token(
                header={"x5u": k.dead_x5u}, params=f";info=<{k.x5u}>;alg=ES256;ppt=shaken"
            )
        ),
        Reason.X5U_INFO_MISMATCH,
    ),
    ResultCase("E11 typ not passport", _identity(header={"typ": "JWT"}), Reason.UNSUPPORTED_TYP),
    ResultCase("E12 alg not ES256", _identity(header={"alg": "ES384"}), Reason.UNSUPPORTED_ALG),
    ResultCase("E13 header ppt not shaken", _identity(header={"ppt": "rcd"}), Reason.PPT_MISMATCH),
    ResultCase("E14 no origid", _identity(drop_claims=["origid"]), Reason.MISSING_CLAIM),
    ResultCase("E14 no dest", _identity(drop_claims=["dest"]), Reason.MISSING_CLAIM),
    ResultCase("E15 iat not fresh", _identity(iat=int(time.time()) - 3600), Reason.STALE_IAT),
    ResultCase("E16 orig is not from", _other_caller, Reason.ORIG_MISMATCH),
    ResultCase("E16 dest is not to", _other_callee, Reason.DEST_MISMATCH),
    ResultCase("E17 untrusted CA", _untrusted, Reason.CERT_UNTRUSTED),
    ResultCase("E18 bad signature", _identity(key=generate_private_key()), Reason.BAD_SIGNATURE),
    ResultCase("E19 attest not A/B/C", _identity(claims={"attest": "D"}), Reason.INVALID_ATTEST),
]


@pytest.mark.parametrize("case", RESULT_CASES, ids=lambda c: c.case)
async def test_e3_to_e19_are_results(kit: LabKit, make_api: ApiFactory, case: ResultCase) -> None:
    api: Api = await make_api()
    response = await api.verify(**case.build(kit, api))
    assert response.status_code == 200, response.text
    info = REASONS[case.reason]
    assert response.json() == {
        "verificationResponse": {
            "reasoncode": info.sip_code,
            "reasontext": info.phrase,
            "reasondesc": info.description,
            "verstat": info.verstat.value,
        }
    }
    [record] = api.calls.records
    assert (record.direction, record.interface, record.reason) == ("verify", "rest", case.reason)
    assert record.verstat == info.verstat.value and record.sip_code == info.sip_code
    assert record.call_id == response.headers["x-requestid"]


async def test_the_table_has_the_codes_of_the_standard() -> None:
    """The ATIS-1000082 columns, independent of core/reasons.py."""
    expected = {
        "E3": (403, "Stale Date", "No-TN-Validation"),
        "E4": (438, "Invalid Identity Header", "No-TN-Validation"),
        "E5": (438, "Invalid Identity Header", "No-TN-Validation"),
        "E6": (436, "Bad Identity Info", "No-TN-Validation"),
        "E7": (436, "Bad Identity Info", "No-TN-Validation"),
        "E8": (436, "Bad Identity Info", "No-TN-Validation"),
        "E9": (436, "Bad Identity Info", "No-TN-Validation"),
        "E10": (436, "Bad Identity Info", "No-TN-Validation"),
        "E11": (437, "Unsupported Credential", "No-TN-Validation"),
        "E12": (437, "Unsupported Credential", "No-TN-Validation"),
        "E13": (438, "Invalid Identity Header", "No-TN-Validation"),
        "E14": (438, "Invalid Identity Header", "No-TN-Validation"),
        "E15": (403, "Stale Date", "No-TN-Validation"),
        "E16": (438, "Invalid Identity Header", "No-TN-Validation"),
        "E17": (437, "Unsupported Credential", "TN-Validation-Failed"),
        "E18": (438, "Invalid Identity Header", "TN-Validation-Failed"),
        "E19": (438, "Invalid Identity Header", "No-TN-Validation"),
    }
    seen = set()
    for case in RESULT_CASES:
        number = case.case.split()[0]
        info = REASONS[case.reason]
        assert (info.sip_code, info.phrase, info.verstat.value) == expected[number], case.case
        seen.add(number)
    assert seen == set(expected)
    assert {c.case.split()[0] for c in API_CASES} == {"E1", "E2"}


async def test_a_good_call_passes_and_is_logged(kit: LabKit, make_api: ApiFactory) -> None:
    api: Api = await make_api()
    response = await api.verify(kit.token())
    assert response.status_code == 200
    assert response.json() == {"verificationResponse": {"verstat": "TN-Validation-Passed"}}
    [record] = api.calls.records
    assert record.reason is None and record.attest == "A" and record.allowed
    assert record.orig == IN_RANGE and record.dest == DEST and record.x5u == kit.x5u
    assert record.profile == "lab" and record.action == "continue"


async def test_tns_with_separators_and_plus_are_canonicalized(
    kit: LabKit, make_api: ApiFactory
) -> None:
    """ATIS E16: visual separators and a leading '+' are removed before comparing."""
    api: Api = await make_api()
    response = await api.verify(kit.token(), orig="+1 (202) 555-0123", dest="+1-303-555-0000")
    assert response.json() == {"verificationResponse": {"verstat": "TN-Validation-Passed"}}


async def test_a_time_inside_the_window_is_not_stale(kit: LabKit, make_api: ApiFactory) -> None:
    api: Api = await make_api()
    response = await api.verify(kit.token(), time_=int(time.time()) - 30)
    assert response.json() == {"verificationResponse": {"verstat": "TN-Validation-Passed"}}
