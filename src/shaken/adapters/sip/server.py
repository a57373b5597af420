"""The SIP transports: asyncio UDP, TCP and TLS listeners, and the worker processes.

One :class:`SipServer` runs the listeners of one event loop and feeds every request to a
:class:`~shaken.adapters.sip.handler.SipHandler`. Requests that the handler answers at once
(nearly all: a warm verification or a signature is pure CPU) are answered inside the receive
callback, with no task; the few that wait for a certificate run as tasks, counted by the
handler against ``max_in_flight``.

Several processes serve the same sockets: :func:`bind_listeners` binds them once in the parent,
and :class:`Supervisor` forks the workers, which inherit them (the pre-fork model of Kamailio's
``children``), rather than one socket per worker with ``SO_REUSEPORT``: the kernel spreads
``SO_REUSEPORT`` UDP traffic by source address, so all the traffic of one SBC would land on one
worker, while a shared socket goes to whichever worker is free. The parent only supervises: it
forwards SIGTERM/SIGINT (graceful stop) and SIGHUP (reload) to the workers and restarts a
worker that dies (and stops everything if they keep dying).

UDP sockets are read directly (a reader per socket, not asyncio's datagram transport) so that
each datagram's kernel receive time is known and overload is shed by queueing age before any
work (see :class:`_Datagrams`); TCP/TLS connections are capped in total and per source address
and must deliver each message within a deadline (see :class:`_Stream`).

Responses over UDP go where RFC 3261 section 18.2.2 and RFC 3581 say (source port with
``rport``, else the Via's sent-by port at the source address); over TCP and TLS they go back on
the connection the request came on (section 18.2.2 bullet 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import signal
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from prometheus_client.core import CounterMetricFamily, Metric

from shaken.adapters.accept import Acceptor, DescriptorBudget
from shaken.adapters.sip.codec import (
    MAX_MESSAGE_SIZE,
    FramingError,
    StreamFramer,
    parse_request,
    response_address,
)
from shaken.adapters.sip.handler import Listener, Role, SipHandler
from shaken.core.errors import ConfigurationError

__all__ = [
    "BoundListener",
    "SipCollector",
    "SipServer",
    "Supervisor",
    "bind_listeners",
    "listener_specs",
    "tls_context",
    "unblock_worker_signals",
]

log = logging.getLogger("shaken.sip")

#: Socket buffer asked for on UDP listeners: bursts wait here, not in retransmissions.
UDP_BUFFER = 4 * 1024 * 1024
#: The counters of :meth:`SipServer.counters`, with what each counts.
COUNTERS: dict[str, str] = {
    "tcp_refused_total": "TCP/TLS connections refused: the worker's connection cap",
    "tcp_refused_per_source": "TCP/TLS connections refused: the source address's cap",
    "tcp_message_timeouts": "TCP/TLS connections closed inside an unfinished message",
    "udp_shed_503": "UDP requests older than udp_max_age_ms, answered 503",
    "udp_shed_dropped": "UDP requests older than udp_max_age_ms, dropped",
    "udp_send_errors": "UDP answers the socket refused to send",
    "udp_kernel_drops": "datagrams the kernel dropped on the shared UDP sockets",
    "overload_503": "requests answered 503 at max_in_flight",
}
#: A worker that dies more than this many times (per worker) within CRASH_WINDOW seconds is
#: not started again: the whole server stops and says why, rather than spin.
CRASH_LIMIT = 5
CRASH_WINDOW = 30.0


@dataclass(frozen=True, slots=True)
class BoundListener:
    """A bound socket and the listener it serves; ``address`` is where it actually listens."""

    listener: Listener
    sock: socket.socket

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """``transport:host:port`` with the real port (useful when the spec asked for 0)."""
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"{self.listener.transport}:{shown}:{port}"


def listener_specs(server: dict[str, Any] | Any) -> list[Listener]:
    """The SIP listeners of a ``[server]`` table, in order: signing, then verification."""
    out: list[Listener] = []
    for key, role in (("sip_sign", Role.SIGN), ("sip_verify", Role.VERIFY)):
        for spec in server.get(key, []):
            out.append(Listener(spec=str(spec), role=role))
    return out


def _split(spec: str) -> tuple[str, str, int]:
    transport, _, rest = spec.partition(":")
    host, _, port = rest.rpartition(":")
    if transport not in ("udp", "tcp", "tls") or not host or not port.isdigit():
        raise ConfigurationError(f"SIP listener {spec!r} is not 'udp|tcp|tls:HOST:PORT'")
    return transport, host.removeprefix("[").removesuffix("]"), int(port)


def bind_listeners(listeners: Sequence[Listener]) -> list[BoundListener]:
    """Bind every listener (port 0 picks a free port); close them all on any failure.

    :raises ConfigurationError: a listener cannot be bound, naming it and why.
    """
    bound: list[BoundListener] = []
    try:
        for listener in listeners:
            transport, host, port = _split(listener.spec)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
            sock = socket.socket(family, kind)
            try:
                if transport != "udp":
                    # A restart binds while old connections sit in TIME_WAIT. Never on UDP:
                    # there, on Linux, SO_REUSEADDR lets a second process bind the same port
                    # and quietly take part of its datagrams.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if transport == "udp":
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UDP_BUFFER)
                sock.bind((host, port))
                if transport != "udp":
                    sock.listen(1024)
                sock.setblocking(False)
            except OSError as exc:
                sock.close()
                in_use = exc.errno == errno.EADDRINUSE
                hint = " (is another shaken serve running?)" if in_use else ""
                raise ConfigurationError(
                    f"cannot listen on {listener.spec}: {exc.strerror or exc}{hint}"
                ) from None
            bound.append(BoundListener(listener, sock))
    except BaseException:
        for item in bound:
            item.sock.close()
        raise
    return bound


def tls_context(certificate: str | None, key: str | None) -> ssl.SSLContext:
    """The server context for ``tls:`` listeners (RFC 3261 section 26.2: TLS 1.2 or later).

    :raises ConfigurationError: no certificate or key configured, or they do not load.
    """
    if not certificate or not key:
        raise ConfigurationError("tls listeners need server.tls_certificate and server.tls_key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load the TLS certificate {certificate}: {exc}") from None
    return context


# ------------------------------------------------------------------------------- transports


# Linux socket options (not all exported by the socket module): the kernel's receive time of
# each datagram as a timespec (socket(7) SO_TIMESTAMPNS), and the socket's memory counters,
# whose ninth is the count of datagrams dropped for a full receive buffer (SO_MEMINFO,
# SK_MEMINFO_DROPS).
_SO_TIMESTAMPNS = 35
_SO_MEMINFO = 55
_MEMINFO = struct.Struct("@9I")
_TIMESPEC = struct.Struct("@qq")
#: How long one turn of the loop may spend reading one UDP socket before other work runs.
UDP_SLICE = 0.02


class _KernelClock:
    """Converts the kernel's receive timestamps (CLOCK_REALTIME) into monotonic time.

    Reading the wall clock here would break under a shifted clock (and this project reads it
    only through its :class:`~shaken.services.ports.Clock`), so the offset between the two
    clocks is measured instead, every few seconds, by timing a datagram sent to a private
    loopback socket: its kernel stamp lies between the monotonic readings before and after.
    """

    RECALIBRATE = 5.0

    def __init__(self) -> None:
        self.offset: float | None = None
        self._next = 0.0
        self._sequence = 0
        self._sock: socket.socket | None = None
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            self._sock = sock
        except OSError:
            return
        self.calibrate()

    def calibrate(self) -> None:
        sock = self._sock
        if sock is None:
            return
        best: tuple[float, float] | None = None
        # The round with the smallest spread wins; on a busy machine a round may time out,
        # so a few are tried and, when none answers, calibration is retried soon.
        for _ in range(5):
            self._sequence += 1
            token = self._sequence.to_bytes(8, "big")
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                while True:  # a late echo of an earlier round must not be matched
                    sock.recv(16)
            sock.settimeout(0.05)
            try:
                before = time.monotonic()
                sock.sendto(token, sock.getsockname())
                while True:
                    payload, ancillary, _, _ = sock.recvmsg(16, 64)
                    if payload == token:
                        break
                after = time.monotonic()
            except OSError:
                continue
            for _level, kind, stamp in ancillary:
                if kind == _SO_TIMESTAMPNS and len(stamp) >= _TIMESPEC.size:
                    sec, nsec = _TIMESPEC.unpack_from(stamp)
                    spread = after - before
                    if best is None or spread < best[1]:
                        best = (sec + nsec * 1e-9 - (before + after) / 2, spread)
            if best is not None and best[1] < 0.001:
                break  # a round this tight is as good as it gets
        sock.setblocking(False)
        if best is not None:
            self.offset = best[0]
        self._next = time.monotonic() + (self.RECALIBRATE if best is not None else 0.5)

    def current(self, now: float) -> float | None:
        if now >= self._next:
            self.calibrate()
        return self.offset

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _Datagrams:
    """One UDP listener, read straight from its socket (a level-triggered reader).

    Overload must be shed early and cheaply (RFC 3261 21.5.4, RFC 6357): an answer that
    leaves after the client's 500 ms retransmission timer is worse than none. Each datagram
    carries the kernel's receive time, so before any work its queueing age is known; past
    ``udp_max_age`` a request is answered ``503`` with ``Retry-After`` from its parsed
    Via/From/To/Call-ID/CSeq only (or dropped, as configured), and counted; then requests are
    shed until one is younger than half the bound. ACKs are always
    absorbed (cheap, and they free the transaction table). One turn of the loop reads for
    at most :data:`UDP_SLICE`, then lets the other callbacks run.
    """

    def __init__(self, server: SipServer, listener: Listener, sock: socket.socket) -> None:
        self.server = server
        self.listener = listener
        self.sock = sock
        self.shedding = False
        self.stamped = True
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except OSError:
            self.stamped = False

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped on this socket (shared by every worker)."""
        try:
            raw = self.sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, _MEMINFO.size)
        except OSError:
            return 0
        return int(_MEMINFO.unpack(raw)[8])

    def readable(self) -> None:
        server = self.server
        handler = server.handler
        sock = self.sock
        monotonic = time.monotonic
        now = monotonic()
        deadline = now + UDP_SLICE
        clock = server.kernel_clock
        offset = clock.current(now) if self.stamped and clock is not None else None
        max_age = server.udp_max_age
        while True:
            try:
                data, ancillary, _, addr = sock.recvmsg(65535, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("UDP error on %s: %s", self.listener.spec, exc)
                return
            now = monotonic()
            age = 0.0
            for _level, kind, payload in ancillary:
                if kind == _SO_TIMESTAMPNS and offset is not None:
                    sec, nsec = _TIMESPEC.unpack_from(payload)
                    age = now - (sec + nsec * 1e-9 - offset)
            if data[:4] == b"ACK " and handler.absorb_ack(data):
                pass  # one per call: read its transaction key only
            elif age > max_age or (self.shedding and age > max_age / 2):
                # Once behind, catch up to half the bound before serving again, so the
                # calls answered under sustained overload are not all at the bound.
                self.shedding = True
                self._shed(data, addr)
            else:
                self.shedding = False
                self._serve(data, addr)
            if now > deadline:
                return  # the loop comes back: the socket is still readable

    def _serve(self, data: bytes, addr: Any) -> None:
        server = self.server
        request = parse_request(data, max_size=server.max_message_size)
        source = (str(addr[0]), int(addr[1]))
        try:
            reply = server.handler.handle(request, self.listener, source)
        except Exception:
            log.exception("unexpected error on %s from %s", self.listener.spec, source)
            return
        if reply is None:
            return
        destination = response_address(request.top_via, source)
        if isinstance(reply, bytes):
            self.sendto(reply, destination)
            return
        server.spawn(reply, lambda answer: self.sendto(answer, destination))

    def _shed(self, data: bytes, addr: Any) -> None:
        server = self.server
        if server.overload_answer != "503":
            server.stats["udp_shed_dropped"] += 1
            return
        request = parse_request(data, max_size=server.max_message_size)
        source = (str(addr[0]), int(addr[1]))
        reply = server.handler.overloaded(request, source)
        if reply is None:
            server.stats["udp_shed_dropped"] += 1
            return
        server.stats["udp_shed_503"] += 1
        self.sendto(reply, response_address(request.top_via, source))

    def sendto(self, data: bytes, destination: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, destination)
        except OSError:
            self.server.stats["udp_send_errors"] += 1  # UDP: a lost answer is retransmitted


class _Stream(asyncio.Protocol):
    """One TCP/TLS connection: framed by :class:`StreamFramer`, counted against the server's
    total and per-source caps, closed when silent for ``idle_timeout`` or when a message begun
    is not complete within ``message_timeout`` (a peer dripping bytes is never idle)."""

    def __init__(self, server: SipServer, listener: Listener) -> None:
        self.server = server
        self.listener = listener
        self.framer = StreamFramer(server.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.source = ("", 0)
        self.last_active = 0.0
        #: When the message now being read began (None: between messages).
        self.message_started: float | None = None
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.source = (str(peer[0]), int(peer[1]))
        self.last_active = time.monotonic()
        server = self.server
        ip = self.source[0]
        if len(server.connections) >= server.max_connections:
            server.stats["tcp_refused_total"] += 1
            log.warning(
                "%s: %d connections already, refusing %s",
                self.listener.spec,
                len(server.connections),
                ip,
            )
            self.transport.abort()
            return
        held = server.per_source.get(ip, 0)
        if held >= server.max_connections_per_source:
            server.stats["tcp_refused_per_source"] += 1
            if server.stats["tcp_refused_per_source"] % 1000 == 1:
                log.warning(
                    "%s: %d connections from %s already, refusing more",
                    self.listener.spec,
                    held,
                    ip,
                )
            self.transport.abort()
            return
        server.per_source[ip] = held + 1
        self.counted = True
        server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        server = self.server
        server.connections.discard(self)
        if self.counted:
            self.counted = False
            ip = self.source[0]
            left = server.per_source.get(ip, 1) - 1
            if left > 0:
                server.per_source[ip] = left
            else:
                server.per_source.pop(ip, None)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        server = self.server
        self.last_active = now = time.monotonic()
        items = self.framer.feed(data)
        if not self.framer.pending:
            self.message_started = None
        elif items or self.message_started is None:
            self.message_started = now  # a new message begins: its own deadline
        for item in items:
            if isinstance(item, FramingError):
                request = parse_request(item.head + b"\r\n\r\n", max_size=server.max_message_size)
                request.problem = (item.code, item.phrase)
                request.detail = item.detail
                self._answer(request)
                if self.transport is not None:
                    self.transport.close()
                return
            if item == StreamFramer.PONG:
                self.write(StreamFramer.PONG)  # RFC 5626 section 4.4.1
                continue
            self._answer(parse_request(item, stream=True, max_size=server.max_message_size))

    def _answer(self, request: Any) -> None:
        try:
            reply = self.server.handler.handle(request, self.listener, self.source)
        except Exception:
            log.exception("unexpected error on %s from %s", self.listener.spec, self.source)
            return
        if reply is None:
            return
        if isinstance(reply, bytes):
            self.write(reply)
            return
        self.server.spawn(reply, self.write)


class SipServer:
    """The SIP listeners of one event loop.

    :param bound: sockets from :func:`bind_listeners` (this process's or inherited).
    :param tls: the context for ``tls`` listeners.
    :param max_connections: TCP/TLS connections kept at once; more are refused.
    :param idle_timeout: a TCP/TLS connection silent this long (seconds) is closed (RFC 5626
        keep-alive pings count as traffic).
    :param max_connections_per_source: TCP/TLS connections one source address may hold, so
        one address cannot take every connection slot of a worker.
    :param message_timeout: seconds a message may take from its first byte to its last over
        TCP/TLS; a connection still inside one message then is closed.
    """

    def __init__(
        self,
        handler: SipHandler,
        bound: Sequence[BoundListener],
        *,
        tls: ssl.SSLContext | None = None,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_connections: int = 4096,
        idle_timeout: float = 300.0,
        max_connections_per_source: int = 64,
        message_timeout: float = 10.0,
        udp_max_age: float = 0.1,
        overload_answer: str = "503",
        udp_receive_buffer: int | None = None,
        budget: DescriptorBudget | None = None,
    ) -> None:
        self.handler = handler
        self.bound = list(bound)
        self.tls = tls
        self.max_message_size = max_message_size
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_connections_per_source = max_connections_per_source
        self.message_timeout = message_timeout
        self.per_source: dict[str, int] = {}
        self.udp_max_age = udp_max_age
        self.overload_answer = overload_answer
        self.udp_receive_buffer = udp_receive_buffer
        self.kernel_clock: _KernelClock | None = None  # made when a UDP listener starts
        self._readers: list[_Datagrams] = []
        #: Counters for the metrics (see :meth:`counters`).
        self.stats: dict[str, int] = dict.fromkeys(COUNTERS, 0)  # two are read in counters()
        self._sweeper: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[bytes | None]] = set()
        self.connections: set[_Stream] = set()
        self._servers: list[Acceptor] = []
        self.budget = budget or DescriptorBudget()
        if any(item.listener.transport != "udp" for item in self.bound):
            self.budget.register(lambda: len(self.connections))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for item in self.bound:
            listener = item.listener
            if listener.transport == "udp":
                if self.udp_receive_buffer is not None:
                    with contextlib.suppress(OSError):
                        item.sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_RCVBUF, self.udp_receive_buffer
                        )
                if self.kernel_clock is None:
                    self.kernel_clock = _KernelClock()
                reader = _Datagrams(self, listener, item.sock)
                loop.add_reader(item.sock.fileno(), reader.readable)
                self._readers.append(reader)
            else:
                context = self.tls if listener.transport == "tls" else None
                if listener.transport == "tls" and context is None:
                    raise ConfigurationError(f"{listener.spec}: no TLS certificate configured")
                # Accepted by hand: pauses, rather than fails, when descriptors run out.
                server = Acceptor(
                    item.sock,
                    self._streams(listener),
                    name=listener.spec,
                    budget=self.budget,
                    ssl_context=context,
                    ssl_handshake_timeout=10.0 if context is not None else None,
                )
                server.start()
                self._servers.append(server)
        if self._servers:
            self._sweeper = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.idle_timeout / 2, self.message_timeout / 2))
            now = time.monotonic()
            idle = now - self.idle_timeout
            late = now - self.message_timeout
            for stream in list(self.connections):
                if stream.transport is None:
                    continue
                started = stream.message_started
                if started is not None and started < late:
                    self.stats["tcp_message_timeouts"] += 1
                    log.info(
                        "%s: closing %s, a message unfinished after %.0f s",
                        stream.listener.spec,
                        stream.source[0],
                        self.message_timeout,
                    )
                    stream.transport.close()
                elif stream.last_active < idle:
                    stream.transport.close()

    def counters(self) -> dict[str, int]:
        """What the metrics report: shed, refused and timed-out counts since start.

        ``udp_kernel_drops`` is the kernel's count for the UDP sockets, which every worker
        shares (each worker reports the same figure); the others are this worker's.
        """
        out = dict(self.stats)
        out["udp_kernel_drops"] = sum(reader.kernel_drops() for reader in self._readers)
        out["overload_503"] = self.handler.overloads
        return out

    def _streams(self, listener: Listener) -> Callable[[], _Stream]:
        return lambda: _Stream(self, listener)

    def spawn(self, work: Any, send: Callable[[bytes], None]) -> None:
        """Run a deferred answer as a task and send its bytes when it has them."""
        task: asyncio.Task[bytes | None] = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)

        def done(finished: asyncio.Task[bytes | None]) -> None:
            self.tasks.discard(finished)
            if finished.cancelled():
                return
            error = finished.exception()
            if error is not None:
                log.error("deferred answer failed: %r", error, exc_info=error)
                return
            answer = finished.result()
            if answer is not None:
                with contextlib.suppress(OSError):
                    send(answer)

        task.add_done_callback(done)

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the answers in progress; True if none is left."""
        pending = set(self.tasks)
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        return not any(not t.done() for t in pending)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening, let the answers in progress finish (up to ``grace``), close."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for server in self._servers:
            server.close()
        if not await self.drain(grace):
            for task in list(self.tasks):
                task.cancel()
        loop = asyncio.get_running_loop()
        for reader in self._readers:
            with contextlib.suppress(Exception):
                loop.remove_reader(reader.sock.fileno())
            reader.sock.close()
        self._readers.clear()
        if self.kernel_clock is not None:
            self.kernel_clock.close()
            self.kernel_clock = None
        for stream in list(self.connections):
            if stream.transport is not None:
                stream.transport.close()
        self._servers.clear()


class SipCollector:
    """A Prometheus collector of :meth:`SipServer.counters`, read at scrape time.

    Register it on the registry that serves ``/metrics`` in the worker that runs ``server``
    (``registry.register(SipCollector(server))``); each counter becomes
    ``shaken_sip_<name>_total``.
    """

    def __init__(self, server: SipServer) -> None:
        self._server = server

    def collect(self) -> Iterable[Metric]:
        for name, value in self._server.counters().items():
            yield CounterMetricFamily(f"shaken_sip_{name}", COUNTERS.get(name, name), value=value)


# -------------------------------------------------------------------------------- processes


#: The signals a worker handles; they wait (blocked) until its handlers are in place.
WORKER_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def unblock_worker_signals() -> None:
    """Let :data:`WORKER_SIGNALS` in: call once the process's handlers for them are installed.

    Until then a signal sent to a starting worker (a reload's SIGHUP, say) waits instead of
    acting by default, which for SIGHUP is to kill the process.
    """
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)


def _die_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM to this process when its parent dies (Linux).

    Without it, a supervisor killed with SIGKILL leaves its workers serving the shared ports
    with nobody to stop them, and a new ``shaken serve`` cannot bind.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    """Fork ``workers`` processes running ``target(index)`` and keep them running.

    ``target`` runs in the child and returns its exit status. The parent waits: SIGTERM and
    SIGINT are passed on (then the parent waits for every worker to finish), SIGHUP is passed
    on (each worker reloads), and a worker that dies on its own is started again after a
    pause (at most once a second per slot, so a crash loop cannot spin).

    A worker starts with :data:`WORKER_SIGNALS` blocked (``target`` calls
    :func:`unblock_worker_signals` once its handlers are installed) and is sent SIGTERM by
    the kernel if the supervisor dies, however it dies.
    """

    def __init__(self, workers: int, target: Callable[[int], int]) -> None:
        if workers < 1:
            raise ConfigurationError("workers must be at least 1")
        self.workers = workers
        self.target = target
        self.children: dict[int, int] = {}  # pid -> slot
        self._stopping = False
        self._last_start: dict[int, float] = {}
        self._restarts: list[float] = []

    def _start(self, slot: int) -> None:
        self._last_start[slot] = time.monotonic()
        parent = os.getpid()
        # Blocked across fork: the child inherits the mask, so a signal arriving before its
        # handlers exist waits for them; the parent's own handler gets it once unblocked.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            raise
        if pid == 0:  # the worker
            status = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                _die_with_parent(parent)
                status = self.target(slot)
            except BaseException:
                log.exception("worker %d failed", slot)
            finally:
                logging.shutdown()
                os._exit(status)
        self.children[pid] = slot
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _forward(self, sig: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def run(self, *, after_start: Callable[[], None] | None = None) -> int:
        """Start the workers and supervise them until they have all stopped.

        ``after_start`` runs in the parent once the first workers are forked.
        """
        received: list[int] = []

        def on_signal(sig: int, _frame: object) -> None:
            received.append(sig)

        previous = {
            sig: signal.signal(sig, on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        status = 0
        try:
            for slot in range(self.workers):
                self._start(slot)
            if after_start is not None:
                after_start()
            while self.children:
                while received:
                    sig = received.pop(0)
                    if sig == signal.SIGHUP:
                        log.info("SIGHUP: workers reload the configuration")
                        self._forward(signal.SIGHUP)
                    else:
                        if not self._stopping:
                            log.info("stopping %d worker(s)", len(self.children))
                        self._stopping = True
                        self._forward(signal.SIGTERM)
                try:
                    pid, raw = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                except InterruptedError:
                    continue
                if pid == 0:
                    time.sleep(0.05)
                    continue
                slot = self.children.pop(pid)
                code = os.waitstatus_to_exitcode(raw)
                if self._stopping:
                    status = status or (code if code > 0 else 0)
                    continue
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < CRASH_WINDOW]
                self._restarts.append(now)
                if len(self._restarts) > CRASH_LIMIT * self.workers:
                    log.error(
                        "workers keep failing (last: %d exited with %d); stopping", slot, code
                    )
                    self._stopping = True
                    self._forward(signal.SIGTERM)
                    status = 1
                    continue
                log.error("worker %d (pid %d) exited with %d; starting it again", slot, pid, code)
                pause = 1.0 - (time.monotonic() - self._last_start.get(slot, 0.0))
                if pause > 0:
                    time.sleep(pause)
                if not self._stopping:
                    self._start(slot)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return status
