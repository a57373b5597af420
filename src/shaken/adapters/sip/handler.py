"""From a parsed SIP request to the answer it gets: the redirect server's logic.

docs/architecture.md section 6. The handler does no I/O: the transport hands it a
:class:`~shaken.adapters.sip.codec.SipRequest`, the listener it came in on and the source
address, and gets back the response bytes, ``None`` (nothing to send), or, for the rare call
whose certificates must be fetched first, :class:`NeedsCertificates`: the transport obtains
them and hands the result back to :meth:`SipHandler.resume` for the answer. The transaction
rules (retransmissions, ACK, CANCEL, ``100 Trying``, ``487``) are the server transactions'
of :mod:`shaken.adapters.sip.transactions`; what is left here is which profile handles a call,
signing or verifying it, and the answer that renders.

What each request gets:

* ``INVITE`` on a signing listener: ``302`` with ``Contact`` = the Request-URI, the ``Identity``
  header, and a ``Date`` when the INVITE had none (RFC 8224 section 6.1 step 3). A call that
  cannot be signed (no profile, an unknown TN, no key) still gets its ``302``, without
  Identity and with ``X-Shaken-Reason`` saying why: attestation never blocks a call
  (as in Asterisk's res_stir_shaken).
* ``INVITE`` on a verification listener: the profile's action for the outcome
  (:func:`shaken.core.policy.decide`): ``302`` with ``P-Asserted-Identity`` carrying verstat
  and the display name after the action, ``X-Shaken-Attest``, ``X-Shaken-Reason``, and an
  RFC 9410 ``Reason`` for ``continue_with_reason``; or the reject code and phrase. Every 302
  of a verification listener carries the caller's identity (each P-Asserted-Identity, else
  From) re-rendered from its parsed parts, without any inbound ``verstat`` and without any
  display prefix or suffix a configured action adds: an SBC replaces the call's
  P-Asserted-Identity with it, so the callee never sees a verdict shaken did not reach (a 302
  without one would let the SBC pass the inbound identity on). An identity that does not
  parse is a 400: it is never echoed.
* An INVITE asking for an extension gets ``420`` (RFC 3261 section 8.2.2.3), one for a scheme
  other than sip, sips or tel ``416``; ``OPTIONS`` gets ``200`` (section 11.2); every other
  method but ACK and CANCEL ``405`` with ``Allow`` (8.2.1).
* Past ``max_in_flight`` calls waiting for certificates, ``503`` with ``Retry-After`` (RFC 3261
  section 21.5.4) instead of one more waiter.

The profile is the one bound to the listener, else the one whose ``sources`` hold the source
address, else the one the configured header names; with none, the call is not processed.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from shaken.adapters.logs import fields
from shaken.adapters.runtime import ProfileRuntime, Runtime
from shaken.adapters.sip.codec import SipRequest, respond, valid_uri
from shaken.adapters.sip.stats import SipStats
from shaken.adapters.sip.transactions import TIMER_H, ServerTransaction, ServerTransactions
from shaken.config import GLOBAL_PROFILE
from shaken.core.context import (
    SipContext,
    called_identities,
    caller_identities,
    make_context,
)
from shaken.core.errors import SigningError
from shaken.core.policy import Action, Decision, decide, strip_marks, strip_verstat, tag_uri
from shaken.core.reasons import REASONS, Verstat
from shaken.core.result import Outcome, VerificationResult
from shaken.core.tn import NameAddr, parse_name_addr
from shaken.services.calllog import CallLog, CallRecord, CallRecordBuilder, outcome_of

__all__ = [
    "Call",
    "Listener",
    "NeedsCertificates",
    "Reply",
    "Role",
    "SipHandler",
]

log = logging.getLogger("shaken.sip")

ALLOW = "INVITE, ACK, CANCEL, OPTIONS"

#: Source addresses whose profile is remembered (then the table starts afresh).
BY_SOURCE_ENTRIES = 4096


class Role(enum.StrEnum):
    SIGN = "sign"
    VERIFY = "verify"


@dataclass(frozen=True, slots=True)
class Listener:
    """Where a request arrived: ``spec`` as configured (``udp:127.0.0.1:5060``) and its role."""

    spec: str
    role: Role

    @property
    def transport(self) -> str:
        return self.spec.partition(":")[0]


@dataclass(slots=True)
class Call:
    """One INVITE being answered: what signing or verifying it, and its answer, need.

    Not frozen only because a frozen dataclass costs twice as much to make, on every call;
    nothing changes it once made.

    ``now`` is the call's time (the runtime's clock, read once), ``started`` the monotonic
    time it arrived (for the latency the call log records); ``callers`` are the parsed caller
    identities of a call to verify.
    """

    request: SipRequest
    source: tuple[str, int]
    profile: ProfileRuntime | None
    now: datetime
    started: float
    transaction: ServerTransaction
    context: SipContext
    callers: tuple[NameAddr, ...] = ()

    def respond(
        self,
        code: int,
        headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
        phrase: str | None = None,
    ) -> bytes:
        return respond(self.request, self.source, code, headers, phrase)

    def redirect(self, *headers: tuple[str, str]) -> bytes:
        """The ``302`` to the Request-URI (the call goes where it was going), with ``headers``."""
        return respond(
            self.request, self.source, 302, [("Contact", f"<{self.request.uri}>"), *headers]
        )

    def records(self, instance: str | None = None) -> CallRecordBuilder:
        """The call log's records of this call, with what it showed on the wire."""
        profile = self.profile
        label = None if profile is None else (profile.name or GLOBAL_PROFILE)
        request = self.request
        pai = request.values("p-asserted-identity")
        first = request.first
        source = self.source
        return CallRecordBuilder(  # positionally, in its field order (keywords cost more)
            self.now.timestamp(),  # time
            "sip",  # interface
            first("call-id"),  # call_id
            label,  # profile
            instance,
            source[0],  # source_ip
            source[1],  # source_port
            first("from"),  # presented_from
            ", ".join(pai) if pai else None,  # presented_pai
            first("to"),  # presented_to
            request.uri,  # request_uri
            self.transaction.key,  # transaction
        )


@dataclass(frozen=True, slots=True)
class NeedsCertificates:
    """A call whose verification waits for certificates (a fetch, a revalidation).

    The transport awaits :attr:`obtain` (the verification service's cold path, with the
    cache's per-source fetch bounds) and hands the result to :meth:`SipHandler.resume`; the
    call counts against ``max_in_flight`` until then.
    """

    call: Call
    obtain: Callable[[], Awaitable[VerificationResult]]


Reply = bytes | NeedsCertificates | None


@dataclass(slots=True)
class _Bindings:
    """What a runtime's ``[server]`` says about profile selection, resolved once per runtime."""

    listeners: dict[str, ProfileRuntime | None] = field(default_factory=dict)
    header: str | None = None
    by_source: dict[str, ProfileRuntime | None] = field(default_factory=dict)
    #: The display prefixes and suffixes of every action of every profile: what an inbound
    #: display name may not carry (issue: an attacker picks the most convincing one).
    marks: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    #: This server's name in the call log (``[server] instance``, else the host name).
    instance: str | None = None


class SipHandler:
    """Answer SIP requests with a :class:`Runtime`; swap :attr:`runtime` to reload.

    :meth:`handle` gives the bytes to send, None, or :class:`NeedsCertificates`, which the
    transport waits on and hands back to :meth:`resume` (or :meth:`failed`, :meth:`abandon`).

    :param call_log: where decisions go (queued, never blocking).
    :param max_in_flight: how many requests may wait on I/O at once before ``503``.
    :param retry_after: the ``Retry-After`` of those ``503`` answers, seconds.
    :param transaction_bytes: the byte budget of the answers kept for retransmissions.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        call_log: CallLog | None = None,
        max_in_flight: int | None = None,
        retry_after: int | None = None,
        transaction_ttl: float = TIMER_H,
        transaction_size: int = 65536,
        transaction_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_in_flight``, ``retry_after`` and ``transaction_bytes`` default to the
        runtime's ``[server]`` (a reload sets them again with :meth:`configure`)."""
        self.call_log = call_log
        server = runtime.settings.server_settings
        self.max_in_flight = server.sip_max_in_flight if max_in_flight is None else max_in_flight
        self.retry_after = server.retry_after if retry_after is None else retry_after
        if transaction_bytes is None:
            transaction_bytes = server.transaction_memory
        #: Answers waiting for certificates (:class:`NeedsCertificates` not yet resumed).
        self.in_flight = 0
        #: What ``/metrics`` reports of this handler (:class:`SipStatsCollector`).
        self.stats = SipStats()
        #: 503s answered because ``max_in_flight`` requests were waiting on I/O.
        self.overloads = 0
        self.transactions = ServerTransactions(transaction_ttl, transaction_size, transaction_bytes)
        self._monotonic = clock
        self._runtime = runtime
        self._bindings = self._bind(runtime)

    # ------------------------------------------------------------------------ configuration

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    @runtime.setter
    def runtime(self, runtime: Runtime) -> None:
        """Swap the configuration: requests already started finish with the old one."""
        self._bindings = self._bind(runtime)
        self._runtime = runtime

    @staticmethod
    def _bind(runtime: Runtime) -> _Bindings:
        server = runtime.settings.server_settings
        listeners: dict[str, ProfileRuntime | None] = {}
        for spec, name in server.listener_profiles.items():
            key = None if name == GLOBAL_PROFILE else name
            listeners[spec] = runtime.profiles.get(key)
        header = server.profile_header
        prefixes: set[str] = set()
        suffixes: set[str] = set()
        for profile in runtime.profiles.values():
            prefixes.update(profile.actions.marks[0])
            suffixes.update(profile.actions.marks[1])
        return _Bindings(
            listeners=listeners,
            header=header.lower() if header else None,
            marks=(tuple(sorted(prefixes)), tuple(sorted(suffixes))),
            instance=runtime.instance,
        )

    def select_profile(
        self, request: SipRequest, listener: Listener, source_ip: str
    ) -> ProfileRuntime | None:
        """The listener's profile, else the source address's, else the header's (section 6)."""
        bindings = self._bindings
        if listener.spec in bindings.listeners:
            return bindings.listeners[listener.spec]
        by_source = bindings.by_source
        if source_ip in by_source:
            profile = by_source[source_ip]
        else:
            profile = self._runtime.profile_for_source(source_ip)
            # Bounded in bytes: 4096 keys of at most an address's length (an IPv6 address
            # with a zone index), each mapping to a profile that exists anyway.
            if len(by_source) >= BY_SOURCE_ENTRIES:
                by_source.clear()
            if len(source_ip) <= 64:
                by_source[source_ip] = profile
        if profile is not None:
            return profile
        if bindings.header is not None:
            value = request.first(bindings.header)
            if value:
                return self._runtime.profile_for_header(value)
        return None

    # ------------------------------------------------------------------------------ requests

    def handle(self, request: SipRequest, listener: Listener, source: tuple[str, int]) -> Reply:
        """The answer to ``request``: bytes, None, or :class:`NeedsCertificates`."""
        if request.is_response:
            return None  # a stateless UAS sends no requests, so no response is ours
        method = request.method
        if request.problem is not None:
            return self.refuse(request, source, request.problem[0], request.detail)
        try:
            if method == "INVITE":
                started = self._monotonic()
                arrived = self.transactions.receive_invite(request, source, started)
                if isinstance(arrived, bytes):
                    self.stats.retransmissions += 1
                    return arrived  # a retransmission
                try:
                    answer = self._invite(arrived, request, listener, source, started)
                except Exception:
                    log.exception("internal error answering INVITE %s", request.first("call-id"))
                    answer = respond(request, source, 500)
                if isinstance(answer, bytes):
                    return self.transactions.send_final(arrived, answer)
                return answer
            self.stats.request(method, listener.role.value, "answered")
            if method == "ACK":
                self.stats.acks_absorbed += 1
                self.transactions.receive_ack(request)
                return None
            if method == "CANCEL":
                self.stats.cancels += 1
                return self.transactions.receive_cancel(request, source, self._monotonic())
            if method == "OPTIONS":
                return respond(
                    request, source, 200, [("Allow", ALLOW), ("Accept", "application/sdp")]
                )
            return respond(request, source, 405, [("Allow", ALLOW)])
        except Exception:
            log.exception("internal error answering %s %s", method, request.first("call-id"))
            return respond(request, source, 500)

    def refuse(
        self, request: SipRequest, source: tuple[str, int], code: int, detail: str
    ) -> bytes | None:
        """The ``code`` answer to a request that cannot be served (malformed, or its stream
        cannot be framed), saying why in a Warning; None when it gets none (a response, an
        ACK, or no Via to send it to)."""
        if request.is_response or request.method == "ACK" or request.top_via is None:
            return None
        self.stats.request(request.method, "", "refused")
        return respond(request, source, code, [("Warning", _warning(detail))])

    def overloaded(self, request: SipRequest, source: tuple[str, int]) -> bytes | None:
        """The cheap ``503`` for a request shed before any work (RFC 3261 21.5.4), or None
        when it gets no answer (an ACK, a malformed request, one without a Via)."""
        if request.is_response or request.problem is not None or request.method == "ACK":
            return None
        self.stats.request(request.method, "", "refused")
        return respond(request, source, 503, [("Retry-After", str(self.retry_after))])

    def _invite(
        self,
        transaction: ServerTransaction,
        request: SipRequest,
        listener: Listener,
        source: tuple[str, int],
        started: float,
    ) -> bytes | NeedsCertificates:
        require = request.values("require")
        if require:
            # RFC 3261 section 8.2.2.3: no extension is supported here.
            return respond(request, source, 420, [("Unsupported", ", ".join(require))])
        scheme = request.uri.partition(":")[0].lower()
        if scheme not in ("sip", "sips", "tel"):
            return respond(request, source, 416)
        now = self._runtime.clock.now()
        profile = self.select_profile(request, listener, source[0])
        context = _context(request)
        if listener.role is Role.SIGN:
            return self._sign(Call(request, source, profile, now, started, transaction, context))
        callers = _identities(request)
        if isinstance(callers, str):
            return respond(request, source, 400, [("Warning", _warning(f"malformed {callers}"))])
        call = Call(request, source, profile, now, started, transaction, context, callers)
        return self._verify(call)

    # ------------------------------------------------------------------------------- signing

    def _sign(self, call: Call) -> bytes:
        profile = call.profile
        if profile is None or not profile.signs or profile.signer is None:
            why = "no profile" if profile is None else f"profile {profile.name} does not sign"
            answer = call.redirect(_x_reason("not_signed", why))
            self._log(
                self._records(call).not_processed("sign", why=why, latency_ms=self._latency(call))
            )
            return answer
        if call.request.fields.get("identity"):
            answer = call.redirect(_x_reason("already_signed", "the INVITE has an Identity header"))
            self._log(
                self._records(call).unsigned("already_signed", latency_ms=self._latency(call))
            )
            return answer
        try:
            signed = profile.signer.sign_request(call.context, now=call.now)
        except SigningError as exc:
            answer = call.redirect(_x_reason("not_signed", str(exc)))
            record = self._records(call).unsigned(
                "not_signed", reason=str(exc), sip_code=302, latency_ms=self._latency(call)
            )
            self._log(record)
            return answer
        headers = [("Identity", signed.identity)]
        if signed.rcd_identity is not None:
            # The brand asks for a separate ppt=rcd PASSporT (RFC 9795 section 4).
            headers.append(("Identity", signed.rcd_identity))
        if signed.date is not None:
            headers.append(("Date", signed.date))
        headers.append(("X-Shaken-Attest", signed.attest))
        answer = call.redirect(*headers)
        self._log(self._records(call).signed(signed, sip_code=302, latency_ms=self._latency(call)))
        return answer

    # -------------------------------------------------------------------------- verification

    def _verify(self, call: Call) -> bytes | NeedsCertificates:
        profile = call.profile
        if profile is None or not profile.behavior.verifies:
            why = "no profile" if profile is None else f"profile {profile.name} does not verify"
            marks = self._bindings.marks
            cleaned = [
                NameAddr(
                    display_name=strip_marks(caller.display_name, *marks),
                    uri=strip_verstat(caller.uri),
                ).format()
                for caller in call.callers
            ]
            answer = call.redirect(_asserted_header(cleaned), _x_reason("not_checked", why))
            self._log(
                self._records(call).not_processed("verify", why=why, latency_ms=self._latency(call))
            )
            return answer
        verifier = profile.verifier
        if verifier is None:
            result = VerificationResult(verstat=Verstat.NO_VALIDATION, outcome=Outcome.NOT_CHECKED)
            return self._decided(call, result)
        source = call.source[0]
        step = verifier.verify_warm(call.context, now=call.now, source=source)
        if isinstance(step, VerificationResult):
            return self._decided(call, step)
        if self.in_flight >= self.max_in_flight:
            self.overloads += 1
            return call.respond(503, [("Retry-After", str(self.retry_after))])
        self.in_flight += 1
        return NeedsCertificates(call, partial(verifier.finish, step, source=source))

    def resume(self, pending: NeedsCertificates, result: VerificationResult) -> bytes:
        """The answer of a call whose certificates the transport obtained: ``487`` if it was
        cancelled meanwhile (then nothing is decided or recorded), else the decision's."""
        self.in_flight -= 1
        call = pending.call
        transaction = call.transaction
        early = self.transactions.resumed(transaction)
        if early is not None:
            return early
        try:
            answer = self._decided(call, result)
        except Exception:
            log.exception("internal error answering INVITE %s", call.context.call_id)
            answer = call.respond(500)
        return self.transactions.send_final(transaction, answer)

    def failed(self, pending: NeedsCertificates, error: Exception) -> bytes:
        """The answer of a call whose certificates could not be obtained for a reason that is
        not a verification result (a caller mistake, a bug): ``500``, logged."""
        self.in_flight -= 1
        call = pending.call
        log.error("verification of %s failed: %r", call.context.call_id, error, exc_info=error)
        return self.transactions.send_final(call.transaction, call.respond(500))

    def abandon(self, pending: NeedsCertificates) -> None:
        """The wait was given up (the server is stopping): the transaction keeps a ``500`` for
        the retransmissions still to come, and nothing is sent now."""
        self.in_flight -= 1
        self.transactions.abandoned(pending.call.transaction)

    def _decided(self, call: Call, result: VerificationResult) -> bytes:
        profile = call.profile
        assert profile is not None  # only a profile that verifies gets here
        marks = self._bindings.marks
        names = [strip_marks(caller.display_name, *marks) for caller in call.callers]
        decision = decide(result, profile.actions, display_name=names[0] if names else None)
        summary = _x_reason_result(result)
        if decision.sip_code is not None:
            answer = call.respond(decision.sip_code, [summary], phrase=decision.sip_phrase)
            self._log(self._verdict(call, result, decision, decision.sip_code))
            return answer
        headers = [_asserted_header(_asserted(call.callers, names, decision))]
        if result.attest:
            headers.append(("X-Shaken-Attest", result.attest))
        headers.append(summary)
        if decision.reason_header is not None:
            headers.append(("Reason", decision.reason_header))
        if decision.call_info is not None:
            # RFC 9796: the verified brand, one Call-Info field (built from checked values).
            headers.append(("Call-Info", decision.call_info))
        answer = call.redirect(*headers)
        self._log(self._verdict(call, result, decision, 302))
        return answer

    # -------------------------------------------------------------------------------- logging

    def _verdict(
        self, call: Call, result: VerificationResult, decision: Decision, sip_code: int
    ) -> CallRecord:
        orig = dest = None
        if result.orig is None or not result.dest:
            orig, dest = _parties(call.context)  # the PASSporT was not read
        return self._records(call).verified(
            result,
            decision,
            orig=orig,
            dest=dest,
            sip_code=sip_code,
            latency_ms=self._latency(call),
        )

    def _latency(self, call: Call) -> float:
        return round((self._monotonic() - call.started) * 1000.0, 3)

    def _records(self, call: Call) -> CallRecordBuilder:
        return call.records(self._bindings.instance)

    def _log(self, record: CallRecord) -> None:
        """Count the decision (metrics) and queue its record (the call log)."""
        outcome = outcome_of(record)
        reason = record.reason if outcome in {"failed", "missing"} else None
        self.stats.request("INVITE", record.direction, outcome, reason or "")
        if record.latency_ms is not None:
            self.stats.decided(record.direction, record.latency_ms / 1000.0)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s %s",
                record.direction,
                outcome,
                record.call_id,
                extra=fields(source=record.source_ip, reason=record.reason, profile=record.profile),
            )
        if self.call_log is None:
            return
        try:
            self.call_log.record(record)
        except Exception:  # the call log must never take a call down
            log.exception("call log record failed")


# ------------------------------------------------------------------------------------ helpers


def _context(request: SipRequest) -> SipContext:
    first = request.first
    return make_context(  # SipContext's fields, in order
        tuple(request.all("identity")),  # identity
        first("from"),  # from_header
        tuple(request.values("p-asserted-identity")),  # pai
        first("to"),  # to
        request.uri,  # request_uri
        first("date"),  # date
        first("call-id"),  # call_id
    )


def _parties(context: SipContext) -> tuple[str | None, str | None]:
    """Caller and called as SIP shows them, for the log of a call whose PASSporT was not read."""
    callers = caller_identities(context)
    called = called_identities(context, sources=("to",))
    return (str(callers[0]) if callers else None, str(called[0]) if called else None)


def _identities(request: SipRequest) -> tuple[NameAddr, ...] | str:
    """The caller's identities: every P-Asserted-Identity, else From, parsed; or the name of
    the field that does not parse as a name-addr/addr-spec with an RFC 3986 URI."""
    pai = request.values("p-asserted-identity")
    values = pai or [request.first("from") or ""]
    out: list[NameAddr] = []
    for value in values:
        try:
            addr = parse_name_addr(value)
        except ValueError:
            addr = None
        if addr is None or not valid_uri(addr.uri):
            return "P-Asserted-Identity" if pai else "From"
        out.append(addr)
    return tuple(out)


def _asserted_header(values: list[str]) -> tuple[str, str]:
    """One P-Asserted-Identity field with every value (RFC 3325 section 9.1 allows the list):
    an SBC that copies the 302's first field of that name (``$T_rpl($hdr(...))`` in
    Kamailio) then passes on every identity."""
    return ("P-Asserted-Identity", ", ".join(values))


def _asserted(
    callers: tuple[NameAddr, ...], names: list[str | None], decision: Decision
) -> list[str]:
    """The P-Asserted-Identity values of the 302, rendered from parsed parts only: each caller
    identity's URI without inbound verstat, tagged with ours (3GPP TS 24.229 7.2A.20), and its
    cleaned display name (``names``), or the one the action chose, or the verified brand's
    (RFC 9795; :attr:`Decision.brand_presented`). RFC 3325 gives the value no header
    parameters, so none is kept."""
    out: list[str] = []
    alert = decision.action is Action.ALERT or decision.brand_presented
    kinds: set[str] = set()
    for caller, name in zip(callers, names, strict=True):
        # RFC 3325 section 9.1: at most one sip/sips and one tel value; the first of each.
        kind = "tel" if caller.uri[:4].lower() == "tel:" else "sip"
        if kind in kinds:
            continue
        kinds.add(kind)
        uri = strip_verstat(caller.uri)
        if decision.tag_verstat:
            uri = tag_uri(uri, decision.verstat) or uri
        shown = decision.display_name if alert else name
        out.append(NameAddr(display_name=shown, uri=uri).format())
    return out


def _quote(text: str) -> str:
    clean = "".join(c if " " <= c < "\x7f" else "?" for c in text)[:200]
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _warning(detail: str) -> str:
    # RFC 3261 section 20.43: warn-code 399 ("miscellaneous warning"), the host, the text.
    return f"399 shaken {_quote(detail)}"


def _x_reason(name: str, text: str) -> tuple[str, str]:
    return ("X-Shaken-Reason", f"{name};text={_quote(text)}")


def _x_reason_result(result: VerificationResult) -> tuple[str, str]:
    """``verified``, or the Reason's name with its cause and phrase, like an RFC 9410 Reason."""
    if result.reason is None:
        return ("X-Shaken-Reason", result.outcome.value)
    info = REASONS[result.reason]
    return (
        "X-Shaken-Reason",
        f"{result.reason.value};cause={info.sip_code};text={_quote(info.phrase)}",
    )
