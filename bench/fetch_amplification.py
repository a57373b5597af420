"""Fetch amplification: descriptors and fetches of INVITEs naming many slow x5u URLs (17.6).

Run it with ``.venv/bin/python bench/fetch_amplification.py`` (``--invites N``, ``--headers N``,
``--json``; the table goes to stderr).

A loopback HTTPS repository (the tests' server of ``tests/support/https.py``, in its own process
so that its sockets are not counted here) holds every answer for 30 s. N INVITEs, each with
``--headers`` Identity headers naming as many distinct x5u URLs on it, are verified at once
through the real HTTPS fetcher and certificate cache, all from one source; the fetch deadline is
5 s. While they are in flight the process's open descriptors (``/proc/self/fd``) are sampled
every 10 ms. Reported: descriptors before and at the peak, the requests the fetcher sent, and
how the verifications ended. Works on code without the per-request and per-source bounds too
(then no ``source`` is passed), for a before/after comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import multiprocessing
import os
import socket
import sys
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CR = "cr.example.test"


def _support() -> Any:
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.support import https

    return https


def _serve(conn: Connection, sock: socket.socket, paths: list[str], body: bytes) -> None:
    # Handlers still holding their 30 s answers are cancelled at the end: not worth a log line.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    https = _support()
    with https.RepositoryServer(sock=sock) as server:
        for path in paths:
            server.route(path, https.Route(body=body, delay=30.0))
        conn.send(server.ca_file)
        conn.recv()


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from shaken.adapters.fetch import FetchLimits, HttpsFetcher
    from shaken.core.context import SipContext
    from shaken.core.sign import sign_shaken
    from shaken.core.verify import SHAKEN
    from shaken.core.x5u import X5uPolicy
    from shaken.services.cert_cache import CacheSettings, CertificateCache, RevocationMode
    from shaken.services.trust import TrustStore
    from shaken.services.verification import VerificationService
    from shaken.testing import make_sti_pki

    pki = make_sti_pki(NOW)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    paths = [f"/slow/{i}/{j}.pem" for i in range(args.invites) for j in range(args.headers)]
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(child, sock, paths, pki.chain_pem), daemon=True)
    server.start()
    ca_file = parent.recv()
    sock.close()

    async def resolve(host: str, _port: int) -> list[str]:
        return ["127.0.0.1"]

    policy = X5uPolicy(allowed_hosts=(CR,), allowed_ports=(port,))
    fetcher = HttpsFetcher(
        policy=policy, resolver=resolve, tls_ca_file=ca_file, limits=FetchLimits(timeout=5.0)
    )
    cache = CertificateCache(
        fetcher,
        TrustStore(pki.trust_anchors),
        settings=CacheSettings(revocation=RevocationMode.OFF),
    )
    service = VerificationService(cache, profile=replace(SHAKEN, x5u_policy=policy))
    takes_source = "source" in inspect.signature(service.verify).parameters

    def invite(i: int) -> SipContext:
        identities = tuple(
            sign_shaken(
                key=pki.leaf_key,
                x5u=f"https://{CR}:{port}/slow/{i}/{j}.pem",
                orig="12025550100",
                dest="12025550101",
                attest="A",
                iat=int(NOW.timestamp()),
            )
            for j in range(args.headers)
        )
        return SipContext(
            identity=identities, from_header="<tel:+12025550100>", to="<tel:+12025550101>"
        )

    invites = [invite(i) for i in range(args.invites)]
    before = _descriptors()
    peak = before
    kwargs: dict[str, Any] = {"source": "198.51.100.7"} if takes_source else {}
    started = time.perf_counter()
    tasks = [asyncio.ensure_future(service.verify(c, now=NOW, **kwargs)) for c in invites]
    while not all(t.done() for t in tasks):
        peak = max(peak, _descriptors())
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    results = [t.result() for t in tasks]
    await fetcher.aclose()
    parent.send("stop")
    server.join(10)
    outcomes = Counter(f"{r.reason.value if r.reason else 'verified'}" for r in results)
    return {
        "invites": args.invites,
        "headers": args.headers,
        "bounds": takes_source,
        "descriptors_before": before,
        "descriptors_peak": peak,
        "requests_sent": fetcher.requests,
        "seconds": elapsed,
        "outcomes": dict(outcomes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--invites", type=int, default=5)
    parser.add_argument("--headers", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    row = asyncio.run(_run(args))
    print(
        f"{row['invites']} INVITEs x {row['headers']} Identity headers (bounds in the code:"
        f" {row['bounds']}): descriptors {row['descriptors_before']} -> peak"
        f" {row['descriptors_peak']}, {row['requests_sent']} HTTPS requests sent,"
        f" {row['seconds']:.1f} s, outcomes {row['outcomes']}",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps({"fetch_amplification": row}))


if __name__ == "__main__":
    main()
