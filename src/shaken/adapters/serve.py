"""``shaken serve``: the SIP redirect server and the REST API from one configuration file.

The composition of a running service (docs/architecture.md sections 6 to 8): the
configuration is read and
proven usable (keys load, trust anchors parse, ``check_x5u_at_load`` fetches succeed) before
any socket is bound; the SIP listeners are bound once and shared by the worker processes
(:class:`~shaken.adapters.workers.Supervisor`); each worker builds its own
:class:`~shaken.adapters.runtime.Runtime`, opens its own writer to the call log and runs, in one
event loop, the SIP listeners and, when ``[server] rest`` lists any, the REST API
(``shaken.adapters.http.server.serve_rest``, imported here so that the SIP and HTTP adapters
never import each other).

Every listening socket, SIP and REST, is bound once, by ``serve`` before it forks, after the
configuration has been proven: workers share them, and a second ``shaken serve`` on the same
ports fails to start, naming the port. The connections of a worker, SIP over TCP and REST
alike, share one :class:`~shaken.adapters.accept.DescriptorBudget`, so that running out of
descriptors pauses accepting and leaves ``[server] descriptor_reserve`` of them for
certificate fetches and the call log.

SIGHUP reloads: each worker reads the file again and builds a new runtime next to the running
one. Any problem (a syntax error, an unknown key, a key file that does not load, a failed
``check_x5u_at_load``) is logged with its file, key and line, and the running configuration
stays. Otherwise the SIP handler and the REST application switch to the new runtime, each in
one assignment: requests already started finish with the old one, which is closed once they
are done. No listening socket is closed by a reload. Listeners and the number of workers are
bound at start: changing them needs a restart, and a reload says so. SIGHUPs that arrive while
a reload waits to start make one reload, not one each. A worker blocks SIGHUP, SIGTERM and
SIGINT until its handlers are installed, so that a signal sent while it starts waits for them.
With a ``[lifecycle]``, a switch of the signing certificate (its ``current.json`` replaced)
reloads every worker the same way, and worker 0 runs the renewal task.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import importlib.util
import logging
import os
import resource
import select
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from shaken.adapters.accept import DescriptorBudget
from shaken.adapters.lifecycle import serve_tasks
from shaken.adapters.logs import apply_levels, configure_logging, fields
from shaken.adapters.metrics import InstanceMetrics, new_metrics_dir
from shaken.adapters.preflight import load_checked
from shaken.adapters.runtime import Runtime
from shaken.adapters.sip.handler import SipHandler
from shaken.adapters.sip.server import (
    BoundListener,
    SipCollector,
    SipServer,
    bind_listeners,
    listener_specs,
    tls_context,
)
from shaken.adapters.sip.stats import SipStatsCollector
from shaken.adapters.store.calllog import SqliteCallLog
from shaken.adapters.store.calllogs import describe, open_writer
from shaken.adapters.store.pgcalllog import PostgresCallLog
from shaken.adapters.systemd import notify
from shaken.adapters.wiring import (
    build_runtime,
    check_signing_certificates,
    prepare_brands,
)
from shaken.adapters.workers import Supervisor, unblock_worker_signals
from shaken.config import GLOBAL_PROFILE, ConfigError, Settings
from shaken.core.errors import ConfigurationError
from shaken.services.ports import Clock, SystemClock

__all__ = [
    "ServiceOptions",
    "Worker",
    "check_settings",
    "configure_logging",
    "run_lab",
    "serve",
]

log = logging.getLogger("shaken.serve")

RestServer = Callable[..., Any]
#: How often a worker writes its metrics snapshot (seconds): the most a scrape lags behind.
SNAPSHOT_INTERVAL = 1.0
#: Keys of ``[server]`` that only a restart changes.
RESTART_KEYS = (
    "sip_sign",
    "log_format",
    "sip_verify",
    "rest",
    "workers",
    "tls_certificate",
    "tls_key",
    "udp_receive_buffer",
    "descriptor_reserve",
)


def logging_from(settings: Settings) -> None:
    """The logging ``[server]`` asks for (``log_format``, ``log_level``, ``log_levels``)."""
    server = settings.server_settings
    configure_logging(
        log_format=server.log_format, level=server.log_level, levels=dict(server.log_levels)
    )


def rest_server() -> Any | None:
    """The REST adapter's server module (``bind_rest``, ``RestService``), or None when this
    build has none."""
    name = "shaken.adapters.http.server"
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


def bind_rest(listeners: Sequence[str]) -> list[Any]:
    """Bind the REST listeners (see ``shaken.adapters.http.server.bind_rest``); none when this
    build has no REST adapter (the worker says so).

    :raises ConfigurationError: a listener cannot be bound, naming it.
    """
    module = rest_server()
    if module is None or not listeners:
        return []
    bound: list[Any] = module.bind_rest(listeners)
    return bound


def raise_descriptor_limit() -> None:
    """Raise this process's soft descriptor limit to its hard limit (inherited by workers).

    Many systems start services with a soft limit of 1024 and a far higher hard one; each
    connection takes a descriptor.
    """
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def with_workers(settings: Settings, workers: int | None) -> Settings:
    """``settings`` with ``--workers`` applied, so every adapter sees the same count."""
    if workers is None:
        return settings
    return replace(settings, server={**settings.server, "workers": workers})


async def check_settings(settings: Settings, clock: Clock | None = None) -> Runtime:
    """Build the runtime ``settings`` describe and prove it usable (start and reload).

    :raises ConfigurationError: a file that does not load, a failed ``check_x5u_at_load``, a
        brand whose published content cannot be fetched.
    """
    clock = clock or SystemClock()
    runtime = await asyncio.to_thread(build_runtime, settings, clock=clock, now=clock.now())
    try:
        await check_signing_certificates(runtime, now=clock.now())
        # Brands whose logo or jCard has no local copy: fetched once, rcdi computed.
        await prepare_brands(runtime)
        for cache in runtime.caches:
            await cache.warm()
            cache.start_refresh()  # CRLs now and every crl_refresh; aclose stops it
    except BaseException:
        await runtime.aclose()
        raise
    return runtime


def open_call_log(
    settings: Settings, clock: Clock | None = None
) -> SqliteCallLog | PostgresCallLog | None:
    """The call log ``[server] call_log`` names (a SQLite file or a PostgreSQL URL), or None.

    A PostgreSQL that cannot be reached is not an error here: records spool until it is back.

    :raises ConfigurationError: the file (or the spool) cannot be opened as a call log.
    """
    target = settings.server_settings.call_log
    if not target:
        return None
    try:
        return open_writer(target, settings.server_settings, clock=clock)
    except Exception as exc:
        name = describe(str(target))
        raise ConfigurationError(f"cannot open the call log {name}: {exc}") from None


def _sip_options(settings: Settings) -> dict[str, Any]:
    """The SipServer settings of ``[server]`` that a reload can change in place."""
    server = settings.server_settings
    return {
        "max_message_size": server.max_message_size,
        "max_connections_per_source": server.tcp_connections_per_source,
        "message_timeout": float(server.tcp_message_timeout),
        "udp_max_age": server.udp_max_age_ms / 1000.0,
        "overload_answer": server.overload_answer,
    }


class ServiceOptions:
    """How to run a worker: the configuration file and what the command line adds.

    :param workers: ``--workers``, overriding ``server.workers`` for every adapter.
    :param grace: seconds answers in progress get at shutdown.
    :param handle_signals: install SIGTERM/SIGINT (stop) and SIGHUP (reload) handlers; only
        the main thread of a process can.
    :param call_log: the call log when ``server.call_log`` names none (``lab up``).
    :param freeze_gc: move what exists after start-up out of the garbage collector's way
        (``gc.freeze``); for a process that is only this worker.
    :param clock: where the services read the time (the system clock by default).
    :param metrics_dir: where the workers of one instance share their metrics snapshots;
        None: this worker answers for itself alone.
    """

    def __init__(
        self,
        config: Path,
        *,
        workers: int | None = None,
        grace: float = 5.0,
        handle_signals: bool = True,
        call_log: Path | None = None,
        freeze_gc: bool = False,
        clock: Clock | None = None,
        metrics_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.metrics_dir = metrics_dir
        self.freeze_gc = freeze_gc
        self.workers = workers
        self.grace = grace
        self.handle_signals = handle_signals
        self.call_log = call_log

    def settings(self) -> Settings:
        """The configuration file with the command line's overrides applied.

        ``call_log`` is a default: a ``server.call_log`` in the file wins.
        """
        settings = with_workers(load_checked(self.config), self.workers)
        if self.call_log is not None and not settings.server_settings.call_log:
            settings = replace(settings, server={**settings.server, "call_log": str(self.call_log)})
        return settings


class Worker:
    """One event loop's worth of service: SIP listeners, REST, the call log, reloads."""

    def __init__(
        self,
        options: ServiceOptions,
        bound: Sequence[BoundListener],
        *,
        rest: Sequence[Any] | None = None,
        slot: int = 0,
        ready: Callable[[], None] | None = None,
    ) -> None:
        """``rest``: REST sockets bound by :func:`bind_rest` (shared with other workers);
        None binds the configured ones here, for this worker alone."""
        self.options = options
        self.bound = bound
        self.rest_bound = rest
        self.slot = slot
        self.ready_callback = ready
        self.stopping = asyncio.Event()
        self.handler: SipHandler | None = None
        self.sip: SipServer | None = None
        self.rest: Any | None = None
        self.call_log: SqliteCallLog | PostgresCallLog | None = None
        self.budget: DescriptorBudget | None = None
        self._own_rest: list[Any] = []
        self._reload_lock = asyncio.Lock()
        self._reloading: set[asyncio.Task[bool]] = set()
        self._lifecycle: tuple[asyncio.Event, list[asyncio.Task[None]]] | None = None
        self._reload_waiting = False
        self.reloads = 0
        #: The worker's metrics; its snapshots let any worker answer a scrape for all.
        self.metrics = InstanceMetrics(options.metrics_dir)
        self._snapshots: asyncio.Task[None] | None = None

    async def _write_snapshots(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL)
            self.metrics.write_snapshot()

    def _load(self) -> Settings:
        return self.options.settings()

    async def run(self) -> int:
        settings = self._load()
        runtime = await check_settings(settings, self.options.clock)
        try:
            self.call_log = open_call_log(settings, self.options.clock)
            handler = SipHandler(runtime, call_log=self.call_log)
            self.handler = handler
            server = settings.server_settings
            needs_tls = any(b.listener.transport == "tls" for b in self.bound)
            tls = tls_context(server.tls_certificate, server.tls_key) if needs_tls else None
            buffer = server.udp_receive_buffer
            reserve = server.descriptor_reserve
            self.budget = DescriptorBudget() if reserve is None else DescriptorBudget(reserve)
            self.sip = SipServer(
                handler,
                self.bound,
                tls=tls,
                udp_receive_buffer=buffer,
                budget=self.budget,
                **_sip_options(settings),
            )
            await self.sip.start()
            # The worker's SIP counters (shed, refused, timed out) on the instance's /metrics.
            self.metrics.registry.register(SipCollector(self.sip))
            self.metrics.registry.register(SipStatsCollector(handler))
            self._snapshots = asyncio.get_running_loop().create_task(self._write_snapshots())
            await self._start_rest(runtime)
            # The certificate lifecycle: reload on a switch; worker 0 also renews.
            self._lifecycle = serve_tasks(
                settings, self.options.clock, renew=self.slot == 0, on_switch=self.request_reload
            )
            if self.options.handle_signals:
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
                loop.add_signal_handler(signal.SIGINT, self.stopping.set)
                loop.add_signal_handler(signal.SIGHUP, self.request_reload)
                unblock_worker_signals()  # what arrived while starting is handled now
            for note in runtime.notes:
                log.warning("%s", note)
            if self.options.freeze_gc:
                # What exists now lives as long as the worker: keep the collector off it.
                gc.collect()
                gc.freeze()
            if self.ready_callback is not None:
                self.ready_callback()
            await self.stopping.wait()
        finally:
            await self._shutdown()
            if self.handler is None:
                await runtime.aclose()
        return 0

    def request_reload(self) -> None:
        if self._reload_waiting:
            return  # the reload that waits to start reads the file as it is then
        self._reload_waiting = True
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reloading.add(task)  # a task nobody holds may be collected before it ends
        task.add_done_callback(self._reloading.discard)

    async def reload(self) -> bool:
        """Read the file again; switch to it only if all of it works. True if switched."""
        async with self._reload_lock:
            self._reload_waiting = False
            handler = self.handler
            if handler is None:
                return False
            path = self.options.config
            try:
                settings = self._load()
                runtime = await check_settings(settings, self.options.clock)
            except ConfigError as exc:
                log.error("reload: %s is not usable, the running configuration stays", path)
                for problem in exc.problems:  # one line per problem, with its fields
                    log.error(
                        "reload: %s",
                        problem,
                        extra=fields(file=problem.source, line=problem.line, key=problem.key),
                    )
                return False
            except Exception as exc:
                log.error(
                    "reload: %s is not usable, the running configuration stays: %s", path, exc
                )
                return False
            old = handler.runtime
            for key in RESTART_KEYS:
                if getattr(old.settings.server_settings, key) != getattr(
                    settings.server_settings, key
                ):
                    log.warning(
                        "reload: server.%s changed; the SIP listeners take it at restart", key
                    )
            old_log = None
            if settings.server_settings.call_log != old.settings.server_settings.call_log:
                try:
                    new_log = open_call_log(settings, self.options.clock)
                except ConfigurationError as exc:
                    log.error("reload: %s; the running configuration stays", exc)
                    await runtime.aclose()
                    return False
                old_log, self.call_log = self.call_log, new_log
                handler.call_log = new_log
            in_progress: set[asyncio.Task[Any]] = set(self.sip.tasks) if self.sip else set()
            if self.rest is not None:
                in_progress |= self.rest.in_progress()
            server = settings.server_settings
            handler.max_in_flight = server.sip_max_in_flight
            handler.retry_after = server.retry_after
            handler.transactions.max_bytes = server.transaction_memory
            if self.sip is not None:
                for name, value in _sip_options(settings).items():
                    setattr(self.sip, name, value)
            handler.runtime = runtime  # the switch: one assignment in the loop's thread
            if self.rest is not None:
                self.rest.switch(runtime, self.call_log)  # same sockets, new application
            self.reloads += 1
            apply_levels(server.log_level, dict(server.log_levels))
            log.info("reloaded %s (profiles: %s)", path, ", ".join(_profile_names(runtime)))
            if in_progress:
                await asyncio.wait(in_progress, timeout=30.0)
            await old.aclose()
            if old_log is not None:
                await asyncio.to_thread(old_log.close)
            return True

    async def _start_rest(self, runtime: Runtime) -> None:
        listeners = list(runtime.settings.server_settings.rest)
        if not listeners:
            return
        module = rest_server()
        if module is None:
            log.warning("REST listeners %s not started: no REST adapter", ", ".join(listeners))
            return
        bound = self.rest_bound
        if bound is None:
            bound = self._own_rest = bind_rest(listeners)
        service = module.RestService(
            runtime, bound, self.call_log, budget=self.budget, metrics=self.metrics
        )
        try:
            await service.start()
        except ConfigurationError as exc:
            raise ConfigurationError(f"REST server did not start: {exc}") from None
        self.rest = service

    async def _shutdown(self) -> None:
        if self._snapshots is not None:
            self._snapshots.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._snapshots
        if self._lifecycle is not None:
            stop, tasks = self._lifecycle
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.sip is not None:
            await self.sip.stop(self.options.grace)
        if self.rest is not None:
            await self.rest.stop()
        for item in self._own_rest:
            item.sock.close()
        if self.call_log is not None:
            await asyncio.to_thread(self.call_log.close)
        # What this worker counted stays part of the instance's totals.
        self.metrics.write_snapshot()
        if self.handler is not None:
            await self.handler.runtime.aclose()


async def _probe(settings: Settings, clock: Clock) -> None:
    runtime = await check_settings(settings, clock)
    await runtime.aclose()


def _profile_names(runtime: Runtime) -> list[str]:
    return sorted(name or GLOBAL_PROFILE for name in runtime.profiles)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop  # noqa: PLC0415  (optional speed-up; absent on Windows)
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_worker(
    options: ServiceOptions,
    bound: Sequence[BoundListener],
    *,
    rest: Sequence[Any] | None = None,
    slot: int = 0,
    ready: Callable[[], None] | None = None,
) -> int:
    """Run one worker in this process until SIGTERM/SIGINT (or its ``stopping`` event)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        worker = Worker(options, bound, rest=rest, slot=slot, ready=ready)
        return runner.run(worker.run())


def serve(
    config: str | Path,
    *,
    workers: int | None = None,
    out: TextIO | None = None,
    clock: Clock | None = None,
) -> int:
    """``shaken serve``: check, bind, fork, serve until SIGTERM/SIGINT. Returns the exit status.

    Prints one line per listener, then ``ready`` once every worker serves.

    :raises ConfigError: the file has problems (each with its line).
    :raises ConfigurationError: it names files that do not load, or a listener cannot be bound
        (another instance on the port, say), naming it.
    """
    # A SIGHUP before the worker's handler exists waits for it (its default is to kill).
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        return _serve(config, workers, out, clock, previous)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _serve(
    config: str | Path,
    workers: int | None,
    out: TextIO | None,
    clock: Clock | None,
    mask: set[int | signal.Signals],
) -> int:
    stream = out or sys.stdout
    path = Path(config)
    # The same checks as `shaken config check`, before anything is bound or started.
    settings = with_workers(load_checked(path), workers)
    logging_from(settings)
    count = settings.server_settings.workers
    listeners = listener_specs(settings.server_settings)
    rest = list(settings.server_settings.rest)
    if not listeners and not rest:
        raise ConfigurationError(f"{path}: no listeners ([server] sip_sign, sip_verify or rest)")
    # Prove the configuration before binding: a bad key should not leave a half-started server.
    clock = clock or SystemClock()
    asyncio.run(_probe(settings, clock))
    raise_descriptor_limit()
    bound = bind_listeners(listeners)
    try:
        rest_bound = bind_rest(rest)
    except BaseException:
        for item in bound:
            item.sock.close()
        raise
    for item in bound:
        print(f"sip-{item.listener.role.value:7} {item.listener.spec}", file=stream)
    for spec in rest:
        print(f"rest         {spec}", file=stream)
    if settings.server_settings.call_log:
        print(f"call log     {describe(settings.server_settings.call_log)}", file=stream)
    stream.flush()
    metrics_dir = new_metrics_dir()
    options = ServiceOptions(
        path, workers=workers, freeze_gc=True, clock=clock, metrics_dir=metrics_dir
    )
    try:
        if count == 1:

            def one_ready() -> None:
                print("ready (1 worker)", file=stream, flush=True)
                notify("READY=1", "STATUS=serving (1 worker)", f"MAINPID={os.getpid()}")

            return run_worker(options, bound, rest=rest_bound, ready=one_ready)
        reader, writer = os.pipe()

        def announce() -> None:
            seen = 0
            while seen < count:
                readable, _, _ = select.select([reader], [], [], 60.0)
                if not readable:
                    log.warning("workers slow to start (%d of %d ready)", seen, count)
                    continue
                chunk = os.read(reader, 64)
                if not chunk:
                    return
                seen += len(chunk)
            print(f"ready ({count} workers)", file=stream, flush=True)
            notify("READY=1", f"STATUS=serving ({count} workers)", f"MAINPID={os.getpid()}")

        def target(slot: int) -> int:
            os.close(reader)

            def worker_ready() -> None:
                os.write(writer, b".")

            return run_worker(options, bound, rest=rest_bound, slot=slot, ready=worker_ready)

        # The thread starts after the first forks: a process should not fork with threads.
        started = lambda: threading.Thread(target=announce, daemon=True).start()  # noqa: E731
        # The supervisor handles its signals itself from here on.
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return Supervisor(count, target).run(after_start=started)
    finally:
        for item in [*bound, *rest_bound]:
            with contextlib.suppress(OSError):
                item.sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


_LABELS = {"sign": "sip-signing", "verify": "sip-verification"}


def _wait_for_interrupt() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def run_lab(
    config: Path,
    lines: list[str],
    *,
    call_log: Path,
    out: TextIO | None = None,
    clock: Clock | None = None,
) -> int:
    """``shaken lab up``: the lab's SIP and REST servers in this process, until interrupted.

    ``call_log`` is where decisions go unless the configuration names a file. ``lines`` (what
    else the lab runs) are printed first, then one line per listener and
    ``Ctrl-C to stop`` once everything listens. A server that cannot start (a port in use,
    a broken configuration) is reported on its line and the rest of the lab keeps running.
    """
    stream = out or sys.stdout
    lines = list(lines)
    listeners = []
    rest: list[str] = []
    options = ServiceOptions(config, grace=2.0, call_log=call_log, freeze_gc=True, clock=clock)
    try:
        settings = options.settings()
        listeners = listener_specs(settings.server_settings)
        rest = list(settings.server_settings.rest)
        bound = bind_listeners(listeners)
        try:
            rest_bound = bind_rest(rest)
        except BaseException:
            for item in bound:
                item.sock.close()
            raise
    except ConfigurationError as exc:
        return _lab_without_servers(lines, listeners, rest, str(exc), stream)
    lines += [f"{_LABELS[b.listener.role.value]:16} {b.listener.spec}" for b in bound]
    lines += [f"{'rest':16} {spec}" for spec in rest]
    lines.append(f"{'call log':16} {settings.server_settings.call_log}")
    started = False

    def ready() -> None:
        nonlocal started
        started = True
        for line in lines:
            print(line, file=stream)
        print("Ctrl-C to stop", file=stream, flush=True)

    try:
        run_worker(options, bound, rest=rest_bound, ready=ready)
    except (ConfigurationError, OSError) as exc:
        if started:
            raise
        return _lab_without_servers(
            lines[: -len(bound) - len(rest)], listeners, rest, str(exc), stream
        )
    finally:
        for item in [*bound, *rest_bound]:
            with contextlib.suppress(OSError):
                item.sock.close()
    print("stopped", file=stream, flush=True)
    return 0


def _lab_without_servers(
    lines: list[str], listeners: Sequence[Any], rest: list[str], why: str, stream: TextIO
) -> int:
    reason = why.splitlines()[0] if why else "unknown error"
    for listener in listeners:
        lines.append(f"{_LABELS[listener.role.value]:16} {listener.spec}  (not started: {reason})")
    lines += [f"{'rest':16} {spec}  (not started: {reason})" for spec in rest]
    for line in lines:
        print(line, file=stream)
    print("Ctrl-C to stop", file=stream, flush=True)
    _wait_for_interrupt()
    print("stopped", file=stream, flush=True)
    return 0
