"""Prometheus metrics of one REST application.

The instruments live in the worker's registry (:class:`~shaken.adapters.metrics.InstanceMetrics`,
never the library's global one), made once per worker so that a reload keeps counting, and a
scrape of any worker answers for the whole instance: every worker's counts, added up.

Exposed (``/metrics``, text format 0.0.4):

* ``shaken_requests_total{endpoint,outcome,reason}``: every request. For verification the
  outcome is the verification outcome (``verified``, ``failed``, ...) and the reason its
  Reason; for signing ``signed``; API errors have outcome ``error`` and the message id
  (``SVC4001``, ``POL4290``, ...) as reason. Label values come from closed sets.
* ``shaken_verification_seconds``: time in the verification service per request (a certificate
  fetch included), as a histogram.
* ``shaken_certificate_cache_entries``, ``..._hits_total``, ``..._misses_total`` and
  ``shaken_certificate_fetches_total``: read from the shared certificate cache at scrape time,
  so they count SIP and REST alike; ``shaken_certificate_fetch_results_total{result}``: the
  fetches that ended, by result (``ok``, ``not_modified`` or the Reason: a closed set).
* ``shaken_signing_certificate_days_left{x5u}`` and ``shaken_signing_certificate_valid{x5u}``:
  see :mod:`shaken.adapters.http.credentials`; ``..._revoked{x5u}`` and ``..._expired{x5u}``
  are 1 while our own certificate at that URL is revoked or past its notAfter.
* ``shaken_trust_anchors``: STI-CA roots loaded.
* with a ``[lifecycle]``: ``shaken_certificate_days_left``, ``..._renewal_failures``,
  ``..._rollover_pending`` and ``..._renewal_timestamp_seconds``, read from its directory, so
  every worker reports what the renewing one did.
* Revocation: ``shaken_revocation_mode{mode}`` (1 for the mode in force), ``shaken_crls``
  (CRLs held), ``shaken_crl_age_seconds`` (since the oldest CRL's thisUpdate),
  ``shaken_crls_stale`` (past their nextUpdate or not refreshed for two
  intervals), ``shaken_crl_refreshes_total`` and ``shaken_crl_refresh_failures_total``;
  ``shaken_revocation_unchecked_total`` counts the chains that passed (``soft``) although a
  revocation status could not be established, ``shaken_certificates_revocation_unchecked``
  those of them held in memory now.

Keys and key material never reach a label: labels hold endpoint names, outcomes, Reasons,
message ids, the three revocation modes and our own x5u URLs (all bounded sets).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shaken.adapters.http.credentials import SigningCertificates
from shaken.adapters.lifecycle import lifecycle_gauges
from shaken.adapters.metrics import InstanceMetrics
from shaken.adapters.runtime import Runtime
from shaken.services.cert_cache import RevocationMode, RevocationReport
from shaken.services.ports import Clock

__all__ = ["CONTENT_TYPE", "RestMetrics"]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

# From a warm fast-path verification (~0.1 ms) to a cold one at the 2 s fetch deadline.
_BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025)
_BUCKETS += (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _RuntimeCollector:
    """Gauges and counters read from the runtime's objects when Prometheus scrapes."""

    def __init__(self, runtime: Runtime, certificates: SigningCertificates, clock: Clock) -> None:
        self._runtime = runtime
        self._certificates = certificates
        self._clock = clock

    def collect(self) -> Iterable[Metric]:
        # Every profile's cache: a profile with its own fetch or validation settings has one.
        caches = self._runtime.caches or (self._runtime.cache,)
        yield GaugeMetricFamily(
            "shaken_certificate_cache_entries",
            "x5u chains held in memory",
            value=sum(len(c) for c in caches),
        )
        yield CounterMetricFamily(
            "shaken_certificate_cache_hits",
            "certificate lookups answered from memory",
            value=sum(c.hits for c in caches),
        )
        yield CounterMetricFamily(
            "shaken_certificate_cache_misses",
            "certificate requests memory could not answer (store, fetch or negative entry)",
            value=sum(c.misses for c in caches),
        )
        yield CounterMetricFamily(
            "shaken_certificate_fetches",
            "x5u fetches started",
            value=sum(c.fetches for c in caches),
        )
        results = CounterMetricFamily(
            "shaken_certificate_fetch_results",
            "x5u fetches that ended, by result: ok, not_modified, or the Reason they failed with",
            labels=["result"],
        )
        totals: dict[str, int] = {}
        for cache in caches:
            for result, count in cache.fetch_results.items():
                totals[result] = totals.get(result, 0) + count
        for result in sorted(totals):
            results.add_metric([result], totals[result])
        yield results
        anchors = self._runtime.trust.current.anchors
        yield GaugeMetricFamily(
            "shaken_trust_anchors",
            "STI-CA roots loaded",
            value=0 if anchors is None else len(anchors.certificates),
        )
        now = self._clock.now()
        days = GaugeMetricFamily(
            "shaken_signing_certificate_days_left",
            "days until the signer certificate at each of our x5u URLs expires",
            labels=["x5u"],
        )
        valid = GaugeMetricFamily(
            "shaken_signing_certificate_valid",
            "1 when the chain at each of our x5u URLs validates against our trust anchors",
            labels=["x5u"],
        )
        revoked = GaugeMetricFamily(
            "shaken_signing_certificate_revoked",
            "1 when our certificate at each x5u URL is revoked by a CRL the verifier knows",
            labels=["x5u"],
        )
        expired = GaugeMetricFamily(
            "shaken_signing_certificate_expired",
            "1 when our certificate at each x5u URL is past its notAfter",
            labels=["x5u"],
        )
        for status in self._certificates.snapshot():
            left = status.days_left(now)
            if left is not None:
                days.add_metric([status.x5u], left)
            valid.add_metric([status.x5u], 1.0 if status.valid else 0.0)
            revoked.add_metric([status.x5u], 1.0 if status.revoked else 0.0)
            expired.add_metric([status.x5u], 1.0 if status.expired(now) else 0.0)
        yield days
        yield valid
        yield revoked
        yield expired
        for name, text, value in lifecycle_gauges(self._runtime.settings, now):
            yield GaugeMetricFamily(name, text, value=value)
        yield from self._revocation(now)

    def _revocation(self, now: datetime) -> Iterable[Metric]:
        report = RevocationReport.of(self._runtime.caches or (self._runtime.cache,), now)
        mode = GaugeMetricFamily(
            "shaken_revocation_mode", "1 for the revocation mode in force", labels=["mode"]
        )
        for name in RevocationMode:
            mode.add_metric([name.value], 1.0 if report.mode is name else 0.0)
        yield mode
        yield GaugeMetricFamily("shaken_crls", "CRLs held (fetched and local)", value=report.crls)
        yield GaugeMetricFamily(
            "shaken_crls_stale",
            "CRLs past their nextUpdate or not refreshed for two refresh intervals",
            value=len(report.stale),
        )
        if report.oldest_this_update is not None:
            yield GaugeMetricFamily(
                "shaken_crl_age_seconds",
                "seconds since the thisUpdate of the oldest CRL held",
                value=max(0.0, (now - report.oldest_this_update).total_seconds()),
            )
        yield CounterMetricFamily(
            "shaken_crl_refreshes", "scheduled CRL refresh passes", value=report.refreshes
        )
        yield CounterMetricFamily(
            "shaken_crl_refresh_failures",
            "CRLs (URLs or files) a refresh pass could not renew",
            value=report.refresh_failures,
        )
        yield CounterMetricFamily(
            "shaken_revocation_unchecked",
            "chains that passed (soft) without an established revocation status",
            value=report.unchecked_total,
        )
        yield GaugeMetricFamily(
            "shaken_certificates_revocation_unchecked",
            "chains held in memory that passed without an established revocation status",
            value=report.unchecked_held,
        )


class _Current:
    """The runtime collector in force: swapped on reload, its counters carried over.

    A reload builds a new runtime, whose caches count from zero; a counter that went back
    would look like a restart to Prometheus. The counters of the runtime being replaced are
    kept as a base that the next one's are added to.
    """

    def __init__(self) -> None:
        self.collector: _RuntimeCollector | None = None
        self._base: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def use(self, collector: _RuntimeCollector) -> None:
        if self.collector is not None:
            for family in self.collector.collect():
                if family.type != "counter":
                    continue
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if not sample.name.endswith("_created"):
                        self._base[key] = self._base.get(key, 0.0) + sample.value
        self.collector = collector

    def collect(self) -> Iterable[Metric]:
        if self.collector is None:
            return
        for family in self.collector.collect():
            if family.type == "counter" and self._base:
                for index, sample in enumerate(family.samples):
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    carried = self._base.get(key)
                    if carried:
                        family.samples[index] = sample._replace(value=sample.value + carried)
            yield family


class RestMetrics:
    """The REST side of a worker's metrics: instruments made once per worker, so a reload
    (a new app on a new runtime) keeps counting, and the runtime collector of the app in force.

    :param instance: the worker's :class:`~shaken.adapters.metrics.InstanceMetrics`; a new
        one of its own when omitted (one app alone: tests, an embedding program).
    """

    def __init__(self, instance: InstanceMetrics | None = None) -> None:
        self.instance = instance or InstanceMetrics()
        registry = self.instance.registry
        self._requests = Counter(
            "shaken_requests",
            "REST requests by endpoint, outcome and reason",
            ("endpoint", "outcome", "reason"),
            registry=registry,
        )
        self._verification = Histogram(
            "shaken_verification_seconds",
            "time spent verifying one request (certificate fetch included)",
            buckets=_BUCKETS,
            registry=registry,
        )
        self._current = _Current()
        registry.register(self._current)
        # labels() takes a lock and builds a key on every call; a request path should not.
        self._children: dict[tuple[str, str, str], Counter] = {}

    def attach(self, runtime: Runtime, certificates: SigningCertificates, clock: Clock) -> None:
        """Report ``runtime``'s state from now on (an app starting, or a reload)."""
        self._current.use(_RuntimeCollector(runtime, certificates, clock))

    def count(self, endpoint: str, outcome: str, reason: str = "") -> None:
        key = (endpoint, outcome, reason)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._requests.labels(endpoint, outcome, reason)
        child.inc()

    def observe_verification(self, seconds: float) -> None:
        self._verification.observe(seconds)

    @property
    def registry(self) -> CollectorRegistry:
        return self.instance.registry

    def render(self) -> bytes:
        """The whole instance's metrics: every worker's, added up."""
        return self.instance.render()
