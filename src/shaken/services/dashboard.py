"""The operator's dashboard: what each panel shows, over which window, whatever store holds it.

A terminating carrier asks pictures, not log lines: how much inbound traffic is signed and at
which attestation, who sends unsigned or failing calls and why they fail, whether our own
signing is healthy. Each panel is one aggregate over the call log for a :class:`Window` (a
time range, optionally one profile); the SQL that computes it lives in the store adapter
(:mod:`shaken.adapters.store.dashboard_sql`), and this module turns its rows into the
documents the JSON endpoints, the page and ``shaken report`` show. A failure reason's SIP code
and one-line explanation come from the one Reason table (:data:`shaken.core.reasons.REASONS`),
never written here again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shaken.core.reasons import REASONS, Reason
from shaken.services.calllog import CallQuery

__all__ = [
    "RANGES",
    "Dashboard",
    "DashboardStore",
    "Window",
    "explain",
    "series_of",
    "window_of",
]

#: The named time ranges a panel can be asked for, in seconds.
RANGES = {"hour": 3600, "day": 86400, "week": 7 * 86400}
#: The most buckets a time series holds: a longer range gets wider buckets (whole minutes).
MAX_BUCKETS = 1440
#: Rows an upstream table holds at most.
TOP = 50


@dataclass(frozen=True, slots=True)
class Window:
    """A time range ``[since, until)`` in Unix seconds, one profile or all, a bucket width."""

    since: float
    until: float
    profile: str | None = None
    step: int = 60

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "profile": self.profile,
            "step": self.step,
        }


def window_of(
    now: float,
    *,
    range_name: str | None = None,
    since: float | None = None,
    until: float | None = None,
    profile: str | None = None,
) -> Window:
    """The window a request names: a named range ending ``now``, or ``since``/``until``.

    The bucket width is a whole number of minutes, the smallest keeping the series within
    :data:`MAX_BUCKETS` points.

    :raises ValueError: an unknown range, or an empty or inverted custom range.
    """
    if since is None:
        name = range_name or "day"
        if name not in RANGES:
            raise ValueError(f"range must be one of {', '.join(RANGES)}, not {name!r}")
        end = now if until is None else until
        start = end - RANGES[name]
    else:
        start, end = since, now if until is None else until
    if end <= start:
        raise ValueError("the time range is empty: until must be after since")
    minutes = max(1, -(-int(end - start) // (60 * MAX_BUCKETS)))
    return Window(start, end, profile or None, 60 * minutes)


def explain(reason: str | None) -> tuple[int | None, str]:
    """The SIP code and the one-line explanation of a stored Reason (from the Reason table);
    a value the table does not know (a newer release's, a free text) explains itself."""
    if reason is None:
        return None, ""
    try:
        info = REASONS[Reason(reason)]
    except ValueError:
        return None, reason
    return info.sip_code, info.description


def series_of(outcome: str, attest: str | None) -> str:
    """The series a verification record belongs to: ``verified_A``/``_B``/``_C`` by the
    attestation verified, else its outcome (``failed``, ``missing``, ``not_checked``)."""
    if outcome == "verified":
        return f"verified_{attest or 'unknown'}"
    return outcome


class DashboardStore(Protocol):
    """The aggregates a call-log store computes for the dashboard (rows as plain tuples)."""

    def outcomes_by_bucket(self, window: Window) -> list[tuple[float, str, str | None, int]]:
        """Inbound (``verify``) records as (bucket start, outcome, attest, count)."""

    def inbound_mix(self, window: Window) -> list[tuple[str, str | None, int, int]]:
        """Inbound records as (outcome, attest, count, rejected)."""

    def failure_reasons(self, window: Window) -> list[tuple[str, int, int]]:
        """Inbound records with a Reason as (reason, count, rejected), most frequent first."""

    def upstreams(self, window: Window, by: str, limit: int) -> list[dict[str, Any]]:
        """Inbound records grouped by ``source`` (address) or ``signer`` (SPC and x5u host):
        each row ``key`` (a dict), ``calls``, ``missing``, ``failed``, ``verified``,
        ``rejected``, ``A``, ``B``, ``C``; the busiest first."""

    def signed_by_bucket(self, window: Window) -> list[tuple[float, str | None, int]]:
        """Calls we signed as (bucket start, attest, count)."""

    def not_signed(self, window: Window) -> list[tuple[str, str | None, int]]:
        """Calls we did not sign as (action, reason, count), most frequent first."""

    def fetch_failures(self, window: Window) -> list[tuple[str, int]]:
        """Inbound calls whose certificate could not be fetched, as (x5u host, count)."""

    def search(self, query: CallQuery) -> list[dict[str, Any]]:
        """The records matching ``query``, most recent first, every column."""


def _share(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


class Dashboard:
    """Every panel's document over one store."""

    def __init__(self, store: DashboardStore) -> None:
        self.store = store

    def traffic(self, window: Window) -> dict[str, Any]:
        """Inbound calls per bucket by outcome: verified A/B/C, failed, missing, not checked."""
        buckets: dict[float, dict[str, int]] = {}
        names: set[str] = set()
        for start, outcome, attest, count in self.store.outcomes_by_bucket(window):
            name = series_of(outcome, attest)
            names.add(name)
            row = buckets.setdefault(start, {})
            row[name] = row.get(name, 0) + count
        order = [n for n in _SERIES if n in names] + sorted(names - set(_SERIES))
        times = sorted(buckets)
        return {
            "window": window.as_dict(),
            "times": times,
            "series": {n: [buckets[t].get(n, 0) for t in times] for n in order},
        }

    def attestation(self, window: Window) -> dict[str, Any]:
        """The attestation mix and the signed share of inbound traffic."""
        total = signed = rejected = 0
        outcomes: dict[str, int] = {}
        claimed: dict[str, int] = {}
        verified: dict[str, int] = {}
        for outcome, attest, count, refused in self.store.inbound_mix(window):
            total += count
            rejected += refused
            outcomes[outcome] = outcomes.get(outcome, 0) + count
            if outcome != "missing":
                signed += count
            if attest is not None:
                claimed[attest] = claimed.get(attest, 0) + count
                if outcome == "verified":
                    verified[attest] = verified.get(attest, 0) + count
        return {
            "window": window.as_dict(),
            "calls": total,
            "signed": signed,
            "signed_share": _share(signed, total),
            "rejected": rejected,
            "outcomes": outcomes,
            "attestation": {a: claimed.get(a, 0) for a in sorted(claimed)},
            "verified": {a: verified.get(a, 0) for a in sorted(verified)},
        }

    def failures(self, window: Window) -> dict[str, Any]:
        """Failure reasons ranked, each with its count, SIP code and explanation."""
        rows = []
        for reason, count, rejected in self.store.failure_reasons(window):
            code, text = explain(reason)
            rows.append(
                {
                    "reason": reason,
                    "calls": count,
                    "rejected": rejected,
                    "sip_code": code,
                    "explanation": text,
                }
            )
        return {"window": window.as_dict(), "reasons": rows}

    def upstreams(self, window: Window, by: str = "source", limit: int = TOP) -> dict[str, Any]:
        """Who sends what: by source address or by signer, with signed share, attestation
        mix and failure rate ("who sends me unsigned or spoofed traffic").

        :raises ValueError: ``by`` is neither ``source`` nor ``signer``.
        """
        if by not in ("source", "signer"):
            raise ValueError(f"by must be source or signer, not {by!r}")
        rows = []
        for row in self.store.upstreams(window, by, limit):
            calls = int(row["calls"])
            signed = calls - int(row["missing"])
            rows.append(
                {
                    **row["key"],
                    "calls": calls,
                    "signed_share": _share(signed, calls),
                    "failure_rate": _share(int(row["failed"]), calls),
                    "verified": int(row["verified"]),
                    "failed": int(row["failed"]),
                    "missing": int(row["missing"]),
                    "rejected": int(row["rejected"]),
                    "attestation": {a: int(row[a]) for a in ("A", "B", "C")},
                }
            )
        return {"window": window.as_dict(), "by": by, "upstreams": rows}

    def signing(self, window: Window) -> dict[str, Any]:
        """Outbound: calls signed per bucket by attestation, and why others were not."""
        buckets: dict[float, dict[str, int]] = {}
        names: set[str] = set()
        for start, attest, count in self.store.signed_by_bucket(window):
            name = attest or "unknown"
            names.add(name)
            row = buckets.setdefault(start, {})
            row[name] = row.get(name, 0) + count
        times = sorted(buckets)
        reasons = [
            {"action": action, "reason": reason, "calls": count}
            for action, reason, count in self.store.not_signed(window)
        ]
        return {
            "window": window.as_dict(),
            "times": times,
            "series": {n: [buckets[t].get(n, 0) for t in times] for n in sorted(names)},
            "signed": sum(sum(row.values()) for row in buckets.values()),
            "not_signed": reasons,
        }

    def fetch_failures(self, window: Window) -> list[dict[str, Any]]:
        return [{"host": host, "calls": count} for host, count in self.store.fetch_failures(window)]

    def search(self, query: CallQuery) -> dict[str, Any]:
        """Calls matching ``query``, most recent first, with their full record; a call that
        was not let through says so (``allowed`` false, its ``sip_code``)."""
        return {"calls": self.store.search(query)}

    def report(self, window: Window, sections: Sequence[str] = ()) -> dict[str, Any]:
        """Every panel at once (``shaken report``)."""
        wanted = set(sections) or set(_SECTIONS)
        out: dict[str, Any] = {"window": window.as_dict()}
        if "attestation" in wanted:
            out["attestation"] = self.attestation(window)
        if "failures" in wanted:
            out["failures"] = self.failures(window)["reasons"]
        if "upstreams" in wanted:
            out["upstreams_by_source"] = self.upstreams(window, "source")["upstreams"]
            out["upstreams_by_signer"] = self.upstreams(window, "signer")["upstreams"]
        if "signing" in wanted:
            signing = self.signing(window)
            out["signing"] = {"signed": signing["signed"], "not_signed": signing["not_signed"]}
        return out


_SERIES = ("verified_A", "verified_B", "verified_C", "verified_unknown", "failed", "missing")
_SECTIONS = ("attestation", "failures", "upstreams", "signing")
