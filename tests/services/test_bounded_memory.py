"""What the caches remember about URLs stays under a ceiling in bytes (issue 17 item 7).

"``CertificateCache._looked_in_store`` keeps every distinct x5u URL forever (+42 MB per
30,000)", and the CRL cache's did the same. The URLs are the caller's choosing, so the
remembered store misses and recent failures are bounded in bytes. The proof is measured, not
only accounted: tracemalloc sees what thousands of distinct failing URLs of 1.4 KB leave
behind once they are done, and it stays under the configured ceilings.
"""

from __future__ import annotations

import gc
import tracemalloc
from datetime import UTC, datetime

import pytest

from shaken.core.errors import CertificateFetchError
from shaken.core.reasons import Reason
from shaken.services._bounded import ByteBoundedLru
from shaken.services.cert_cache import CacheSettings, CertificateCache, RevocationMode
from shaken.services.crl import CrlCache
from shaken.services.ports import FetchedDocument
from shaken.services.trust import TrustStore
from shaken.testing import make_sti_pki
from tests.support.fakes import ManualClock, MemoryStore

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
URLS = 6000
CEILING = 256 * 1024
#: What else a run leaves behind (interned names, the thread pool, allocator slack).
SLACK = 512 * 1024


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Unreachable:
    """A fetcher for which every URL fails, remembering nothing itself."""

    async def fetch(self, url: str, *, etag: str | None = None) -> FetchedDocument:
        raise CertificateFetchError(
            Reason.CERT_FETCH_FAILED, f"{url} answered HTTP 404", url=url, status=404
        )


def _url(i: int) -> str:
    return f"https://cr.example.test/{i:08d}/" + "a" * 1400 + ".pem"


@pytest.mark.anyio
async def test_17_7_certificate_cache_remembers_urls_within_its_ceiling() -> None:
    pki = make_sti_pki(NOW)
    cache = CertificateCache(
        Unreachable(),
        TrustStore(pki.trust_anchors),
        store=MemoryStore(),
        settings=CacheSettings(
            revocation=RevocationMode.OFF, max_failure_bytes=CEILING, max_miss_bytes=CEILING
        ),
        clock=ManualClock(NOW),
    )
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(URLS):
            result = await cache.get(_url(i), now=NOW)
            assert result.reason is Reason.CERT_FETCH_FAILED
        del result
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Unbounded, the store misses alone held every URL: about 6,000 x 1.5 KB = 9 MB.
    assert grown <= 2 * CEILING + SLACK, grown
    assert cache._looked_in_store.bytes <= CEILING
    assert cache._negative.bytes <= CEILING
    # The most recent URLs are still remembered: the bound drops the oldest.
    assert _url(URLS - 1) in cache._looked_in_store and _url(0) not in cache._looked_in_store
    await cache.aclose()


@pytest.mark.anyio
async def test_17_7_crl_cache_remembers_urls_within_its_ceiling() -> None:
    crls = CrlCache(
        Unreachable(), store=MemoryStore(), clock=ManualClock(NOW), max_index_bytes=CEILING
    )
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(URLS):
            await crls.get(_url(i), now=NOW)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown <= 2 * CEILING + SLACK, grown
    assert crls._looked_in_store.bytes <= CEILING and crls._negative.bytes <= CEILING


def test_17_7_the_byte_bound_drops_the_least_recently_used() -> None:
    lru: ByteBoundedLru[int] = ByteBoundedLru(4096)
    for i in range(100):
        lru.put(f"key-{i}", i, size=100)
    assert lru.bytes <= 4096 and 0 < len(lru) < 100
    assert lru.get("key-99") == 99 and "key-0" not in lru
    lru.put("big", -1, size=10_000)  # larger than the ceiling: kept alone
    assert len(lru) == 1 and lru.get("big") == -1
    assert lru.pop("big") == -1 and lru.bytes == 0
    counted: ByteBoundedLru[None] = ByteBoundedLru(1 << 20, max_entries=3)
    for i in range(10):
        counted.put(str(i), None)
    assert len(counted) == 3
