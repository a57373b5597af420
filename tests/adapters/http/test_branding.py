"""Branded calling over the REST API: signing rcd for the lab's branded TN, and the separate
rcd verdict in verification answers, with the lab's real repository serving the logo."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from shaken.core.identity import IdentityHeader
from shaken.core.passport import decode_token
from shaken.core.rcd import content_digest
from shaken.toolkit.lab import BRAND_LOGO, brand_logo
from tests.adapters.http.conftest import DEST, IN_RANGE, Api, ApiFactory, LabKit

pytestmark = pytest.mark.anyio


@pytest.fixture
def repository(kit: LabKit) -> Iterator[None]:
    """The lab's own repository, on its configured port, for the test's duration."""
    server = kit.lab.serve().start()
    try:
        yield
    finally:
        server.close()
        (kit.lab.repo_dir / BRAND_LOGO).write_bytes(brand_logo())


def _request(orig: str, **extra: Any) -> dict[str, Any]:
    return {
        "attest": "A",
        "orig": {"tn": orig},
        "dest": {"tn": [DEST]},
        "iat": int(time.time()),
        **extra,
    }


def _claims(identity: str) -> dict[str, Any]:
    return dict(decode_token(IdentityHeader.parse(identity).token).payload)


async def _sign(api: Api, orig: str, **extra: Any) -> str:
    response = await api.sign(_request(orig, **extra))
    assert response.status_code == 200, response.text
    return str(response.json()["signingResponse"]["identity"])


async def test_branded_tn_is_signed_with_its_vetted_brand(
    make_api: ApiFactory, kit: LabKit
) -> None:
    api: Api = await make_api()
    brand_tn = kit.lab.settings.brand_tn
    claims = _claims(await _sign(api, brand_tn))
    logo_url = kit.lab.settings.repository_url + BRAND_LOGO
    assert claims["rcd"] == {"nam": "Acme Bank", "icn": logo_url}
    assert claims["rcdi"] == {"/icn": content_digest(brand_logo())}
    assert claims["crn"] == "Account security alert"
    # ATIS-1000082 shape with vendor rcd members: a vetted reason is signed...
    claims = _claims(
        await _sign(api, brand_tn, rcd={"nam": "Acme Bank"}, crn="Appointment reminder")
    )
    assert claims["crn"] == "Appointment reminder"
    # ...anything else is refused, for the brand's TN and for any other.
    for orig, extra in (
        (brand_tn, {"rcd": {"nam": "Acme Bank Refunds"}}),
        (brand_tn, {"crn": "You won a prize"}),
        (IN_RANGE, {"rcd": {"nam": "Acme Bank"}}),
    ):
        response = await api.sign(_request(orig, **extra))
        assert response.status_code == 403, response.text
        assert "POL4030" in response.text
    assert "rcd" not in _claims(await _sign(api, IN_RANGE))


async def test_verification_answer_carries_a_separate_rcd_verdict(
    make_api: ApiFactory, kit: LabKit, repository: None
) -> None:
    api: Api = await make_api()
    identity = await _sign(api, kit.lab.settings.brand_tn)
    response = await api.verify(identity, orig=kit.lab.settings.brand_tn)
    body = response.json()["verificationResponse"]
    assert body["verstat"] == "TN-Validation-Passed"
    logo_url = kit.lab.settings.repository_url + BRAND_LOGO
    assert body["rcd"] == {
        "status": "verified",
        "nam": "Acme Bank",
        "crn": "Account security alert",
        "icn": logo_url,
        "callInfo": f'<{logo_url}>;purpose=icon;integrity="{content_digest(brand_logo())}"'
        ';verified=true;call-reason="Account security alert"',
    }
    # The logo changes after signing: SHAKEN still passes, the brand is refused, nothing of it
    # is presented. (A new API, so the logo is fetched again rather than taken from cache.)
    (kit.lab.repo_dir / BRAND_LOGO).write_bytes(brand_logo() + b"changed")
    fresh: Api = await make_api()
    body = (await fresh.verify(identity, orig=kit.lab.settings.brand_tn)).json()
    inner = body["verificationResponse"]
    assert inner["verstat"] == "TN-Validation-Passed" and "reasoncode" not in inner
    assert inner["rcd"] == {
        "status": "integrity_failed",
        "reason": "rcd_integrity_failed",
        "reasoncode": 438,
        "reasondesc": "Content referenced by the rcd claim does not match its rcdi digest.",
    }
    # An unbranded call keeps the exact ATIS answer.
    plain = await _sign(api, IN_RANGE)
    body = (await api.verify(plain)).json()
    assert body == {"verificationResponse": {"verstat": "TN-Validation-Passed"}}
