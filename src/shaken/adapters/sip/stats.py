"""What the SIP side counts, for ``/metrics``: decisions, responses, transactions, latency.

The counters are plain integers in dictionaries, bumped on the request path and turned into
Prometheus families only when a scrape reads them (:class:`SipStatsCollector`): a dictionary
increment costs a tenth of a prometheus-client ``Counter.inc()``, and a SIP server answers
thousands of requests a second. Every label comes from a closed set: SIP methods (others
count as ``other``), the two roles, the stored outcomes, the :class:`~shaken.core.reasons.Reason`
names and the status codes this server sends; never a TN, a Call-ID or a URL.

Exposed:

* ``shaken_sip_requests_total{method,role,outcome,reason}``: every request. An INVITE counts
  once, with its decision (``verified``, ``failed``, ``missing``, ``not_checked``,
  ``not_processed``, ``signed``, ``not_signed``) and, for a failed verification, its Reason;
  a request refused before any decision (malformed, shed, overloaded) counts with outcome
  ``refused``; other methods with outcome ``answered``.
* ``shaken_sip_responses_total{code}``: responses sent, retransmissions of an answer included
  (302s, rejects, 503s...).
* ``shaken_sip_retransmissions_total``: INVITE retransmissions answered from the transaction
  (RFC 3261 17.2.1) and ``shaken_sip_acks_absorbed_total``; ``shaken_sip_cancels_total``.
* ``shaken_sip_decision_seconds{role}``: from the request's arrival to its decision, as a
  histogram (the certificate fetch of a cold call included).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from shaken.adapters.sip.handler import SipHandler

__all__ = ["METHODS", "SipStats", "SipStatsCollector"]

METHODS = frozenset({"INVITE", "ACK", "CANCEL", "OPTIONS", "BYE", "REGISTER", "INFO", "UPDATE"})
#: From a warm decision (~0.1 ms) to a cold one at the 2 s fetch deadline, in seconds.
BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Histogram:
    """A cheap histogram: a count per bucket, found by bisection, and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds


class SipStats:
    """The counts of one worker's SIP handler."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, str], int] = {}
        self.responses: dict[str, int] = {}
        self.retransmissions = 0
        self.acks_absorbed = 0
        self.cancels = 0
        self.decisions = {"sign": _Histogram(), "verify": _Histogram()}

    def request(self, method: str, role: str, outcome: str, reason: str = "") -> None:
        key = (method if method in METHODS else "other", role, outcome, reason)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1

    def response(self, data: bytes) -> None:
        """Count a response about to be sent, by its status code (``SIP/2.0 302 ...``)."""
        code = data[8:11].decode("ascii", "replace") if data[:8] == b"SIP/2.0 " else "other"
        responses = self.responses
        responses[code] = responses.get(code, 0) + 1

    def decided(self, role: str, seconds: float) -> None:
        histogram = self.decisions.get(role)
        if histogram is not None:
            histogram.observe(seconds)


class SipStatsCollector:
    """The Prometheus families of a handler's :class:`SipStats` and its requests in flight."""

    def __init__(self, handler: SipHandler) -> None:
        self._handler = handler

    def collect(self) -> Iterable[Metric]:
        stats = self._handler.stats
        requests = CounterMetricFamily(
            "shaken_sip_requests",
            "SIP requests by method, listener role, outcome and Reason",
            labels=["method", "role", "outcome", "reason"],
        )
        for (method, role, outcome, reason), value in sorted(stats.requests.items()):
            requests.add_metric([method, role, outcome, reason], value)
        yield requests
        responses = CounterMetricFamily(
            "shaken_sip_responses", "SIP responses sent, by status code", labels=["code"]
        )
        for code, value in sorted(stats.responses.items()):
            responses.add_metric([code], value)
        yield responses
        yield CounterMetricFamily(
            "shaken_sip_retransmissions",
            "INVITE retransmissions answered from their transaction",
            value=stats.retransmissions,
        )
        yield CounterMetricFamily(
            "shaken_sip_acks_absorbed", "ACKs to our final answers", value=stats.acks_absorbed
        )
        yield CounterMetricFamily("shaken_sip_cancels", "CANCELs received", value=stats.cancels)
        yield GaugeMetricFamily(
            "shaken_sip_in_flight",
            "INVITEs waiting for a certificate fetch",
            value=self._handler.in_flight,
        )
        decisions = HistogramMetricFamily(
            "shaken_sip_decision_seconds",
            "time from an INVITE's arrival to its decision",
            labels=["role"],
        )
        for role, histogram in stats.decisions.items():
            cumulative, buckets = 0, []
            for bound, count in zip((*BUCKETS, float("inf")), histogram.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            decisions.add_metric([role], buckets, histogram.total)
        yield decisions
