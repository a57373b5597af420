"""The certificate cache: x5u URL -> validated chain, fast when warm, safe when not.

What it guarantees (docs/architecture.md section 3, "Certificate cache", and
what Asterisk users missed):

* **One fetch per URL in flight**, however many verifications wait for it: the first caller
  starts a task, the others await the same task (:class:`~shaken.services._flight.SingleFlight`).
* **Lifetime**: ``max(HTTP freshness, min_ttl)`` capped at ``max_ttl`` and at the chain's
  earliest notAfter. HTTP freshness is ``s-maxage``, else ``max-age``, else ``Expires - Date``
  (RFC 9111 section 4.2.1), minus ``Age``. ATIS-1000074 (v003 section 5.3.1) says to cache
  for 24 hours when the repository says less or nothing, so ``no-cache``/``no-store`` only mean
  "the floor", as in Asterisk.
* **Negative cache**: a failure (fetch or validation) is remembered for ``negative_ttl``, so a
  dead repository costs one timeout per URL per ``negative_ttl``, not one per call.
* **Bounded fetching**: at most ``max_fetches_in_flight`` cold fetches run at once, and at most
  ``max_fetches_per_source`` for one ``source`` (the SIP peer's address, the REST client), so
  slow repositories named by one peer cannot take a worker's descriptors (issue 17 item 6:
  five INVITEs at slow URLs took one from 17 to 517). A fetch over either bound is not started:
  the caller gets ``cert_fetch_failed`` saying why, at once, and nothing is remembered against
  the URL. Joining a fetch already in flight for the same URL costs no slot.
* **Stale on error**: an entry past its lifetime is still served for ``stale_for`` while its
  refresh fails, never past the chain's notAfter.
* **Never replaced by a worse copy**: a fetched chain that does not validate leaves the cached
  good one in place (RFC 8224 section 7.4: never overwrite a cached certificate without
  revalidating it).
* **Bounded**: LRU by entry count and by body bytes; what it remembers about other URLs (recent
  failures, store misses) is bounded in bytes too (``max_failure_bytes``, ``max_miss_bytes``),
  because those URLs are the caller's choosing.
* **Persisted** through a :class:`~shaken.services.ports.CertificateStore`: the raw chain is
  stored, so a restart validates again (against the anchors of the day) without fetching.
* **Warm hits are a dict lookup**: the :class:`~shaken.core.verify.ValidatedCertificate` is kept
  in memory, tagged with the trust and CRL versions it was validated under and with the moment
  it must be checked again (its CRLs' freshness); :meth:`CertificateCache.lookup` compares
  three numbers and two times.
* **Validation off the event loop, within a budget**: a cold chain is parsed and validated on a
  small thread pool of its own (``validation_threads``), never on the loop that answers the
  other calls, and each validation may spend at most ``validation_signature_checks`` signature
  checks and ``validation_timeout`` seconds (:class:`~shaken.core.chain.ValidationBudget`). An
  x5u body of look-alike CAs built to make path building search (issue 17 item 1) therefore
  costs one bounded validation on a side thread, and the chain is ``cert_untrusted``.

Revocation: once a chain validates against the anchors, the CRLs named by the CRL Distribution
Points of its certificates (leaf and intermediates) are obtained through
:class:`~shaken.services.crl.CrlCache` and the chain is validated again with them and with the
operator's CRL files. CRLs are fetched only for chains that already lead to a trusted STI-CA,
so an attacker's certificate cannot make the verifier fetch URLs of its choosing.
:class:`RevocationMode` is the one revocation setting (issue 9 item 3): a status that cannot
be established (no CRL, a CRL no configured signer verifies, a stale one) is never "not
revoked": ``hard`` fails the chain, ``soft`` passes it with a ``warning:crl_unavailable``
finding that says why and counts it (:attr:`CertificateCache.revocation_unchecked`). CRLs are
fetched again every ``crl_refresh`` by :meth:`CertificateCache.start_refresh` (and on demand),
and a CRL that changed makes every cached chain validate again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TypeVar

from cryptography import x509

from shaken.core.certs import crl_distribution_points, load_certificates
from shaken.core.chain import (
    DEFAULT_SIGNATURE_CHECKS,
    VERIFIER_SIGNATURE_CHECKS,
    TrustAnchors,
    ValidatedChain,
    ValidationBudget,
    unchecked_revocation,
    validate_chain,
)
from shaken.core.errors import (
    CertificateError,
    CertificateFetchError,
    ChainError,
    ConfigurationError,
    VerificationFailure,
)
from shaken.core.reasons import Reason
from shaken.core.verify import SHAKEN, ValidatedCertificate, VerificationProfile
from shaken.core.verify import validate_certificate as _validate_certificate
from shaken.services._bounded import ByteBoundedLru, failure_size
from shaken.services._flight import SingleFlight
from shaken.services.crl import MAX_REFRESH_INTERVAL, CrlCache, CrlRecord, LocalCrls
from shaken.services.ports import (
    CertificateFetcher,
    CertificateStore,
    Clock,
    DocumentKind,
    FetchedDocument,
    StoredEntry,
    SystemClock,
)
from shaken.services.shared import SharedCertificateStore, SharedChain, SharedEntry, SharedFailure
from shaken.services.trust import TrustMaterial, TrustStore

__all__ = [
    "CacheSettings",
    "CacheSnapshot",
    "CertificateCache",
    "RevocationMode",
    "RevocationReport",
    "entry_expiry",
    "http_freshness",
]

Material = ValidatedCertificate | VerificationFailure
T = TypeVar("T")

_FOREVER = datetime.max.replace(tzinfo=UTC)


class RevocationMode(enum.StrEnum):
    """What to do about CRLs.

    ``OFF``: fetch none. ``SOFT``: fetch and apply them; when one cannot be had, pass the chain
    and report it (a ``warning:crl_unavailable`` finding on the result). ``HARD``: when one
    cannot be had, the chain is ``cert_untrusted``.
    """

    OFF = "off"
    SOFT = "soft"
    HARD = "hard"


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheSettings:
    """The cache's knobs; the defaults follow ATIS-1000074 and docs/architecture.md section 3."""

    min_ttl: timedelta = timedelta(hours=24)
    max_ttl: timedelta = timedelta(days=7)
    negative_ttl: timedelta = timedelta(seconds=30)
    stale_for: timedelta = timedelta(hours=1)
    max_entries: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    #: What remembering recent failures (the negative cache) and URLs the store does not
    #: hold may take, in bytes: about 1,000 and 2,000 URLs of 2 KiB.
    max_failure_bytes: int = 4 * 1024 * 1024
    max_miss_bytes: int = 4 * 1024 * 1024
    #: Cold x5u fetches in progress at once: in all, and for one source.
    max_fetches_in_flight: int = 64
    max_fetches_per_source: int = 8
    revocation: RevocationMode = RevocationMode.SOFT
    #: The work one chain validation may do (see :class:`~shaken.core.chain.ValidationBudget`):
    #: a SHAKEN chain needs 2 or 3 signature checks and well under a millisecond.
    validation_signature_checks: int = DEFAULT_SIGNATURE_CHECKS
    validation_timeout: timedelta = timedelta(seconds=1)
    #: Threads that validate cold chains, off the event loop.
    validation_threads: int = 2
    #: How often CRLs are fetched again whatever their nextUpdate (at most a day), so that a
    #: revocation published today takes effect today.
    crl_refresh: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        zero = timedelta(0)
        if self.min_ttl < zero or self.negative_ttl < zero or self.stale_for < zero:
            raise ConfigurationError("cache durations must not be negative")
        if self.max_ttl < self.min_ttl:
            raise ConfigurationError("max_ttl must be at least min_ttl")
        bounds = (self.max_entries, self.max_bytes, self.max_failure_bytes, self.max_miss_bytes)
        if min(*bounds, self.max_fetches_in_flight, self.max_fetches_per_source) < 1:
            raise ConfigurationError("cache bounds must be positive")
        if self.validation_signature_checks < VERIFIER_SIGNATURE_CHECKS:
            raise ConfigurationError(
                f"validation_signature_checks must be at least {VERIFIER_SIGNATURE_CHECKS}"
            )
        if self.validation_timeout <= zero or self.validation_threads < 1:
            raise ConfigurationError("validation_timeout and validation_threads must be positive")
        if not zero < self.crl_refresh <= MAX_REFRESH_INTERVAL:
            raise ConfigurationError("crl_refresh must be positive and at most a day")


# --------------------------------------------------------------------------------------------
# Lifetime (pure)


def _directives(cache_control: str | None) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for part in (cache_control or "").split(","):
        name, eq, value = part.strip().partition("=")
        if name:
            out[name.strip().lower()] = value.strip().strip('"') if eq else None
    return out


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def http_freshness(
    *,
    cache_control: str | None,
    expires: str | None,
    date: str | None = None,
    age: str | None = None,
    fetched_at: datetime,
) -> timedelta | None:
    """How long the repository says the response stays fresh, or None when it says nothing.

    RFC 9111 section 4.2.1: ``s-maxage`` (we are a shared cache) over ``max-age`` over
    ``Expires`` minus ``Date`` (``fetched_at`` when there is no Date); section 4.2.3: less
    ``Age``. An unparseable ``Expires`` means "already expired" (section 5.3).
    """
    directives = _directives(cache_control)
    lifetime: timedelta | None = None
    for name in ("s-maxage", "max-age"):
        value = directives.get(name)
        if value is not None and value.isdigit():
            lifetime = timedelta(seconds=int(value))
            break
    if lifetime is None and expires is not None:
        expires_at = _http_date(expires)
        if expires_at is None:
            lifetime = timedelta(0)
        else:
            lifetime = expires_at - (_http_date(date) or fetched_at)
    if lifetime is None:
        return None
    if age is not None and age.strip().isdigit():
        lifetime -= timedelta(seconds=int(age.strip()))
    return max(lifetime, timedelta(0))


def entry_expiry(
    *,
    now: datetime,
    http_lifetime: timedelta | None,
    not_after: datetime | None,
    settings: CacheSettings,
) -> datetime:
    """``now + clamp(http_lifetime, min_ttl, max_ttl)``, never past ``not_after``."""
    lifetime = max(http_lifetime or timedelta(0), settings.min_ttl)
    lifetime = min(lifetime, settings.max_ttl)
    expires_at = now + lifetime
    return expires_at if not_after is None else min(expires_at, not_after)


# --------------------------------------------------------------------------------------------
# Entries


@dataclass(slots=True, kw_only=True)
class _Entry:
    url: str
    body: bytes
    fetched_at: datetime
    expires_at: datetime
    etag: str | None = None
    content_type: str | None = None
    warnings: tuple[str, ...] = ()
    # Validation state: the result under trust ``version`` and CRLs ``crl_version``, good
    # until ``good_until``.
    result: Material | None = None
    version: int = -1
    crl_version: int = -1
    good_until: datetime = field(default=_FOREVER)

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheSnapshot:
    """One entry as :meth:`CertificateCache.snapshot` reports it."""

    url: str
    size: int
    fetched_at: datetime
    expires_at: datetime
    etag: str | None
    validated: bool
    subject: str | None
    failure: str | None


@dataclass(slots=True)
class _Negative:
    failure: VerificationFailure
    until: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RevocationReport:
    """What :meth:`CertificateCache.revocation_report` says about the revocation data.

    ``stale`` names the CRLs past their nextUpdate or not refreshed for two intervals;
    ``unchecked_total`` counts the chains that passed (``soft``) without a revocation status,
    ``unchecked_held`` those of them in memory now.
    """

    mode: RevocationMode
    crls: int
    stale: tuple[str, ...]
    last_refresh: datetime | None
    refreshes: int
    refresh_failures: int
    unchecked_total: int
    unchecked_held: int
    #: The thisUpdate of the oldest CRL held (fetched or local), None with no CRL: how old
    #: the revocation data a verification relies on may be.
    oldest_this_update: datetime | None = None

    @classmethod
    def of(cls, caches: Iterable[CertificateCache], now: datetime) -> RevocationReport:
        """One report for several caches (a runtime has one per distinct profile backend)."""
        reports = [cache.revocation_report(now) for cache in caches]
        if not reports:
            raise ValueError("no certificate cache to report on")
        refreshed = [r.last_refresh for r in reports]
        return cls(
            mode=reports[0].mode,
            crls=sum(r.crls for r in reports),
            stale=tuple(dict.fromkeys(s for r in reports for s in r.stale)),
            last_refresh=None if None in refreshed else min(r for r in refreshed if r),
            refreshes=sum(r.refreshes for r in reports),
            refresh_failures=sum(r.refresh_failures for r in reports),
            unchecked_total=sum(r.unchecked_total for r in reports),
            unchecked_held=sum(r.unchecked_held for r in reports),
            oldest_this_update=min(
                (r.oldest_this_update for r in reports if r.oldest_this_update is not None),
                default=None,
            ),
        )


class _FetchSlots:
    """Cold fetches in progress, in all and per source; a slot is taken or refused at once."""

    def __init__(self, total: int, per_source: int) -> None:
        self.total = total
        self.per_source = per_source
        self.in_flight = 0
        self._by_source: dict[str, int] = {}

    def refusal(self, source: str | None) -> str | None:
        """Why a fetch for ``source`` may not start now, or None."""
        if self.in_flight >= self.total:
            return f"{self.in_flight} certificate fetches are in progress (the limit in all)"
        if source is not None and self._by_source.get(source, 0) >= self.per_source:
            return (
                f"{self.per_source} certificate fetches are in progress for this source"
                " (the limit per source)"
            )
        return None

    def take(self, source: str | None) -> None:
        self.in_flight += 1
        if source is not None:
            self._by_source[source] = self._by_source.get(source, 0) + 1

    def give_back(self, source: str | None) -> None:
        self.in_flight -= 1
        if source is not None:
            left = self._by_source.get(source, 1) - 1
            if left > 0:
                self._by_source[source] = left
            else:
                self._by_source.pop(source, None)


class CertificateCache:
    """x5u URL -> :class:`ValidatedCertificate`, or the :class:`VerificationFailure` why not.

    :param fetcher: gets URL bodies; it enforces the URL policy.
    :param trust: the current trust anchors and CRL signers (may be reloaded at any time).
    :param store: persistence; ``None`` keeps everything in memory.
    :param clock: used only when a caller does not pass ``now``.
    :param profile: the validation knobs (``require_tnauthlist``, ``enforce_certificate_profile``);
        verifications served from this cache must use the same. Its ``require_crl`` is not
        used: ``settings.revocation`` is the one revocation setting (``hard`` requires CRLs).
    :param crls: the CRL cache; by default one over the same fetcher and store.
    :param crl_files: reads the operator's CRL files, for the default CRL cache.

    One cache belongs to one event loop (it is not thread-safe); its methods take ``now`` so
    the caller's single clock read decides every expiry.
    """

    def __init__(
        self,
        fetcher: CertificateFetcher,
        trust: TrustStore,
        *,
        store: CertificateStore | None = None,
        clock: Clock | None = None,
        settings: CacheSettings = CacheSettings(),
        profile: VerificationProfile = SHAKEN,
        crls: CrlCache | None = None,
        crl_files: LocalCrls | None = None,
        shared: SharedCertificateStore | None = None,
        claim_seconds: float = 15.0,
    ) -> None:
        """``shared``: the second level several instances share (see :meth:`_from_shared`);
        ``claim_seconds``: how long one instance may hold the right to fetch a cold x5u
        (the fetch timeout and a validation, with room), and so how long others wait."""
        self._fetcher = fetcher
        self._shared = shared
        self._claim_seconds = claim_seconds
        #: Cold lookups answered by the shared level, and those that waited for another
        #: instance's fetch, for metrics and tests.
        self.shared_hits = 0
        self.shared_waits = 0
        self._trust = trust
        self._store = store
        self._clock = clock or SystemClock()
        self.settings = settings
        self.profile = profile
        self._crls = crls or CrlCache(
            fetcher,
            store=store,
            clock=self._clock,
            max_ttl=settings.max_ttl,
            negative_ttl=settings.negative_ttl,
            stale_for=settings.stale_for,
            refresh_interval=settings.crl_refresh,
            local=crl_files,
        )
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._negative: ByteBoundedLru[_Negative] = ByteBoundedLru(
            settings.max_failure_bytes, max_entries=settings.max_entries
        )
        self._looked_in_store: ByteBoundedLru[None] = ByteBoundedLru(settings.max_miss_bytes)
        self._flight: SingleFlight[Material] = SingleFlight()
        self._background: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._slots = _FetchSlots(settings.max_fetches_in_flight, settings.max_fetches_per_source)
        #: Fetches started (requests sent or attempted), for metrics and tests.
        self.fetches = 0
        #: Fetches not started because too many were in progress (in all or for the source).
        self.fetches_refused = 0
        #: Fetches that ended, by result: ``ok`` (a chain that validated), ``not_modified``
        #: (a 304 for a copy that still validates), or the Reason a fetch or its chain failed
        #: with. Label values come from the closed Reason table, never from the URL.
        self.fetch_results: dict[str, int] = {}
        #: Chains that passed (``soft``) although the revocation status of one of their
        #: certificates could not be established.
        self.revocation_unchecked = 0
        self._refresh_task: asyncio.Task[None] | None = None
        #: Lookups answered from memory, and :meth:`get` calls that memory could not answer
        #: (counted per call, not per verification), for metrics.
        self.hits = 0
        self.misses = 0

    @property
    def crl_cache(self) -> CrlCache:
        return self._crls

    @property
    def trust(self) -> TrustStore:
        return self._trust

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def _background_done(self, task: asyncio.Task[None]) -> None:
        # _delete_all swallows OSError; anything else is left for asyncio to report.
        self._background.discard(task)

    def start_refresh(self) -> asyncio.Task[None] | None:
        """Start refreshing the CRLs in the background: now, then every ``crl_refresh``.

        The servers call this once their runtime is built (at start and on every reload);
        :meth:`aclose` stops it. Nothing is started when revocation is ``off``.
        """
        if self.settings.revocation is RevocationMode.OFF:
            return None
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.get_running_loop().create_task(
                self._crls.run_refresh(), name="shaken-crl-refresh"
            )
        return self._refresh_task

    async def refresh_revocation(self, now: datetime | None = None) -> list[str]:
        """One refresh pass now (what the background task does each interval)."""
        return await self._crls.refresh_all(now)

    def revocation_report(self, now: datetime) -> RevocationReport:
        """The revocation data as ``/readyz`` and the metrics report it."""
        unchecked = sum(
            1
            for entry in self._entries.values()
            if isinstance(entry.result, ValidatedCertificate)
            and any(f.startswith("warning:crl_unavailable") for f in entry.result.findings)
        )
        records = self._crls.records()
        return RevocationReport(
            mode=self.settings.revocation,
            crls=len(records),
            stale=tuple(self._crls.stale(now)),
            last_refresh=self._crls.last_refresh,
            refreshes=self._crls.refreshes,
            refresh_failures=self._crls.refresh_failures,
            unchecked_total=self.revocation_unchecked,
            unchecked_held=unchecked,
            oldest_this_update=min((r.this_update for r in records), default=None),
        )

    async def aclose(self) -> None:
        """Stop the CRL refresh and the validation threads (a validation in progress
        finishes first)."""
        task, self._refresh_task = self._refresh_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True)

    async def _off_loop(self, work: Callable[[], T]) -> T:
        """Run CPU-heavy ``work`` (chain validation) on the validation threads."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.settings.validation_threads,
                thread_name_prefix="shaken-validate",
            )
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def _budget(self) -> ValidationBudget:
        """A fresh budget whose deadline starts now (called on the validating thread)."""
        deadline = time.monotonic() + self.settings.validation_timeout.total_seconds()
        return ValidationBudget(
            self.settings.validation_signature_checks,
            expired=lambda: time.monotonic() > deadline,
        )

    # ---------------------------------------------------------------------------- the hot path

    def lookup(self, url: str, now: datetime) -> ValidatedCertificate | None:
        """The validated chain for ``url`` when one is in memory and good at ``now``, else None.

        No I/O and no validation: this is what the fast verification path calls.
        """
        entry = self._entries.get(url)
        if entry is None:
            return None
        result = entry.result
        if (
            not isinstance(result, ValidatedCertificate)
            or entry.version != self._trust.version
            or entry.crl_version != self._crls.version
            or now >= entry.expires_at
            or now >= entry.good_until
        ):
            return None
        self._entries.move_to_end(url)
        self.hits += 1
        return result

    @property
    def fetches_in_flight(self) -> int:
        return self._slots.in_flight

    async def get(
        self, url: str, *, now: datetime | None = None, source: str | None = None
    ) -> Material:
        """The validated chain for ``url``, or the failure that stands for it.

        From memory when warm; otherwise from the store, or fetched and validated (one fetch
        per URL whatever the number of callers). Never raises for the peer's faults.

        :param source: who asks (a SIP peer's address, a REST client), for the bound on the
            cold fetches one source may have in progress; None counts in the total only.
        """
        when = now if now is not None else self._clock.now()
        hit = self.lookup(url, when)
        if hit is not None:
            return hit
        self.misses += 1
        negative = self._negative.get(url)
        if negative is not None and when < negative.until:
            entry = self._entries.get(url)
            if entry is None or self._current(entry, when, self._trust.version):
                return self._while_negative(entry, negative, when)
        return await self._flight.run(url, lambda: self._obtain(url, when, source))

    # ------------------------------------------------------------------------- the slow path

    def _stale_value(self, entry: _Entry | None, now: datetime) -> ValidatedCertificate | None:
        """A good entry past its lifetime, still servable while refreshes fail."""
        if entry is None or not self._current(entry, now, self._trust.version):
            return None
        result = entry.result
        if (
            isinstance(result, ValidatedCertificate)
            and now < entry.expires_at + self.settings.stale_for
            and now <= result.valid_until
        ):
            return result
        return None

    def _while_negative(self, entry: _Entry | None, negative: _Negative, now: datetime) -> Material:
        stale = self._stale_value(entry, now)
        if stale is not None:
            return stale
        if (
            entry is not None
            and isinstance(entry.result, VerificationFailure)
            and now < entry.expires_at
        ):
            # The held copy, still within its lifetime, itself fails (revoked, anchors
            # changed): that says more than the fetch failure that kept it from being replaced.
            return entry.result
        return negative.failure

    async def _obtain(self, url: str, now: datetime, source: str | None) -> Material:
        material = self._trust.current
        entry = self._entries.get(url)
        if entry is None:
            entry = await self._from_store(url)
        held_failure: VerificationFailure | None = None
        if entry is not None and now < entry.expires_at:
            held = await self._validated(entry, now, material)
            if isinstance(held, ValidatedCertificate):
                return held
            # The held copy no longer validates: the repository may have a renewed one.
            held_failure = held
        negative = self._negative.get(url)
        if negative is not None and now < negative.until:
            if entry is not None:
                await self._validated(entry, now, material)
            return self._while_negative(entry, negative, now)
        shared = self._shared
        if shared is not None:
            found = await shared.load(url, now)
            if found is not None:
                return await self._adopt(url, entry, found, now, material)
        refused = self._slots.refusal(source)
        if refused is not None:
            # Our own load, not the URL's fault: nothing is remembered against the URL.
            self.fetches_refused += 1
            stale = self._stale_value(entry, now)
            if stale is not None:
                return stale
            return held_failure or CertificateFetchError(
                Reason.CERT_FETCH_FAILED, f"{url} not fetched: {refused}", url=url, refused=True
            )
        if shared is None:
            return await self._fetch(url, entry, held_failure, now, material, source)
        if not await shared.claim(url, self._claim_seconds):
            # Another instance fetches it: what it publishes is ours too.
            self.shared_waits += 1
            found = await shared.wait(url, self._claim_seconds, now)
            if found is not None:
                return await self._adopt(url, entry, found, now, material)
            return await self._fetch(url, entry, held_failure, now, material, source)
        try:
            result = await self._fetch(url, entry, held_failure, now, material, source)
            await self._publish(shared, url, now)
        finally:
            await shared.release(url)
        return result

    async def _adopt(
        self,
        url: str,
        entry: _Entry | None,
        found: SharedEntry,
        now: datetime,
        material: TrustMaterial,
    ) -> Material:
        """What another instance obtained, made ours: a chain is validated here, against our
        anchors, like a fetched one; a failure is remembered until the time it was given."""
        self.shared_hits += 1
        if isinstance(found, SharedFailure):
            failure = _failure_of(url, found)
            negative = _Negative(failure, found.until)
            self._negative.put(url, negative, failure_size(failure))
            if entry is not None:
                await self._validated(entry, now, material)
            return self._while_negative(entry, negative, now)
        adopted = _Entry(
            url=url,
            body=found.body,
            fetched_at=found.fetched_at,
            expires_at=found.expires_at,
            etag=found.etag,
            content_type=found.content_type,
            warnings=found.warnings,
        )
        result = await self._validated(adopted, now, material)
        if isinstance(result, VerificationFailure):
            return await self._failed(url, entry, result, now, material)
        adopted.expires_at = min(adopted.expires_at, result.valid_until)
        self._install(adopted)
        self._negative.pop(url)
        await self._persist(adopted)
        return result

    async def _publish(self, shared: SharedCertificateStore, url: str, now: datetime) -> None:
        """Share what this instance's fetch of ``url`` left: a good chain, or the failure."""
        entry = self._entries.get(url)
        if (
            entry is not None
            and entry.fetched_at == now
            and isinstance(entry.result, ValidatedCertificate)
        ):
            chain = SharedChain(
                body=entry.body,
                fetched_at=entry.fetched_at,
                expires_at=entry.expires_at,
                etag=entry.etag,
                content_type=entry.content_type,
                warnings=entry.warnings,
            )
            await shared.save(url, chain, now)
            return
        negative = self._negative.get(url)
        if (
            negative is not None
            and now < negative.until
            and not negative.failure.fields.get("refused")
        ):
            failure = negative.failure
            kind = "fetch" if isinstance(failure, CertificateFetchError) else "chain"
            await shared.save(
                url,
                SharedFailure(
                    kind=kind,
                    reason=failure.reason.value,
                    detail=failure.detail,
                    until=negative.until,
                ),
                now,
            )

    async def _fetch(
        self,
        url: str,
        entry: _Entry | None,
        held_failure: VerificationFailure | None,
        now: datetime,
        material: TrustMaterial,
        source: str | None,
    ) -> Material:
        self.fetches += 1
        # A conditional request only for a copy that may still be good: a bad one must be
        # replaced, not confirmed.
        etag = entry.etag if entry is not None and held_failure is None else None
        self._slots.take(source)
        try:
            document = await self._fetcher.fetch(url, etag=etag)
        except VerificationFailure as failure:
            self._count_fetch(failure.reason.value)
            return await self._failed(url, entry, held_failure or failure, now, material)
        finally:
            self._slots.give_back(source)
        if document.not_modified:
            if entry is None:
                missing = _not_modified_without_copy(url)
                self._count_fetch(missing.reason.value)
                return await self._failed(url, None, missing, now, material)
            return await self._renew(entry, document, now, material)
        fresh = _Entry(
            url=url,
            body=document.body,
            fetched_at=now,
            expires_at=now,  # set below once the chain's notAfter is known
            etag=document.etag,
            content_type=document.content_type,
            warnings=document.warnings,
        )
        result = await self._validated(fresh, now, material)
        if isinstance(result, VerificationFailure):
            self._count_fetch(result.reason.value)
            return await self._failed(url, entry, result, now, material)
        self._count_fetch("ok")
        fresh.expires_at = self._expiry(document, now, result)
        self._install(fresh)
        self._negative.pop(url)
        await self._persist(fresh)
        return result

    def _count_fetch(self, result: str) -> None:
        self.fetch_results[result] = self.fetch_results.get(result, 0) + 1

    def _expiry(
        self, document: FetchedDocument, now: datetime, result: ValidatedCertificate
    ) -> datetime:
        lifetime = http_freshness(
            cache_control=document.cache_control,
            expires=document.expires,
            date=document.date,
            age=document.age,
            fetched_at=document.fetched_at,
        )
        return entry_expiry(
            now=now, http_lifetime=lifetime, not_after=result.valid_until, settings=self.settings
        )

    async def _renew(
        self, entry: _Entry, document: FetchedDocument, now: datetime, material: TrustMaterial
    ) -> Material:
        """304 Not Modified: the held body stays; its lifetime starts again."""
        result = await self._validated(entry, now, material)
        if isinstance(result, VerificationFailure):
            self._count_fetch(result.reason.value)
            return await self._failed(entry.url, entry, result, now, material)
        self._count_fetch("not_modified")
        entry.fetched_at = now
        entry.expires_at = self._expiry(document, now, result)
        if document.etag:
            entry.etag = document.etag
        self._negative.pop(entry.url)
        await self._persist(entry)
        return result

    async def _failed(
        self,
        url: str,
        entry: _Entry | None,
        failure: VerificationFailure,
        now: datetime,
        material: TrustMaterial,
    ) -> Material:
        negative = _Negative(failure, now + self.settings.negative_ttl)
        self._negative.put(url, negative, failure_size(failure))
        if entry is not None:
            await self._validated(entry, now, material)
        return self._while_negative(entry, negative, now)

    async def _from_store(self, url: str) -> _Entry | None:
        """Read one entry from the store, once per URL per process (misses are remembered)."""
        if self._store is None or url in self._looked_in_store:
            return None
        self._looked_in_store.put(url, None)
        try:
            stored = await asyncio.to_thread(self._store.load, url)
        except OSError:
            return None
        if stored is None or stored.kind is not DocumentKind.CERTIFICATE:
            return None
        entry = _entry_from_stored(stored)
        self._install(entry)
        return entry

    # ----------------------------------------------------------------------------- validation

    def _current(self, entry: _Entry, now: datetime, version: int) -> bool:
        """The entry's result still stands: same anchors, same CRLs, not past good_until."""
        return (
            entry.result is not None
            and entry.version == version
            and entry.crl_version == self._crls.version
            and now < entry.good_until
        )

    async def _validated(self, entry: _Entry, now: datetime, material: TrustMaterial) -> Material:
        """The entry's validation result under ``material`` at ``now``, computed if needed."""
        if self._current(entry, now, material.version):
            assert entry.result is not None
            return entry.result
        result, good_until, crl_version = await self._validate(
            entry.body, entry.warnings, now, material
        )
        entry.result, entry.version, entry.good_until = result, material.version, good_until
        entry.crl_version = crl_version
        return result

    async def _validate(
        self, body: bytes, warnings: tuple[str, ...], now: datetime, material: TrustMaterial
    ) -> tuple[Material, datetime, int]:
        """Validate ``body``; returns the result, until when it may be reused, and the version
        of the CRLs it was validated with."""
        anchors = material.anchors
        crl_version = self._crls.version
        if anchors is None:
            failure = ChainError(Reason.CERT_UNTRUSTED, "no trust anchors are loaded")
            return failure, _FOREVER, crl_version
        mode = self.settings.revocation
        # One revocation setting: the cache's mode decides whether an unknown status fails.
        profile = replace(self.profile, require_crl=mode is RevocationMode.HARD)
        notes: list[str] = [f"warning:{w}" for w in warnings]
        good_until = _FOREVER
        # First the path, without CRLs, within the budget: only a chain that reaches a trusted
        # STI-CA may make us fetch the CRL URLs it names, or cost a second validation.
        try:
            path = await self._off_loop(functools.partial(self._path, body, anchors, now))
        except CertificateError as exc:
            return ChainError(Reason.CERT_UNPARSEABLE, str(exc)), _FOREVER, crl_version
        except ChainError as exc:
            return exc, _FOREVER, crl_version
        crl_bodies: list[bytes] = []
        missing: list[str] = []
        if mode is not RevocationMode.OFF:
            urls = _crl_urls(path.certificates[:-1])
            records = await asyncio.gather(*(self._crls.get(u, now=now) for u in urls))
            crl_version = self._crls.version
            held = [r for r in records if isinstance(r, CrlRecord)]
            missing = [
                f"{url}: {r.detail}"
                for url, r in zip(urls, records, strict=True)
                if isinstance(r, VerificationFailure)
            ]
            for record in (*held, *self._crls.local_records()):
                crl_bodies.append(record.body)
                good_until = min(good_until, record.fresh_until)
                if record.next_update is not None and record.next_update < now:
                    notes.append(
                        f"warning:crl_stale: the CRL at {record.url} is past its nextUpdate"
                        f" {record.next_update.isoformat()}"
                    )
            if missing:
                good_until = min(good_until, now + self.settings.negative_ttl)
        try:
            validated = await self._off_loop(
                functools.partial(
                    _validate_certificate,
                    body,
                    anchors,
                    now=now,
                    profile=profile,
                    crls=crl_bodies,
                    crl_signers=material.crl_signers,
                )
            )
        except ChainError as exc:
            if exc.fields.get("unchecked"):
                # hard: a status that cannot be checked is never "not revoked".
                failure = ChainError(
                    Reason.CERT_UNTRUSTED,
                    "revocation status cannot be checked: " + "; ".join([exc.detail, *missing]),
                    cause="crl_unavailable",
                )
                return failure, min(good_until, now + self.settings.negative_ttl), crl_version
            return exc, good_until, crl_version
        if mode is RevocationMode.SOFT:
            unknown = await self._off_loop(
                functools.partial(
                    unchecked_revocation,
                    validated.chain,
                    anchors,
                    at=now,
                    crls=crl_bodies,
                    crl_signers=material.crl_signers,
                )
            )
            if unknown:
                # soft: the chain passes, and the result says revocation was not checked.
                self.revocation_unchecked += 1
                notes.append("warning:crl_unavailable: " + "; ".join([*unknown, *missing]))
                good_until = min(good_until, now + self.settings.negative_ttl)
            elif missing:
                notes.append("warning:crl_unreachable: " + "; ".join(missing))
        if notes:
            validated = replace(validated, findings=(*validated.findings, *notes))
        return validated, good_until, crl_version

    def _path(self, body: bytes, anchors: TrustAnchors, now: datetime) -> ValidatedChain:
        """Parse and validate ``body`` within a budget (on a validation thread)."""
        return validate_chain(load_certificates(body), anchors, at=now, budget=self._budget())

    # --------------------------------------------------------------------------------- storage

    def _install(self, entry: _Entry) -> None:
        old = self._entries.pop(entry.url, None)
        if old is not None:
            self._bytes -= old.size
        self._entries[entry.url] = entry
        self._bytes += entry.size
        evicted: list[str] = []
        while len(self._entries) > 1 and (
            len(self._entries) > self.settings.max_entries or self._bytes > self.settings.max_bytes
        ):
            url, victim = self._entries.popitem(last=False)
            self._bytes -= victim.size
            evicted.append(url)
        if evicted and self._store is not None:
            # The store mirrors the memory bounds, so a restart cannot load more than fits.
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                _delete_all(self._store, evicted)  # called from synchronous code
                return
            task = loop.create_task(asyncio.to_thread(_delete_all, self._store, evicted))
            self._background.add(task)
            task.add_done_callback(self._background_done)

    async def _persist(self, entry: _Entry) -> None:
        if self._store is None:
            return
        stored = StoredEntry(
            url=entry.url,
            body=entry.body,
            kind=DocumentKind.CERTIFICATE,
            fetched_at=entry.fetched_at,
            expires_at=entry.expires_at,
            etag=entry.etag,
            content_type=entry.content_type,
        )
        # A full or read-only disk costs warmth after a restart, never a call.
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self._store.save, stored)

    async def warm(self) -> int:
        """Load every stored entry into memory (not validated yet); returns how many.

        Entries come newest first until the bounds are reached; CRLs go to the CRL cache's
        store lookups as they are needed.
        """
        if self._store is None:
            return 0
        try:
            stored = await asyncio.to_thread(self._store.entries)
        except OSError:
            return 0
        certs = sorted(
            (s for s in stored if s.kind is DocumentKind.CERTIFICATE),
            key=lambda s: s.fetched_at,
        )
        # The CRLs too, so that the first refresh (at start, or after a reload) fetches them.
        now = self._clock.now()
        for crl in sorted(
            (s for s in stored if s.kind is DocumentKind.CRL), key=lambda s: s.fetched_at
        ):
            self._crls.install_stored(crl, now=now)
        count = 0
        for item in certs[-self.settings.max_entries :]:
            self._looked_in_store.put(item.url, None)
            self._install(_entry_from_stored(item))
            count += 1
        return count

    def import_chain(
        self,
        url: str,
        body: bytes,
        *,
        now: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        """Put a chain in memory as if fetched (operator pre-population, tests).

        It is validated on first use like any entry; ``expires_at`` defaults to ``min_ttl``.
        """
        when = now if now is not None else self._clock.now()
        entry = _Entry(
            url=url,
            body=body,
            fetched_at=when,
            expires_at=expires_at
            or entry_expiry(now=when, http_lifetime=None, not_after=None, settings=self.settings),
        )
        self._install(entry)
        self._negative.pop(url)

    def purge(self, url: str | None = None) -> None:
        """Forget ``url`` (or everything) in memory, positive and negative."""
        if url is None:
            self._entries.clear()
            self._negative.clear()
            self._looked_in_store.clear()
            self._bytes = 0
            return
        entry = self._entries.pop(url, None)
        if entry is not None:
            self._bytes -= entry.size
        self._negative.pop(url)
        self._looked_in_store.discard(url)

    def snapshot(self) -> list[CacheSnapshot]:
        """What is in memory, least recently used first."""
        out = []
        for entry in self._entries.values():
            result = entry.result
            out.append(
                CacheSnapshot(
                    url=entry.url,
                    size=entry.size,
                    fetched_at=entry.fetched_at,
                    expires_at=entry.expires_at,
                    etag=entry.etag,
                    validated=isinstance(result, ValidatedCertificate),
                    subject=result.subject if isinstance(result, ValidatedCertificate) else None,
                    failure=result.detail if isinstance(result, VerificationFailure) else None,
                )
            )
        return out


def _entry_from_stored(stored: StoredEntry) -> _Entry:
    return _Entry(
        url=stored.url,
        body=stored.body,
        fetched_at=stored.fetched_at,
        expires_at=stored.expires_at,
        etag=stored.etag,
        content_type=stored.content_type,
    )


def _crl_urls(certificates: Iterable[x509.Certificate]) -> list[str]:
    urls: dict[str, None] = {}
    for cert in certificates:
        try:
            for url in crl_distribution_points(cert):
                urls.setdefault(url, None)
        except CertificateError:
            continue
    return list(urls)


def _not_modified_without_copy(url: str) -> VerificationFailure:
    return CertificateFetchError(
        Reason.CERT_FETCH_FAILED, f"{url} answered 304 but no copy is held", url=url
    )


def _failure_of(url: str, found: SharedFailure) -> VerificationFailure:
    """The failure another instance met, as this one would have raised it."""
    try:
        reason = Reason(found.reason)
    except ValueError:
        reason = Reason.CERT_FETCH_FAILED
    kind = CertificateFetchError if found.kind == "fetch" else ChainError
    return kind(reason, found.detail, url=url)


def _delete_all(store: CertificateStore, urls: list[str]) -> None:
    for url in urls:
        try:
            store.delete(url)
        except OSError:
            continue
