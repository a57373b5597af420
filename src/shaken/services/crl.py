"""CRLs from the CRL Distribution Point, fetched under the x5u URL policy and kept until nextUpdate.

SHAKEN publishes one indirect CRL, signed by the STI-PA and named by the CRL Distribution Point
of every STI certificate (ATIS-1000080 section 6.4.1; ``reference/standards.md`` V14). This
cache fetches it through the same :class:`~shaken.services.ports.CertificateFetcher` as the
certificates, so the same URL policy, address filter, size cap and deadline apply (Asterisk
never fetched CRLs at all, ``reference/asterisk.md`` section 2.7).

What is kept here is only a CRL that parses; whether it *applies* to a certificate (issuer name,
signature by the issuer, or by the STI-PA named in ``cRLIssuer``) is decided by
:func:`shaken.core.chain.validate_chain` when the chain is checked. A CRL is fresh until its
nextUpdate (capped by ``max_ttl``); a fetched CRL older than the one held (an earlier
thisUpdate, e.g. a replayed file) never replaces it, and neither does one that does not parse.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cryptography import x509

from shaken.core.errors import CertificateFetchError, VerificationFailure
from shaken.core.reasons import Reason
from shaken.services._bounded import ByteBoundedLru, failure_size
from shaken.services._flight import SingleFlight
from shaken.services.ports import (
    CertificateFetcher,
    CertificateStore,
    Clock,
    DocumentKind,
    StoredEntry,
    SystemClock,
)

__all__ = ["CrlCache", "CrlRecord", "parse_crl"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CrlRecord:
    """A CRL that parsed, with the dates that decide how long it is kept."""

    url: str
    body: bytes
    issuer: str
    this_update: datetime
    next_update: datetime | None
    fetched_at: datetime
    fresh_until: datetime
    revoked: int


def parse_crl(data: bytes) -> x509.CertificateRevocationList:
    """PEM or DER. :raises ValueError: not a CRL."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


@dataclass(slots=True)
class _Negative:
    failure: VerificationFailure
    until: datetime


class CrlCache:
    """CRLs by Distribution Point URL: single flight, negative cache, persistence, a small LRU.

    :param max_ttl: a CRL is refetched after this even when its nextUpdate is further away.
    :param default_ttl: freshness of a CRL without nextUpdate (RFC 5280 requires one).
    :param negative_ttl: how long a failed fetch is remembered before the next attempt.
    :param stale_for: how long past its freshness a CRL is still used while refreshes fail.
    :param max_entries: CRLs held (LRU); also the bound on remembered failures.
    :param max_index_bytes: what remembering failures and store misses may take, each.
    """

    def __init__(
        self,
        fetcher: CertificateFetcher,
        *,
        store: CertificateStore | None = None,
        clock: Clock | None = None,
        max_ttl: timedelta = timedelta(days=7),
        default_ttl: timedelta = timedelta(hours=1),
        negative_ttl: timedelta = timedelta(seconds=30),
        stale_for: timedelta = timedelta(hours=1),
        max_entries: int = 256,
        max_index_bytes: int = 512 * 1024,
    ) -> None:
        self._fetcher = fetcher
        self._store = store
        self._clock = clock or SystemClock()
        self._max_ttl = max_ttl
        self._default_ttl = default_ttl
        self._negative_ttl = negative_ttl
        self._stale_for = stale_for
        self._max_entries = max_entries
        self._records: OrderedDict[str, CrlRecord] = OrderedDict()
        self._negative: ByteBoundedLru[_Negative] = ByteBoundedLru(
            max_index_bytes, max_entries=max_entries
        )
        self._looked_in_store: ByteBoundedLru[None] = ByteBoundedLru(max_index_bytes)
        self._flight: SingleFlight[CrlRecord | VerificationFailure] = SingleFlight()
        self.fetches = 0

    def record(self, url: str) -> CrlRecord | None:
        """The CRL held for ``url``, fresh or not."""
        return self._records.get(url)

    def _make_record(
        self, url: str, body: bytes, now: datetime, *, fetched_at: datetime | None = None
    ) -> CrlRecord | VerificationFailure:
        try:
            crl = parse_crl(body)
        except ValueError as exc:
            return CertificateFetchError(
                Reason.CERT_FETCH_FAILED, f"the CRL at {url} does not parse: {exc}", url=url
            )
        next_update = crl.next_update_utc
        if next_update is None:
            fresh_until = now + self._default_ttl
        elif next_update <= now:
            # Past its nextUpdate: still proof of what it revokes (RFC 5280 section 3.3), but
            # worth another try soon.
            fresh_until = now + self._negative_ttl
        else:
            fresh_until = min(next_update, now + self._max_ttl)
        return CrlRecord(
            url=url,
            body=body,
            issuer=crl.issuer.rfc4514_string(),
            this_update=crl.last_update_utc,
            next_update=next_update,
            fetched_at=fetched_at or now,
            fresh_until=fresh_until,
            revoked=len(crl),
        )

    def install(self, url: str, body: bytes, *, now: datetime) -> CrlRecord:
        """Put a CRL in the cache without fetching it (an import, a test).

        :raises ValueError: ``body`` is not a CRL.
        """
        record = self._make_record(url, body, now)
        if isinstance(record, VerificationFailure):
            raise ValueError(record.detail)
        self._put(record)
        return record

    def _put(self, record: CrlRecord) -> None:
        self._records[record.url] = record
        self._records.move_to_end(record.url)
        self._negative.pop(record.url)
        while len(self._records) > self._max_entries:
            self._records.popitem(last=False)

    async def get(
        self, url: str, *, now: datetime | None = None
    ) -> CrlRecord | VerificationFailure:
        """The CRL of ``url``: from memory while fresh, else fetched (one fetch per URL)."""
        when = now if now is not None else self._clock.now()
        record = self._records.get(url)
        if record is not None and when < record.fresh_until:
            return record
        negative = self._negative.get(url)
        if negative is not None and when < negative.until:
            return self._stale(record, when) or negative.failure
        return await self._flight.run(url, lambda: self._refresh(url, when))

    def _stale(self, record: CrlRecord | None, now: datetime) -> CrlRecord | None:
        if record is not None and now < record.fresh_until + self._stale_for:
            return record
        return None

    async def _refresh(self, url: str, now: datetime) -> CrlRecord | VerificationFailure:
        record = self._records.get(url)
        if record is None and self._store is not None and url not in self._looked_in_store:
            self._looked_in_store.put(url, None)
            try:
                stored = await asyncio.to_thread(self._store.load, url)
            except OSError:  # an unreadable store costs a fetch, never a call
                stored = None
            if stored is not None and stored.kind is DocumentKind.CRL:
                loaded = self._make_record(url, stored.body, now, fetched_at=stored.fetched_at)
                if isinstance(loaded, CrlRecord):
                    loaded = replace(loaded, fresh_until=min(loaded.fresh_until, stored.expires_at))
                    self._put(loaded)
                    record = loaded
                    if now < loaded.fresh_until:
                        return loaded
        self.fetches += 1
        try:
            document = await self._fetcher.fetch(url)
        except VerificationFailure as failure:
            return self._fail(url, record, failure, now)
        fetched = self._make_record(url, document.body, now)
        if isinstance(fetched, VerificationFailure):
            return self._fail(url, record, fetched, now)
        if record is not None and fetched.this_update < record.this_update:
            older = CertificateFetchError(
                Reason.CERT_FETCH_FAILED,
                f"the CRL at {url} is older than the one held (thisUpdate"
                f" {fetched.this_update.isoformat()} < {record.this_update.isoformat()})",
                url=url,
            )
            return self._fail(url, record, older, now)
        self._put(fetched)
        if self._store is not None:
            entry = StoredEntry(
                url=url,
                body=fetched.body,
                kind=DocumentKind.CRL,
                fetched_at=now,
                expires_at=fetched.fresh_until,
                content_type=document.content_type,
            )
            await _save(self._store, entry)
        return fetched

    def _fail(
        self, url: str, record: CrlRecord | None, failure: VerificationFailure, now: datetime
    ) -> CrlRecord | VerificationFailure:
        self._negative.put(url, _Negative(failure, now + self._negative_ttl), failure_size(failure))
        return self._stale(record, now) or failure

    def purge(self, url: str | None = None) -> None:
        """Forget one URL or everything (memory only)."""
        if url is None:
            self._records.clear()
            self._negative.clear()
            self._looked_in_store.clear()
        else:
            self._records.pop(url, None)
            self._negative.pop(url)
            self._looked_in_store.discard(url)


async def _save(store: CertificateStore, entry: StoredEntry) -> None:
    """Persist off the event loop; a full disk costs warmth after a restart, never a call."""
    with contextlib.suppress(OSError):
        await asyncio.to_thread(store.save, entry)
