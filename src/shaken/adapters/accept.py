"""Accepting TCP connections by hand, so that a worker keeps serving when descriptors run out.

asyncio's and uvloop's servers accept for us but cannot stop accepting for a while: once the
process is out of descriptors (EMFILE, or ENFILE for the whole system) uvloop, like libuv,
accepts and at once closes whatever waits (clients see resets), asyncio logs an error on every
attempt, and either way the last free descriptors go to connections, leaving none for a
certificate fetch. :class:`Acceptor` watches a listening socket with ``add_reader`` and hands
each accepted socket to ``loop.connect_accepted_socket`` (the same transports, TLS included).
It stops accepting, leaving connections in the kernel's backlog rather than refusing them, when

* the listener's own cap is reached (``full``),
* the worker's connections would eat into the :class:`DescriptorBudget` reserve, or
* ``accept`` fails for want of descriptors or memory: then for ``retry`` seconds, logged once
  per interval and counted in :attr:`DescriptorBudget.exhausted`.

UDP needs no new descriptor to answer, so the reserve keeps for certificate fetches, the call
log and the event loop what the connections may not take. One budget serves every listener of
a worker (SIP over TCP and TLS, REST).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
import ssl
import time
from collections.abc import Callable

__all__ = ["DEFAULT_RESERVE", "Acceptor", "DescriptorBudget", "open_descriptors"]

log = logging.getLogger("shaken.accept")

#: Descriptors left free for everything but connections (``[server] descriptor_reserve``).
DEFAULT_RESERVE = 64
#: Errors of accept() that mean "no descriptor or buffer now", not "this connection failed".
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Errors of accept() about one connection, which went away before it was taken.
_GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ECONNRESET})
#: How often a paused listener looks again whether there is room (seconds).
_RECHECK = 0.05
#: Connections taken per readiness event, so that one busy listener does not starve the loop.
_BATCH = 64


def open_descriptors() -> int:
    """How many descriptors this process has open (0 where the system cannot say)."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return max(0, len(os.listdir(directory)) - 1)  # less the one listdir used
    return 0


class DescriptorBudget:
    """How many connections a worker may hold: its descriptor limit, less what it already has
    open, less ``reserve``.

    Listeners register a counter of their open connections; :meth:`room` is what is left.
    """

    def __init__(self, reserve: int = DEFAULT_RESERVE, *, limit: int | None = None) -> None:
        if limit is None:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
        self.reserve = reserve
        self.limit = limit
        self.capacity = max(0, limit - reserve - open_descriptors())
        self.pending = 0
        self.exhausted = 0
        self._counters: list[Callable[[], int]] = []
        self._logged = -1e9

    def register(self, counter: Callable[[], int]) -> None:
        self._counters.append(counter)

    def in_use(self) -> int:
        return self.pending + sum(count() for count in self._counters)

    def room(self) -> int:
        return self.capacity - self.in_use()

    def share(self) -> int:
        """An equal part of :attr:`capacity` per registered listener group: what one kind of
        listener (REST, say) may hold at most, so that it cannot starve another (SIP)."""
        return max(1, self.capacity // max(1, len(self._counters)))

    def ran_out(self, what: str, exc: OSError, retry: float) -> None:
        """Count one failed accept; log at most once per ``retry`` seconds."""
        self.exhausted += 1
        now = time.monotonic()
        if now - self._logged >= max(retry, 10.0):
            self._logged = now
            log.error(
                "%s: out of descriptors (%s; %d open connections, limit %d): accepting "
                "paused for %.1f s, answers on open connections and UDP go on "
                "(%d such pauses so far)",
                what,
                os.strerror(exc.errno or 0),
                self.in_use(),
                self.limit,
                retry,
                self.exhausted,
            )


class Acceptor:
    """Accept on ``sock`` into ``factory`` protocols until :meth:`close`.

    :param name: the listener, for log lines.
    :param full: True while the listener itself takes no more connections.
    :param admit: called with each accepted socket and its peer address; False refuses it
        (the callable may answer on the socket first; the acceptor closes it).
    :param retry: seconds accepting pauses after the system ran out of descriptors.
    """

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.BaseProtocol],
        *,
        name: str,
        budget: DescriptorBudget,
        ssl_context: ssl.SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
        full: Callable[[], bool] | None = None,
        admit: Callable[[socket.socket, tuple[str, int]], bool] | None = None,
        retry: float = 1.0,
    ) -> None:
        self.sock = sock
        self.factory = factory
        self.name = name
        self.budget = budget
        self.ssl_context = ssl_context
        self.ssl_handshake_timeout = ssl_handshake_timeout
        self.full = full
        self.admit = admit
        self.retry = retry
        self.accepted = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._handshakes: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._resume()

    def close(self) -> None:
        """Stop accepting (the socket stays open: it is shared with other workers)."""
        self._closed = True
        self._pause()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._handshakes):
            task.cancel()

    def _pause(self, delay: float | None = None) -> None:
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._reading = False
        if delay is not None and self._loop is not None and self._timer is None:
            self._timer = self._loop.call_later(delay, self._resume)

    def _resume(self) -> None:
        self._timer = None
        if self._closed or self._reading or self._loop is None:
            return
        self._loop.add_reader(self.sock.fileno(), self._on_readable)
        self._reading = True

    def _has_room(self) -> bool:
        if self.full is not None and self.full():
            return False
        return self.budget.room() > 0

    def _on_readable(self) -> None:
        for _ in range(_BATCH):
            if not self._has_room():
                self._pause(_RECHECK)
                return
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    self.budget.ran_out(self.name, exc, self.retry)
                    self._pause(self.retry)
                    return
                if exc.errno in _GONE:
                    continue
                log.warning("%s: accept failed: %s", self.name, exc)
                self._pause(self.retry)
                return
            conn.setblocking(False)
            source = (str(peer[0]), int(peer[1]))
            if self.admit is not None and not self.admit(conn, source):
                conn.close()
                continue
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.accepted += 1
            self._connect(conn)

    def _connect(self, conn: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        self.budget.pending += 1

        async def connect() -> None:
            try:
                await loop.connect_accepted_socket(
                    self.factory,
                    conn,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=self.ssl_handshake_timeout,
                )
            except (TimeoutError, OSError, ssl.SSLError, EOFError) as exc:
                log.debug("%s: connection not set up: %s", self.name, exc)
                conn.close()
            except asyncio.CancelledError:
                conn.close()
                raise
            finally:
                self.budget.pending -= 1

        task = loop.create_task(connect())
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)
