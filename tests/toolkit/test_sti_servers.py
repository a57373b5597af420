"""The test STI-PA and ACME STI-CA refuse what the real ones refuse (raw HTTP requests)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shaken.core.acme import encode_tnauthlist, fingerprint, jwk_of, sign_jws
from shaken.core.certs import Spc, TNAuthList
from shaken.core.jws import PrivateKey, generate_private_key
from tests.support.sti import SPC, USER, Sti, running_sti


@pytest.fixture(scope="module")
def sti(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sti]:
    with running_sti(tmp_path_factory.mktemp("sti")) as found:
        yield found


def _client(sti: Sti) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=sti.tls_ca), timeout=10)


def _login(sti: Sti, client: httpx.Client) -> str:
    answer = client.post(
        f"{sti.pa_server.base_url}/api/v1/auth/login",
        json={"userId": USER, "password": sti.password},
    )
    assert answer.status_code == 200
    token: str = answer.json()["accessToken"]
    return token


def _atc(key: PrivateKey, **changes: Any) -> dict[str, Any]:
    atc = {
        "tktype": "TNAuthList",
        "tkvalue": encode_tnauthlist(TNAuthList(entries=(Spc(code=SPC),)), "base64"),
        "ca": False,
        "fingerprint": fingerprint(key.public_key()),
    }
    atc.update(changes)
    return {"atc": atc}


def test_the_sti_pa_wants_the_raw_access_token(sti: Sti) -> None:
    with _client(sti) as client:
        access = _login(sti, client)
        url = f"{sti.pa_server.base_url}/api/v1/account/{SPC}/token"
        body = _atc(generate_private_key())
        bearer = client.post(url, json=body, headers={"Authorization": f"Bearer {access}"})
        assert (bearer.status_code, bearer.json()["message"]) == (
            401,
            "Invalid or expired access token",
        )
        assert (
            client.post(url + "/", json=body, headers={"Authorization": access}).status_code == 200
        )
        other = client.post(
            f"{sti.pa_server.base_url}/api/v1/account/9999/token",
            json=body,
            headers={"Authorization": access},
        )
        assert other.status_code == 403
        bad = client.post(
            url,
            json=_atc(generate_private_key(), fingerprint="AA:BB"),
            headers={"Authorization": access},
        )
        assert (bad.status_code, bad.json()["message"]) == (
            400,
            "atc.fingerprint must be 'SHA256 ' and 32 hex bytes",
        )


def _post(
    sti: Sti,
    client: httpx.Client,
    url: str,
    payload: dict[str, Any] | None,
    key: PrivateKey,
    *,
    nonce: str | None = None,
    signed_url: str | None = None,
    kid: str | None = None,
    content_type: str = "application/jose+json",
) -> httpx.Response:
    if nonce is None:
        nonce = client.head(f"{sti.acme.base_url}/acme/new-nonce").headers["replay-nonce"]
    protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": signed_url or url}
    if kid is None:
        protected["jwk"] = jwk_of(key.public_key())
    else:
        protected["kid"] = kid
    body = json.dumps(sign_jws(key, protected, payload)).encode()
    return client.post(url, content=body, headers={"content-type": content_type})


def _problem(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, str(answer.json()["type"]).rsplit(":", 1)[1]


def test_the_acme_ca_checks_every_request(sti: Sti) -> None:
    key = generate_private_key()
    new_account = f"{sti.acme.base_url}/acme/new-account"
    with _client(sti) as client:
        created = _post(sti, client, new_account, {"termsOfServiceAgreed": True}, key)
        assert created.status_code == 201
        kid = created.headers["location"]
        again = _post(sti, client, new_account, {}, key)
        assert again.status_code == 200 and again.headers["location"] == kid
        nonce = client.head(f"{sti.acme.base_url}/acme/new-nonce").headers["replay-nonce"]
        assert _post(sti, client, new_account, {}, key, nonce=nonce).status_code == 200
        assert _problem(_post(sti, client, new_account, {}, key, nonce=nonce)) == (400, "badNonce")
        wrong_url = _post(sti, client, new_account, {}, key, signed_url=new_account + "x")
        assert _problem(wrong_url) == (400, "unauthorized")
        plain = _post(sti, client, new_account, {}, key, content_type="application/json")
        assert _problem(plain) == (415, "malformed")
        order = f"{sti.acme.base_url}/acme/new-order"
        identifiers = {"identifiers": [{"type": "dns", "value": "example.com"}]}
        assert _problem(_post(sti, client, order, identifiers, key, kid=kid)) == (
            400,
            "unsupportedIdentifier",
        )
        assert _problem(_post(sti, client, order, identifiers, key)) == (400, "malformed")
        stranger = generate_private_key()
        assert _problem(_post(sti, client, order, identifiers, stranger, kid=kid)) == (
            400,
            "unauthorized",
        )
        assert _problem(
            _post(sti, client, order, identifiers, key, kid=kid.replace("acct/", "acct/9"))
        ) == (400, "accountDoesNotExist")
