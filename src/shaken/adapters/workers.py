"""The worker processes of ``shaken serve``: forked once the sockets are bound, supervised.

Several processes serve the same sockets: :func:`~shaken.adapters.sip.server.bind_listeners`
(and the REST binder) bind them once in the parent, and :class:`Supervisor` forks the workers,
which inherit them (the pre-fork model of Kamailio's ``children``), rather than one socket per
worker with ``SO_REUSEPORT``: the kernel spreads ``SO_REUSEPORT`` UDP traffic by source
address, so all the traffic of one SBC would land on one worker, while a shared socket goes to
whichever worker is free. The parent only supervises: it forwards SIGTERM/SIGINT (graceful
stop) and SIGHUP (reload) to the workers and restarts a worker that dies (and stops
everything if they keep dying).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable

from shaken.core.errors import ConfigurationError

__all__ = ["CRASH_LIMIT", "CRASH_WINDOW", "WORKER_SIGNALS", "Supervisor", "unblock_worker_signals"]

log = logging.getLogger("shaken.sip")  # as before it moved here: operators filter on it

#: A worker that dies more than this many times (per worker) within CRASH_WINDOW seconds is
#: not started again: the whole server stops and says why, rather than spin.
CRASH_LIMIT = 5
CRASH_WINDOW = 30.0
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
