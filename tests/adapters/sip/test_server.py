"""The transports over real loopback sockets: UDP, TCP, TLS; and ``shaken serve`` as a process
with two workers, SIGHUP reloads (a broken file keeps the running configuration) and SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from shaken.adapters.sip.client import build_invite, parse_response, send_invite
from shaken.adapters.sip.handler import Listener, Role, SipHandler
from shaken.adapters.sip.server import SipCollector, SipServer, bind_listeners, tls_context
from shaken.toolkit.lab import Lab

from .conftest import DEST, ORIG, RuntimeFactory, free_port, invite, warm, write_config

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server(runtimes: RuntimeFactory, lab: Lab) -> AsyncIterator[SipServer]:
    runtime = runtimes()
    await warm(runtime, lab)
    bound = bind_listeners(
        [
            Listener("udp:127.0.0.1:0", Role.SIGN),
            Listener("tcp:127.0.0.1:0", Role.SIGN),
            Listener("tls:127.0.0.1:0", Role.VERIFY),
        ]
    )
    sip = SipServer(
        SipHandler(runtime), bound, tls=tls_context(str(lab.tls_cert), str(lab.tls_key))
    )
    await sip.start()
    yield sip
    await sip.stop(grace=1.0)


def address(sip: SipServer, transport: str) -> tuple[str, int]:
    return next(b.address for b in sip.bound if b.listener.transport == transport)


def request_for(local: tuple[str, int]) -> bytes:
    return build_invite(
        request_uri=f"sip:{DEST}@127.0.0.1",
        from_value=f"<sip:{ORIG}@127.0.0.1>;tag=t1",
        to_value=f"<sip:{DEST}@127.0.0.1>",
        local=local,
    )


async def test_udp_with_rport(server: SipServer) -> None:
    response = await send_invite(address(server, "udp"), request_for, timeout=5.0)
    assert response.code == 302 and response.first("identity")
    via = response.first("via") or ""
    assert ";rport=" in via and "received=127.0.0.1" in via  # RFC 3581


async def test_udp_answers_the_via_port_without_rport(server: SipServer) -> None:
    # RFC 3261 18.2.2: no rport, so the answer goes to the sent-by port, not the source port.
    loop = asyncio.get_running_loop()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
    ):
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        port = receiver.getsockname()[1]
        data = invite(via_host=f"127.0.0.1:{port}")
        sender.sendto(data, address(server, "udp"))
        reply = await asyncio.wait_for(loop.sock_recv(receiver, 65535), 5.0)
    assert parse_response(reply).code == 302


async def test_tcp_framing_keepalive_and_errors(server: SipServer) -> None:
    reader, writer = await asyncio.open_connection(*address(server, "tcp"))
    try:
        writer.write(invite(call_id="a") + b"\r\n\r\n" + invite(call_id="b"))
        await writer.drain()
        first = await read_response(reader)
        pong = await asyncio.wait_for(reader.readexactly(2), 5.0)
        second = await read_response(reader)
        assert (first.code, first.first("call-id")) == (302, "a")
        assert pong == b"\r\n"  # RFC 5626 section 4.4.1
        assert (second.code, second.first("call-id")) == (302, "b")
        writer.write(invite(call_id="c").replace(b"Content-Length: 0", b"Content-Length: x"))
        await writer.drain()
        bad = await read_response(reader)
        assert bad.code == 400 and "Content-Length" in (bad.first("warning") or "")
        assert await asyncio.wait_for(reader.read(), 5.0) == b""  # then the stream is closed
    finally:
        writer.close()


async def test_tls(server: SipServer, lab: Lab) -> None:
    context = ssl.create_default_context(cafile=str(lab.tls_ca))
    host, port = address(server, "tls")
    reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    try:
        writer.write(invite(method="OPTIONS"))
        await writer.drain()
        assert (await read_response(reader)).code == 200
        writer.write(invite(call_id="tls-1"))
        await writer.drain()
        response = await read_response(reader)
        # A verification listener: the INVITE carries no Identity.
        assert response.code == 302 and "missing_identity" in (
            response.first("x-shaken-reason") or ""
        )
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader):  # type: ignore[no-untyped-def]
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    return parse_response(head)


def test_binding_a_busy_port_names_it() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        from shaken.core.errors import ConfigurationError

        with pytest.raises(ConfigurationError, match=f"tcp:127.0.0.1:{port}"):
            bind_listeners([Listener(f"tcp:127.0.0.1:{port}", Role.SIGN)])


# --------------------------------------------------------------------------- shaken serve


class Served:
    """A ``shaken serve`` process and what it printed."""

    def __init__(self, process: subprocess.Popen[str], sip: tuple[str, int], rest: int) -> None:
        self.process = process
        self.sip = sip
        self.rest = rest
        self.out: list[str] = []

    def wait_for(self, prefix: str, timeout: float = 30.0) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.out.append(line.rstrip("\n"))
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} line: {self.out}")


@pytest.fixture
def served(lab: Lab, tmp_path: Path) -> Iterator[tuple[Served, Path]]:
    sip_port, rest_port = free_port(socket.SOCK_DGRAM), free_port()
    config = write_config(
        lab,
        listeners=False,
        server=(
            f'sip_verify = ["udp:127.0.0.1:{sip_port}"]\n'
            f'rest = ["http:127.0.0.1:{rest_port}"]\n'
            f'call_log = "{tmp_path / "calls.sqlite"}"\nworkers = 2'
        ),
    )
    log = tmp_path / "serve.log"
    with log.open("w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "shaken.adapters.cli", "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        try:
            yield Served(process, ("127.0.0.1", sip_port), rest_port), config
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def missing_identity_code(target: tuple[str, int]) -> int:
    def build(local: tuple[str, int]) -> bytes:
        return request_for(local)

    return asyncio.run(send_invite(target, build, timeout=10.0)).code


def test_serve_reload_and_stop(served: tuple[Served, Path], tmp_path: Path) -> None:
    serving, config = served
    assert serving.wait_for("ready") == "ready (2 workers)\n"
    assert missing_identity_code(serving.sip) == 302  # the lab continues without Identity
    with urllib.request.urlopen(f"http://127.0.0.1:{serving.rest}/healthz", timeout=10) as reply:
        assert reply.status == 200  # REST runs in the same workers
    good = config.read_text()
    # A broken file: logged with its line, and the running configuration stays.
    config.write_text(good + '\n[verification.on.missing]\naction = "rejcet"\n')
    serving.process.send_signal(signal.SIGHUP)
    log = tmp_path / "serve.log"
    wait_until(lambda: log.read_text().count("is not usable") >= 2)  # both workers say so
    assert "verification.on.missing.action" in log.read_text()
    assert missing_identity_code(serving.sip) == 302
    # A good one is taken by both workers.
    config.write_text(good + '\n[verification.on.missing]\naction = "reject"\n')
    serving.process.send_signal(signal.SIGHUP)
    wait_until(lambda: log.read_text().count("reloaded") >= 2)
    assert {missing_identity_code(serving.sip) for _ in range(6)} == {428}
    serving.process.send_signal(signal.SIGTERM)
    assert serving.process.wait(timeout=30) == 0
    rows = subprocess.run(
        [
            sys.executable,
            "-m",
            "shaken.adapters.cli",
            "calls",
            "--db",
            str(tmp_path / "calls.sqlite"),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    outcomes = [json.loads(r)["allowed"] for r in rows]
    assert outcomes.count(True) == 2 and outcomes.count(False) == 6


def wait_until(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_serve_refuses_a_broken_file(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[server]\nsip_sign = ["udp:127.0.0.1:5060"]\nworkrs = 2\n')
    done = subprocess.run(
        [sys.executable, "-m", "shaken.adapters.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"{config}:3: server.workrs: unknown key (did you mean 'workers'?)" in done.stderr


async def test_connection_bound_and_idle_timeout(runtimes: RuntimeFactory) -> None:
    bound = bind_listeners([Listener("tcp:127.0.0.1:0", Role.SIGN)])
    sip = SipServer(SipHandler(runtimes()), bound, max_connections=1, idle_timeout=0.2)
    await sip.start()
    try:
        first_reader, first = await asyncio.open_connection(*bound[0].address)
        await asyncio.sleep(0.05)
        second_reader, second = await asyncio.open_connection(*bound[0].address)
        with contextlib.suppress(ConnectionResetError):  # refused: closed (or reset) at once
            assert await asyncio.wait_for(second_reader.read(), 5.0) == b""
        second.close()
        # The first, silent, is closed by the sweep.
        assert await asyncio.wait_for(first_reader.read(), 5.0) == b""
        first.close()
    finally:
        await sip.stop(grace=0.5)


# ---------------------------------------------------------------- issue 17 items 8 and 13


async def test_17_13_oversized_header_block_over_tcp_gets_513(server: SipServer) -> None:
    # No end of headers within max_message_size: the 513 still carries the Via to answer to.
    reader, writer = await asyncio.open_connection(*address(server, "tcp"))
    try:
        head = invite(call_id="big-1").replace(b"Content-Length: 0\r\n\r\n", b"")
        writer.write(head + b"X-Pad: " + b"a" * 70000)
        await writer.drain()
        response = await read_response(reader)
        assert (response.code, response.phrase) == (513, "Message Too Large")
        assert response.first("call-id") == "big-1" and response.first("via")
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
    finally:
        writer.close()


async def _connect_from(
    host: str, target: tuple[str, int]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection whose source address is ``host`` (any 127/8 address on Linux)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, target)
    return await asyncio.open_connection(sock=sock)


async def _closed(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def test_17_8_one_address_cannot_lock_out_another(runtimes: RuntimeFactory) -> None:
    bound = bind_listeners([Listener("tcp:127.0.0.1:0", Role.SIGN)])
    sip = SipServer(SipHandler(runtimes()), bound, max_connections=8, max_connections_per_source=4)
    await sip.start()
    target = bound[0].address
    held: list[asyncio.StreamWriter] = []
    try:
        flood = [await _connect_from("127.0.0.1", target) for _ in range(12)]
        held += [w for _, w in flood]
        refused = [await _closed(r, 0.5) for r, _ in flood]
        assert refused.count(False) == 4  # the cap of one source; the other eight are closed
        # A legitimate client from another address still gets its INVITE answered.
        reader, writer = await _connect_from("127.0.0.2", target)
        held.append(writer)
        writer.write(invite(call_id="legit-1"))
        await writer.drain()
        response = await read_response(reader)
        assert (response.code, response.first("call-id")) == (302, "legit-1")
        assert sip.counters()["tcp_refused_per_source"] == 8
    finally:
        for writer in held:
            writer.close()
        await sip.stop(grace=0.5)


async def test_17_8_a_dripping_connection_is_closed_at_the_message_deadline(
    runtimes: RuntimeFactory,
) -> None:
    bound = bind_listeners([Listener("tcp:127.0.0.1:0", Role.SIGN)])
    sip = SipServer(SipHandler(runtimes()), bound, idle_timeout=300.0, message_timeout=1.0)
    await sip.start()
    reader, writer = await asyncio.open_connection(*bound[0].address)
    try:
        data = invite(call_id="drip-1")
        closed = False
        for i in range(300):  # one byte every 0.05 s: never idle, never a whole message
            writer.write(data[i : i + 1])
            await writer.drain()
            if await _closed(reader, 0.05):
                closed = True
                break
        assert closed, "a message begun 15 s ago is still being read"
        assert sip.counters()["tcp_message_timeouts"] == 1
        # Whole messages over a live connection are not affected by the deadline.
        again_reader, again = await asyncio.open_connection(*bound[0].address)
        for call in ("w-1", "w-2"):
            again.write(invite(call_id=call))
            await again.drain()
            assert (await read_response(again_reader)).first("call-id") == call
            await asyncio.sleep(1.2)
        again.close()
    finally:
        writer.close()
        await sip.stop(grace=0.5)


# ------------------------------------------- issue 17 item 9: shed overload by queueing age


async def _udp_server(runtimes: RuntimeFactory, **options: Any) -> SipServer:
    bound = bind_listeners([Listener("udp:127.0.0.1:0", Role.SIGN)])
    sip = SipServer(SipHandler(runtimes(), retry_after=3), bound, **options)
    await sip.start()
    _await_kernel_stamps()
    return sip


def _await_kernel_stamps() -> None:
    """Wait until the kernel stamps datagrams as they arrive.

    Linux turns receive timestamps on for the whole system when the first socket asks for
    them, and the switch is deferred: until it takes effect a datagram carries no stamp, and
    ``recvmsg`` stamps it with the time it is *read*, so its queueing age looks like zero. A
    server that starts and is flooded at once is in that window; a test must not be.
    """
    so_timestampns = 35

    def stamp(probe: socket.socket) -> float | None:
        _data, ancillary, _, _ = probe.recvmsg(16, 64)
        for _level, kind, payload in ancillary:
            if kind == so_timestampns:
                sec, nsec = struct.unpack_from("@qq", payload)
                return float(sec + nsec * 1e-9)
        return None

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, so_timestampns, 1)
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(1.0)
        for _ in range(100):
            # Two datagrams 20 ms apart, read together: stamped on arrival, they are 20 ms
            # apart; stamped when read, they are not. (No wall clock is read here.)
            probe.sendto(b"1", probe.getsockname())
            time.sleep(0.02)
            probe.sendto(b"2", probe.getsockname())
            first, second = stamp(probe), stamp(probe)
            if first is not None and second is not None and second - first >= 0.015:
                return
    raise AssertionError("the kernel never stamped a datagram on arrival")


async def _answers(sock: socket.socket, count: int, timeout: float) -> list[bytes]:
    loop = asyncio.get_running_loop()
    out: list[bytes] = []
    with contextlib.suppress(TimeoutError):
        while len(out) < count:
            out.append(await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout))
    return out


def _client() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def _stale_burst(sock: socket.socket, target: tuple[str, int], count: int, stall: float) -> None:
    """Send ``count`` INVITEs, then hold the event loop for ``stall`` seconds (as a busy
    worker would), so they wait in the kernel's queue meanwhile."""
    port = sock.getsockname()[1]
    for i in range(count):
        sock.sendto(invite(via_host=f"127.0.0.1:{port}", call_id=f"stale-{i}"), target)
    time.sleep(stall)


async def test_17_9_requests_older_than_the_max_age_get_a_cheap_503(
    runtimes: RuntimeFactory,
) -> None:
    sip = await _udp_server(runtimes, udp_max_age=0.05)
    target = sip.bound[0].address
    with _client() as sock:
        try:
            _stale_burst(sock, target, 20, stall=0.4)
            replies = [parse_response(r) for r in await _answers(sock, 20, 10.0)]
            assert [(r.code, r.first("retry-after")) for r in replies] == [(503, "3")] * 20
            assert {r.first("call-id") for r in replies} == {f"stale-{i}" for i in range(20)}
            assert all(r.first("identity") is None for r in replies)  # no work was done
            counters = sip.counters()
            assert counters["udp_shed_503"] == 20 and counters["udp_shed_dropped"] == 0
            # A fresh request is served as ever.
            port = sock.getsockname()[1]
            sock.sendto(invite(via_host=f"127.0.0.1:{port}", call_id="fresh"), target)
            [fresh] = [parse_response(r) for r in await _answers(sock, 1, 10.0)]
            assert (fresh.code, fresh.first("call-id")) == (302, "fresh")
            assert fresh.first("identity")
        finally:
            await sip.stop(grace=0.5)


async def test_17_9_shed_requests_can_be_dropped_instead(runtimes: RuntimeFactory) -> None:
    sip = await _udp_server(runtimes, udp_max_age=0.05, overload_answer="drop")
    with _client() as sock:
        try:
            _stale_burst(sock, sip.bound[0].address, 10, stall=0.4)
            assert await _answers(sock, 1, 1.0) == []
            assert sip.counters()["udp_shed_dropped"] == 10
        finally:
            await sip.stop(grace=0.5)


async def test_17_9_kernel_drops_are_counted(runtimes: RuntimeFactory) -> None:
    sip = await _udp_server(runtimes, udp_max_age=0.05, udp_receive_buffer=4096)
    with _client() as sock:
        try:
            _stale_burst(sock, sip.bound[0].address, 200, stall=0.3)
            await _answers(sock, 200, 1.0)
            counters = sip.counters()
            assert counters["udp_kernel_drops"] > 0
            assert counters["udp_kernel_drops"] + counters["udp_shed_503"] == 200
        finally:
            await sip.stop(grace=0.5)


async def test_17_9_shed_counts_are_readable_by_prometheus(runtimes: RuntimeFactory) -> None:
    sip = await _udp_server(runtimes, udp_max_age=0.05)
    with _client() as sock:
        try:
            _stale_burst(sock, sip.bound[0].address, 5, stall=0.3)
            await _answers(sock, 5, 10.0)
            registry = CollectorRegistry()
            registry.register(SipCollector(sip))
            text = generate_latest(registry).decode()
            assert "shaken_sip_udp_shed_503_total 5.0" in text
            assert "shaken_sip_tcp_refused_per_source_total 0.0" in text
        finally:
            await sip.stop(grace=0.5)
