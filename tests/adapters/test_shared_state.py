"""Redis as the shared layer, against a real Redis: the certificate cache's second level, the
replay window and API-key rates across instances, and what a Redis that is down does.

"Instances" here are separate caches, services and keyrings, each with its own Redis client,
as separate processes would have; ``tests/interop/test_scale_out.py`` runs real processes.
Each test uses a random key prefix; the tests that stop Redis run a private ``redis-server``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shaken.adapters.fetch import FetchLimits, HttpsFetcher
from shaken.adapters.http.auth import ApiKey, Keyring
from shaken.adapters.shared_state import (
    RedisCertificateStore,
    RedisRateLimit,
    RedisReplay,
    RedisSharedState,
    redacted_url,
)
from shaken.core.context import SipContext
from shaken.core.reasons import Reason
from shaken.core.sign import sign_shaken
from shaken.core.verify import SHAKEN, ReplayWindow, ValidatedCertificate
from shaken.core.x5u import X5uPolicy
from shaken.services.cert_cache import CacheSettings, CertificateCache, RevocationMode
from shaken.services.trust import TrustStore
from shaken.services.verification import VerificationService
from shaken.testing import StiPki, make_sti_pki
from tests.support.fakes import ManualClock
from tests.support.https import RepositoryServer, Route, mapping_resolver
from tests.support.servers import REDIS_URL, PrivateRedis, free_port, redis_prefix

pytest.importorskip("redis", reason="redis (the Python client) is not installed")

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
ORIG, DEST = "12025550100", "12025550101"
CR = "cr.example.test"


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


@pytest.fixture
def prefix() -> Iterator[str]:
    with redis_prefix() as value:
        yield value


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.close()


class Instance:
    """What one instance holds: its own Redis client, fetcher, cache and verifier."""

    def __init__(
        self,
        server: RepositoryServer,
        pki: StiPki,
        url: str,
        prefix: str,
        *,
        replay: bool = False,
        timeout: float = 3.0,
    ) -> None:
        self.state = RedisSharedState(url, prefix=prefix, timeout=timeout, retry_interval=0.2)
        resolver, _ = mapping_resolver({CR: "127.0.0.1"})
        policy = X5uPolicy(allowed_hosts=(CR,), allowed_ports=(server.port,))
        self.fetcher = HttpsFetcher(
            policy=policy,
            resolver=resolver,
            tls_ca_file=server.ca_file,
            limits=FetchLimits(timeout=5.0),
        )
        self.cache = CertificateCache(
            self.fetcher,
            TrustStore(pki.trust_anchors, (pki.sti_pa,)),
            settings=CacheSettings(revocation=RevocationMode.OFF),
            clock=ManualClock(NOW),
            shared=RedisCertificateStore(self.state),
            claim_seconds=10.0,
        )
        guard = RedisReplay(self.state, ReplayWindow(60), 60) if replay else None
        self.verifier = VerificationService(
            self.cache, profile=replace(SHAKEN, x5u_policy=policy), replay_guard=guard
        )

    async def aclose(self) -> None:
        await self.cache.aclose()
        await self.fetcher.aclose()
        await self.state.aclose()


def _identity(pki: StiPki, url: str, iat: int | None = None) -> str:
    return sign_shaken(
        key=pki.leaf_key,
        x5u=url,
        orig=ORIG,
        dest=DEST,
        attest="A",
        iat=int(NOW.timestamp()) if iat is None else iat,
    )


def _context(identity: str) -> SipContext:
    return SipContext(identity=(identity,), from_header=f"<tel:+{ORIG}>", to=f"<tel:+{DEST}>")


@pytest.fixture
async def three(
    server: RepositoryServer, pki: StiPki, prefix: str
) -> AsyncIterator[list[Instance]]:
    instances = [Instance(server, pki, REDIS_URL, prefix) for _ in range(3)]
    yield instances
    for instance in instances:
        await instance.aclose()


@pytest.mark.anyio
async def test_a_cold_x5u_is_fetched_once_across_instances(
    server: RepositoryServer, pki: StiPki, three: list[Instance]
) -> None:
    # Slow enough that every instance asks while the first fetch is still under way.
    url = server.url(server.route("/cold/one.pem", Route(body=pki.chain_pem, delay=0.5)))
    before = len(server.requests)
    identity = _identity(pki, url)
    results = await asyncio.gather(
        *(three[i % 3].verifier.verify(_context(identity), now=NOW) for i in range(300))
    )
    assert all(r.verified for r in results), {r.reason for r in results}
    assert len(server.requests) - before == 1
    assert sum(i.cache.fetches for i in three) == 1
    assert sum(i.cache.shared_hits for i in three) == 2  # the two that waited, once each


@pytest.mark.anyio
async def test_a_warm_instance_answers_from_memory_and_a_new_one_from_redis(
    server: RepositoryServer, pki: StiPki, three: list[Instance]
) -> None:
    url = server.url(server.route("/cold/two.pem", Route(body=pki.chain_pem)))
    first, second, _ = three
    assert isinstance(await first.cache.get(url, now=NOW), ValidatedCertificate)
    before = len(server.requests)
    assert isinstance(await second.cache.get(url, now=NOW), ValidatedCertificate)
    assert len(server.requests) == before and second.cache.fetches == 0
    assert second.cache.shared_hits == 1
    assert second.cache.lookup(url, NOW) is not None  # now in its memory: the first level


@pytest.mark.anyio
async def test_a_failed_fetch_is_a_negative_entry_for_every_instance(
    server: RepositoryServer, pki: StiPki, three: list[Instance]
) -> None:
    url = server.url(server.route("/gone.pem", Route(status=404, body=b"no")))
    before = len(server.requests)
    answers = [await instance.cache.get(url, now=NOW) for instance in three]
    assert all(getattr(a, "reason", None) is Reason.CERT_FETCH_FAILED for a in answers)
    assert len(server.requests) - before == 1


@pytest.mark.anyio
async def test_what_redis_holds_is_validated_not_trusted(
    server: RepositoryServer, pki: StiPki, three: list[Instance]
) -> None:
    """A chain another party wrote into Redis still has to reach our anchors."""
    from shaken.services.shared import SharedChain

    other = make_sti_pki(NOW)  # a chain from an STI-CA we do not trust
    url = server.url(server.route("/planted.pem", Route(body=pki.chain_pem)))
    store = RedisCertificateStore(three[0].state)
    await store.save(
        url,
        SharedChain(body=other.chain_pem, fetched_at=NOW, expires_at=NOW.replace(year=2027)),
        NOW,
    )
    answer = await three[1].cache.get(url, now=NOW)
    assert getattr(answer, "reason", None) is Reason.CERT_UNTRUSTED


@pytest.mark.anyio
async def test_the_same_passport_at_two_instances_is_refused_at_the_second(
    server: RepositoryServer, pki: StiPki, prefix: str
) -> None:
    url = server.url(server.route("/replay.pem", Route(body=pki.chain_pem)))
    a = Instance(server, pki, REDIS_URL, prefix, replay=True)
    b = Instance(server, pki, REDIS_URL, prefix, replay=True)
    try:
        identity = _identity(pki, url)
        first = await a.verifier.verify(_context(identity), now=NOW)
        second = await b.verifier.verify(_context(identity), now=NOW)
        other = await b.verifier.verify(
            _context(_identity(pki, url, iat=int(NOW.timestamp()) - 1)), now=NOW
        )
    finally:
        await a.aclose()
        await b.aclose()
    assert first.verified
    assert not second.verified and second.reason is Reason.REPLAYED
    assert other.verified  # another PASSporT: not a replay


@pytest.mark.anyio
async def test_an_api_key_has_one_bucket_across_instances(prefix: str) -> None:
    states = [RedisSharedState(REDIS_URL, prefix=prefix, timeout=3.0) for _ in range(3)]
    key = ApiKey(name="carrier", digest=b"\0" * 32, rate_per_second=5.0)
    rings = [Keyring([key], shared=RedisRateLimit(state)) for state in states]
    try:
        now = NOW.timestamp()
        admitted = [await rings[i % 3].admit_shared(key, now) == 0 for i in range(30)]
    finally:
        for state in states:
            await state.aclose()
    assert sum(admitted) == 5  # the burst of one bucket, not of three
    alone = Keyring([key])
    assert sum(alone.admit(key, NOW.timestamp()) == 0 for _ in range(30)) == 5


@pytest.mark.anyio
async def test_redis_down_degrades_to_the_local_forms_and_recovers(
    server: RepositoryServer, pki: StiPki, private_redis: PrivateRedis
) -> None:
    instance = Instance(server, pki, private_redis.url, "t:", replay=True, timeout=0.2)
    state = instance.state
    try:
        url = server.url(server.route("/down.pem", Route(body=pki.chain_pem)))
        assert (await instance.verifier.verify(_context(_identity(pki, url, 1)), now=NOW)).reason
        assert not state.degraded
        private_redis.stop()
        identity = _identity(pki, url)
        started = time.monotonic()
        result = await instance.verifier.verify(_context(identity), now=NOW)
        replayed = await instance.verifier.verify(_context(identity), now=NOW)
        elapsed = time.monotonic() - started
        assert result.verified
        assert replayed.reason is Reason.REPLAYED  # the local window stood in
        assert state.degraded and "degraded" in state.status()
        assert elapsed < 30  # bounded by the timeout, never a hang (no timing asserted)
        assert state.fallbacks >= 1
        private_redis.start()
        deadline = time.monotonic() + 30
        while not await state.probe():
            assert time.monotonic() < deadline, state.status()
            await asyncio.sleep(0.1)
        assert not state.degraded and state.recoveries == 1
        fresh = _identity(pki, url, int(NOW.timestamp()) - 2)
        assert (await instance.verifier.verify(_context(fresh), now=NOW)).verified
    finally:
        await instance.aclose()


@pytest.mark.anyio
async def test_a_redis_that_never_answers_costs_at_most_the_timeout(
    server: RepositoryServer, pki: StiPki
) -> None:
    """A listener that accepts and never answers (a hung Redis): the timeout bounds the wait."""
    import socket

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    try:
        url = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
        instance = Instance(server, pki, url, "t:", timeout=0.2)
        x5u = server.url(server.route("/hung.pem", Route(body=pki.chain_pem)))
        result = await asyncio.wait_for(
            instance.verifier.verify(_context(_identity(pki, x5u)), now=NOW), 30
        )
        assert result.verified and instance.state.degraded
        assert instance.state.last_error == "timed out"
        await instance.aclose()
    finally:
        hung.close()


def test_a_redis_url_password_is_never_shown() -> None:
    assert (
        redacted_url("redis://:s3cret@cache.example:6379/0") == "redis://***@cache.example:6379/0"
    )
    assert "s3cret" not in redacted_url("redis://user:s3cret@h/0")
    assert free_port() > 0
