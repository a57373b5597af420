"""CRLs from the CRL Distribution Point and from local files, refreshed on a schedule.

SHAKEN publishes one indirect CRL, signed by the STI-PA and named by the CRL Distribution Point
of every STI certificate (ATIS-1000080 section 6.4.1). This
cache fetches it through the same :class:`~shaken.services.ports.CertificateFetcher` as the
certificates, so the same URL policy, address filter, size cap and deadline apply (Asterisk's
res_stir_shaken never fetched CRLs at all). An operator may also give
CRL files (``crl_files``); an adapter reads them (services open no file) through the
``local`` callable, and they are applied with the fetched ones.

What is kept here is only a CRL that parses; whether it *applies* to a certificate (issuer name,
signature by the issuer, or by the STI-PA named in ``cRLIssuer``) is decided by
:func:`shaken.core.chain.validate_chain` when the chain is checked. A fetched CRL older than the
one held (an earlier thisUpdate, e.g. a replayed file) never replaces it, and neither does one
that does not parse.

Freshness (issue 9 item 3: a revocation published today must take effect today): a fetched CRL
is fresh until its nextUpdate, but never longer than ``refresh_interval`` (an hour by default,
at most a day), so even without the background task a CRL is fetched again at least that
often when it is used. :meth:`CrlCache.refresh_all` fetches every CRL held and reads the local
files again; :meth:`CrlCache.run_refresh` does that at start (a reload builds a new cache, so
a reload refreshes too) and then every ``refresh_interval``. :attr:`CrlCache.version` changes
whenever the CRLs held say something new, so that the certificate cache validates its chains
again. :meth:`CrlCache.stale` names what is out of date for ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cryptography import x509

from shaken.core.errors import CertificateFetchError, ConfigurationError, VerificationFailure
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

__all__ = ["CrlCache", "CrlRecord", "LocalCrls", "parse_crl"]

#: Reads the operator's CRL files: name -> bytes. Blocking (it opens files), so it is called
#: off the event loop. It raises (``OSError``, ``ConfigurationError``) when a file cannot be read.
LocalCrls = Callable[[], Mapping[str, bytes]]

#: The longest a CRL may go without being fetched again ("at least daily").
MAX_REFRESH_INTERVAL = timedelta(days=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class CrlRecord:
    """A CRL that parsed, with the dates that decide how long it is kept.

    ``url`` is the distribution point, or ``file:PATH`` for a local CRL; ``fetched_at`` is when
    it was last fetched (or read) successfully.
    """

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


@dataclass(frozen=True, slots=True)
class _Failure:
    at: datetime
    detail: str


class CrlCache:
    """CRLs by Distribution Point URL: single flight, negative cache, persistence, a small LRU.

    :param max_ttl: a CRL is refetched after this even when its nextUpdate is further away.
    :param default_ttl: freshness of a CRL without nextUpdate (RFC 5280 requires one).
    :param negative_ttl: how long a failed fetch is remembered before the next attempt.
    :param stale_for: how long past its freshness a CRL is still used while refreshes fail.
    :param max_entries: CRLs held (LRU); also the bound on remembered failures.
    :param max_index_bytes: what remembering failures and store misses may take, each.
    :param refresh_interval: how often CRLs are fetched again, whatever their nextUpdate
        (at most a day).
    :param local: reads the operator's CRL files (see :data:`LocalCrls`).
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
        refresh_interval: timedelta = timedelta(hours=1),
        local: LocalCrls | None = None,
    ) -> None:
        if not timedelta(0) < refresh_interval <= MAX_REFRESH_INTERVAL:
            raise ConfigurationError("the CRL refresh interval must be positive and at most a day")
        self._fetcher = fetcher
        self._store = store
        self._clock = clock or SystemClock()
        self._max_ttl = max_ttl
        self._default_ttl = default_ttl
        self._negative_ttl = negative_ttl
        self._stale_for = stale_for
        self._max_entries = max_entries
        self.refresh_interval = refresh_interval
        self._local_source = local
        self._records: OrderedDict[str, CrlRecord] = OrderedDict()
        self._local: dict[str, CrlRecord] = {}
        self._failures: dict[str, _Failure] = {}
        self._negative: ByteBoundedLru[_Negative] = ByteBoundedLru(
            max_index_bytes, max_entries=max_entries
        )
        self._looked_in_store: ByteBoundedLru[None] = ByteBoundedLru(max_index_bytes)
        self._flight: SingleFlight[CrlRecord | VerificationFailure] = SingleFlight()
        #: Changes whenever a CRL held is replaced by one with other contents.
        self.version = 0
        self.fetches = 0
        #: Passes of :meth:`refresh_all`, and CRLs (URLs or files) that failed in them.
        self.refreshes = 0
        self.refresh_failures = 0
        self.last_refresh: datetime | None = None
        #: What broke the last pass that failed as a whole (counted in refresh_failures).
        self.last_refresh_error: str | None = None

    def record(self, url: str) -> CrlRecord | None:
        """The CRL held for ``url``, fresh or not."""
        return self._records.get(url)

    def records(self) -> list[CrlRecord]:
        """Every CRL held, fetched and local."""
        return [*self._records.values(), *self._local.values()]

    def local_records(self) -> list[CrlRecord]:
        return list(self._local.values())

    def _make_record(
        self,
        url: str,
        body: bytes,
        now: datetime,
        *,
        fetched_at: datetime | None = None,
        local: bool = False,
    ) -> CrlRecord | VerificationFailure:
        try:
            crl = parse_crl(body)
        except ValueError as exc:
            return CertificateFetchError(
                Reason.CERT_FETCH_FAILED, f"the CRL at {url} does not parse: {exc}", url=url
            )
        next_update = crl.next_update_utc
        if local:
            # Read again by every refresh; current until its nextUpdate (past it, checked
            # again soon, like a fetched one).
            if next_update is None:
                fresh_until = now + self._default_ttl
            elif next_update <= now:
                fresh_until = now + self._negative_ttl
            else:
                fresh_until = next_update
        elif next_update is None:
            fresh_until = now + min(self._default_ttl, self.refresh_interval)
        elif next_update <= now:
            # Past its nextUpdate: still proof of what it revokes (RFC 5280 section 3.3), but
            # worth another try soon.
            fresh_until = now + self._negative_ttl
        else:
            fresh_until = min(next_update, now + self._max_ttl, now + self.refresh_interval)
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

    def install_stored(self, stored: StoredEntry, *, now: datetime) -> CrlRecord | None:
        """A CRL from the store (at start), fresh no longer than the store says."""
        if stored.kind is not DocumentKind.CRL or stored.url in self._records:
            return None
        loaded = self._make_record(stored.url, stored.body, now, fetched_at=stored.fetched_at)
        if isinstance(loaded, VerificationFailure):
            return None
        loaded = replace(loaded, fresh_until=min(loaded.fresh_until, stored.expires_at))
        self._looked_in_store.put(stored.url, None)
        self._put(loaded)
        return loaded

    def _put(self, record: CrlRecord) -> None:
        old = self._records.get(record.url)
        if old is not None and old.body != record.body:
            self.version += 1
        self._records[record.url] = record
        self._records.move_to_end(record.url)
        self._negative.pop(record.url)
        self._failures.pop(record.url, None)
        while len(self._records) > self._max_entries:
            dropped, _ = self._records.popitem(last=False)
            self._failures.pop(dropped, None)

    # ----------------------------------------------------------------------- local files

    def set_local(self, bodies: Mapping[str, bytes], *, now: datetime) -> list[CrlRecord]:
        """Replace the local CRLs with ``bodies`` (name -> PEM or DER).

        A local CRL older than the one held under the same name keeps the held one.

        :raises ValueError: one of them is not a CRL (nothing is changed).
        """
        records: dict[str, CrlRecord] = {}
        for name, body in bodies.items():
            made = self._make_record(name, body, now, local=True)
            if isinstance(made, VerificationFailure):
                raise ValueError(made.detail)
            held = self._local.get(name)
            records[name] = (
                held if held is not None and made.this_update < held.this_update else made
            )
        if {n: r.body for n, r in records.items()} != {n: r.body for n, r in self._local.items()}:
            self.version += 1
        self._local = records
        return list(records.values())

    async def reload_local(self, now: datetime) -> str | None:
        """Read the local CRL files again; returns what went wrong, or None."""
        if self._local_source is None:
            return None
        try:
            bodies = await asyncio.to_thread(self._local_source)
            self.set_local(bodies, now=now)
        except (OSError, ValueError, ConfigurationError) as exc:
            return f"the CRL files could not be read again: {exc}"
        return None

    # --------------------------------------------------------------------- on demand

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

    async def _refresh(
        self, url: str, now: datetime, *, force: bool = False
    ) -> CrlRecord | VerificationFailure:
        record = self._records.get(url)
        if (
            not force
            and record is None
            and self._store is not None
            and url not in self._looked_in_store
        ):
            self._looked_in_store.put(url, None)
            try:
                stored = await asyncio.to_thread(self._store.load, url)
            except OSError:  # an unreadable store costs a fetch, never a call
                stored = None
            if stored is not None:
                loaded = self.install_stored(stored, now=now)
                if loaded is not None:
                    record = loaded
                    if now < loaded.fresh_until:
                        return loaded
        self.fetches += 1
        try:
            document = await self._fetcher.fetch(url)
        except VerificationFailure as failure:
            return self._fail(url, record, failure, now, force=force)
        fetched = self._make_record(url, document.body, now)
        if isinstance(fetched, VerificationFailure):
            return self._fail(url, record, fetched, now, force=force)
        if record is not None and fetched.this_update < record.this_update:
            older = CertificateFetchError(
                Reason.CERT_FETCH_FAILED,
                f"the CRL at {url} is older than the one held (thisUpdate"
                f" {fetched.this_update.isoformat()} < {record.this_update.isoformat()})",
                url=url,
            )
            return self._fail(url, record, older, now, force=force)
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
        self,
        url: str,
        record: CrlRecord | None,
        failure: VerificationFailure,
        now: datetime,
        *,
        force: bool = False,
    ) -> CrlRecord | VerificationFailure:
        if record is not None and url in self._records:
            # Why a CRL held is not being refreshed (bounded: only CRLs held have one).
            self._failures[url] = _Failure(now, failure.detail)
        if force and record is not None:
            # A scheduled refresh that failed: the held CRL serves on while it is fresh.
            return record
        self._negative.put(url, _Negative(failure, now + self._negative_ttl), failure_size(failure))
        return self._stale(record, now) or failure

    # ----------------------------------------------------------------------- schedule

    async def refresh(self, url: str, *, now: datetime) -> CrlRecord | VerificationFailure:
        """Fetch ``url`` again now, whatever its freshness (joins a fetch in flight)."""
        return await self._flight.run(url, lambda: self._refresh(url, now, force=True))

    async def refresh_all(self, now: datetime | None = None) -> list[str]:
        """Fetch every CRL held again and read the local files again.

        Returns what failed, one line each; the CRLs held stay in use where a refresh failed.
        """
        when = now if now is not None else self._clock.now()
        problems: list[str] = []
        local = await self.reload_local(when)
        if local is not None:
            problems.append(local)
        urls = list(self._records)
        await asyncio.gather(*(self.refresh(url, now=when) for url in urls))
        for url in urls:
            failed = self._failures.get(url)
            if failed is not None and failed.at == when:
                problems.append(failed.detail)
        self.refreshes += 1
        self.refresh_failures += len(problems)
        self.last_refresh = when
        return problems

    async def run_refresh(
        self,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        """Refresh now, then every ``refresh_interval``, until cancelled.

        ``sleep`` waits between passes (a test passes one it controls); each pass reads the
        clock for its ``now``.
        """
        while True:
            try:
                await self.refresh_all()
            except Exception as exc:  # a pass that breaks must not end the schedule
                self.refreshes += 1
                self.refresh_failures += 1
                self.last_refresh_error = f"{type(exc).__name__}: {exc}"
            await sleep(self.refresh_interval.total_seconds())

    def stale(self, now: datetime) -> list[str]:
        """What is out of date: CRLs past their nextUpdate, or not refreshed for two intervals."""
        found: list[str] = []
        for record in self.records():
            if record.next_update is not None and now > record.next_update:
                found.append(f"{record.url}: past its nextUpdate {record.next_update.isoformat()}")
            elif (
                record.url in self._records and now - record.fetched_at > 2 * self.refresh_interval
            ):
                failure = self._failures.get(record.url)
                why = f" ({failure.detail})" if failure is not None else ""
                found.append(
                    f"{record.url}: not refreshed since {record.fetched_at.isoformat()}{why}"
                )
        return found

    def purge(self, url: str | None = None) -> None:
        """Forget one URL or everything (memory only; local CRLs stay)."""
        if url is None:
            if self._records:
                self.version += 1
            self._records.clear()
            self._negative.clear()
            self._looked_in_store.clear()
            self._failures.clear()
        else:
            if self._records.pop(url, None) is not None:
                self.version += 1
            self._negative.pop(url)
            self._looked_in_store.discard(url)
            self._failures.pop(url, None)


async def _save(store: CertificateStore, entry: StoredEntry) -> None:
    """Persist off the event loop; a full disk costs warmth after a restart, never a call."""
    with contextlib.suppress(OSError):
        await asyncio.to_thread(store.save, entry)
