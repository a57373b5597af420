"""What a REST client may hold, against a real ``shaken serve`` (issue 17 item 5).

Header and body deadlines, stalled uploads outside ``max_in_flight``, the connection cap per
source, the request cap per kept-alive connection, and a worker whose descriptors run out
(``ulimit -n``) that keeps answering SIP over UDP and TCP, certificate fetches and REST.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shaken.adapters.sip.client import build_invite, parse_response
from shaken.toolkit.lab import Lab

from .test_serve_processes import (
    DEST,
    ORIG,
    Serve,
    free_port,
    free_sip_port,
    get,
    lab,
    lab_config,
    raw_sip_code,
    serving,
    start,
    wait_until,
)

__all__ = ["lab", "serving"]  # fixtures shared with the process tests

POST_HEAD = (
    "POST /stir/v1/verification HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    "X-API-Key: {key}\r\nContent-Length: {length}\r\n\r\n"
)


def api_key(lab: Lab) -> str:
    return (lab.directory / "secrets" / "rest-api-key").read_text(encoding="utf-8").strip()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    return sock


def closed_by_server(sock: socket.socket, timeout: float) -> bytes | None:
    """What the server sent before closing ``sock`` within ``timeout``; None if still open."""
    sock.settimeout(timeout)
    received = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return received
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        return received


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
        return str(reply.read().decode())


def metrics_from(port: int, source: str) -> str:
    """GET /metrics from another source address (one at its cap gets 503)."""
    with connect(port, source) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.decode()


def verification_body() -> bytes:
    return (
        b'{"verificationRequest": {"from": {"tn": "12025550123"}, "to": {"tn": ["13035550000"]},'
        b' "time": 1700000000}}'
    )


def post(port: int, key: str) -> int:
    """One complete verification request on a new connection; its status."""
    body = verification_body()
    with connect(port) as sock:
        sock.sendall(POST_HEAD.format(key=key, length=len(body)).encode() + body)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, "closed without an answer"
            head += chunk
    return int(head.split(b" ", 2)[1])


@pytest.fixture
def rest_server(lab: Lab, tmp_path: Path, serving: list[Serve]) -> Iterator[object]:
    def make(extra: str, *, workers: int = 1) -> tuple[Serve, int]:
        port = free_port()
        config = lab_config(lab, f'rest = ["http:127.0.0.1:{port}"]\nworkers = {workers}\n{extra}')
        served = start(serving, config, tmp_path / f"serve-{port}.log")
        assert served.ready(), served.errors()
        return served, port

    yield make


def test_17_5_slowloris_connections_are_closed_by_the_header_deadline(rest_server) -> None:  # type: ignore[no-untyped-def]
    served, port = rest_server("rest_header_timeout = 1\nrest_max_connections_per_source = 500")
    slow = []
    for n in range(200):
        sock = connect(port)
        sock.sendall(b"POST /stir/v1/verification HTTP/1.1\r\nHost: t\r\n")
        if n % 2:
            sock.sendall(b"X-Slow: 1\r\n")  # a header line now and then keeps nothing alive
        slow.append(sock)
    try:
        deadline = time.monotonic() + 30
        answers = [closed_by_server(s, max(0.1, deadline - time.monotonic())) for s in slow]
        still_open = sum(a is None for a in answers)
        assert still_open == 0, f"{still_open} of {len(slow)} slow connections still open"
        assert all(a is not None and a.startswith(b"HTTP/1.1 408 ") for a in answers)
        assert get(port, "/healthz") == 200
        assert "shaken_rest_header_timeouts_total 200.0" in metrics(port)
    finally:
        for sock in slow:
            sock.close()
    assert "Traceback" not in served.errors()


def test_17_5_a_body_shorter_than_announced_is_answered_408(rest_server, lab: Lab) -> None:  # type: ignore[no-untyped-def]
    _served, port = rest_server("rest_body_timeout = 1")
    with connect(port) as sock:
        sock.sendall(POST_HEAD.format(key=api_key(lab), length=100).encode() + b"{")
        answer = closed_by_server(sock, 30)
    assert answer is not None and answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")


def test_17_5_stalled_uploads_do_not_count_toward_max_in_flight(rest_server, lab: Lab) -> None:  # type: ignore[no-untyped-def]
    _served, port = rest_server("max_in_flight = 5\nrest_body_timeout = 60")
    key = api_key(lab)
    stalled = [connect(port) for _ in range(10)]
    try:
        for sock in stalled:
            sock.sendall(POST_HEAD.format(key=key, length=500).encode() + b'{"verif')
        time.sleep(0.5)  # the server has read them all; none may hold a slot
        # The application's own answer (400 SVC4001: the request has no identity), not
        # POL5030's 503: the stalled uploads hold no slot of max_in_flight.
        assert {post(port, key) for _ in range(3)} == {400}
    finally:
        for sock in stalled:
            sock.close()


def test_17_5_connections_per_source_are_capped(rest_server) -> None:  # type: ignore[no-untyped-def]
    _served, port = rest_server("rest_max_connections_per_source = 5")
    held = [connect(port) for _ in range(5)]
    try:
        time.sleep(0.3)
        extra = connect(port)
        answer = closed_by_server(extra, 30)
        extra.close()
        assert answer is not None and answer.startswith(b"HTTP/1.1 503 ")
        assert "shaken_rest_refused_per_source_total 1.0" in metrics_from(port, "127.0.0.3")
        # Another source is not held back by this one.
        with connect(port, source="127.0.0.2") as other:
            other.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert other.recv(4096).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()


def test_17_5_keep_alive_requests_are_limited(rest_server) -> None:  # type: ignore[no-untyped-def]
    _served, port = rest_server("rest_keep_alive_requests = 3")
    with connect(port) as sock:
        heads = []
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            data = b""
            while not data.endswith(b'{"status":"ok"}'):
                chunk = sock.recv(4096)
                assert chunk, "closed early"
                data += chunk
            heads.append(data.lower())
        assert b"connection: close" not in heads[0] and b"connection: close" in heads[2]
        assert closed_by_server(sock, 30) == b""


# ------------------------------------------------------------------ descriptor exhaustion


def _tcp_invite(port: int) -> int:
    """One INVITE over SIP/TCP on a new connection; the status of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        local = sock.getsockname()
        message = build_invite(
            request_uri=f"sip:{DEST}@127.0.0.1",
            from_value=f"<sip:{ORIG}@127.0.0.1>;tag=t1",
            to_value=f"<sip:{DEST}@127.0.0.1>",
            local=local,
        ).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
        sock.sendall(message)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65535)
            assert chunk, "SIP/TCP connection closed without an answer"
            data += chunk
    return parse_response(data).code


def test_17_5_running_out_of_descriptors_is_answered_not_a_traceback(
    lab: Lab, tmp_path: Path, serving: list[Serve]
) -> None:
    """Under ``ulimit -n 256``, 400 idle REST connections: UDP and TCP SIP are answered, a
    certificate fetch gets a descriptor (the verification has an answer), REST answers once
    the idle connections have timed out, and nothing is logged as a traceback."""
    sign, verify, rest = free_sip_port(), free_sip_port(), free_port()
    config = lab_config(
        lab,
        f'sip_sign = ["udp:127.0.0.1:{sign}"]\n'
        f'sip_verify = ["udp:127.0.0.1:{verify}", "tcp:127.0.0.1:{verify}"]\n'
        f'rest = ["http:127.0.0.1:{rest}"]\nworkers = 1\n'
        "rest_header_timeout = 4\nrest_max_connections_per_source = 10000",
    )
    served = start(serving, config, tmp_path / "serve.log", descriptors=256)
    assert served.ready(), served.errors()
    idle = []
    try:
        for _ in range(400):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", rest))
            idle.append(sock)
        time.sleep(1.0)
        signed: dict[str, str] = {}

        def sign_message(local: tuple[str, int]) -> bytes:
            return build_invite(
                request_uri=f"sip:{DEST}@127.0.0.1",
                from_value=f"<sip:{ORIG}@127.0.0.1>;tag=t1",
                to_value=f"<sip:{DEST}@127.0.0.1>",
                local=local,
            )

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            udp.settimeout(20)
            udp.sendto(sign_message(udp.getsockname()), ("127.0.0.1", sign))
            response = parse_response(udp.recv(65535))
        assert response.code == 302
        signed["identity"] = response.first("identity") or ""
        assert signed["identity"]

        def verify_message(local: tuple[str, int]) -> bytes:
            return build_invite(
                request_uri=f"sip:{DEST}@127.0.0.1",
                from_value=f"<sip:{ORIG}@127.0.0.1>;tag=t1",
                to_value=f"<sip:{DEST}@127.0.0.1>",
                local=local,
                headers=[("Identity", signed["identity"])],
            )

        # The x5u is not cached and its repository is down: the fetch needs a socket, fails
        # to connect, and the call is answered by the verification result.
        assert raw_sip_code(verify, verify_message) >= 200
        assert _tcp_invite(verify) == 302
        wait_until(lambda: get(rest, "/healthz", timeout=30) == 200, 60, "REST answering")
    finally:
        for sock in idle:
            sock.close()
    assert served.process.poll() is None
    log = served.errors()
    assert "Traceback" not in log and "EMFILE" not in log and "Too many open files" not in log


def test_17_5_a_deferred_request_still_gets_100_continue_and_413(rest_server, lab: Lab) -> None:  # type: ignore[no-untyped-def]
    """The application waits for the body, so the server sends ``100 Continue`` itself
    (RFC 9110 section 10.1.1); a body past what the application takes reaches it at once."""
    _served, port = rest_server("")
    key, body = api_key(lab), verification_body()
    with connect(port) as sock:
        head = POST_HEAD.format(key=key, length=len(body))
        sock.sendall(head.replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n").encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(body)
        assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")  # no identity: SVC4001
    chunked = (
        "POST /stir/v1/verification HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {key}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with connect(port) as sock:
        sock.sendall(chunked.encode() + b"11000\r\n" + b" " * 0x11000 + b"\r\n")  # no end yet
        answer = closed_by_server(sock, 30) or b""
    # No Content-Length: 411 SVC4007, answered without waiting for the rest of the body.
    assert answer.startswith(b"HTTP/1.1 411 ")
