"""The SIP listeners: binding their sockets, and the server that runs them in one event loop.

:func:`bind_listeners` binds every configured listener once (in the parent of the workers,
:mod:`shaken.adapters.workers`). One :class:`SipServer` runs the listeners of one event loop
over the transports, :class:`~shaken.adapters.sip.udp.Datagrams` (UDP, shed by kernel receive
age) and :class:`~shaken.adapters.sip.stream.Stream` (TCP/TLS, capped per source and given
message deadlines), and feeds every request to a
:class:`~shaken.adapters.sip.handler.SipHandler`. Requests that the handler answers at once
(nearly all: a warm verification or a signature is pure CPU) are answered inside the receive
callback, with no task; for the few that need certificates the handler says so
(:class:`~shaken.adapters.sip.handler.NeedsCertificates`) and the server waits for them in a
task, then sends what the handler answers (:meth:`SipServer.obtain`). :class:`SipCollector`
puts the server's shed, refused and timed-out counts on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, Metric

from shaken.adapters.accept import Acceptor, DescriptorBudget
from shaken.adapters.sip.codec import MAX_MESSAGE_SIZE
from shaken.adapters.sip.handler import Listener, NeedsCertificates, Role, SipHandler
from shaken.adapters.sip.stream import Stream
from shaken.adapters.sip.udp import Datagrams, KernelClock
from shaken.config import ServerSettings
from shaken.core.errors import ConfigurationError

__all__ = [
    "BoundListener",
    "SipCollector",
    "SipServer",
    "bind_listeners",
    "listener_specs",
    "tls_context",
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


def listener_specs(server: ServerSettings) -> list[Listener]:
    """The SIP listeners of ``[server]``, in order: signing, then verification."""
    signing = [Listener(spec=spec, role=Role.SIGN) for spec in server.sip_sign]
    return signing + [Listener(spec=spec, role=Role.VERIFY) for spec in server.sip_verify]


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
        self.kernel_clock: KernelClock | None = None  # made when a UDP listener starts
        self._readers: list[Datagrams] = []
        #: Counters for the metrics (see :meth:`counters`).
        self.stats: dict[str, int] = dict.fromkeys(COUNTERS, 0)  # two are read in counters()
        self._sweeper: asyncio.Task[None] | None = None
        #: The calls waiting for certificates (:meth:`obtain`).
        self.tasks: set[asyncio.Task[None]] = set()
        self.connections: set[Stream] = set()
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
                    self.kernel_clock = KernelClock()
                reader = Datagrams(self, listener, item.sock)
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

    def _streams(self, listener: Listener) -> Callable[[], Stream]:
        return lambda: Stream(self, listener)

    def obtain(self, pending: NeedsCertificates, send: Callable[[bytes], None]) -> None:
        """Wait for a call's certificates in a task, then send the handler's answer."""
        task = asyncio.get_running_loop().create_task(self._obtain(pending, send))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _obtain(self, pending: NeedsCertificates, send: Callable[[bytes], None]) -> None:
        handler = self.handler
        try:
            result = await pending.obtain()
        except Exception as exc:
            answer = handler.failed(pending, exc)
        except BaseException:
            handler.abandon(pending)  # cancelled at shutdown: nothing is sent
            raise
        else:
            answer = handler.resume(pending, result)
        with contextlib.suppress(OSError):
            send(answer)

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
