"""Serve the REST application with uvicorn inside the caller's event loop.

``shaken serve`` runs REST beside SIP from one configuration and one :class:`Runtime`, so the
REST server cannot own the process: no ``uvicorn.run``, no event loop of its own, no signal
handlers (``Server.serve`` would install SIGINT/SIGTERM handlers over the caller's).

Listeners are ``http:HOST:PORT`` and ``https:HOST:PORT`` (``[server] rest``; an IPv6 host in
brackets). HTTPS uses ``[server] tls_certificate`` and ``tls_key``. :func:`bind_rest` binds
them once, without ``SO_REUSEPORT``: ``shaken serve`` binds in the supervisor and its workers
share the sockets (as they share the SIP ones), so a second instance with the same
configuration fails to start, naming the port, instead of quietly taking half the requests.

:class:`RestService` serves bound sockets until stopped. A reload switches it to a new
runtime in place (:meth:`RestService.switch`): the listening sockets stay open, requests in
progress finish with the application they started on.

What a client may hold, and for how long (``[server] rest_*`` keys, :class:`RestLimits`).
uvicorn has an idle keep-alive timeout (used) but no deadline for a request's header or body,
and its ``limit_concurrency`` answers 503 only after a connection has been accepted and its
headers read, so descriptors are gone by then. So, written here, on uvicorn's own
``httptools`` protocol:

* a connection's request headers must be complete within ``rest_header_timeout`` of its
  opening (or of the first byte of a later request), and its body within
  ``rest_body_timeout`` of the headers; else 408 and the connection is closed;
* the application sees a request once its body is complete, so a stalled upload never counts
  against ``max_in_flight``;
* ``rest_keep_alive_requests`` requests per connection, then ``Connection: close``;
* ``rest_max_connections`` connections per worker, and never more than REST's share of the
  worker's descriptors (half of them beside SIP over TCP or TLS): beyond it the worker stops
  accepting (connections wait in the backlog);
* ``rest_max_connections_per_source`` per client address: beyond it a connection is answered
  503 and closed;
* accepting goes through :class:`~shaken.adapters.accept.Acceptor`, which keeps a reserve of
  descriptors for the rest of the worker and survives EMFILE.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from shaken.adapters.accept import Acceptor, DescriptorBudget
from shaken.adapters.http.app import ASGIApp, Receive, Scope, Send, create_app
from shaken.adapters.http.metrics import RestMetrics
from shaken.adapters.metrics import InstanceMetrics
from shaken.adapters.runtime import Runtime
from shaken.config import ServerSettings
from shaken.core.errors import ConfigurationError
from shaken.services.calllog import CallLog

__all__ = ["BoundRest", "RestLimits", "RestService", "bind_rest", "parse_listener", "serve_rest"]

log = logging.getLogger("shaken.rest")

_BACKLOG = 2048
_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\n"
    b"connection: close\r\n\r\n"
)


def parse_listener(text: str) -> tuple[str, str, int]:
    """``http:127.0.0.1:8080`` as (scheme, host, port); IPv6 hosts come without brackets.

    :raises ConfigurationError: not ``http`` or ``https``, or no usable host and port.
    """
    scheme, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if scheme not in ("http", "https") or not host or not port.isdigit():
        raise ConfigurationError(f"REST listener {text!r} is not 'http:HOST:PORT'")
    number = int(port)
    if not 0 <= number < 65536:
        raise ConfigurationError(f"REST listener {text!r}: port out of range")
    return scheme, host, number


@dataclass(frozen=True, slots=True)
class BoundRest:
    """A bound REST listening socket and the ``[server] rest`` entry it serves."""

    spec: str
    scheme: str
    sock: socket.socket

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)


def _bind(spec: str, host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigurationError(f"REST listener host {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        # SO_REUSEADDR lets a restart bind while old connections are in TIME_WAIT; it never
        # lets two listening TCP sockets share a port (SO_REUSEPORT would).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        in_use = exc.errno == errno.EADDRINUSE
        hint = " (is another shaken serve running?)" if in_use else ""
        raise ConfigurationError(f"cannot listen on {spec}: {exc.strerror or exc}{hint}") from None
    return sock


def bind_rest(listeners: Sequence[str]) -> list[BoundRest]:
    """Bind every REST listener; close them all on any failure.

    :raises ConfigurationError: a bad listener, or an address that cannot be bound (in use by
        another process, say), naming it.
    """
    parsed = [(text, *parse_listener(text)) for text in listeners]
    bound: list[BoundRest] = []
    try:
        for text, scheme, host, port in parsed:
            bound.append(BoundRest(text, scheme, _bind(text, host, port)))
    except BaseException:
        for item in bound:
            item.sock.close()
        raise
    return bound


# ------------------------------------------------------------------------------- limits


@dataclass(slots=True, kw_only=True)
class RestLimits:
    """What one client may hold, and for how long (the ``[server] rest_*`` keys)."""

    header_timeout: float
    body_timeout: float
    keep_alive_timeout: int
    keep_alive_requests: int
    max_connections: int
    max_connections_per_source: int

    @classmethod
    def from_settings(cls, server: ServerSettings) -> RestLimits:
        """The limits ``[server]`` sets (its defaults are :class:`ServerSettings`')."""
        return cls(
            header_timeout=float(server.rest_header_timeout),
            body_timeout=float(server.rest_body_timeout),
            keep_alive_timeout=server.rest_keep_alive_timeout,
            keep_alive_requests=server.rest_keep_alive_requests,
            max_connections=server.rest_max_connections,
            max_connections_per_source=server.rest_max_connections_per_source,
        )


@dataclass(slots=True)
class RestStats:
    """Counts of what the limits did (readable for metrics)."""

    header_timeouts: int = 0
    body_timeouts: int = 0
    refused_per_source: int = 0


class _Guard:
    """The state the connections of one :class:`RestService` share."""

    def __init__(self, limits: RestLimits) -> None:
        self.limits = limits
        self.stats = RestStats()
        self.connections: set[_GuardedProtocol] = set()
        self.per_source: Counter[str] = Counter()

    def admit(self, sock: socket.socket, source: tuple[str, int], *, plain: bool) -> bool:
        if self.per_source[source[0]] < self.limits.max_connections_per_source:
            return True
        self.stats.refused_per_source += 1
        if plain:  # a TLS client cannot read a plaintext answer: it only sees the close
            with contextlib.suppress(OSError):
                sock.send(_BUSY)
        return False


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body deadlines, a request cap per
    connection, and the application started once the body is complete."""

    def __init__(self, *args: Any, guard: _Guard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self.timeout_keep_alive = guard.limits.keep_alive_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self._deferred: tuple[RequestResponseCycle, Any] | None = None
        self._requests = 0
        self._source = ""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._source = self.client[0] if self.client else ""
        self.guard.connections.add(self)
        self.guard.per_source[self._source] += 1
        self._arm(self.guard.limits.header_timeout, self._header_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._deferred = None
        if self in self.guard.connections:
            self.guard.connections.discard(self)
            left = self.guard.per_source[self._source] - 1
            if left > 0:
                self.guard.per_source[self._source] = left
            else:
                del self.guard.per_source[self._source]
        super().connection_lost(exc)

    # deadlines ----------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _header_expired(self) -> None:
        self._deadline = None
        self.guard.stats.header_timeouts += 1
        self._time_out(self.cycle is None or self.cycle.response_complete)

    def _body_expired(self) -> None:
        self._deadline = None
        self.guard.stats.body_timeouts += 1
        self._time_out(self.cycle is not None and not self.cycle.response_started)

    def _time_out(self, answer: bool) -> None:
        self._deferred = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if answer:
            transport.write(_TIMEOUT)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # An application already reading this body hears that the client is gone.
            cycle.disconnected = True
            cycle.message_event.set()
        transport.close()

    # parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a later request on a kept-alive connection
            self._arm(self.guard.limits.header_timeout, self._header_expired)

    def on_headers_complete(self) -> None:
        self._arm(self.guard.limits.body_timeout, self._body_expired)
        super().on_headers_complete()
        self._requests += 1
        if self._requests >= self.guard.limits.keep_alive_requests and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        deferred = self._deferred
        if deferred is not None and len(deferred[0].body) > HIGH_WATER_LIMIT:
            # More than the application takes (it answers 413): let it read and say so.
            self._deferred = None
            super()._start_asgi_task(*deferred)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            super()._start_asgi_task(*deferred)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if not cycle.more_body:
            super()._start_asgi_task(cycle, app)
            return
        self._deferred = (cycle, app)
        if cycle.waiting_for_100_continue and not self.transport.is_closing():
            # RFC 9110 section 10.1.1: the body is what the server waits for.
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            cycle.waiting_for_100_continue = False


class _LimitsCollector:
    """What the limits did, on ``/metrics`` beside the application's own counters:
    ``shaken_rest_header_timeouts_total``, ``shaken_rest_body_timeouts_total``,
    ``shaken_rest_refused_per_source_total``, ``shaken_descriptors_exhausted_total`` (accepts
    that failed for want of descriptors, SIP and REST) and, for a call log that counts them,
    ``shaken_call_log_{written,dropped,failures,restarts,reopened}_total`` and, for a PostgreSQL
    one, ``shaken_call_log_{spooled,replayed}_total``."""

    _CALL_LOG = ("written", "dropped", "failures", "restarts", "reopened", "spooled", "replayed")

    def __init__(self, service: RestService) -> None:
        self._service = service

    def collect(self) -> Iterable[Metric]:
        stats = self._service.stats
        counts = {
            "rest_header_timeouts": (
                stats.header_timeouts,
                "REST requests whose headers were late",
            ),
            "rest_body_timeouts": (stats.body_timeouts, "REST requests whose body was late"),
            "rest_refused_per_source": (
                stats.refused_per_source,
                "REST connections refused: their address's cap",
            ),
            "descriptors_exhausted": (
                self._service.budget.exhausted,
                "accepts that failed for want of descriptors (accepting paused)",
            ),
        }
        call_log = self._service.call_log
        for name in self._CALL_LOG:
            value = getattr(call_log, name, None)
            if isinstance(value, int):
                counts[f"call_log_{name}"] = (value, f"call log records {name}")
        shared = self._service.runtime.shared
        if shared is not None:
            counts["shared_state_errors"] = (shared.errors, "shared-state operations that failed")
            counts["shared_state_fallbacks"] = (
                shared.fallbacks,
                "shared-state operations answered by the local form instead",
            )
        for name, (value, text) in counts.items():
            yield CounterMetricFamily(f"shaken_{name}", text, value=value)
        # Degraded: 1 while a shared layer is away and its local form stands in.
        if shared is not None:
            yield GaugeMetricFamily(
                "shaken_shared_state_degraded",
                "1 while Redis is unavailable and each function uses its local form",
                value=int(shared.degraded),
            )
        pending = getattr(call_log, "spool_pending", None)
        if isinstance(pending, int):
            yield GaugeMetricFamily(
                "shaken_call_log_spool_pending",
                "call records waiting in the local spool for PostgreSQL",
                value=pending,
            )
            yield GaugeMetricFamily(
                "shaken_call_log_degraded",
                "1 while PostgreSQL is unreachable and records spool locally",
                value=int(bool(getattr(call_log, "degraded", False))),
            )


class _Switch:
    """The ASGI application uvicorn runs: whichever one :meth:`RestService.switch` set last."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------ service


class RestService:
    """The REST API of one worker on sockets bound by :func:`bind_rest`.

    :param budget: the worker's descriptor budget, shared with its other listeners.
    :raises ConfigurationError: (from :meth:`start`) an https listener without
        ``tls_certificate`` and ``tls_key``, or a key pair that does not load.
    """

    def __init__(
        self,
        runtime: Runtime,
        bound: Sequence[BoundRest],
        call_log: CallLog | None,
        *,
        budget: DescriptorBudget | None = None,
        metrics: InstanceMetrics | None = None,
    ) -> None:
        """``metrics``: the worker's metrics (its SIP counters beside REST's); the REST
        instruments are made once here and kept by every app this service switches to."""
        if not bound:
            raise ConfigurationError("no REST listeners configured ([server] rest)")
        self.metrics = RestMetrics(metrics)
        self.bound = list(bound)
        self.runtime = runtime
        self.budget = budget or DescriptorBudget()
        self.guard = _Guard(RestLimits.from_settings(runtime.settings.server_settings))
        self.budget.register(lambda: len(self.guard.connections))
        self.call_log = call_log
        self.metrics.registry.register(_LimitsCollector(self))
        self._switch = _Switch(self._app(runtime, call_log))
        self._servers: list[uvicorn.Server] = []
        self._acceptors: list[Acceptor] = []
        self._main: asyncio.Future[Any] | None = None

    @property
    def app(self) -> ASGIApp:
        """The application new requests go to."""
        return self._switch.app

    @property
    def stats(self) -> RestStats:
        return self.guard.stats

    def in_progress(self) -> set[asyncio.Task[None]]:
        """The requests being answered now."""
        return {task for server in self._servers for task in server.server_state.tasks}

    async def start(self) -> None:
        certificate = self.runtime.settings.server_settings.tls_certificate
        key = self.runtime.settings.server_settings.tls_key
        schemes = {item.scheme for item in self.bound}
        if "https" in schemes and not (certificate and key):
            raise ConfigurationError(
                "https REST listeners need [server] tls_certificate and tls_key"
            )
        limits = self.guard.limits
        try:
            for scheme in sorted(schemes):
                config = uvicorn.Config(
                    self._switch,
                    loop="none",
                    http="httptools",
                    ws="none",
                    lifespan="off",
                    interface="asgi3",
                    log_config=None,
                    log_level="warning",
                    access_log=False,
                    server_header=False,
                    proxy_headers=False,
                    backlog=_BACKLOG,
                    timeout_keep_alive=limits.keep_alive_timeout,
                    timeout_graceful_shutdown=5,
                    ssl_certfile=certificate if scheme == "https" else None,
                    ssl_keyfile=key if scheme == "https" else None,
                )
                try:
                    config.load()
                except (OSError, ssl.SSLError) as exc:
                    raise ConfigurationError(f"cannot load the REST TLS key pair: {exc}") from None
                server = uvicorn.Server(config)
                # What Server.serve() does before startup(), without its signal handlers; no
                # sockets for it: the acceptors below hand it connections.
                server.lifespan = config.lifespan_class(config)
                await server.startup(sockets=[])
                self._servers.append(server)
                for item in self.bound:
                    if item.scheme == scheme:
                        self._acceptors.append(self._acceptor(item, server, config))
            for acceptor in self._acceptors:
                acceptor.start()
            self._main = asyncio.gather(*(server.main_loop() for server in self._servers))
        except BaseException:
            await self.stop()
            raise

    def _acceptor(
        self, item: BoundRest, server: uvicorn.Server, config: uvicorn.Config
    ) -> Acceptor:
        guard = self.guard
        plain = item.scheme == "http"

        def protocol() -> asyncio.Protocol:
            return _GuardedProtocol(
                config=config,
                server_state=server.server_state,
                app_state=server.lifespan.state,
                guard=guard,
            )

        return Acceptor(
            item.sock,
            protocol,
            name=item.spec,
            budget=self.budget,
            ssl_context=config.ssl,
            ssl_handshake_timeout=guard.limits.header_timeout if config.ssl else None,
            full=lambda: len(guard.connections) >= self._connection_cap(),
            admit=lambda sock, source: guard.admit(sock, source, plain=plain),
        )

    def _connection_cap(self) -> int:
        """``rest_max_connections``, and never more than REST's share of the descriptors."""
        return min(self.guard.limits.max_connections, self.budget.share())

    def _app(self, runtime: Runtime, call_log: CallLog | None) -> ASGIApp:
        return create_app(runtime, call_log=call_log, metrics=self.metrics)

    def switch(self, runtime: Runtime, call_log: CallLog | None) -> None:
        """Serve ``runtime`` from now on; requests in progress finish on the old one."""
        self.runtime = runtime
        self.call_log = call_log
        self._switch.app = self._app(runtime, call_log)
        limits = RestLimits.from_settings(runtime.settings.server_settings)
        self.guard.limits = limits

    async def wait(self) -> None:
        """Until the service stops."""
        if self._main is not None:
            await self._main

    async def stop(self) -> None:
        """Stop accepting, let requests in progress finish (at most 5 s), close the rest.

        The listening sockets stay open: the worker shares them, and closes them at exit.
        """
        for acceptor in self._acceptors:
            acceptor.close()
        self._acceptors.clear()
        servers, self._servers = self._servers, []
        for server in servers:
            server.should_exit = True
        if self._main is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._main
            self._main = None
        for server in servers:
            with contextlib.suppress(Exception):
                await server.shutdown()
        for connection in list(self.guard.connections):
            if connection.transport is not None:
                connection.transport.close()


async def serve_rest(
    runtime: Runtime,
    listeners: Sequence[str],
    call_log: CallLog | None,
    *,
    ready: asyncio.Event | None = None,
    bound: Sequence[BoundRest] | None = None,
) -> None:
    """Serve the REST API on ``listeners`` until cancelled; set ``ready`` once listening.

    ``bound``: sockets already bound by :func:`bind_rest` (shared by several workers), which
    stay open when this returns; without it the listeners are bound here and closed at the end.

    :raises ConfigurationError: a bad listener, an address that cannot be bound, or an https
        listener without ``tls_certificate`` and ``tls_key``.
    """
    owned = bound is None
    sockets = bind_rest(listeners) if bound is None else list(bound)
    try:
        service = RestService(runtime, sockets, call_log)
        await service.start()
        try:
            if ready is not None:
                ready.set()
            await service.wait()
        finally:
            await service.stop()
    finally:
        if owned:
            for item in sockets:
                item.sock.close()
