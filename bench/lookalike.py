"""Chain validation against look-alike CAs: work, wall time and event-loop stalls (issue 17.1).

Run it with ``.venv/bin/python bench/lookalike.py`` (``--n 4 8 90`` to choose the sizes,
``--timeout S`` to stop a size that takes longer, ``--json`` for one JSON object on stdout; the
table goes to stderr).

For each n, a leaf and n look-alike CAs that share one name and one key and never reach an
anchor (``tests/support/lookalikes.py``) are validated against the test PKI's anchors, in a
fresh subprocess so a size that runs away can be stopped. ``--shape own`` (the default) gives
them a name of their own; ``--shape root`` gives them the root's name, so every one of them
names an anchor as its issuer and only signature checks tell them apart:

* ``core``: :func:`shaken.core.chain.validate_chain` alone; ``checks`` is the number of
  signature checks the explanation search made (counted by wrapping its one signature-check
  helper), ``budget`` what the validation budget accounted (the verifier's share included),
  when the code has one;
* ``service``: ``CertificateCache.get`` of the same body over a fake fetcher, while a ticker
  coroutine on the same event loop sleeps 1 ms at a time; ``stall`` is the longest the ticker
  waited beyond its 1 ms, i.e. how long the loop that answers other calls was blocked.

Wall times are for comparison within one run on one machine, not thresholds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
URL = "https://cr.example.test/lookalike.pem"
SIZES = (4, 5, 6, 7, 8, 16, 32, 64, 90)


def _support() -> Any:
    """The look-alike builder is the tests' helper; bench/ runs from the repository root."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.support import lookalikes

    return lookalikes


def _measure(n: int, shape: str, out: Connection) -> None:
    from shaken.core import chain
    from shaken.core.errors import ChainError
    from shaken.services.cert_cache import (
        CacheSettings,
        CertificateCache,
        RevocationMode,
    )
    from shaken.services.trust import TrustStore
    from shaken.testing import make_sti_pki

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.support.fakes import FakeFetcher, ManualClock, Reply

    pki = make_sti_pki(NOW)
    name = pki.root.subject if shape == "root" else "Look-alike STI-CA (TEST ONLY)"
    built = _support().lookalike_chain(n, NOW, name=name)
    counted = {"checks": 0}
    original = chain._issued_by

    def counting(child: Any, parent: Any) -> bool:
        counted["checks"] += 1
        return original(child, parent)

    chain._issued_by = counting  # type: ignore[assignment]
    kwargs: dict[str, Any] = {}
    budget_type = getattr(chain, "ValidationBudget", None)
    budget = budget_type() if budget_type is not None else None
    if budget is not None:
        kwargs["budget"] = budget
    started = time.perf_counter()
    try:
        chain.validate_chain(list(built.certificates), pki.trust_anchors, at=NOW, **kwargs)
        reason = "valid"
    except ChainError as exc:
        reason = f"{exc.reason.value}: {exc.detail[:90]}"
    core_seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "n": n,
        "body_bytes": len(built.pem),
        "core_seconds": core_seconds,
        "checks": counted["checks"],
        "budget": None if budget is None else budget.spent,
        "reason": reason,
    }
    out.send(("core", result))

    async def service() -> tuple[float, float]:
        fetcher = FakeFetcher({URL: Reply(body=built.pem)})
        cache = CertificateCache(
            fetcher,
            TrustStore(pki.trust_anchors, (pki.sti_pa,)),
            settings=CacheSettings(revocation=RevocationMode.OFF),
            clock=ManualClock(NOW),
        )
        stall = 0.0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal stall
            while not done.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.001)
                stall = max(stall, time.perf_counter() - before - 0.001)

        tick = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.01)
        begun = time.perf_counter()
        await cache.get(URL, now=NOW)
        elapsed = time.perf_counter() - begun
        done.set()
        await tick
        return elapsed, stall

    elapsed, stall = asyncio.run(service())
    result.update(service_seconds=elapsed, stall_seconds=stall)
    out.send(("service", result))


def run(n: int, shape: str, timeout: float) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_measure, args=(n, shape, send), daemon=True)
    process.start()
    send.close()
    result: dict[str, Any] = {"n": n, "shape": shape}
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not receive.poll(left):
            result["timed_out"] = timeout
            break
        try:
            stage, values = receive.recv()
        except EOFError:
            break
        result.update(values)
        if stage == "service":
            break
    process.kill()
    process.join()
    return result


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}{unit}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per size (60)")
    parser.add_argument("--shape", choices=("own", "root"), default="own")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [run(n, args.shape, args.timeout) for n in args.n]
    header = f"{'n':>4} {'bytes':>7} {'checks':>9} {'budget':>7} {'core':>9} {'service':>9} "
    header += f"{'stall':>8}  reason"
    print(header, file=sys.stderr)
    for row in rows:
        timed_out = f"(stopped after {row['timed_out']:g} s)" if "timed_out" in row else ""
        print(
            f"{row['n']:>4} {_fmt(row.get('body_bytes')):>7} {_fmt(row.get('checks')):>9} "
            f"{_fmt(row.get('budget')):>7} {_fmt(row.get('core_seconds'), 's'):>9} "
            f"{_fmt(row.get('service_seconds'), 's'):>9} {_fmt(row.get('stall_seconds'), 's'):>8}"
            f"  {row.get('reason', '')} {timed_out}",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps({"lookalike": rows}))


if __name__ == "__main__":
    main()
