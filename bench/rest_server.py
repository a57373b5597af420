"""Run the REST API for a benchmark: N worker processes on one port, each with a warm cache.

    python bench/rest_server.py --config shaken.toml --warm URL=CHAIN.pem [--workers N]
                                [--call-log calls.db] [--pin]

Each worker builds its own runtime from the configuration (as ``shaken serve`` workers do),
imports the given chains into its certificate cache as if fetched (so no verification waits
for a repository, like a verifier running for a while), and runs
:func:`shaken.adapters.http.serve_rest` on uvloop. The listeners are bound once, before the
workers fork, and shared by them (as ``shaken serve`` does; ``[server] workers`` is set to
N). ``--call-log`` gives each worker a writer to one SQLite call log, as
``shaken serve`` does with ``[server] call_log``. SIGTERM or SIGINT stops every worker.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from types import FrameType

import uvloop

from shaken.adapters.http import serve_rest
from shaken.adapters.http.server import BoundRest, bind_rest
from shaken.adapters.wiring import build_runtime
from shaken.config import Settings, load_config
from shaken.services.calllog import CallLog


async def _serve(
    settings: Settings, warm: list[tuple[str, bytes]], call_log: str | None, bound: list[BoundRest]
) -> None:
    runtime = build_runtime(settings)
    for url, body in warm:
        runtime.cache.import_chain(url, body)
    log: CallLog | None = None
    if call_log is not None:
        from shaken.adapters.store.calllog import SqliteCallLog

        log = SqliteCallLog(call_log)
    try:
        await serve_rest(runtime, [], log, bound=bound)
    finally:
        await runtime.aclose()


def _worker(
    settings: Settings,
    warm: list[tuple[str, bytes]],
    call_log: str | None,
    cpu: int | None,
    bound: list[BoundRest],
) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(settings, warm, call_log, bound))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--warm", action="append", default=[], metavar="URL=FILE")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--call-log", default=None)
    parser.add_argument("--pin", action="store_true", help="worker i runs on CPU i mod nproc")
    args = parser.parse_args(argv)
    settings = load_config(args.config)
    workers = args.workers or int(settings.server.get("workers", 1))
    settings = replace(settings, server={**settings.server, "workers": workers})
    warm = []
    for item in args.warm:
        url, _, file = item.partition("=")
        warm.append((url, Path(file).read_bytes()))
    bound = bind_rest(list(settings.server["rest"]))
    context = multiprocessing.get_context("fork")
    cpus = sorted(os.sched_getaffinity(0))
    processes = [
        context.Process(
            target=_worker,
            args=(
                settings,
                warm,
                args.call_log,
                cpus[i % len(cpus)] if args.pin else None,
                bound,
            ),
            daemon=True,
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        for process in processes:
            process.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for process in processes:
        process.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
