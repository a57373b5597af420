"""Fetch amplification is bounded per request, per source and in total (issue 17 item 6).

"One INVITE with 100 Identity headers and 100 x5u URLs made 100 HTTPS fetches; five such
INVITEs at slow URLs took a worker from 17 to 517 descriptors." Against a real HTTPS
repository on loopback whose answers never come in time: the work is counted (requests the
fetcher sent, connections the server accepted), and every request over a bound is answered
with a named Reason at once, while the admitted fetches are still waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shaken.adapters.fetch import FetchLimits, HttpsFetcher
from shaken.core.context import SipContext
from shaken.core.reasons import Reason
from shaken.core.result import VerificationResult
from shaken.core.sign import sign_shaken
from shaken.core.verify import SHAKEN, VerificationProfile
from shaken.core.x5u import X5uPolicy
from shaken.services.cert_cache import CacheSettings, CertificateCache, RevocationMode
from shaken.services.trust import TrustStore
from shaken.services.verification import VerificationService
from shaken.testing import StiPki, make_sti_pki
from tests.support.fakes import ManualClock
from tests.support.https import RepositoryServer, Route, mapping_resolver

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
ORIG, DEST = "12025550100", "12025550101"
CR = "cr.example.test"
#: The repository holds every answer this long; the fetcher gives up much earlier.
SLOW = 60.0
FETCH_TIMEOUT = 2.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server() -> Iterator[RepositoryServer]:
    with RepositoryServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def pki() -> StiPki:
    return make_sti_pki(NOW)


def _slow_url(server: RepositoryServer, pki: StiPki, name: str) -> str:
    return server.url(server.route(f"/slow/{name}.pem", Route(body=pki.chain_pem, delay=SLOW)))


def _identity(pki: StiPki, url: str) -> str:
    return sign_shaken(
        key=pki.leaf_key, x5u=url, orig=ORIG, dest=DEST, attest="A", iat=int(NOW.timestamp())
    )


def _context(*identities: str) -> SipContext:
    return SipContext(identity=identities, from_header=f"<tel:+{ORIG}>", to=f"<tel:+{DEST}>")


def _service(
    server: RepositoryServer, pki: StiPki, settings: CacheSettings
) -> tuple[VerificationService, HttpsFetcher]:
    resolver, _ = mapping_resolver({CR: "127.0.0.1"})
    policy = X5uPolicy(allowed_hosts=(CR,), allowed_ports=(server.port,))
    fetcher = HttpsFetcher(
        policy=policy,
        resolver=resolver,
        tls_ca_file=server.ca_file,
        limits=FetchLimits(timeout=FETCH_TIMEOUT),
    )
    cache = CertificateCache(
        fetcher,
        TrustStore(pki.trust_anchors, (pki.sti_pa,)),
        settings=replace(settings, revocation=RevocationMode.OFF),
        clock=ManualClock(NOW),
    )
    profile: VerificationProfile = replace(SHAKEN, x5u_policy=policy)
    return VerificationService(cache, profile=profile), fetcher


@pytest.mark.anyio
async def test_17_6_one_invite_with_100_identity_headers_starts_at_most_4_fetches(
    server: RepositoryServer, pki: StiPki
) -> None:
    urls = [_slow_url(server, pki, f"many-{i}") for i in range(100)]
    service, fetcher = _service(server, pki, CacheSettings())
    before = server.connections
    async with fetcher:
        result = await asyncio.wait_for(
            service.verify(_context(*(_identity(pki, u) for u in urls)), now=NOW, source="peer"),
            60,
        )
    assert fetcher.requests == 4  # SHAKEN.max_certificate_urls
    assert server.connections - before == 4
    assert not result.verified and result.reason is Reason.CERT_FETCH_FAILED
    details = [h.failure or "" for h in result.trace.headers]
    assert all("took longer than" in d for d in details[:4])
    assert all("names more than 4 distinct certificate URLs" in d for d in details[4:10])
    assert all("not examined: only the first 10 of the 100 headers" in d for d in details[10:])
    await service.cache.aclose()


@pytest.mark.anyio
async def test_17_6_cold_fetches_are_bounded_per_source_and_in_total(
    server: RepositoryServer, pki: StiPki
) -> None:
    settings = CacheSettings(max_fetches_per_source=3, max_fetches_in_flight=5)
    service, fetcher = _service(server, pki, settings)
    calls = [("A", _slow_url(server, pki, f"a-{i}")) for i in range(4)]
    calls += [("B", _slow_url(server, pki, f"b-{i}")) for i in range(4)]
    before = server.connections
    async with fetcher:
        tasks = [
            asyncio.ensure_future(
                service.verify(_context(_identity(pki, url)), source=src, now=NOW)
            )
            for src, url in calls
        ]
        # The refused ones are answered at once, while the admitted fetches still wait.
        refused: list[VerificationResult] = []
        for finished in asyncio.as_completed(tasks, timeout=60):
            result = await finished
            if "not fetched" not in (result.detail or ""):
                break
            refused.append(result)
            assert service.cache.fetches_in_flight == 5
        results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    by_source = {
        src: [r.detail or "" for (s, _), r in zip(calls, results, strict=True) if s == src]
        for src in ("A", "B")
    }
    assert all(r.reason is Reason.CERT_FETCH_FAILED for r in results)
    assert len(refused) == 3
    assert fetcher.requests == 5 and server.connections - before == 5
    assert sum("took longer than" in d for d in by_source["A"]) == 3
    assert "the limit per source" in by_source["A"][3]
    assert sum("took longer than" in d for d in by_source["B"]) == 2
    assert all("the limit in all" in d for d in by_source["B"][2:])
    assert service.cache.fetches_refused == 3 and service.cache.fetches_in_flight == 0
    await service.cache.aclose()


@pytest.mark.anyio
async def test_17_6_a_refused_fetch_is_not_remembered_against_the_url(
    server: RepositoryServer, pki: StiPki
) -> None:
    """Once the slots are free the same URL is fetched: refusal was our load, not its fault."""
    settings = CacheSettings(max_fetches_per_source=1)
    service, fetcher = _service(server, pki, settings)
    slow = _slow_url(server, pki, "held")
    good = server.url(server.route("/fast/sp.pem", Route(body=pki.chain_pem)))
    async with fetcher:
        # Tasks start in order, so the slow fetch takes the source's one slot first.
        held = asyncio.ensure_future(
            service.verify(_context(_identity(pki, slow)), source="C", now=NOW)
        )
        first = await asyncio.ensure_future(
            service.verify(_context(_identity(pki, good)), source="C", now=NOW)
        )
        assert first.reason is Reason.CERT_FETCH_FAILED and "not fetched" in (first.detail or "")
        await asyncio.wait_for(held, 60)
        second = await service.verify(_context(_identity(pki, good)), source="C", now=NOW)
    assert second.verified
    await service.cache.aclose()
