"""Revocation cannot be silently off (issue 9 item 3), at the service level.

"Tried: crl_files configured, no sti_pa_certificate; the SP certificate was revoked, the new
CRL published, the configuration reloaded: calls still verified, ``shaken verify --no-cache
--crl hard`` said VERIFIED." A CRL that cannot be checked is never "not revoked": ``hard``
fails closed, ``soft`` says so in the result and the counters, and CRLs are fetched again on a
schedule (and by :meth:`CertificateCache.refresh_revocation`), not only at their nextUpdate.
Time is a value: the clock moves by assignment, nothing sleeps. The end-to-end proof with a
real lab and HTTPS repository is ``tests/adapters/test_revocation_lab.py``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shaken.core.errors import ConfigurationError, VerificationFailure
from shaken.core.reasons import Reason
from shaken.core.verify import ValidatedCertificate
from shaken.services.cert_cache import CacheSettings, CertificateCache, RevocationMode
from shaken.services.crl import CrlCache
from shaken.services.trust import TrustStore
from shaken.testing import StiPki, make_sti_pki
from tests.support.fakes import FakeFetcher, ManualClock, MemoryStore, Reply

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
URL = "https://cr.example.test/sp.pem"
CRL_URL = "https://sti-pa.example.test/crl"
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def pki() -> StiPki:
    return make_sti_pki(NOW)


def _cache(
    fetcher: FakeFetcher,
    pki: StiPki,
    mode: RevocationMode,
    *,
    signers: bool = True,
    crl_files: object = None,
    store: MemoryStore | None = None,
) -> CertificateCache:
    trust = TrustStore(pki.trust_anchors, (pki.sti_pa,) if signers else ())
    return CertificateCache(
        fetcher,
        trust,
        store=store,
        settings=CacheSettings(revocation=mode),
        clock=ManualClock(NOW),
        crl_files=crl_files,  # type: ignore[arg-type]
    )


def _week_crl(pki: StiPki, revoked: tuple[int, ...] = (), at: datetime = NOW) -> bytes:
    """Like the lab's CRL: a nextUpdate a week away."""
    return pki.sti_pa_crl(revoked=revoked, at=at, next_update=at + 7 * DAY)


# --------------------------------------------------------- a CRL that cannot be checked


@pytest.mark.anyio
async def test_9_3_hard_fails_closed_when_the_crl_cannot_be_verified(pki: StiPki) -> None:
    """No STI-PA certificate: the fetched CRL proves nothing. Before, hard said verified."""
    revoked = _week_crl(pki, revoked=(pki.leaf.serial_number,))
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem), CRL_URL: Reply(body=revoked)})
    result = await _cache(fetcher, pki, RevocationMode.HARD, signers=False).get(URL, now=NOW)
    assert isinstance(result, VerificationFailure)
    assert result.reason is Reason.CERT_UNTRUSTED
    assert result.fields["cause"] == "crl_unavailable"
    assert "revocation status cannot be checked" in result.detail
    assert "STI-PA certificate" in result.detail


@pytest.mark.anyio
async def test_9_3_soft_says_so_in_the_result_and_the_counters(pki: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem), CRL_URL: Reply(body=_week_crl(pki))})
    cache = _cache(fetcher, pki, RevocationMode.SOFT, signers=False)
    result = await cache.get(URL, now=NOW)
    assert isinstance(result, ValidatedCertificate)
    (note,) = [f for f in result.findings if f.startswith("warning:crl_unavailable:")]
    assert "could be verified" in note and "depth 0" in note and "depth 1" in note
    report = cache.revocation_report(NOW)
    assert cache.revocation_unchecked == report.unchecked_total == 1
    assert report.unchecked_held == 1
    assert report.crls == 1 and report.oldest_this_update == NOW  # the CRL's age counts from it


@pytest.mark.anyio
async def test_9_3_a_certificate_without_any_crl_is_reported_unchecked(pki: StiPki) -> None:
    """The CRL URL answers 404: soft passes and says why; hard fails."""
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem)})
    soft = await _cache(fetcher, pki, RevocationMode.SOFT).get(URL, now=NOW)
    assert isinstance(soft, ValidatedCertificate)
    (note,) = [f for f in soft.findings if f.startswith("warning:crl_unavailable:")]
    assert "no CRL from its issuer or its cRLIssuer" in note and CRL_URL in note
    hard = await _cache(fetcher, pki, RevocationMode.HARD).get(URL, now=NOW)
    assert isinstance(hard, VerificationFailure) and hard.reason is Reason.CERT_UNTRUSTED
    assert (
        _cache(fetcher, pki, RevocationMode.SOFT).revocation_report(NOW).oldest_this_update is None
    )


@pytest.mark.anyio
async def test_9_3_a_checked_chain_carries_no_warning(pki: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem), CRL_URL: Reply(body=_week_crl(pki))})
    for mode in (RevocationMode.SOFT, RevocationMode.HARD):
        cache = _cache(fetcher, pki, mode)
        result = await cache.get(URL, now=NOW)
        assert isinstance(result, ValidatedCertificate)
        assert not [f for f in result.findings if "crl" in f]
        assert cache.revocation_unchecked == 0


# ------------------------------------------------------------- published today, effective today


@pytest.mark.anyio
async def test_9_3_a_revocation_published_today_takes_effect_within_the_refresh_interval(
    pki: StiPki,
) -> None:
    """Before, the chain was good until the CRL's nextUpdate, a week away."""
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem), CRL_URL: Reply(body=_week_crl(pki))})
    cache = _cache(fetcher, pki, RevocationMode.SOFT)
    good = await cache.get(URL, now=NOW)
    assert isinstance(good, ValidatedCertificate)
    published = NOW + timedelta(minutes=30)
    fetcher.replies[CRL_URL] = Reply(
        body=_week_crl(pki, revoked=(pki.leaf.serial_number,), at=published)
    )
    assert cache.lookup(URL, NOW + timedelta(minutes=59)) is good  # within the interval
    later = NOW + CacheSettings().crl_refresh
    assert cache.lookup(URL, later) is None
    result = await cache.get(URL, now=later)
    assert isinstance(result, VerificationFailure) and result.reason is Reason.CERT_REVOKED


@pytest.mark.anyio
async def test_9_3_the_scheduled_refresh_flips_a_cached_verdict(pki: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem), CRL_URL: Reply(body=_week_crl(pki))})
    cache = _cache(fetcher, pki, RevocationMode.SOFT)
    good = await cache.get(URL, now=NOW)
    assert isinstance(good, ValidatedCertificate)
    soon = NOW + timedelta(minutes=5)
    # A refresh that finds the same CRL changes nothing: the warm path stays warm.
    assert await cache.refresh_revocation(soon) == []
    assert cache.lookup(URL, soon) is good
    fetcher.replies[CRL_URL] = Reply(
        body=_week_crl(pki, revoked=(pki.leaf.serial_number,), at=soon)
    )
    assert await cache.refresh_revocation(soon) == []
    assert cache.lookup(URL, soon) is None  # the CRLs changed: validated again
    result = await cache.get(URL, now=soon)
    assert isinstance(result, VerificationFailure) and result.reason is Reason.CERT_REVOKED
    assert fetcher.urls().count(CRL_URL) == 3


@pytest.mark.anyio
async def test_9_3_run_refresh_refreshes_at_once_and_then_every_interval(pki: StiPki) -> None:
    fetcher = FakeFetcher({CRL_URL: Reply(body=_week_crl(pki))})
    crls = CrlCache(fetcher, clock=ManualClock(NOW), refresh_interval=2 * HOUR)
    await crls.get(CRL_URL, now=NOW)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await crls.run_refresh(sleep=sleep)
    assert waits == [7200.0] * 3
    assert fetcher.urls() == [CRL_URL] * 4  # the first get, then a fetch per pass
    assert crls.refreshes == 3 and crls.refresh_failures == 0


@pytest.mark.anyio
async def test_9_3_a_pass_that_breaks_does_not_end_the_schedule(pki: StiPki) -> None:
    def broken() -> dict[str, bytes]:
        raise RuntimeError("the disk went away")

    fetcher = FakeFetcher({CRL_URL: Reply(body=_week_crl(pki))})
    crls = CrlCache(fetcher, clock=ManualClock(NOW), local=broken)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await crls.run_refresh(sleep=sleep)
    assert len(waits) == 2 and crls.refresh_failures == 2
    assert crls.last_refresh_error == "RuntimeError: the disk went away"


@pytest.mark.anyio
async def test_9_3_a_failed_refresh_keeps_the_crl_and_is_reported_stale(pki: StiPki) -> None:
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem), CRL_URL: Reply(body=_week_crl(pki))})
    cache = _cache(fetcher, pki, RevocationMode.HARD)
    assert isinstance(await cache.get(URL, now=NOW), ValidatedCertificate)
    del fetcher.replies[CRL_URL]
    later = NOW + 3 * HOUR
    (problem,) = await cache.refresh_revocation(later)
    assert CRL_URL in problem and "404" in problem
    report = cache.revocation_report(later)
    assert report.crls == 1 and report.refresh_failures == 1
    (stale,) = report.stale
    assert "not refreshed since" in stale and "404" in stale
    past = NOW + 8 * DAY
    assert any("past its nextUpdate" in s for s in cache.revocation_report(past).stale)


def test_9_3_the_refresh_interval_is_at_most_a_day() -> None:
    with pytest.raises(ConfigurationError):
        CacheSettings(crl_refresh=2 * DAY)
    with pytest.raises(ConfigurationError):
        CrlCache(FakeFetcher(), refresh_interval=timedelta(0))


@pytest.mark.anyio
async def test_9_3_stored_crls_are_refreshed_after_a_restart(pki: StiPki) -> None:
    """A reload builds a new cache: its first refresh fetches the CRLs the store held."""
    store = MemoryStore()
    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem), CRL_URL: Reply(body=_week_crl(pki))})
    await _cache(fetcher, pki, RevocationMode.SOFT, store=store).get(URL, now=NOW)
    fetcher.replies[CRL_URL] = Reply(body=_week_crl(pki, revoked=(pki.leaf.serial_number,)))
    restarted = _cache(fetcher, pki, RevocationMode.SOFT, store=store)
    assert await restarted.warm() == 1
    assert restarted.revocation_report(NOW).crls == 1
    await restarted.refresh_revocation(NOW)
    result = await restarted.get(URL, now=NOW)
    assert isinstance(result, VerificationFailure) and result.reason is Reason.CERT_REVOKED


# ----------------------------------------------------------------------------- CRL files


@pytest.mark.anyio
async def test_9_3_crl_files_apply_and_are_read_again(pki: StiPki, tmp_path: Path) -> None:
    """A local CRL covers the chain even when its URL is down; a new file takes effect."""
    file = tmp_path / "crl.der"
    file.write_bytes(_week_crl(pki))

    def read() -> dict[str, bytes]:
        return {f"file:{file}": file.read_bytes()}

    fetcher = FakeFetcher({URL: Reply(body=pki.chain_pem)})  # the CRL URL answers 404
    cache = _cache(fetcher, pki, RevocationMode.HARD, crl_files=read)
    cache.crl_cache.set_local(read(), now=NOW)
    good = await cache.get(URL, now=NOW)
    assert isinstance(good, ValidatedCertificate)
    file.write_bytes(_week_crl(pki, revoked=(pki.leaf.serial_number,), at=NOW + HOUR))
    later = NOW + HOUR
    await cache.refresh_revocation(later)
    result = await cache.get(URL, now=later)
    assert isinstance(result, VerificationFailure) and result.reason is Reason.CERT_REVOKED
    # An unreadable file is a refresh failure; the CRL read last stays in force.
    file.unlink()
    (problem,) = await cache.refresh_revocation(later + HOUR)
    assert "could not be read again" in problem
    assert len(cache.crl_cache.local_records()) == 1
