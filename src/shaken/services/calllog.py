"""What the call log records, and the port a call-log store implements.

Every decision, whether it came over SIP or REST, becomes one :class:`CallRecord`, made by
one :class:`CallRecordBuilder`, so a decision is recorded alike whichever interface it came
through. Recording must never slow a call: :meth:`CallLog.record` only enqueues, and the store
writes in batches off the hot path.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shaken.core.fastinit import positional_constructor
from shaken.core.policy import Decision
from shaken.core.reasons import Reason, Verstat
from shaken.core.result import VerificationResult
from shaken.services.signing import SignedCall

__all__ = [
    "CallLog",
    "CallQuery",
    "CallRecord",
    "CallRecordBuilder",
    "new_record_id",
    "outcome_of",
    "transaction_record_id",
]


class _RecordIds:
    """Record ids unique across processes and instances: a random 64-bit prefix per process
    (drawn again in a forked worker) and a counter; cheaper than a UUID per call."""

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count()

    def new(self) -> str:
        return f"{self._prefix}-{next(self._count):x}"


_IDS = _RecordIds()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_IDS.reseed)


def new_record_id() -> str:
    """A fresh :attr:`CallRecord.record_id`."""
    return _IDS.new()


def transaction_record_id(direction: str, key: tuple[str, ...]) -> str:
    """The :attr:`CallRecord.record_id` of the decision on one SIP server transaction.

    Every worker (and every instance behind a dispatcher) that answers a retransmission of
    the same INVITE derives the same id from its transaction key (RFC 3261 section 17.2.3),
    so the store, which skips a record_id it already holds, keeps one record per call
    however many of them read a copy.
    """
    digest = hashlib.blake2b("\x1f".join((direction, *key)).encode(), digest_size=16)
    return "t-" + digest.hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """One decision. ``direction`` is ``sign`` or ``verify``; ``interface`` ``sip`` or ``rest``.

    ``allowed`` is False when the call was rejected (the action was ``reject``). ``brand`` is
    the Rich Call Data name (RFC 9795 ``nam``) a call was signed with or claimed, and
    ``rcd_status`` / ``rcd_reason`` its branding verdict (``verified``, ``integrity_failed``,
    ...), kept apart from the SHAKEN ``verstat`` / ``reason``.

    What a call looked like on the wire, for traceback and for "who sends me what":
    ``source_ip``/``source_port`` (the SIP peer or the REST client), the identities as
    presented (``presented_from``, ``presented_pai``, ``presented_to``, ``request_uri``,
    verbatim), and from the PASSporT and its certificate ``origid``, ``spc`` and
    ``cert_serial`` (hex). ``orig``/``dest`` are the PASSporT's (or, unsigned, the canonical
    numbers presented). ``instance`` names the server that decided (``[server] instance``).
    ``record_id`` is unique per record, across processes and instances: a store that may see
    a record twice (a spool replayed) writes it once.
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
    record_id: str = field(default_factory=new_record_id)
    instance: str | None = None
    source_ip: str | None = None
    source_port: int | None = None
    presented_from: str | None = None
    presented_pai: str | None = None
    presented_to: str | None = None
    request_uri: str | None = None
    origid: str | None = None
    spc: str | None = None
    cert_serial: str | None = None


#: CallRecord with every field positionally, in field order: a record is built per call
#: (:mod:`shaken.core.fastinit` says why).
make_call_record: Callable[..., CallRecord] = positional_constructor(CallRecord)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallQuery:
    """Which records to read back, the same for every store and every reader (the CLI, the
    REST call queries, the dashboard). Every filter given must hold; times are Unix times.

    ``tn`` matches the caller or any called number (canonical digits); ``source`` the peer's
    address exactly; ``reason`` the SHAKEN Reason or the branding one; ``outcome`` one of
    the stored outcomes, or ``rejected`` for calls that were not allowed; ``limit`` keeps the
    most recent ones (results are oldest first either way).
    """

    since: float | None = None
    until: float | None = None
    outcome: str | None = None
    tn: str | None = None
    call_id: str | None = None
    origid: str | None = None
    spc: str | None = None
    reason: str | None = None
    source: str | None = None
    profile: str | None = None
    interface: str | None = None
    limit: int | None = None


@dataclass(slots=True)
class CallRecordBuilder:
    """The records of one request: when it came, over which ``interface`` (``sip`` or
    ``rest``), its ``call_id``, the ``profile`` name that handled it, and what the request
    showed on the wire (its source and presented identities, verbatim). (Not frozen: it is
    made for every call, and a frozen dataclass costs twice as much to make.)"""

    time: float
    interface: str
    call_id: str | None
    profile: str | None
    instance: str | None = None
    source_ip: str | None = None
    source_port: int | None = None
    presented_from: str | None = None
    presented_pai: str | None = None
    presented_to: str | None = None
    request_uri: str | None = None
    #: The SIP server transaction's key: the records then get :func:`transaction_record_id`,
    #: the same in every worker that answers a copy of the request.
    transaction: tuple[str, ...] | None = None

    def _record(
        self,
        direction: str,
        *,
        orig: str | None = None,
        dest: str | None = None,
        attest: str | None = None,
        verstat: str | None = None,
        reason: str | None = None,
        sip_code: int | None = None,
        action: str | None = None,
        allowed: bool = True,
        x5u: str | None = None,
        latency_ms: float | None = None,
        brand: str | None = None,
        rcd_status: str | None = None,
        rcd_reason: str | None = None,
        origid: str | None = None,
        spc: str | None = None,
        cert_serial: str | None = None,
    ) -> CallRecord:
        """The record of a decision; the defaults are CallRecord's own (a test compares)."""
        transaction = self.transaction
        if transaction is None:
            record_id = new_record_id()
        else:
            record_id = transaction_record_id(direction, transaction)
        return make_call_record(  # CallRecord's fields, in order (tests/core/test_fastinit.py)
            self.time,
            direction,
            self.interface,
            self.call_id,
            self.profile,
            orig,
            dest,
            attest,
            verstat,
            reason,
            sip_code,
            action,
            allowed,
            x5u,
            latency_ms,
            brand,
            rcd_status,
            rcd_reason,
            record_id,
            self.instance,
            self.source_ip,
            self.source_port,
            self.presented_from,
            self.presented_pai,
            self.presented_to,
            self.request_uri,
            origid,
            spc,
            cert_serial,
        )

    def not_processed(self, direction: str, *, why: str, latency_ms: float) -> CallRecord:
        """A call that no profile applies to (or whose profile does not do ``direction``):
        answered, and recorded, but neither signed nor verified."""
        return self._record(direction, action="not_processed", reason=why, latency_ms=latency_ms)

    def signed(
        self, signed: SignedCall, *, latency_ms: float, sip_code: int | None = None
    ) -> CallRecord:
        """A call signed: its parties, attestation, certificate URL and brand."""
        return self._record(
            "sign",
            orig=signed.orig,
            dest=",".join(signed.dest),
            attest=signed.attest,
            sip_code=sip_code,
            action="signed",
            x5u=signed.x5u,
            latency_ms=latency_ms,
            brand=signed.brand,
            origid=signed.origid,
        )

    def unsigned(
        self,
        action: str,
        *,
        latency_ms: float,
        reason: str | None = None,
        orig: str | None = None,
        dest: Sequence[str] = (),
        allowed: bool = True,
        sip_code: int | None = None,
    ) -> CallRecord:
        """A call not signed (``not_signed``, ``already_signed``), and why."""
        return self._record(
            "sign",
            orig=orig,
            dest=",".join(dest) or None,
            reason=reason,
            sip_code=sip_code,
            action=action,
            allowed=allowed,
            latency_ms=latency_ms,
        )

    def verified(
        self,
        result: VerificationResult,
        decision: Decision,
        *,
        latency_ms: float,
        sip_code: int | None,
        orig: str | None = None,
        dest: str | None = None,
    ) -> CallRecord:
        """A verification's verdict and the action taken. ``orig`` and ``dest`` are the
        parties as the request shows them, recorded where the PASSporT names none; the
        branding verdict (RFC 9795) is kept beside the SHAKEN one."""
        rcd = result.rcd
        return self._record(
            "verify",
            orig=result.orig or orig,
            dest=",".join(result.dest) or dest,
            attest=result.attest,
            verstat=result.verstat.value,
            reason=None if result.reason is None else result.reason.value,
            sip_code=sip_code,
            action=decision.action.value,
            allowed=decision.allowed,
            x5u=result.x5u,
            latency_ms=latency_ms,
            origid=result.origid,
            spc=result.spc,
            cert_serial=result.cert_serial,
            brand=None if rcd is None else rcd.nam,
            rcd_status=None if rcd is None else rcd.status.value,
            rcd_reason=None if rcd is None or rcd.reason is None else rcd.reason.value,
        )


def outcome_of(record: CallRecord) -> str:
    """The outcome a record stands for (the outcomes of the policy), as stored and filtered on.

    Signing records are ``signed`` or ``not_signed``; verification records are ``verified``,
    ``missing`` (no Identity), ``failed`` (any other Reason) or ``not_checked``. Whether the
    call was let through is :attr:`CallRecord.allowed` (``--outcome rejected``).
    """
    if record.action == "not_processed":
        return "not_processed"
    if record.direction == "sign":
        return "signed" if record.action == "signed" else "not_signed"
    if record.reason == Reason.MISSING_IDENTITY.value:
        return "missing"
    if record.reason is not None:
        return "failed"
    if record.verstat == Verstat.PASSED.value:
        return "verified"
    return "not_checked"


class CallLog(Protocol):
    """Where decisions are recorded (a SQLite file, PostgreSQL, a test's list)."""

    def record(self, record: CallRecord) -> None:
        """Queue one record; never blocks and never raises for a full or failing store."""

    def healthy(self) -> tuple[bool, str]:
        """(True, detail) while records reach the store; (False, why not) otherwise.

        REST ``/readyz`` reports it; it never blocks (the writers know it without I/O).
        """
