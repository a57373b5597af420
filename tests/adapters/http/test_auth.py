"""API keys: authentication, authorization by TN, SPC and profile, rate limits, secrecy."""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime

import pytest

from shaken.adapters.http.auth import Keyring, TokenBucket, presented_key
from tests.adapters.http.conftest import (
    IN_RANGE,
    OUTSIDE,
    Api,
    ApiFactory,
    LabKit,
    key_entry,
    signing_request,
)
from tests.support.fakes import ManualClock

pytestmark = pytest.mark.anyio

SECRET = "tns-only-key-0123456789"


def _message(response: object) -> str:
    body = response.json()  # type: ignore[attr-defined]
    return str(body["requestError"]["policyException"]["messageId"])


async def test_signing_needs_a_key(make_api: ApiFactory) -> None:
    api: Api = await make_api()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}):
        response = await api.sign(signing_request(), headers=headers)
        assert response.status_code == 401, headers
        assert _message(response) == "POL4010"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert api.calls.records == []


@pytest.mark.parametrize(
    "headers",
    [
        lambda key: {"Authorization": f"Bearer {key}"},
        lambda key: {"Authorization": f"bearer   {key}  "},
        lambda key: {"X-API-Key": key},
        lambda key: {"Authorization": "Basic Zm9vOmJhcg==", "X-API-Key": key},
    ],
    ids=["bearer", "bearer-spacing", "x-api-key", "basic-then-header"],
)
async def test_key_headers(make_api: ApiFactory, kit: LabKit, headers: object) -> None:
    api: Api = await make_api()
    response = await api.sign(signing_request(), headers=headers(kit.api_key))  # type: ignore[operator]
    assert response.status_code == 200, response.text


async def test_verification_is_keyed_unless_open(kit: LabKit, make_api: ApiFactory) -> None:
    closed: Api = await make_api()
    response = await closed.verify(kit.token(), headers={})
    assert (response.status_code, _message(response)) == (401, "POL4010")
    opened: Api = await make_api(server="verification_open = true")
    response = await opened.verify(kit.token(), headers={})
    assert response.json() == {"verificationResponse": {"verstat": "TN-Validation-Passed"}}
    [record] = opened.calls.records
    assert record.profile == "global"  # no key: the global profile
    response = await opened.verify(kit.token(), headers={"X-API-Key": "wrong"})
    assert response.status_code == 401  # a key that is given must be right
    response = await opened.sign(signing_request(), headers={})
    assert response.status_code == 401  # signing is never open


async def test_a_key_without_may_verify(kit: LabKit, make_api: ApiFactory) -> None:
    api: Api = await make_api(
        keys=key_entry("signer", SECRET, spcs=["1234"], profiles=["lab"], may_verify=False),
        key=SECRET,
    )
    response = await api.verify(kit.token())
    assert (response.status_code, _message(response)) == (403, "POL4030")
    assert (await api.sign(signing_request())).status_code == 200


async def test_a_key_signs_only_its_tns(make_api: ApiFactory) -> None:
    api: Api = await make_api(
        keys=key_entry("tns", SECRET, tns=[IN_RANGE], profiles=["lab"]), key=SECRET
    )
    assert (await api.sign(signing_request(IN_RANGE))).status_code == 200
    refused = await api.sign(signing_request(OUTSIDE))
    assert (refused.status_code, _message(refused)) == (403, "POL4030")
    assert OUTSIDE in refused.json()["requestError"]["policyException"]["variables"][0]
    signed, denied = api.calls.records
    assert (signed.allowed, signed.orig, signed.direction) == (True, IN_RANGE, "sign")
    assert (signed.action, denied.action) == ("signed", "not_signed")
    assert (denied.allowed, denied.orig) == (False, OUTSIDE)
    assert denied.reason == f"this API key may not sign for {OUTSIDE}"


async def test_a_key_signs_for_its_spcs(make_api: ApiFactory) -> None:
    """The lab certificate has SPC 1234: a key bound to 1234 signs any TN the lab signs."""
    good: Api = await make_api()
    assert (await good.sign(signing_request(OUTSIDE))).status_code == 200
    other: Api = await make_api(
        keys=key_entry("spc", SECRET, spcs=["9999"], profiles=["lab"]), key=SECRET
    )
    refused = await other.sign(signing_request(IN_RANGE))
    assert (refused.status_code, _message(refused)) == (403, "POL4030")


async def test_an_unusable_signing_certificate_authorizes_no_spc(
    kit: LabKit, make_api: ApiFactory
) -> None:
    api: Api = await make_api()
    api.runtime.cache.purge()  # the lab repository is not running: the chain is unobtainable
    refused = await api.sign(signing_request())
    assert (refused.status_code, _message(refused)) == (403, "POL4030")


async def test_a_key_uses_its_profiles_only(make_api: ApiFactory) -> None:
    api: Api = await make_api(keys=key_entry("global", SECRET, spcs=["1234"]), key=SECRET)
    response = await api.sign(signing_request())
    assert response.status_code == 200  # no profiles: the global profile
    assert api.calls.records[-1].profile == "global"
    response = await api.client.post(
        "/stir/v1/signing",
        json={"signingRequest": {**signing_request(), "ppt": "shaken", "profileId": "lab"}},
        headers=api.auth,
    )
    assert response.status_code == 403
    assert "profile" in response.json()["error"]


OUTBOUND = """
[profile.outbound]
behavior = "sign"
sources = ["192.0.2.10/32"]
"""


async def test_a_key_verifies_with_its_first_profile_that_verifies(
    make_api: ApiFactory, kit: LabKit
) -> None:
    """Issue 9 item 7: a key listing a signing-only profile first verified under it, and was
    refused with an error naming no profile; now the first profile that verifies is used."""
    keys = OUTBOUND + key_entry("both", SECRET, spcs=["1234"], profiles=["outbound", "lab"])
    api: Api = await make_api(keys=keys, key=SECRET)
    response = await api.verify(kit.token())
    assert response.status_code == 200
    assert response.json()["verificationResponse"]["verstat"] == "TN-Validation-Passed"
    assert api.calls.records[-1].profile == "lab"
    response = await api.sign(signing_request())
    assert response.status_code == 200
    assert api.calls.records[-1].profile == "outbound"


async def test_a_key_whose_profiles_cannot_do_the_job_is_told_which(
    make_api: ApiFactory, kit: LabKit
) -> None:
    keys = OUTBOUND + key_entry("out", SECRET, spcs=["1234"], profiles=["outbound"])
    api: Api = await make_api(keys=keys, key=SECRET)
    response = await api.verify(kit.token())
    assert response.status_code == 403
    assert "none of this API key's profiles (outbound) may verify" in response.text
    request = {**signing_request(), "ppt": "shaken", "profileId": "lab"}
    response = await api.client.post(
        "/stir/v1/signing", json={"signingRequest": request}, headers=api.auth
    )
    assert response.status_code == 403
    assert "this API key may not use the profile lab" in response.text


async def test_rate_limit_answers_429_with_retry_after(make_api: ApiFactory) -> None:
    clock = ManualClock(datetime.now(UTC))
    api: Api = await make_api(
        keys=key_entry("slow", SECRET, spcs=["1234"], profiles=["lab"], rate_per_second=2),
        key=SECRET,
        clock=clock,
    )
    statuses = [(await api.sign(signing_request())).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = await api.sign(signing_request())
    assert _message(limited) == "POL4290" and limited.headers["retry-after"] == "1"
    clock.advance(seconds=0.5)
    assert (await api.sign(signing_request())).status_code == 200
    assert (await api.sign(signing_request())).status_code == 429
    other = await api.sign(signing_request(), headers={"X-API-Key": api.key + "x"})
    assert other.status_code == 401


def test_token_bucket_arithmetic() -> None:
    bucket = TokenBucket(rate=0.5, burst=1.0)
    assert bucket.take(100.0) == 0.0
    assert bucket.take(100.0) == pytest.approx(2.0)
    assert bucket.take(101.0) == pytest.approx(1.0)
    assert bucket.take(99.0) == pytest.approx(1.0)  # a clock going back refills nothing
    assert bucket.take(102.0) == 0.0
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)


def test_keyring_finds_keys_by_hash_only() -> None:
    ring = Keyring.from_settings(
        {
            "a": {"sha256": hashlib.sha256(b"alpha").hexdigest()},
            "b": {"sha256": hashlib.sha256(b"beta").hexdigest(), "may_verify": False},
        }
    )
    found = ring.authenticate("beta")
    assert found is not None and found.name == "b" and not found.may_verify
    assert ring.authenticate("alpha") is not None
    assert ring.authenticate("gamma") is None
    assert ring.authenticate("") is None
    assert "beta" not in repr(found) and found.digest.hex() not in repr(found)
    assert ring.admit(found, 0.0) == 0


def test_presented_key() -> None:
    assert presented_key(b"Bearer k1", b"k2") == "k1"
    assert presented_key(b"Basic k1", b"k2") == "k2"
    assert presented_key(b"Bearer ", None) is None
    assert presented_key(None, b"  ") is None
    assert presented_key(None, None) is None
    ring = Keyring.from_settings({"u": {"sha256": hashlib.sha256("clé".encode()).hexdigest()}})
    assert ring.authenticate(presented_key(None, "clé".encode()) or "") is not None
    assert ring.authenticate(presented_key(None, "clé".encode("latin-1")) or "") is None


async def test_keys_never_appear_in_responses_logs_or_metrics(
    kit: LabKit, make_api: ApiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = [kit.api_key, SECRET]
    digests = [hashlib.sha256(s.encode()).hexdigest() for s in secrets]
    private = kit.lab.sp_key.read_text()
    api: Api = await make_api(
        keys=key_entry("tns", SECRET, tns=[IN_RANGE], profiles=["lab"], rate_per_second=1)
    )
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for key in (kit.api_key, SECRET, SECRET + "x", ""):
            for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
                for orig in (IN_RANGE, OUTSIDE):
                    response = await api.sign(signing_request(orig), headers=headers)
                    seen.append(response.text + str(response.headers))
                response = await api.verify(kit.token(), headers=headers)
                seen.append(response.text + str(response.headers))
        for path in ("/metrics", "/readyz", "/healthz", "/openapi.json"):
            seen.append((await api.client.get(path)).text)
    seen.append(caplog.text)
    seen.extend(repr(r) for r in api.calls.records)
    text = "\n".join(seen)
    assert "POL4290" in text and "POL4030" in text and "POL4010" in text  # the paths ran
    for secret in [*secrets, *digests]:
        assert secret not in text
    for line in private.splitlines()[1:-1]:
        assert line not in text


async def test_the_signing_certificate_is_looked_at_again_after_a_minute(
    make_api: ApiFactory,
) -> None:
    clock = ManualClock(datetime.now(UTC))
    api: Api = await make_api(clock=clock)
    assert (await api.sign(signing_request())).status_code == 200
    api.runtime.cache.purge()  # the chain is gone (and the lab repository is not running)
    assert (await api.sign(signing_request())).status_code == 200  # the status of a minute ago
    clock.advance(seconds=61)
    refused = await api.sign(signing_request())
    assert (refused.status_code, _message(refused)) == (403, "POL4030")
