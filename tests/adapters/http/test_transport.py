"""HTTP-level rules: SVC4000-SVC4007, POL4050, POL4130, POL5000, POL5030, X-RequestID."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import pytest

from shaken.adapters.http.schemas import ERRORS, MAX_BODY_BYTES
from tests.adapters.http.conftest import Api, ApiFactory, LabKit, raw

pytestmark = pytest.mark.anyio

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
PATH = b"/stir/v1/verification"


def _body(kit: LabKit) -> bytes:
    import time

    return json.dumps(
        {
            "verificationRequest": {
                "from": {"tn": "12025550123"},
                "to": {"tn": ["13035550000"]},
                "time": int(time.time()),
                "identity": kit.token(),
            }
        }
    ).encode()


def _headers(api: Api, body: bytes, **changes: bytes | None) -> list[tuple[bytes, bytes]]:
    headers: dict[bytes, bytes | None] = {
        b"content-type": b"application/json",
        b"content-length": str(len(body)).encode(),
        b"accept": b"application/json",
        b"authorization": f"Bearer {api.key}".encode(),
    }
    for name, value in changes.items():
        headers[name.replace("_", "-").encode()] = value
    return [(k, v) for k, v in headers.items() if v is not None]


def _error(body: bytes) -> dict[str, Any]:
    document = json.loads(body)["requestError"]
    [(kind, error)] = document.items()
    assert kind == (
        "policyException" if error["messageId"].startswith("POL") else "serviceException"
    )
    assert error["text"] == ERRORS[error["messageId"]].text
    return dict(error)


async def test_the_standard_request_is_accepted(kit: LabKit, make_api: ApiFactory) -> None:
    api: Api = await make_api()
    body = _body(kit)
    status, headers, answer = await raw(api.app, "POST", PATH.decode(), _headers(api, body), [body])
    assert status == 200 and headers[b"content-type"] == b"application/json"
    assert json.loads(answer) == {"verificationResponse": {"verstat": "TN-Validation-Passed"}}


@pytest.mark.parametrize(
    ("changes", "status", "message_id", "variables"),
    [
        ({"accept": b"text/plain"}, 406, "SVC4002", ["text/plain"]),
        ({"accept": b"application/json;q=0, text/html"}, 406, "SVC4002", None),
        ({"content_type": b"text/plain"}, 415, "SVC4004", ["application/json"]),
        ({"content_type": None}, 415, "SVC4004", ["application/json"]),
        ({"content_type": b"application/json; charset=latin-1"}, 415, "SVC4004", None),
        ({"content_length": None}, 411, "SVC4007", None),
        ({"content_length": b"12x"}, 411, "SVC4007", None),
        ({"content_length": str(MAX_BODY_BYTES + 1).encode()}, 413, "POL4130", None),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else None,
)
async def test_header_rules(
    kit: LabKit,
    make_api: ApiFactory,
    changes: dict[str, bytes | None],
    status: int,
    message_id: str,
    variables: list[str] | None,
) -> None:
    api: Api = await make_api()
    body = _body(kit)
    got, headers, answer = await raw(
        api.app, "POST", PATH.decode(), _headers(api, body, **changes), [body]
    )
    assert got == status
    error = _error(answer)
    assert error["messageId"] == message_id
    if variables is not None:
        assert error["variables"] == variables
    assert UUID.fullmatch(headers[b"x-requestid"].decode())


@pytest.mark.parametrize(
    "accept", [b"*/*", b"application/*", b"text/html, application/json;q=0.5", b""]
)
async def test_accept_values_that_allow_json(
    kit: LabKit, make_api: ApiFactory, accept: bytes
) -> None:
    api: Api = await make_api()
    body = _body(kit)
    status, _, _ = await raw(
        api.app, "POST", PATH.decode(), _headers(api, body, accept=accept), [body]
    )
    assert status == 200


@pytest.mark.parametrize(
    ("body", "message_id"),
    [
        (b"", "SVC4000"),
        (b"   \n", "SVC4000"),
        (b"{", "SVC4006"),
        (b"[]", "SVC4006"),
        (b'"text"', "SVC4006"),
        (b"\xff\xfe{}", "SVC4006"),
        (b'{"verificationRequest": NaN}', "SVC4006"),
        (b'{"verificationRequest": {}, "verificationRequest": {}}', "SVC4006"),
        (b"[" * 100000 + b"]" * 100000, "POL4130"),
        (b"{}", "SVC4001"),
        (b'{"verificationRequest": []}', "SVC4005"),
    ],
    ids=lambda v: v[:30].decode("latin-1") if isinstance(v, bytes) else v,
)
async def test_body_rules(make_api: ApiFactory, body: bytes, message_id: str) -> None:
    api: Api = await make_api()
    status, _, answer = await raw(api.app, "POST", PATH.decode(), _headers(api, body), [body])
    assert _error(answer)["messageId"] == message_id
    assert status == ERRORS[message_id].status


async def test_deep_nesting_is_a_parse_error(make_api: ApiFactory) -> None:
    api: Api = await make_api()
    body = b"[" * 30000 + b"]" * 30000
    status, _, answer = await raw(api.app, "POST", PATH.decode(), _headers(api, body), [body])
    assert (status, _error(answer)["messageId"]) == (400, "SVC4006")


async def test_a_body_in_chunks_is_read_whole(kit: LabKit, make_api: ApiFactory) -> None:
    api: Api = await make_api()
    body = _body(kit)
    chunks = [body[i : i + 100] for i in range(0, len(body), 100)]
    status, _, answer = await raw(api.app, "POST", PATH.decode(), _headers(api, body), chunks)
    assert status == 200, answer


async def test_an_oversized_chunked_body_is_refused(make_api: ApiFactory) -> None:
    api: Api = await make_api()
    chunks = [b" " * 40000, b" " * 40000]
    headers = _headers(api, b"", content_length=b"10")
    status, _, answer = await raw(api.app, "POST", PATH.decode(), headers, chunks)
    assert (status, _error(answer)["messageId"]) == (413, "POL4130")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/stir/v1/verification", "/stir/v1/signing"])
async def test_other_methods_are_pol4050(make_api: ApiFactory, method: str, path: str) -> None:
    api: Api = await make_api()
    response = await api.client.request(method, path, headers=api.auth)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert _error(response.content)["messageId"] == "POL4050"


@pytest.mark.parametrize("path", ["/", "/stir/v1", "/stir/v1/verification/", "/stir/v2/signing"])
async def test_unknown_paths_are_svc4003(make_api: ApiFactory, path: str) -> None:
    api: Api = await make_api()
    response = await api.client.post(path, json={})
    assert response.status_code == 404
    assert _error(response.content)["messageId"] == "SVC4003"


async def test_an_internal_error_is_pol5000_and_logged(
    kit: LabKit,
    make_api: ApiFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api: Api = await make_api()
    verifier = api.runtime.profiles["lab"].verifier
    assert verifier is not None

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(verifier, "verify", broken)
    with caplog.at_level(logging.ERROR, logger="shaken.rest"):
        response = await api.verify(kit.token(), headers={**api.auth, "X-RequestID": "req-1"})
    assert response.status_code == 500
    assert response.json() == {
        "requestError": {
            "policyException": {"messageId": "POL5000", "text": "Error: Internal Server Issue"}
        }
    }
    assert "req-1" in caplog.text and "boom" in caplog.text


async def test_past_max_in_flight_the_answer_is_503(kit: LabKit, make_api: ApiFactory) -> None:
    api: Api = await make_api(server="max_in_flight = 1")
    body = _body(kit)
    held = asyncio.Event()
    release = asyncio.Event()

    async def slow_receive() -> dict[str, Any]:
        held.set()
        await release.wait()
        return {"type": "http.request", "body": body, "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/stir/v1/verification",
        "headers": _headers(api, body),
    }
    first = asyncio.create_task(api.app(scope, slow_receive, send))
    await held.wait()
    status, headers, answer = await raw(api.app, "POST", PATH.decode(), _headers(api, body), [body])
    assert (status, headers[b"retry-after"], _error(answer)["messageId"]) == (503, b"1", "POL5030")
    release.set()
    await first
    assert sent[0]["status"] == 200
    status, _, _ = await raw(api.app, "POST", PATH.decode(), _headers(api, body), [body])
    assert status == 200


async def test_a_client_that_leaves_gets_no_answer(make_api: ApiFactory) -> None:
    api: Api = await make_api()
    headers = _headers(api, b"{}")
    status, _, _ = await raw(api.app, "POST", PATH.decode(), headers, [])
    assert status == 0


@pytest.mark.parametrize(
    ("given", "echoed"),
    [
        ("abc-123", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("has space", False),
        ("", False),
        (None, False),
    ],
)
async def test_x_request_id_is_echoed_or_generated(
    kit: LabKit, make_api: ApiFactory, given: str | None, echoed: bool
) -> None:
    api: Api = await make_api()
    headers = dict(api.auth)
    if given is not None:
        headers["X-RequestID"] = given
    response = await api.verify(kit.token(), headers=headers)
    value = response.headers["x-requestid"]
    if echoed:
        assert value == given
    else:
        assert UUID.fullmatch(value)
    error = await api.client.get("/stir/v1/signing", headers=headers)
    assert (error.headers["x-requestid"] == given) is echoed


async def test_websocket_and_lifespan_scopes(make_api: ApiFactory) -> None:
    api: Api = await make_api()
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await api.app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    inbox.append({"type": "websocket.connect"})
    await api.app({"type": "websocket", "path": "/"}, receive, send)
    assert sent[-1]["type"] == "websocket.close"


def test_a_forked_worker_draws_its_own_request_ids() -> None:
    import os

    from shaken.adapters.http.app import _IDS

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write one id and leave at once
        os.write(write, _IDS.new())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64)
    os.close(read)
    os.close(write)
    assert child[:24] != _IDS.new()[:24]
