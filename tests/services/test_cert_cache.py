"""The certificate cache service over fake ports: lifetime, single flight, negative and stale
entries, never a worse copy, trust reloads, LRU bounds, persistence and CRLs.

Time is a value here: every call passes ``now``, so a test moves through days without sleeping.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from shaken.core.errors import CertificateFetchError, ConfigurationError, VerificationFailure
from shaken.core.reasons import Reason
from shaken.core.verify import ValidatedCertificate
from shaken.services.cert_cache import (
    CacheSettings,
    CertificateCache,
    RevocationMode,
    entry_expiry,
    http_freshness,
)
from shaken.services.crl import CrlCache, CrlRecord
from shaken.services.ports import DocumentKind, StoredEntry
from shaken.services.trust import TrustStore
from shaken.testing import StiPki, make_sti_pki
from tests.support.fakes import FakeFetcher, ManualClock, MemoryStore, Reply

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
URL = "https://cr.example.test/sp.pem"
CRL_URL = "https://sti-pa.example.test/crl"
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
OFF = CacheSettings(revocation=RevocationMode.OFF)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def pki() -> StiPki:
    return make_sti_pki(NOW)


@pytest.fixture(scope="module")
def other() -> StiPki:
    return make_sti_pki(NOW, spc="5678")


def make_cache(
    fetcher: FakeFetcher,
    pki: StiPki,
    *,
    settings: CacheSettings = OFF,
    store: MemoryStore | None = None,
    trust: TrustStore | None = None,
) -> CertificateCache:
    trust = trust or TrustStore(pki.trust_anchors, (pki.sti_pa,))
    return CertificateCache(fetcher, trust, store=store, settings=settings, clock=ManualClock(NOW))


def expiry_of(cache: CertificateCache, url: str = URL) -> datetime:
    (entry,) = [s for s in cache.snapshot() if s.url == url]
    return entry.expires_at


def _http_date(moment: datetime) -> str:
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")


# ------------------------------------------------------------------------- lifetime (pure)


@pytest.mark.parametrize(
    ("cache_control", "expires", "date", "age", "expected"),
    [
        (None, None, None, None, None),
        ("max-age=3600", None, None, None, HOUR),
        ("public, s-maxage=7200, max-age=60", None, None, None, 2 * HOUR),
        ('max-age="120"', None, None, None, timedelta(seconds=120)),
        ("no-store", None, None, None, None),
        ("max-age=3600", None, None, "600", timedelta(seconds=3000)),
        ("max-age=60", None, None, "600", timedelta(0)),
        (None, _http_date(NOW + 2 * DAY), _http_date(NOW), None, 2 * DAY),
        (None, _http_date(NOW + 3 * HOUR), None, None, 3 * HOUR),  # relative to fetched_at
        ("max-age=bogus", _http_date(NOW + HOUR), _http_date(NOW), None, HOUR),
        (None, "not a date", None, None, timedelta(0)),  # RFC 9111 section 5.3
        ("max-age=60", _http_date(NOW + 9 * DAY), _http_date(NOW), None, timedelta(seconds=60)),
    ],
)
def test_http_freshness(
    cache_control: str | None,
    expires: str | None,
    date: str | None,
    age: str | None,
    expected: timedelta | None,
) -> None:
    got = http_freshness(
        cache_control=cache_control, expires=expires, date=date, age=age, fetched_at=NOW
    )
    assert got == expected


@pytest.mark.parametrize(
    ("http", "not_after", "expected"),
    [
        (None, None, NOW + DAY),  # ATIS-1000074: 24 h when the repository says nothing
        (HOUR, None, NOW + DAY),  # ... or less
        (2 * DAY, None, NOW + 2 * DAY),
        (30 * DAY, None, NOW + 7 * DAY),  # the configurable ceiling
        (2 * DAY, NOW + 5 * HOUR, NOW + 5 * HOUR),  # never past notAfter
    ],
)
def test_entry_expiry(
    http: timedelta | None, not_after: datetime | None, expected: datetime
) -> None:
    got = entry_expiry(now=NOW, http_lifetime=http, not_after=not_after, settings=CacheSettings())
    assert got == expected


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        CacheSettings(min_ttl=DAY, max_ttl=HOUR)
    with pytest.raises(ConfigurationError):
        CacheSettings(max_entries=0)
    with pytest.raises(ConfigurationError):
        CacheSettings(negative_ttl=timedelta(seconds=-1))


# ----------------------------------------------------------------------- hits and lifetime


@pytest.mark.anyio
async def test_cold_then_warm(pki: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem)})
    cache = make_cache(fetcher, pki)
    assert cache.lookup(URL, NOW) is None
    first = await cache.get(URL, now=NOW)
    assert isinstance(first, ValidatedCertificate) and first.spc == "1234"
    assert cache.lookup(URL, NOW) is first
    assert await cache.get(URL, now=NOW + HOUR) is first
    assert fetcher.urls() == [URL] and cache.fetches == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "lifetime"),
    [
        (Reply(), DAY),
        (Reply(cache_control="max-age=3600"), DAY),
        (Reply(cache_control="no-cache, no-store"), DAY),
        (Reply(cache_control="max-age=172800"), 2 * DAY),
        (Reply(cache_control="s-maxage=259200, max-age=60"), 3 * DAY),
        (Reply(cache_control="max-age=9999999"), 7 * DAY),
        (Reply(expires=_http_date(NOW + 2 * DAY), date=_http_date(NOW)), 2 * DAY),
    ],
    ids=["none", "short", "no-store", "long", "s-maxage", "ceiling", "expires"],
)
async def test_lifetime_from_the_response(pki: StiPki, reply: Reply, lifetime: timedelta) -> None:
    reply.body = pki.chain_pem
    cache = make_cache(FakeFetcher({URL: reply}), pki)
    assert isinstance(await cache.get(URL, now=NOW), ValidatedCertificate)
    assert expiry_of(cache) == NOW + lifetime


@pytest.mark.anyio
async def test_lifetime_capped_at_not_after() -> None:
    short = make_sti_pki(NOW, leaf_validity=(DAY, 5 * HOUR))
    reply = Reply(body=short.chain_pem, cache_control="max-age=604800")
    cache = make_cache(FakeFetcher({URL: reply}), short)
    await cache.get(URL, now=NOW)
    assert expiry_of(cache) == short.leaf.not_valid_after_utc


@pytest.mark.anyio
async def test_refetched_after_its_lifetime(pki: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem)})
    cache = make_cache(fetcher, pki)
    await cache.get(URL, now=NOW)
    await cache.get(URL, now=NOW + DAY - timedelta(seconds=1))
    assert len(fetcher.calls) == 1
    assert cache.lookup(URL, NOW + DAY) is None
    assert isinstance(await cache.get(URL, now=NOW + DAY), ValidatedCertificate)
    assert len(fetcher.calls) == 2


# ---------------------------------------------------------------------------- single flight


@pytest.mark.anyio
async def test_one_fetch_however_many_wait(pki: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem)}, gate=asyncio.Event())
    cache = make_cache(fetcher, pki)
    waiting = [asyncio.ensure_future(cache.get(URL, now=NOW)) for _ in range(300)]
    await asyncio.sleep(0.01)
    assert len(fetcher.calls) == 1 and not any(t.done() for t in waiting)
    assert fetcher.gate is not None
    fetcher.gate.set()
    results = await asyncio.gather(*waiting)
    assert len(fetcher.calls) == 1
    assert all(r is results[0] for r in results)
    assert isinstance(results[0], ValidatedCertificate)


@pytest.mark.anyio
async def test_a_caller_giving_up_does_not_cancel_the_fetch(pki: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem)}, gate=asyncio.Event())
    cache = make_cache(fetcher, pki)
    impatient = asyncio.ensure_future(cache.get(URL, now=NOW))
    patient = asyncio.ensure_future(cache.get(URL, now=NOW))
    await asyncio.sleep(0.01)
    impatient.cancel()
    assert fetcher.gate is not None
    fetcher.gate.set()
    assert isinstance(await patient, ValidatedCertificate)
    assert impatient.cancelled() and len(fetcher.calls) == 1


@pytest.mark.anyio
async def test_concurrent_urls_fetch_independently(pki: StiPki, other: StiPki) -> None:
    second = "https://cr.example.test/other.pem"
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem), second: Reply(body=pki.chain_pem)})
    cache = make_cache(fetcher, pki)
    results = await asyncio.gather(*(cache.get(u, now=NOW) for u in (URL, second) * 10))
    assert sorted(fetcher.urls()) == sorted([URL, second])
    assert all(isinstance(r, ValidatedCertificate) for r in results)


# ------------------------------------------------------------------- negative and stale


@pytest.mark.anyio
async def test_failures_are_cached_briefly(pki: StiPki) -> None:
    fetcher = FakeFetcher()
    cache = make_cache(fetcher, pki)
    failure = await cache.get(URL, now=NOW)
    assert isinstance(failure, CertificateFetchError) and failure.fields["status"] == 404
    assert await cache.get(URL, now=NOW + timedelta(seconds=29)) is failure
    assert len(fetcher.calls) == 1
    fetcher.replies[URL] = Reply(body=pki.chain_pem)
    assert isinstance(await cache.get(URL, now=NOW + timedelta(seconds=30)), ValidatedCertificate)
    assert len(fetcher.calls) == 2


@pytest.mark.anyio
async def test_stale_entry_served_while_refresh_fails(pki: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem)})
    cache = make_cache(fetcher, pki)
    good = await cache.get(URL, now=NOW)
    down = CertificateFetchError(Reason.CERT_FETCH_FAILED, "connection refused", url=URL)
    fetcher.replies[URL] = Reply(failure=down)
    later = NOW + DAY + timedelta(minutes=10)
    assert await cache.get(URL, now=later) is good  # refresh failed: stale served
    assert len(fetcher.calls) == 2
    assert await cache.get(URL, now=later + timedelta(seconds=10)) is good  # negative: no fetch
    assert len(fetcher.calls) == 2
    too_late = NOW + DAY + HOUR + timedelta(minutes=1)
    assert await cache.get(URL, now=too_late) is down  # stale_for (1 h) is over
    fetcher.replies[URL] = Reply(body=pki.chain_pem)
    recovered = await cache.get(URL, now=too_late + timedelta(seconds=31))
    assert isinstance(recovered, ValidatedCertificate) and recovered is not good


@pytest.mark.anyio
async def test_stale_never_past_not_after() -> None:
    short = make_sti_pki(NOW, leaf_validity=(DAY, DAY + timedelta(minutes=20)))
    fetcher = FakeFetcher({URL: Reply(body=short.chain_pem)})
    cache = make_cache(fetcher, short)
    await cache.get(URL, now=NOW)
    fetcher.replies.pop(URL)
    assert isinstance(
        await cache.get(URL, now=NOW + DAY + timedelta(minutes=10)), ValidatedCertificate
    )
    # Still inside stale_for, but the leaf has expired: nothing stale is served.
    result = await cache.get(URL, now=NOW + DAY + timedelta(minutes=30))
    assert isinstance(result, VerificationFailure)


@pytest.mark.anyio
async def test_a_chain_that_fails_never_replaces_a_good_one(pki: StiPki, other: StiPki) -> None:
    store = MemoryStore()
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem)})
    cache = make_cache(fetcher, pki, store=store)
    good = await cache.get(URL, now=NOW)
    fetcher.replies[URL] = Reply(body=other.chain_pem)  # a chain we do not trust
    later = NOW + DAY + timedelta(minutes=1)
    assert await cache.get(URL, now=later) is good
    assert store.data[URL].body == pki.chain_pem and store.saves == 1
    result = await cache.get(URL, now=NOW + DAY + 2 * HOUR)
    assert isinstance(result, VerificationFailure) and result.reason is Reason.CERT_UNTRUSTED
    assert store.data[URL].body == pki.chain_pem


@pytest.mark.anyio
async def test_unparseable_body(pki: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=b"<html>oops</html>", content_type="text/html")})
    cache = make_cache(fetcher, pki)
    result = await cache.get(URL, now=NOW)
    assert isinstance(result, VerificationFailure) and result.reason is Reason.CERT_UNPARSEABLE
    assert await cache.get(URL, now=NOW + timedelta(seconds=5)) is result
    assert len(fetcher.calls) == 1
    # Counted by result for the metrics: the Reason, a closed set (never the URL).
    assert cache.fetch_results == {"cert_unparseable": 1}


@pytest.mark.anyio
async def test_content_type_warning_becomes_a_finding(pki: StiPki) -> None:
    reply = Reply(body=pki.chain_pem, warnings=("content_type: served as text/html",))
    cache = make_cache(FakeFetcher({URL: reply}), pki)
    result = await cache.get(URL, now=NOW)
    assert isinstance(result, ValidatedCertificate)
    assert "warning:content_type: served as text/html" in result.findings


@pytest.mark.anyio
async def test_a_der_leaf_alone_has_no_path_to_the_root(pki: StiPki) -> None:
    # A DER body holds one certificate: without the intermediate no path exists.
    der = pki.leaf.public_bytes(Encoding.DER)
    cache = make_cache(FakeFetcher({URL: Reply(body=der)}), pki)
    result = await cache.get(URL, now=NOW)
    assert isinstance(result, VerificationFailure) and result.reason is Reason.CERT_UNTRUSTED


@pytest.mark.anyio
async def test_not_modified_renews_without_a_body(pki: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem, etag='"e1"')})
    store = MemoryStore()
    cache = make_cache(fetcher, pki, store=store)
    good = await cache.get(URL, now=NOW)
    later = NOW + DAY + timedelta(seconds=1)
    assert await cache.get(URL, now=later) is good
    assert fetcher.calls == [(URL, None), (URL, '"e1"')]
    assert expiry_of(cache) == later + DAY
    assert store.data[URL].expires_at == later + DAY and store.saves == 2
    assert cache.fetch_results == {"ok": 1, "not_modified": 1}


# ------------------------------------------------------------------------------- trust


@pytest.mark.anyio
async def test_anchor_reload_revalidates_cached_chains(pki: StiPki, other: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem)})
    trust = TrustStore(pki.trust_anchors)
    cache = make_cache(fetcher, pki, trust=trust)
    good = await cache.get(URL, now=NOW)
    trust.replace(other.trust_anchors)
    assert cache.lookup(URL, NOW) is None
    result = await cache.get(URL, now=NOW)
    assert isinstance(result, VerificationFailure) and result.reason is Reason.CERT_UNTRUSTED
    assert len(fetcher.calls) == 2  # the held copy failed, so the repository was asked again
    trust.replace(pki.trust_anchors)
    again = await cache.get(URL, now=NOW + timedelta(seconds=1))
    assert isinstance(again, ValidatedCertificate) and again is not good
    assert len(fetcher.calls) == 2  # validated from the held bytes, not refetched


@pytest.mark.anyio
async def test_a_held_copy_that_fails_is_replaced_by_a_good_one(pki: StiPki, other: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem)})
    trust = TrustStore(pki.trust_anchors)
    cache = make_cache(fetcher, pki, trust=trust)
    await cache.get(URL, now=NOW)
    trust.replace(other.trust_anchors)
    fetcher.replies[URL] = Reply(body=other.chain_pem)  # the signer moved to the new CA
    result = await cache.get(URL, now=NOW + HOUR)
    assert isinstance(result, ValidatedCertificate) and result.spc == "5678"


@pytest.mark.anyio
async def test_no_anchors_means_untrusted(pki: StiPki) -> None:
    cache = make_cache(FakeFetcher({URL: Reply(body=pki.chain_pem)}), pki, trust=TrustStore())
    result = await cache.get(URL, now=NOW)
    assert isinstance(result, VerificationFailure) and result.reason is Reason.CERT_UNTRUSTED
    assert "no trust anchors" in result.detail


# ------------------------------------------------------------------------------ bounds


async def _until(condition: object, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.005)


@pytest.mark.anyio
async def test_lru_by_entries(pki: StiPki) -> None:
    urls = [f"https://cr.example.test/{n}.pem" for n in "abc"]
    fetcher = FakeFetcher({u: Reply(body=pki.chain_pem) for u in urls})
    store = MemoryStore()
    cache = make_cache(
        fetcher,
        pki,
        settings=CacheSettings(revocation=RevocationMode.OFF, max_entries=2),
        store=store,
    )
    a, b, c = urls
    await cache.get(a, now=NOW)
    await cache.get(b, now=NOW)
    await cache.get(a, now=NOW)  # a is now the most recently used
    await cache.get(c, now=NOW)
    assert [s.url for s in cache.snapshot()] == [a, c] and len(cache) == 2
    await _until(lambda: store.deletes)
    assert store.deletes == [b]  # the store mirrors the bound
    assert cache.lookup(b, NOW) is None


def test_eviction_from_synchronous_code_deletes_at_once(pki: StiPki) -> None:
    store = MemoryStore()
    settings = CacheSettings(revocation=RevocationMode.OFF, max_entries=1)
    cache = make_cache(FakeFetcher(), pki, settings=settings, store=store)
    cache.import_chain("https://cr.example.test/a.pem", pki.chain_pem, now=NOW)
    cache.import_chain("https://cr.example.test/b.pem", pki.chain_pem, now=NOW)
    assert store.deletes == ["https://cr.example.test/a.pem"]
    assert [s.url for s in cache.snapshot()] == ["https://cr.example.test/b.pem"]


@pytest.mark.anyio
async def test_lru_by_bytes(pki: StiPki) -> None:
    urls = [f"https://cr.example.test/{n}.pem" for n in "abc"]
    fetcher = FakeFetcher({u: Reply(body=pki.chain_pem) for u in urls})
    size = len(pki.chain_pem)
    settings = CacheSettings(revocation=RevocationMode.OFF, max_bytes=2 * size + size // 2)
    cache = make_cache(fetcher, pki, settings=settings)
    for url in urls:
        await cache.get(url, now=NOW)
    assert [s.url for s in cache.snapshot()] == urls[1:]
    assert cache.total_bytes == 2 * size


# ------------------------------------------------------------------------- persistence


@pytest.mark.anyio
async def test_a_restart_starts_warm(pki: StiPki) -> None:
    store = MemoryStore()
    await make_cache(FakeFetcher({URL: Reply(body=pki.chain_pem)}), pki, store=store).get(
        URL, now=NOW
    )
    saved = store.data[URL]
    assert saved.body == pki.chain_pem and saved.kind is DocumentKind.CERTIFICATE
    assert saved.expires_at == NOW + DAY
    offline = FakeFetcher()  # the repository is gone
    restarted = make_cache(offline, pki, store=store)
    result = await restarted.get(URL, now=NOW + HOUR)
    assert isinstance(result, ValidatedCertificate) and offline.calls == []
    assert restarted.lookup(URL, NOW + HOUR) is result


@pytest.mark.anyio
async def test_warm_loads_everything(pki: StiPki) -> None:
    store = MemoryStore()
    for n in range(3):
        store.save(
            StoredEntry(
                url=f"https://cr.example.test/{n}.pem",
                body=pki.chain_pem,
                fetched_at=NOW - timedelta(minutes=n),
                expires_at=NOW + DAY,
            )
        )
    store.save(
        StoredEntry(
            url=CRL_URL,
            body=pki.sti_pa_crl(),
            kind=DocumentKind.CRL,
            fetched_at=NOW,
            expires_at=NOW + DAY,
        )
    )
    offline = FakeFetcher()
    cache = make_cache(offline, pki, store=store)
    assert await cache.warm() == 3 and len(cache) == 3
    results = [await cache.get(f"https://cr.example.test/{n}.pem", now=NOW) for n in range(3)]
    assert all(isinstance(r, ValidatedCertificate) for r in results) and offline.calls == []


@pytest.mark.anyio
async def test_an_expired_stored_entry_is_refetched(pki: StiPki) -> None:
    store = MemoryStore()
    store.save(StoredEntry(url=URL, body=pki.chain_pem, fetched_at=NOW - 2 * DAY, expires_at=NOW))
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem)})
    cache = make_cache(fetcher, pki, store=store)
    assert isinstance(await cache.get(URL, now=NOW + HOUR), ValidatedCertificate)
    assert fetcher.urls() == [URL] and store.data[URL].expires_at == NOW + HOUR + DAY


@pytest.mark.anyio
async def test_import_and_purge(pki: StiPki) -> None:
    cache = make_cache(FakeFetcher(), pki)
    cache.import_chain(URL, pki.chain_pem, now=NOW)
    assert isinstance(await cache.get(URL, now=NOW), ValidatedCertificate)
    cache.purge(URL)
    assert len(cache) == 0 and cache.total_bytes == 0
    assert isinstance(await cache.get(URL, now=NOW), VerificationFailure)


# -------------------------------------------------------------------------------- CRLs


def crl_cache_settings(mode: RevocationMode) -> CacheSettings:
    return CacheSettings(revocation=mode)


@pytest.mark.anyio
@pytest.mark.parametrize("which", ["leaf", "intermediate"])
async def test_a_revoked_certificate(pki: StiPki, which: str) -> None:
    serial = pki.leaf.serial_number if which == "leaf" else pki.intermediate.serial_number
    fetcher = FakeFetcher(
        {URL: Reply(body=pki.chain_pem), CRL_URL: Reply(body=pki.sti_pa_crl(revoked=[serial]))}
    )
    cache = make_cache(fetcher, pki, settings=crl_cache_settings(RevocationMode.SOFT))
    result = await cache.get(URL, now=NOW)
    assert isinstance(result, VerificationFailure) and result.reason is Reason.CERT_REVOKED
    assert result.fields["depth"] == (0 if which == "leaf" else 1)
    assert fetcher.urls() == [URL, CRL_URL]


@pytest.mark.anyio
async def test_crl_signed_by_someone_else_does_not_revoke(pki: StiPki, other: StiPki) -> None:
    # other's STI-PA has a different key; its CRL does not apply to pki's certificates.
    forged = other.sti_pa_crl(revoked=[pki.leaf.serial_number])
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem), CRL_URL: Reply(body=forged)})
    cache = make_cache(fetcher, pki, settings=crl_cache_settings(RevocationMode.SOFT))
    assert isinstance(await cache.get(URL, now=NOW), ValidatedCertificate)


@pytest.mark.anyio
async def test_unreachable_crl_soft_reports_and_passes(pki: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem)})
    cache = make_cache(fetcher, pki, settings=crl_cache_settings(RevocationMode.SOFT))
    result = await cache.get(URL, now=NOW)
    assert isinstance(result, ValidatedCertificate)
    (note,) = [f for f in result.findings if "crl_unavailable" in f]
    assert note.startswith("warning:crl_unavailable:") and CRL_URL in note
    # The pass is provisional: after the negative TTL the CRL is tried again.
    assert cache.lookup(URL, NOW + timedelta(seconds=29)) is result
    assert cache.lookup(URL, NOW + timedelta(seconds=31)) is None
    fetcher.replies[CRL_URL] = Reply(body=pki.sti_pa_crl(revoked=[pki.leaf.serial_number]))
    revoked = await cache.get(URL, now=NOW + timedelta(seconds=31))
    assert isinstance(revoked, VerificationFailure) and revoked.reason is Reason.CERT_REVOKED
    # The held copy failed, so the repository was asked for a renewed one (which failed too).
    assert fetcher.urls() == [URL, CRL_URL, CRL_URL, URL]


@pytest.mark.anyio
async def test_unreachable_crl_hard_fails_as_untrusted(pki: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem)})
    cache = make_cache(fetcher, pki, settings=crl_cache_settings(RevocationMode.HARD))
    result = await cache.get(URL, now=NOW)
    assert isinstance(result, VerificationFailure) and result.reason is Reason.CERT_UNTRUSTED
    assert "revocation status cannot be checked" in result.detail
    assert result.fields["cause"] == "crl_unavailable"


@pytest.mark.anyio
async def test_garbage_at_the_crl_url(pki: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem), CRL_URL: Reply(body=b"nope")})
    cache = make_cache(fetcher, pki, settings=crl_cache_settings(RevocationMode.HARD))
    result = await cache.get(URL, now=NOW)
    assert isinstance(result, VerificationFailure) and "does not parse" in result.detail


@pytest.mark.anyio
async def test_no_crl_is_fetched_for_an_untrusted_chain(pki: StiPki, other: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=other.chain_pem)})
    cache = make_cache(fetcher, pki, settings=crl_cache_settings(RevocationMode.HARD))
    result = await cache.get(URL, now=NOW)
    assert isinstance(result, VerificationFailure) and result.reason is Reason.CERT_UNTRUSTED
    assert fetcher.urls() == [URL]


@pytest.mark.anyio
async def test_revocation_off_fetches_no_crl(pki: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem)})
    cache = make_cache(fetcher, pki, settings=crl_cache_settings(RevocationMode.OFF))
    assert isinstance(await cache.get(URL, now=NOW), ValidatedCertificate)
    assert fetcher.urls() == [URL]


@pytest.mark.anyio
async def test_crl_kept_until_next_update_then_rechecked(pki: StiPki) -> None:
    fetcher = FakeFetcher(
        {
            URL: Reply(body=pki.chain_pem),
            CRL_URL: Reply(body=pki.sti_pa_crl(next_update=NOW + HOUR)),
        }
    )
    cache = make_cache(fetcher, pki, settings=crl_cache_settings(RevocationMode.SOFT))
    good = await cache.get(URL, now=NOW)
    assert isinstance(good, ValidatedCertificate)
    assert cache.lookup(URL, NOW + timedelta(minutes=59)) is good
    assert cache.lookup(URL, NOW + HOUR) is None  # the CRL's nextUpdate
    later = NOW + HOUR + timedelta(seconds=1)
    fetcher.replies[CRL_URL] = Reply(
        body=pki.sti_pa_crl(revoked=[pki.leaf.serial_number], at=later)
    )
    result = await cache.get(URL, now=later)
    assert isinstance(result, VerificationFailure) and result.reason is Reason.CERT_REVOKED
    # The CRL was refreshed at its nextUpdate; the chain is asked for again only because the
    # held copy now fails.
    assert fetcher.urls() == [URL, CRL_URL, CRL_URL, URL]


@pytest.mark.anyio
async def test_crl_cache_keeps_the_newer_crl(pki: StiPki) -> None:
    newer = pki.sti_pa_crl(revoked=[pki.leaf.serial_number], at=NOW)
    older = pki.sti_pa_crl(at=NOW - HOUR, next_update=NOW + timedelta(minutes=1))
    fetcher = FakeFetcher({CRL_URL: Reply(body=newer)})
    crls = CrlCache(fetcher, clock=ManualClock(NOW), max_ttl=timedelta(minutes=10))
    first = await crls.get(CRL_URL, now=NOW)
    assert isinstance(first, CrlRecord) and first.revoked == 1
    assert first.fresh_until == NOW + timedelta(minutes=10)  # capped by max_ttl
    fetcher.replies[CRL_URL] = Reply(body=older)  # a replayed, older CRL
    later = NOW + timedelta(minutes=11)
    assert await crls.get(CRL_URL, now=later) is first  # refused; the held one is served stale
    assert crls.record(CRL_URL) is first


@pytest.mark.anyio
async def test_crl_persisted_and_reused_after_restart(pki: StiPki) -> None:
    store = MemoryStore()
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem), CRL_URL: Reply(body=pki.sti_pa_crl())})
    settings = crl_cache_settings(RevocationMode.HARD)
    await make_cache(fetcher, pki, settings=settings, store=store).get(URL, now=NOW)
    assert store.data[CRL_URL].kind is DocumentKind.CRL
    offline = FakeFetcher()
    result = await make_cache(offline, pki, settings=settings, store=store).get(URL, now=NOW)
    assert isinstance(result, ValidatedCertificate) and offline.calls == []


@pytest.mark.anyio
async def test_crl_refresh_alone_does_not_refetch_the_chain(pki: StiPki) -> None:
    fetcher = FakeFetcher(
        {
            URL: Reply(body=pki.chain_pem),
            CRL_URL: Reply(body=pki.sti_pa_crl(next_update=NOW + HOUR)),
        }
    )
    cache = make_cache(fetcher, pki, settings=crl_cache_settings(RevocationMode.SOFT))
    await cache.get(URL, now=NOW)
    later = NOW + HOUR + timedelta(seconds=1)
    fetcher.replies[CRL_URL] = Reply(body=pki.sti_pa_crl(at=later))
    assert isinstance(await cache.get(URL, now=later), ValidatedCertificate)
    assert fetcher.urls() == [URL, CRL_URL, CRL_URL]
