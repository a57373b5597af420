"""What the two call logs share: the queue a call appends to and the thread that writes it.

:meth:`QueuedWriter.record` only appends to an in-memory queue, so that a call never waits
for a store; a writer thread wakes every ``flush_interval`` (or as soon as ``batch_size``
records wait), hands the queue to the store's own ``_flush``, and between batches lets it
prune. A writer thread that dies is started again by the next record (or the next health
check) and counted in :attr:`QueuedWriter.restarts`; :meth:`QueuedWriter.close` commits what
is left, even after such a death. What is stored, and how, is each store's:
:class:`~shaken.adapters.store.calllog.SqliteCallLog` and
:class:`~shaken.adapters.store.pgcalllog.PostgresCallLog`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from abc import ABC, abstractmethod
from collections import deque

from shaken.services.calllog import CallRecord

__all__ = ["QueuedWriter", "Wakeup"]

log = logging.getLogger("shaken.calllog")


class Wakeup:
    """What the writer waits on between flushes: a pipe and ``select``.

    Not a :class:`threading.Event`: its timed wait computes an absolute deadline on the
    monotonic clock, and under libfaketime (CI runs the suite under ``faketime``) that clock
    is shifted while the kernel's deadline is not, so the wait never times out and the writer
    would commit only when a batch fills. ``select`` takes a relative timeout.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def set(self) -> None:
        if self._write < 0:
            return
        with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending
            os.write(self._write, b"\0")

    def wait(self, timeout: float) -> None:
        """Until :meth:`set` or ``timeout`` seconds; clears what woke it."""
        with contextlib.suppress(InterruptedError):
            select.select([self._read], [], [], timeout)
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._read, 4096):
                pass

    def close(self) -> None:
        fds, self._read, self._write = (self._read, self._write), -1, -1
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


class QueuedWriter(ABC):
    """A call log's queue and writer thread; a store subclasses it.

    The subclass calls :meth:`_init_writer` first in its ``__init__``, opens its store, then
    starts the thread with ``self._thread = self._start_writer()``. It writes the queue in
    :meth:`_flush`, prunes in :meth:`_prune` and lets its store go in :meth:`_close_store`.

    Counters: :attr:`written`, :attr:`dropped`, :attr:`failures`, :attr:`restarts`.
    """

    #: The writer thread's name (``ps -L``, ``py-spy``).
    THREAD_NAME = "shaken-calllog"

    flush_interval: float
    batch_size: int
    max_pending: int
    written: int
    dropped: int
    failures: int
    restarts: int
    last_error: str | None
    _queue: deque[CallRecord]
    _wake: Wakeup
    _closing: bool
    _writer_died: bool
    _restart_lock: threading.Lock
    _thread: threading.Thread

    def _init_writer(self, *, flush_interval: float, batch_size: int, max_pending: int) -> None:
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.restarts = 0
        self.last_error = None
        self._queue = deque()
        self._wake = Wakeup()
        self._closing = False
        self._writer_died = False
        self._restart_lock = threading.Lock()

    @property
    @abstractmethod
    def label(self) -> str:
        """The store as the logs name it (a path, or a URL without its password)."""

    @property
    def window(self) -> float:
        """The bound on how long an answered decision may stay uncommitted (module docs)."""
        return 2.0 * self.flush_interval

    # --------------------------------------------------------------------------- hot path

    def record(self, record: CallRecord) -> None:
        """Queue one record; never blocks, never raises."""
        queue = self._queue
        if len(queue) >= self.max_pending or self._closing:
            self.dropped += 1
            return
        queue.append(record)
        if self._writer_died:
            self._restart_writer()
        if len(queue) >= self.batch_size:
            self._wake.set()

    def flush(self) -> None:
        """Ask the writer to commit now (it does, within one interval either way)."""
        self._wake.set()

    def _writer_running(self) -> bool:
        """Whether the writer thread runs, after starting it again if it had died."""
        if self._writer_died and not self._closing:
            self._restart_writer()
        return self._thread.is_alive()

    # ------------------------------------------------------------------------------ writer

    def _start_writer(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name=self.THREAD_NAME, daemon=True)
        thread.start()
        return thread

    def _restart_writer(self) -> None:
        with self._restart_lock:
            if not self._writer_died or self._closing:
                return
            self._writer_died = False
            self.restarts += 1
            log.error("call log %s: the writer had stopped; started again", self.label)
            self._thread = self._start_writer()

    def _run(self) -> None:
        finished = False
        try:
            while True:
                self._wake.wait(self.flush_interval)
                closing = self._closing
                self._flush()
                if closing:
                    break
                self._prune()
            finished = True
        except Exception:
            log.exception("call log %s: the writer stopped", self.label)
        finally:
            if not finished:
                self._writer_died = True  # the next record() starts a new writer

    @abstractmethod
    def _flush(self) -> None:
        """Write what is queued (the writer's thread, or :meth:`close` after its death)."""

    @abstractmethod
    def _prune(self) -> None:
        """Delete what is past the retention, a little at a time (the writer's thread)."""

    @abstractmethod
    def _close_store(self) -> None:
        """Let the store go, once the writer has written everything it could."""

    def close(self) -> None:
        """Commit everything queued and stop the writer."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._thread.join()
        if self._writer_died:
            with contextlib.suppress(Exception):
                self._flush()
        self._close_store()
        self._wake.close()
