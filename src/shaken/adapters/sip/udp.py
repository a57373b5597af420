"""The UDP transport of the SIP server: each listener's socket read directly, overload shed by
kernel receive age.

asyncio's datagram transport hides when a datagram arrived; reading the socket with
``recvmsg`` gives the kernel's receive timestamp (SO_TIMESTAMPNS), so a request's queueing age
is known before any work and overload is shed early and cheaply (RFC 3261 section 21.5.4,
RFC 6357): see :class:`Datagrams`. :class:`KernelClock` maps those timestamps onto monotonic
time without reading the wall clock.

Answers go where RFC 3261 section 18.2.2 and RFC 3581 say: the source port with ``rport``,
else the Via's sent-by port at the source address.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

from shaken.adapters.sip.codec import parse_request, response_address
from shaken.adapters.sip.handler import Listener

if TYPE_CHECKING:
    from shaken.adapters.sip.server import SipServer

__all__ = ["UDP_SLICE", "Datagrams", "KernelClock"]

log = logging.getLogger("shaken.sip")

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


class KernelClock:
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


class Datagrams:
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
        transactions = server.handler.transactions
        stats = server.handler.stats
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
            if data[:4] == b"ACK " and transactions.absorb_ack(data):
                stats.acks_absorbed += 1  # one per call: read its transaction key only
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
        server.obtain(reply, lambda answer: self.sendto(answer, destination))

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
        self.server.handler.stats.response(data)
        try:
            self.sock.sendto(data, destination)
        except OSError:
            self.server.stats["udp_send_errors"] += 1  # UDP: a lost answer is retransmitted
