"""The 3GPP TS 24.229 Ms variant: chosen by ``[server] api_schema`` or by the request's shape."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from shaken.core.reasons import REASONS, Reason
from tests.adapters.http.conftest import (
    DEST,
    IN_RANGE,
    Api,
    ApiFactory,
    LabKit,
    signing_request,
)

pytestmark = pytest.mark.anyio


def _request(identity: str, **extra: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "identityHeader": identity,
        "from": {"tn": IN_RANGE},
        "to": {"tn": [DEST]},
        "time": int(time.time()),
    }
    request.update(extra)
    return {"verificationRequest": request}


async def _post(api: Api, path: str, body: dict[str, Any]) -> Any:
    return await api.client.post(path, json=body, headers=api.auth)


@pytest.mark.parametrize("mode", ["auto", "3gpp"])
async def test_verification_pass(kit: LabKit, make_api: ApiFactory, mode: str) -> None:
    api: Api = await make_api(server=f'api_schema = "{mode}"')
    identity = kit.token()
    response = await _post(
        api,
        "/stir/v1/verification",
        _request(identity, requestId="r-1", displayName="Alice"),
    )
    assert response.status_code == 200
    body = response.json()["verificationResponse"]
    assert body["verstatValue"] == "TN-Validation-Passed"
    assert body["requestId"] == "r-1" and body["displayName"] == "Alice"
    [entry] = body["verifyResults"]
    result = entry["verifyResult"]
    assert (result["ppt"], result["status"]) == ("shaken", "pass")
    assert result["validClaims"]["orig"] == {"tn": IN_RANGE}
    assert result["validClaims"]["dest"] == {"tn": [DEST]}
    assert result["validClaims"]["attest"] == "A"
    assert "verstat" not in body and "reasoncode" not in body


async def test_verification_fail(kit: LabKit, make_api: ApiFactory) -> None:
    api: Api = await make_api()
    response = await _post(api, "/stir/v1/verification", _request(kit.token(header={"typ": "x"})))
    body = response.json()["verificationResponse"]
    info = REASONS[Reason.UNSUPPORTED_TYP]
    assert body["verstatValue"] == info.verstat.value
    assert body["verifyResults"][0]["verifyResult"] == {
        "ppt": "shaken",
        "status": "fail",
        "reasonCode": info.sip_code,
        "reasonText": info.phrase,
        "reasonDescription": info.description,
    }


async def test_parties_as_strings_and_uris(kit: LabKit, make_api: ApiFactory) -> None:
    api: Api = await make_api()
    response = await _post(
        api,
        "/stir/v1/verification",
        _request(kit.token(), **{"from": IN_RANGE, "to": DEST, "dest": {"tn": [DEST]}}),
    )
    assert response.json()["verificationResponse"]["verstatValue"] == "TN-Validation-Passed"
    response = await _post(
        api,
        "/stir/v1/verification",
        _request(kit.token(), **{"from": {"uri": "sip:alice@example.com"}}),
    )
    result = response.json()["verificationResponse"]["verifyResults"][0]["verifyResult"]
    assert result["reasonCode"] == REASONS[Reason.ORIG_MISMATCH].sip_code


async def test_the_alert_action_tags_the_display_name(kit: LabKit, make_api: ApiFactory) -> None:
    alert = '[verification.on.failed]\naction = "alert"\ndisplay_prefix = "[SPAM?] "\n'
    api: Api = await make_api(replace={"[profile.lab]": alert + "\n[profile.lab]"})
    response = await _post(
        api,
        "/stir/v1/verification",
        _request(kit.token(), displayName="Alice", **{"from": {"tn": "12025550124"}}),
    )
    assert response.json()["verificationResponse"]["displayName"] == "[SPAM?] Alice"
    assert api.calls.records[-1].action == "alert"


async def test_several_identity_headers(kit: LabKit, make_api: ApiFactory) -> None:
    api: Api = await make_api()
    broken = kit.token(header={"typ": "x"})
    response = await _post(
        api, "/stir/v1/verification", _request(broken, identityHeaders=[kit.token()])
    )
    assert response.json()["verificationResponse"]["verstatValue"] == "TN-Validation-Passed"


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"identityHeader": None}, "Missing mandatory parameter 'identityHeader'"),
        ({"time": None}, "Missing mandatory parameter 'time'"),
        ({"time": "now"}, "Invalid 'time' parameter value"),
        ({"from": {"uri": "mailto:a@b"}}, "Invalid 'from.uri' parameter value"),
        ({"identityHeaders": "x"}, "Invalid 'identityHeaders' parameter value"),
        ({"requestId": "has space"}, "Invalid 'requestId' parameter value"),
        ({"profileId": "nope"}, "Not authorized"),
    ],
    ids=repr,
)
async def test_errors_are_plain_texts(
    kit: LabKit, make_api: ApiFactory, change: dict[str, Any], text: str
) -> None:
    api: Api = await make_api(server='api_schema = "3gpp"')
    body = _request(kit.token())
    for name, value in change.items():
        if value is None:
            del body["verificationRequest"][name]
        else:
            body["verificationRequest"][name] = value
    response = await _post(api, "/stir/v1/verification", body)
    assert response.status_code in (400, 403)
    assert list(response.json()) == ["error"]
    assert text in response.json()["error"]


async def test_3gpp_mode_answers_api_errors_in_its_shape(make_api: ApiFactory) -> None:
    api: Api = await make_api(server='api_schema = "3gpp"')
    response = await api.client.get("/stir/v1/verification")
    assert response.status_code == 405
    assert response.json() == {"error": "Error: Method Not Allowed: Invalid HTTP method used"}
    response = await api.client.post("/stir/v1/signing", json={})
    assert response.json() == {"error": "Error: Missing or unknown API key."}


async def test_atis_mode_ignores_3gpp_members(kit: LabKit, make_api: ApiFactory) -> None:
    api: Api = await make_api(server='api_schema = "atis"')
    response = await _post(api, "/stir/v1/verification", _request(kit.token()))
    assert response.status_code == 400
    error = response.json()["requestError"]["serviceException"]
    assert (error["messageId"], error["variables"]) == ("SVC4001", ["identity"])


@pytest.mark.parametrize("mode", ["auto", "3gpp"])
async def test_signing(kit: LabKit, make_api: ApiFactory, mode: str) -> None:
    api: Api = await make_api(server=f'api_schema = "{mode}"')
    request = signing_request(ppt="shaken", requestId="q-9", profileId="lab")
    response = await api.sign(request)
    assert response.status_code == 200, response.text
    body = response.json()["signingResponse"]
    assert body["requestId"] == "q-9"
    assert body["identityHeader"].endswith(f";info=<{kit.x5u}>;alg=ES256;ppt=shaken")
    verified = await _post(api, "/stir/v1/verification", _request(body["identityHeader"]))
    assert verified.json()["verificationResponse"]["verstatValue"] == "TN-Validation-Passed"


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"ppt": "div"}, "Invalid 'ppt' parameter value"),
        ({"rph": {"auth": ["ets.0"]}}, "Invalid 'rph' parameter value"),
        ({"orig": {"uri": "sip:a@b"}}, "Missing mandatory parameter 'orig.tn'"),
        # A bare URI as orig once hit an assertion (a 500); only TNs are signed.
        ({"orig": "sip:alice@example.com"}, "Invalid 'orig' parameter value"),
        ({"dest": "sip:bob@example.com"}, "Invalid 'dest.uri' parameter value"),
    ],
    ids=repr,
)
async def test_signing_errors(make_api: ApiFactory, change: dict[str, Any], text: str) -> None:
    api: Api = await make_api(server='api_schema = "3gpp"')
    response = await api.sign({**signing_request(), **change})
    assert response.status_code == 400
    assert text in response.json()["error"]


async def test_neustar_dest_array_shape(make_api: ApiFactory) -> None:
    api: Api = await make_api(server='api_schema = "3gpp"')
    response = await api.sign(signing_request(dest=[{"tn": [DEST]}]))
    assert response.status_code == 200, response.text


async def test_a_diverted_call_reports_div_result(kit: LabKit, make_api: ApiFactory) -> None:
    """To is the number called, the Request-URI (3GPP dest) where the call was forwarded."""
    from shaken.core.sign import sign_div, sign_shaken

    now = datetime.now(UTC)
    forwarded = "13035550077"
    original = sign_shaken(
        key=kit.sp_key, x5u=kit.x5u, orig=IN_RANGE, dest=DEST, attest="A", now=now
    )
    div = sign_div(
        key=kit.sp_key, x5u=kit.x5u, orig=IN_RANGE, diverted_from=DEST, dest=forwarded, now=now
    )
    api: Api = await make_api()
    response = await _post(
        api,
        "/stir/v1/verification",
        _request(original, identityHeaders=[div], dest={"tn": [forwarded]}),
    )
    body = response.json()["verificationResponse"]
    assert body["verstatValue"] == "TN-Validation-Passed", body
    assert body["divResult"] == [{"div": DEST, "verstatValue": "TN-Validation-Passed"}]
