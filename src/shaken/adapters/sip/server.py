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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

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
                    # and take part of its datagrams (issue: one service per port).
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


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, server: SipServer, listener: Listener) -> None:
        self.server = server
        self.listener = listener
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, so no isinstance check here.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        server = self.server
        if data[:4] == b"ACK " and server.handler.absorb_ack(data):
            return  # one per call: read its transaction key only
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
        transport = self.transport
        if transport is None:
            return
        if isinstance(reply, bytes):
            transport.sendto(reply, destination)
            return
        server.spawn(reply, lambda answer: transport.sendto(answer, destination))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for an earlier response: nothing to do (RFC 3261 18.4).
        log.debug("UDP error on %s: %s", self.listener.spec, exc)


class _Stream(asyncio.Protocol):
    def __init__(self, server: SipServer, listener: Listener) -> None:
        self.server = server
        self.listener = listener
        self.framer = StreamFramer(server.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.source = ("", 0)
        self.last_active = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.source = (str(peer[0]), int(peer[1]))
        self.last_active = time.monotonic()
        if len(self.server.connections) >= self.server.max_connections:
            log.warning(
                "%s: %d connections already, refusing %s",
                self.listener.spec,
                len(self.server.connections),
                self.source[0],
            )
            self.transport.abort()
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.server.connections.discard(self)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        server = self.server
        self.last_active = time.monotonic()
        for item in self.framer.feed(data):
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
        budget: DescriptorBudget | None = None,
    ) -> None:
        self.handler = handler
        self.bound = list(bound)
        self.tls = tls
        self.max_message_size = max_message_size
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._sweeper: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[bytes | None]] = set()
        self.connections: set[_Stream] = set()
        self._transports: list[asyncio.BaseTransport] = []
        self._servers: list[Acceptor] = []
        self.budget = budget or DescriptorBudget()
        if any(item.listener.transport != "udp" for item in self.bound):
            self.budget.register(lambda: len(self.connections))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for item in self.bound:
            listener = item.listener
            if listener.transport == "udp":
                transport, _ = await loop.create_datagram_endpoint(
                    self._datagrams(listener), sock=item.sock
                )
                self._transports.append(transport)
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
            await asyncio.sleep(min(30.0, self.idle_timeout / 2))
            limit = time.monotonic() - self.idle_timeout
            for stream in list(self.connections):
                if stream.last_active < limit and stream.transport is not None:
                    stream.transport.close()

    def _datagrams(self, listener: Listener) -> Callable[[], _Datagrams]:
        return lambda: _Datagrams(self, listener)

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
        for transport in self._transports:
            transport.close()
        for stream in list(self.connections):
            if stream.transport is not None:
                stream.transport.close()
        self._transports.clear()
        self._servers.clear()


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
