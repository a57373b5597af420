"""POST /stir/v1/signing: the ATIS-1000082 request and response, and what gets signed."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from shaken.core.jws import b64url_decode
from tests.adapters.http.conftest import (
    DEST,
    IN_RANGE,
    OUTSIDE,
    Api,
    ApiFactory,
    LabKit,
    signing_request,
)

pytestmark = pytest.mark.anyio

ORIGID = "123e4567-e89b-42d3-a456-426655440000"


def _claims(identity: str) -> dict[str, Any]:
    payload = identity.split(";", maxsplit=1)[0].split(".")[1]
    claims: dict[str, Any] = json.loads(b64url_decode(payload))
    return claims


async def test_signs_and_the_identity_verifies(kit: LabKit, make_api: ApiFactory) -> None:
    api: Api = await make_api()
    now = int(time.time())
    response = await api.sign(signing_request(iat=now, origid=ORIGID))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    [name] = response.json()
    identity = response.json()["signingResponse"]["identity"]
    assert name == "signingResponse" and list(response.json()[name]) == ["identity"]
    assert identity.endswith(f";info=<{kit.x5u}>;alg=ES256;ppt=shaken")
    assert _claims(identity) == {
        "attest": "A",
        "dest": {"tn": [DEST]},
        "iat": now,
        "orig": {"tn": IN_RANGE},
        "origid": ORIGID,
    }
    verified = await api.verify(identity)
    assert verified.json() == {"verificationResponse": {"verstat": "TN-Validation-Passed"}}
    signed = api.calls.records[0]
    assert (signed.direction, signed.interface, signed.attest) == ("sign", "rest", "A")
    assert (signed.orig, signed.dest, signed.x5u, signed.profile) == (
        IN_RANGE,
        DEST,
        kit.x5u,
        "lab",
    )


@pytest.mark.parametrize(
    ("orig", "asked", "signed"),
    [(IN_RANGE, "A", "A"), (IN_RANGE, "B", "B"), (IN_RANGE, "C", "C"), (OUTSIDE, "A", "C")],
)
async def test_attest_may_only_be_lowered(
    make_api: ApiFactory, orig: str, asked: str, signed: str
) -> None:
    api: Api = await make_api()
    response = await api.sign(signing_request(orig, attest=asked))
    assert _claims(response.json()["signingResponse"]["identity"])["attest"] == signed


async def test_a_lowered_attestation_is_stated_in_the_response(make_api: ApiFactory) -> None:
    """Issue 9 item 7: asked for A on a number allowed only C, the answer says C and why."""
    api: Api = await make_api()
    body = (await api.sign(signing_request(OUTSIDE, attest="A"))).json()["signingResponse"]
    assert _claims(body["identity"])["attest"] == "C"
    assert body["attest"] == "C"
    assert "unknown_tn_attest is C" in body["attestReason"]
    same = (await api.sign(signing_request(IN_RANGE, attest="B"))).json()["signingResponse"]
    assert list(same) == ["identity"]  # what was asked for was signed: the standard shape


async def test_a_stale_iat_is_replaced_by_now(make_api: ApiFactory) -> None:
    api: Api = await make_api()
    before = int(time.time())
    response = await api.sign(signing_request(iat=before - 3600))
    assert _claims(response.json()["signingResponse"]["identity"])["iat"] >= before


async def test_origid_is_generated_when_absent(make_api: ApiFactory) -> None:
    api: Api = await make_api()
    first, second = [
        _claims((await api.sign(signing_request())).json()["signingResponse"]["identity"])
        for _ in range(2)
    ]
    assert first["origid"] != second["origid"]


async def test_several_destinations_and_separators(make_api: ApiFactory) -> None:
    api: Api = await make_api()
    response = await api.sign(
        signing_request("+1 (202) 555-0123", dest={"tn": ["+1-303-555-0000", "13035550001"]})
    )
    claims = _claims(response.json()["signingResponse"]["identity"])
    assert claims["orig"] == {"tn": IN_RANGE}
    assert claims["dest"] == {"tn": [DEST, "13035550001"]}


@pytest.mark.parametrize(
    ("change", "message_id", "variable"),
    [
        ({"attest": None}, "SVC4001", "attest"),
        ({"dest": None}, "SVC4001", "dest"),
        ({"iat": None}, "SVC4001", "iat"),
        ({"orig": None}, "SVC4001", "orig"),
        ({"attest": "D"}, "SVC4005", "attest"),
        ({"attest": "a"}, "SVC4005", "attest"),
        ({"iat": -5}, "SVC4005", "iat"),
        ({"iat": True}, "SVC4005", "iat"),
        ({"orig": {"tn": "x"}}, "SVC4005", "orig.tn"),
        ({"orig": {"uri": "sip:a@b"}}, "SVC4001", "orig.tn"),
        ({"dest": {"uri": ["sip:a@b"]}}, "SVC4005", "dest.uri"),
        ({"dest": {"tn": "13035550000"}}, "SVC4005", "dest.tn"),
        ({"origid": "not-a-uuid"}, "SVC4005", "origid"),
        ({"rcd": {"icn": "https://brand.example.test/a.png"}}, "SVC4005", "rcd"),
        ({"crn": "x" * 65}, "SVC4005", "crn"),
    ],
    ids=repr,
)
async def test_request_errors(
    make_api: ApiFactory, change: dict[str, Any], message_id: str, variable: str
) -> None:
    api: Api = await make_api()
    request = {k: v for k, v in {**signing_request(), **change}.items() if v is not None}
    response = await api.sign(request)
    assert response.status_code == 400
    error = response.json()["requestError"]["serviceException"]
    assert (error["messageId"], error["variables"][0]) == (message_id, variable)
    assert api.calls.records == []


async def test_a_profile_that_does_not_sign(make_api: ApiFactory) -> None:
    api: Api = await make_api(replace={'behavior = "both"': 'behavior = "verify"'})
    response = await api.sign(signing_request())
    assert response.status_code == 403
    assert response.json()["requestError"]["policyException"]["messageId"] == "POL4030"


async def test_a_tn_the_policy_does_not_sign(make_api: ApiFactory) -> None:
    """Without unknown_tn_attest, TNs with no entry are refused: 403, and logged as refused."""
    api: Api = await make_api(replace={'unknown_tn_attest = "C"': ""})
    response = await api.sign(signing_request(OUTSIDE))
    assert response.status_code == 403
    [record] = api.calls.records
    assert (record.allowed, record.action) == (False, "not_signed")
    assert record.reason is not None and "unknown TNs are not signed" in record.reason
