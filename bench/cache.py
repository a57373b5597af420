"""The certificate cache: the cold path over real HTTPS on loopback, and the warm hit overhead.

Run it with ``.venv/bin/python bench/cache.py`` (``--quick`` for a smoke run, ``--json`` for one
JSON object on stdout; the table goes to stderr).

Cold path (latency percentiles, one verification at a time): a loopback HTTPS repository (the
test server of ``tests/support/https.py``, TLS from a throwaway CA, in its own process on the
other CPU so that it does not share our GIL) serves the x5u chain and the STI-PA CRL; an
injected resolver maps the lab names to 127.0.0.1. Each sample purges the caches and times
``await VerificationService.verify(context)``: x5u policy, resolution and address check, a new
TCP connection, the TLS handshake, the GET, chain validation, the CRL fetch (``cold+crl``) or
not (``cold``: the CRL still cached), validation with the CRL, then the signature. ``fetch``
and ``validate`` time the two big pieces alone.

Warm path (per-verification cost, ratio in the same run): ``await
VerificationService.verify(context)`` with the chain in the cache, against the core fast path
the service itself calls, ``begin(context, {x5u: validated}.get, now=)``, on the
same inputs. The difference is what the cache and the service add per verification (the
coroutine, a closure, the dict lookup and its freshness checks), reported as a share of the
service's whole warm verification. ``core verify`` (the public entry point with the same
certificate) and ``lookup`` alone are shown beside it. Method as in ``bench/core.py``: pinned
to one CPU, calibrated blocks, alternating rounds, medians.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import shaken
from shaken.adapters.fetch import HttpsFetcher
from shaken.core.context import SipContext
from shaken.core.sign import sign_shaken
from shaken.core.verify import SHAKEN, begin, validate_certificate, verify
from shaken.core.x5u import X5uPolicy
from shaken.services.cert_cache import CacheSettings, CertificateCache, RevocationMode
from shaken.services.trust import TrustStore
from shaken.services.verification import VerificationService
from shaken.testing import StiPki, make_sti_pki

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
ORIG = "12025550100"
DEST = "12025550101"
CR = "cr.example.test"
PA = "sti-pa.example.test"


@dataclass(frozen=True, slots=True)
class Mode:
    cold_samples: int
    rounds: int
    block_s: float
    warmup_s: float


FULL = Mode(cold_samples=400, rounds=31, block_s=0.100, warmup_s=0.5)
QUICK = Mode(cold_samples=60, rounds=9, block_s=0.040, warmup_s=0.1)


# --------------------------------------------------------------------------------------------
# The repository, in its own process


def _test_server_module() -> Any:
    """The loopback repository is the tests' helper; bench/ runs from the repository root."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.support import https

    return https


def _serve(
    conn: Connection, sock: socket.socket, routes: dict[str, tuple[bytes, str]], cpu: int | None
) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    https = _test_server_module()
    with https.RepositoryServer(sock=sock) as server:
        for path, (body, content_type) in routes.items():
            server.route(path, https.Route(body=body, headers={"Content-Type": content_type}))
        conn.send(server.ca_file)
        conn.recv()  # told to stop
        conn.send({path: server.count(path) for path in routes})


@dataclass(slots=True)
class Repository:
    process: Any
    conn: Connection
    port: int
    ca_file: str

    def stop(self) -> dict[str, int]:
        self.conn.send("stop")
        counts: dict[str, int] = self.conn.recv()
        self.process.join(10)
        return counts


def start_repository(
    sock: socket.socket, routes: dict[str, tuple[bytes, str]], cpu: int | None
) -> Repository:
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_serve, args=(child, sock, routes, cpu), daemon=True)
    process.start()
    ca_file = parent.recv()
    return Repository(process, parent, sock.getsockname()[1], ca_file)


# --------------------------------------------------------------------------------------------
# Measurement


def percentiles(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "p50": statistics.median(samples),
        "p90": qs[89],
        "p99": qs[98],
        "min": min(samples),
        "max": max(samples),
    }


@dataclass(slots=True)
class Case:
    key: str
    label: str
    block: Callable[[int], Awaitable[int]]  # runs n operations, returns elapsed ns
    per_block: int = 1
    samples: list[float] = field(default_factory=list)

    @property
    def us(self) -> float:
        """Median over rounds."""
        return 1e6 / statistics.median(self.samples)

    @property
    def best_us(self) -> float:
        """Fastest round: on a shared machine noise only ever adds time."""
        return 1e6 / max(self.samples)


async def measure(
    mode: Mode, log: Callable[[str], None], repo: Repository, pki: StiPki, crl: bytes
) -> dict[str, Any]:
    https = _test_server_module()
    url = f"https://{CR}:{repo.port}/sp.pem"
    policy = X5uPolicy(allowed_hosts=(CR, PA), allowed_ports=(repo.port,))
    profile = replace(SHAKEN, x5u_policy=policy)
    resolver, _ = https.mapping_resolver({CR: "127.0.0.1", PA: "127.0.0.1"})
    value = sign_shaken(
        key=pki.leaf_key, x5u=url, orig=ORIG, dest=DEST, attest="A", iat=int(NOW.timestamp())
    )
    context = SipContext(identity=(value,), from_header=f"<tel:{ORIG}>", to=f"<tel:{DEST}>")
    trust = TrustStore(pki.trust_anchors, (pki.sti_pa,))
    counter = time.perf_counter_ns

    async with HttpsFetcher(policy=policy, resolver=resolver, tls_ca_file=repo.ca_file) as fetcher:
        cache = CertificateCache(
            fetcher, trust, settings=CacheSettings(revocation=RevocationMode.SOFT), profile=profile
        )
        service = VerificationService(cache)
        first = await service.verify(context, now=NOW)
        if not first.verified or first.findings:
            raise SystemExit(f"the fixture does not verify cleanly: {first.reason} {first.detail}")

        # ------------------------------------------------------------------- cold path
        cold: dict[str, list[float]] = {"cold+crl": [], "cold": [], "fetch": [], "validate": []}
        for i in range(mode.cold_samples):
            cache.purge()
            cache.crl_cache.purge()
            t0 = counter()
            result = await service.verify(context, now=NOW)
            cold["cold+crl"].append((counter() - t0) / 1e6)
            cache.purge()
            t0 = counter()
            again = await service.verify(context, now=NOW)
            cold["cold"].append((counter() - t0) / 1e6)
            if not (result.verified and again.verified):
                raise SystemExit("a cold verification failed")
            t0 = counter()
            await fetcher.fetch(url)
            cold["fetch"].append((counter() - t0) / 1e6)
            t0 = counter()
            validate_certificate(
                pki.chain_pem,
                pki.trust_anchors,
                now=NOW,
                profile=profile,
                crls=[crl],
                crl_signers=[pki.sti_pa],
            )
            cold["validate"].append((counter() - t0) / 1e6)
            if (i + 1) % 100 == 0:
                log(f"  cold sample {i + 1}/{mode.cold_samples}")

        # ------------------------------------------------------------------- warm path
        await service.verify(context, now=NOW)
        validated = cache.lookup(url, NOW)
        assert validated is not None
        certificates = {url: validated}
        service_verify, lookup = service.verify, cache.lookup

        async def warm_service(n: int) -> int:
            t0 = counter()
            for _ in range(n):
                await service_verify(context, now=NOW)
            return counter() - t0

        async def warm_core(n: int) -> int:
            t0 = counter()
            for _ in range(n):
                verify(context, certificates, None, now=NOW, profile=profile)
            return counter() - t0

        get = certificates.get

        async def warm_fast_path(n: int) -> int:
            t0 = counter()
            for _ in range(n):
                begin(context, get, now=NOW, profile=profile)
            return counter() - t0

        async def lookup_only(n: int) -> int:
            t0 = counter()
            for _ in range(n):
                lookup(url, NOW)
            return counter() - t0

        async def nothing() -> None:
            return None

        async def coroutine_and_closure(n: int) -> int:
            # What the service adds around the lookup: one awaited coroutine, one closure.
            t0 = counter()
            for _ in range(n):
                await nothing()

                def closure(u: str) -> str:
                    return u

                closure(url)
            return counter() - t0

        async def clock_read(n: int) -> int:
            t0 = counter()
            for _ in range(n):
                datetime.now(UTC)
            return counter() - t0

        if not (await service.verify(context, now=NOW)).verified:
            raise SystemExit("the warm service fixture does not verify")
        if verify(context, certificates, None, now=NOW, profile=profile) != first:
            raise SystemExit("the core and the service disagree")
        cases = [
            Case("warm_service", "VerificationService.verify, cache hit", warm_service),
            Case("warm_core", "core verify, validated certificate in hand", warm_core),
            Case("warm_fast", "core begin alone (the fast path, the baseline)", warm_fast_path),
            Case("lookup", "CertificateCache.lookup alone", lookup_only),
            Case("wrapper", "an awaited coroutine + a closure", coroutine_and_closure),
            Case("clock", "datetime.now(UTC), the clock read", clock_read),
        ]
        for case in cases:
            n, spent, done = 1, 0, 0
            while spent < mode.warmup_s * 1e9:
                spent += await case.block(n)
                done += n
                n = min(n * 2, max(1, done))
            case.per_block = max(1, round(mode.block_s * 1e9 / (spent / done)))
        gc.collect()
        gc.freeze()
        for r in range(mode.rounds):
            for case in cases if r % 2 == 0 else cases[::-1]:
                ns = await case.block(case.per_block)
                case.samples.append(case.per_block * 1e9 / ns)
            if (r + 1) % 10 == 0:
                log(f"  warm round {r + 1}/{mode.rounds}")
        gc.unfreeze()

    by = {c.key: c for c in cases}
    # The baseline is the core's fast path itself: the very work the service delegates to.
    service_us, core_us = by["warm_service"].us, by["warm_fast"].us
    paired = statistics.median(
        1 - s / c for s, c in zip(by["warm_service"].samples, by["warm_fast"].samples, strict=True)
    )
    best_service, best_core = by["warm_service"].best_us, by["warm_fast"].best_us
    parts = by["lookup"].us + by["wrapper"].us
    return {
        "cold_ms": {k: percentiles(v) for k, v in cold.items()},
        "cold_samples": mode.cold_samples,
        "warm_us": {c.key: c.us for c in cases},
        "warm_best_us": {c.key: c.best_us for c in cases},
        "warm_overhead_best_us": best_service - best_core,
        "warm_overhead_best_share": (best_service - best_core) / best_service,
        "warm_overhead_parts_us": parts,
        "warm_overhead_parts_share": parts / service_us,
        "warm_labels": {c.key: c.label for c in cases},
        "warm_overhead_us": service_us - core_us,
        "warm_overhead_share": (service_us - core_us) / service_us,
        "warm_overhead_share_paired": paired,
    }


def report(result: dict[str, Any], log: Callable[[str], None]) -> None:
    log("")
    log(f"== cold path, {result['cold_samples']} samples each (ms) ==")
    log(f"  {'case':<10} {'p50':>7} {'p90':>7} {'p99':>7} {'min':>7} {'max':>7}")
    for key, p in result["cold_ms"].items():
        log(
            f"  {key:<10} {p['p50']:7.2f} {p['p90']:7.2f} {p['p99']:7.2f}"
            f" {p['min']:7.2f} {p['max']:7.2f}"
        )
    log("")
    log("== warm path (us per call: median over rounds, fastest round) ==")
    for key, us in result["warm_us"].items():
        best = result["warm_best_us"][key]
        log(f"  {result['warm_labels'][key]:<46} {us:8.2f} us {best:8.2f} us")
    log("  cache + service overhead per verification, as a share of a warm service verification:")
    log(
        f"    medians       {result['warm_overhead_us']:6.2f} us = "
        f"{result['warm_overhead_share']:6.1%}"
        f" (paired median {result['warm_overhead_share_paired']:.1%})"
    )
    log(
        f"    fastest round {result['warm_overhead_best_us']:6.2f} us = "
        f"{result['warm_overhead_best_share']:6.1%}"
    )
    log(
        f"    by its parts  {result['warm_overhead_parts_us']:6.2f} us = "
        f"{result['warm_overhead_parts_share']:6.1%} (lookup + awaited coroutine + closure)"
    )
    log(f"  repository request counts: {result['repository_requests']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    client_cpu = cpus[-1] if cpus else None
    server_cpu = cpus[0] if len(cpus) > 1 else None
    # The listening socket exists before the PKI, so the CRL Distribution Point can name it.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    pki = make_sti_pki(NOW, crl_url=f"https://{PA}:{port}/crl")
    crl = pki.sti_pa_crl()
    routes = {
        "/sp.pem": (pki.chain_pem, "application/pem-certificate-chain"),
        "/crl": (crl, "application/pkix-crl"),
    }
    repo = start_repository(sock, routes, server_cpu)
    sock.close()  # the server process holds its own copy
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    log(
        f"client on CPU {client_cpu}, repository on CPU {server_cpu}; nproc {os.cpu_count()};"
        f" python {platform.python_version()}; shaken {shaken.__version__}"
    )
    try:
        result = asyncio.run(measure(mode, log, repo, pki, crl))
    finally:
        counts = repo.stop()
    result["repository_requests"] = counts
    result["machine"] = {
        "client_cpu": client_cpu,
        "server_cpu": server_cpu,
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    report(result, log)
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
