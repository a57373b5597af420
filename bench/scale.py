"""Several instances as one service: what the shared layers cost, as ratios in one run.

Run it with ``.venv/bin/python bench/scale.py`` (``--quick`` for a smoke run, ``--json`` for
one JSON object on stdout; the table goes to stderr). It needs the PostgreSQL and Redis of
``tests/support/servers.py`` (``SHAKEN_TEST_POSTGRES``, ``SHAKEN_TEST_REDIS``) and uses a
schema and a key prefix of its own.

1. **Verification with the Redis second level against in-process only, warm traffic.** Two
   :class:`~shaken.services.verification.VerificationService` over two caches on the same
   chain, one with :class:`~shaken.adapters.shared_state.RedisCertificateStore` as its second
   level, one without; both warm. ``await service.verify(context)`` alternating in rounds
   (method of ``bench/core.py``: pinned to one CPU, calibrated blocks, medians).
   ``l2_ratio = with Redis / in-process`` (goal: at least 0.95). With the shared replay window
   every call makes one Redis round trip; that figure (``replay_ratio``) is informational.
2. **The PostgreSQL writer's sustained rate against the SQLite writer's.** Each writer is fed
   records as fast as ``record()`` takes them until ``COUNT`` are committed (``flood``), and
   then at the SIP server's capacity (``RATE`` records/s, BENCHMARKS.md "SIP redirect server":
   about 7,000 calls/s on this machine) for ``SECONDS``: the highest backlog and the drops
   say whether it keeps up. ``writer_ratio = PostgreSQL / SQLite`` records/s of the flood.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from tests.support.servers import POSTGRES_URL, REDIS_URL, with_schema

from shaken.adapters.shared_state import RedisCertificateStore, RedisReplay, RedisSharedState
from shaken.adapters.store.calllog import SqliteCallLog
from shaken.adapters.store.pgcalllog import PostgresCallLog
from shaken.core.context import SipContext
from shaken.core.sign import sign_shaken
from shaken.core.verify import SHAKEN, ReplayWindow
from shaken.services.calllog import CallRecord
from shaken.services.cert_cache import CacheSettings, CertificateCache, RevocationMode
from shaken.services.ports import CertificateFetcher, FetchedDocument
from shaken.services.trust import TrustStore
from shaken.services.verification import VerificationService
from shaken.testing import StiPki, make_sti_pki

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
ORIG, DEST = "12025550100", "12025550101"
X5U = "https://cr.example.test/sp.pem"
#: The SIP server's capacity on this machine (BENCHMARKS.md, "SIP redirect server").
RATE = 7000


class _Chain:
    """A fetcher that serves the chain from memory: the benchmark times the cache, not HTTPS."""

    def __init__(self, pki: StiPki) -> None:
        self.body = pki.chain_pem

    async def fetch(self, url: str, *, etag: str | None = None) -> FetchedDocument:
        return FetchedDocument(url=url, body=self.body, fetched_at=NOW)


def _service(pki: StiPki, *, shared: Any = None, guard: Any = None) -> VerificationService:
    fetcher: CertificateFetcher = _Chain(pki)
    cache = CertificateCache(
        fetcher,
        TrustStore(pki.trust_anchors, (pki.sti_pa,)),
        settings=CacheSettings(revocation=RevocationMode.OFF),
        shared=shared,
    )
    profile = replace(
        SHAKEN, x5u_policy=replace(SHAKEN.x5u_policy, allowed_hosts=("cr.example.test",))
    )
    return VerificationService(cache, profile=profile, replay_guard=guard)


def _block(run: Callable[[], Awaitable[None]], loop: asyncio.AbstractEventLoop, n: int) -> float:
    started = time.perf_counter_ns()
    loop.run_until_complete(_repeat(run, n))
    return n / ((time.perf_counter_ns() - started) / 1e9)


async def _repeat(run: Callable[[], Awaitable[None]], n: int) -> None:
    for _ in range(n):
        await run()


def verification(rounds: int) -> dict[str, Any]:
    pki = make_sti_pki(NOW)
    state = RedisSharedState(REDIS_URL, prefix=f"bench-{os.getpid()}:", timeout=0.5)
    local = _service(pki)
    l2 = _service(pki, shared=RedisCertificateStore(state))
    replay = _service(
        pki, shared=RedisCertificateStore(state), guard=RedisReplay(state, ReplayWindow(60), 60)
    )
    identity = sign_shaken(key=pki.leaf_key, x5u=X5U, orig=ORIG, dest=DEST, attest="A", now=NOW)
    context = SipContext(identity=(identity,), from_header=f"<tel:+{ORIG}>", to=f"<tel:+{DEST}>")
    loop = asyncio.new_event_loop()

    def case(service: VerificationService, check: bool = True) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            result = await service.verify(context, now=NOW)
            if check and not result.verified:
                raise AssertionError(result.reason)

        return run

    cases = {"local": case(local), "l2": case(l2), "replay": case(replay, check=False)}
    for run in cases.values():
        loop.run_until_complete(run())  # warm: the chain fetched and validated once
    sizes = {}
    for name, run in cases.items():
        n = 200
        while True:
            rate = _block(run, loop, n)
            if n / rate > 0.1:
                break
            n *= 2
        sizes[name] = n
    samples: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    for i in range(rounds):
        for name in order if i % 2 == 0 else reversed(order):
            samples[name].append(_block(cases[name], loop, sizes[name]))
    loop.run_until_complete(state.aclose())
    loop.close()
    median = {name: statistics.median(values) for name, values in samples.items()}
    paired = [a / b for a, b in zip(samples["l2"], samples["local"], strict=True)]
    return {
        "verify_local_per_s": round(median["local"]),
        "verify_l2_per_s": round(median["l2"]),
        "verify_replay_per_s": round(median["replay"]),
        "l2_ratio": round(median["l2"] / median["local"], 3),
        "l2_ratio_paired": round(statistics.median(paired), 3),
        "replay_ratio": round(median["replay"] / median["local"], 3),
        "l2_hits": l2.cache.hits,
        "l2_fetches": l2.cache.fetches,
    }


def _records(n: int) -> list[CallRecord]:
    base = NOW.timestamp()
    return [
        CallRecord(
            time=base + i / 1000,
            direction="verify",
            interface="sip",
            call_id=f"bench-{i}@example",
            orig=ORIG,
            dest=DEST,
            attest="A",
            verstat="TN-Validation-Passed",
            x5u=X5U,
            latency_ms=0.3,
            source_ip="192.0.2.1",
            source_port=5060,
            presented_from=f"<sip:+{ORIG}@example.net>;tag=a{i}",
            presented_to=f"<sip:+{DEST}@example.net>",
            request_uri=f"sip:+{DEST}@example.net",
        )
        for i in range(n)
    ]


def _flood(log: SqliteCallLog | PostgresCallLog, records: list[CallRecord]) -> float:
    started = time.perf_counter()
    for record in records:
        log.record(record)
    log.flush()
    while log.written + log.dropped < len(records):
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    if log.dropped:
        raise AssertionError(f"{log.dropped} records dropped in the flood")
    return len(records) / elapsed


def _paced(
    log: SqliteCallLog | PostgresCallLog, records: list[CallRecord], rate: int
) -> dict[str, Any]:
    """``rate`` records a second in 10 ms ticks; the highest backlog (records queued and not
    yet committed) and whether all were committed."""
    per_tick = rate // 100
    before = log.written
    highest = 0
    started = time.perf_counter()
    for tick, start in enumerate(range(0, len(records), per_tick)):
        for record in records[start : start + per_tick]:
            log.record(record)
        highest = max(highest, start + per_tick - (log.written - before))
        pause = started + (tick + 1) * 0.01 - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    log.flush()
    deadline = time.perf_counter() + 60
    while log.written - before < len(records) and time.perf_counter() < deadline:
        time.sleep(0.005)
    return {
        "offered_per_s": round(len(records) / (time.perf_counter() - started)),
        "highest_backlog": highest,
        "dropped": log.dropped,
        "kept_up": log.written - before == len(records) and log.dropped == 0,
    }


def writers(count: int, seconds: int) -> dict[str, Any]:
    import psycopg

    schema = f"bench_{os.getpid()}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    directory = Path(tempfile.mkdtemp(prefix="shaken-bench-"))
    out: dict[str, Any] = {}
    try:
        url = with_schema(POSTGRES_URL, schema)
        makers: dict[str, Callable[[], SqliteCallLog | PostgresCallLog]] = {
            "sqlite": lambda: SqliteCallLog(directory / "calls.sqlite", max_pending=10**7),
            "postgresql": lambda: PostgresCallLog(
                url, spool=directory / "spool.sqlite", max_pending=10**7
            ),
        }
        for name, make in makers.items():
            log = make()
            try:
                out[f"{name}_flood_per_s"] = round(_flood(log, _records(count)))
                paced = _paced(log, _records(RATE * seconds), RATE)
                out.update({f"{name}_at_{RATE}_{k}": v for k, v in paced.items()})
            finally:
                log.close()
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    out["writer_ratio"] = round(out["postgresql_flood_per_s"] / out["sqlite_flood_per_s"], 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {1 if (os.cpu_count() or 1) > 1 else 0})
    figures: dict[str, Any] = {}
    figures.update(verification(rounds=5 if args.quick else 31))
    figures.update(
        writers(count=20_000 if args.quick else 200_000, seconds=2 if args.quick else 10)
    )
    for name, value in figures.items():
        print(f"{name:40} {value}", file=sys.stderr)
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"l2_ratio={figures['l2_ratio']} writer_ratio={figures['writer_ratio']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
