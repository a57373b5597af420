"""The TCP and TLS transport of the SIP server: one protocol object per connection.

Each connection is cut into events by the sans-IO
:class:`~shaken.adapters.sip.codec.StreamFramer` (messages, RFC 5626 keep-alive pings, broken
framing) and capped per server and per source address; the server's sweep closes a connection
that is silent too long or inside a message too long. Answers go back on the connection the
request came on (RFC 3261 section 18.2.2 bullet 1).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, cast

from shaken.adapters.sip.codec import (
    PONG,
    FramingError,
    KeepAlive,
    SipRequest,
    StreamEvent,
    StreamFramer,
    parse_request,
)
from shaken.adapters.sip.handler import Listener, Reply

if TYPE_CHECKING:
    from shaken.adapters.sip.server import SipServer

__all__ = ["Stream"]

log = logging.getLogger("shaken.sip")


class Stream(asyncio.Protocol):
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
        if data[:4] == b"SIP/":
            self.server.handler.stats.response(data)
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
        for event in items:
            if isinstance(event, KeepAlive):
                self.write(PONG)  # RFC 5626 section 4.4.1
                continue
            if isinstance(event, FramingError):
                # The stream is beyond repair: its head says whom to answer, then it closes.
                self._answer(
                    event, parse_request(event.head, stream=True, max_size=server.max_message_size)
                )
                if self.transport is not None:
                    self.transport.close()
                return
            self._answer(
                event, parse_request(event.data, stream=True, max_size=server.max_message_size)
            )

    def _answer(self, event: StreamEvent, request: SipRequest) -> None:
        handler = self.server.handler
        reply: Reply
        try:
            if isinstance(event, FramingError):
                reply = handler.refuse(request, self.source, event.code, event.detail)
            else:
                reply = handler.handle(request, self.listener, self.source)
        except Exception:
            log.exception("unexpected error on %s from %s", self.listener.spec, self.source)
            return
        if reply is None:
            return
        if isinstance(reply, bytes):
            self.write(reply)
            return
        self.server.obtain(reply, self.write)
