"""What the call log records, and the port a call-log store implements.

Every decision, whether it came over SIP or REST, becomes one :class:`CallRecord` (DESIGN.md
section 8). Recording must never slow a call: :meth:`CallLog.record` only enqueues, and the
store writes in batches off the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["CallLog", "CallLogHealth", "CallRecord"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """One decision. ``direction`` is ``sign`` or ``verify``; ``interface`` ``sip`` or ``rest``.

    ``allowed`` is False when the call was rejected (the action was ``reject``). ``brand`` is
    the Rich Call Data name (RFC 9795 ``nam``) a call was signed with or claimed, and
    ``rcd_status`` / ``rcd_reason`` its branding verdict (``verified``, ``integrity_failed``,
    ...), kept apart from the SHAKEN ``verstat`` / ``reason``.
    """

    time: float
    direction: str
    interface: str
    call_id: str | None = None
    profile: str | None = None
    orig: str | None = None
    dest: str | None = None
    attest: str | None = None
    verstat: str | None = None
    reason: str | None = None
    sip_code: int | None = None
    action: str | None = None
    allowed: bool = True
    x5u: str | None = None
    latency_ms: float | None = None
    brand: str | None = None
    rcd_status: str | None = None
    rcd_reason: str | None = None


class CallLog(Protocol):
    def record(self, record: CallRecord) -> None:
        """Queue one record; never blocks and never raises for a full or failing store."""


class CallLogHealth(Protocol):
    """A call log that can say whether decisions reach its store (REST ``/readyz``)."""

    def healthy(self) -> tuple[bool, str]:
        """(True, detail) while records are stored; (False, why not) otherwise."""
