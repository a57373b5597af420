"""serve_rest: a real uvicorn server on loopback, started and stopped inside the test's loop."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from shaken.adapters.http.server import bind_rest, parse_listener, serve_rest
from shaken.core.errors import ConfigurationError
from tests.adapters.http.conftest import DEST, IN_RANGE, LabKit, MemoryCallLog, free_port

pytestmark = pytest.mark.anyio


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def test_serves_http_until_cancelled(kit: LabKit) -> None:
    port = free_port()
    runtime = kit.runtime()
    calls = MemoryCallLog()
    ready = asyncio.Event()
    task = asyncio.create_task(serve_rest(runtime, [f"http:127.0.0.1:{port}"], calls, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            response = await client.post(
                "/stir/v1/verification",
                json={
                    "verificationRequest": {
                        "from": {"tn": IN_RANGE},
                        "to": {"tn": [DEST]},
                        "time": int(time.time()),
                        "identity": kit.token(),
                    }
                },
                headers={"X-API-Key": kit.api_key, "X-RequestID": "over-the-wire"},
            )
            assert response.status_code == 200
            assert response.json() == {"verificationResponse": {"verstat": "TN-Validation-Passed"}}
            assert response.headers["x-requestid"] == "over-the-wire"
            assert "server" not in response.headers

            async def parts() -> AsyncIterator[bytes]:
                yield b'{"verificationRequest"'
                yield b": {}}"

            chunked = await client.post(
                "/stir/v1/verification",
                content=parts(),
                headers={"Content-Type": "application/json", "X-API-Key": kit.api_key},
            )
            assert chunked.status_code == 411  # no Content-Length: SVC4007
            assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert [r.call_id for r in calls.records] == ["over-the-wire"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await runtime.aclose()
    assert _refused(port)


async def test_serves_https(kit: LabKit) -> None:
    port = free_port()
    runtime = kit.runtime(
        server=f'tls_certificate = "{kit.lab.tls_cert}"\ntls_key = "{kit.lab.tls_key}"'
    )
    ready = asyncio.Event()
    task = asyncio.create_task(serve_rest(runtime, [f"https:127.0.0.1:{port}"], None, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        context = ssl.create_default_context(cafile=str(kit.lab.tls_ca))
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=context) as c:
            assert (await c.get("/healthz")).status_code == 200
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await runtime.aclose()


async def test_several_workers_share_the_port(kit: LabKit) -> None:
    """Workers share the sockets bound once (by the supervisor); binding again fails."""
    port = free_port()
    first, second = kit.runtime(server="workers = 2"), kit.runtime(server="workers = 2")
    bound = bind_rest([f"http:127.0.0.1:{port}"])
    ready = [asyncio.Event(), asyncio.Event()]
    tasks = [
        asyncio.create_task(serve_rest(rt, [], None, ready=ev, bound=bound))
        for rt, ev in zip((first, second), ready, strict=True)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in ready)), 10)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).status_code == 200
        # Issue 9 item 6: no SO_REUSEPORT, so a second instance cannot take the port.
        with pytest.raises(ConfigurationError, match=f"http:127.0.0.1:{port}"):
            bind_rest([f"http:127.0.0.1:{port}"])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for item in bound:
            item.sock.close()
        await first.aclose()
        await second.aclose()


async def test_a_port_in_use_is_a_configuration_error(kit: LabKit) -> None:
    runtime = kit.runtime()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigurationError, match="cannot listen"):
            await serve_rest(runtime, [f"http:127.0.0.1:{port}"], None)
    await runtime.aclose()


async def test_https_needs_a_certificate(kit: LabKit) -> None:
    runtime = kit.runtime()
    with pytest.raises(ConfigurationError, match="tls_certificate"):
        await serve_rest(runtime, [f"https:127.0.0.1:{free_port()}"], None)
    with pytest.raises(ConfigurationError, match="no REST listeners"):
        await serve_rest(runtime, [], None)
    await runtime.aclose()


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("http:127.0.0.1:8080", ("http", "127.0.0.1", 8080)),
        ("https:[::1]:8443", ("https", "::1", 8443)),
        ("http:localhost:0", ("http", "localhost", 0)),
    ],
)
def test_parse_listener(text: str, parsed: tuple[str, str, int]) -> None:
    assert parse_listener(text) == parsed


@pytest.mark.parametrize(
    "text", ["udp:127.0.0.1:5060", "http:127.0.0.1", "http::80", "http:h:99999"]
)
def test_parse_listener_rejects(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_listener(text)
