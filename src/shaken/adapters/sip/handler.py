"""From a parsed SIP request to the bytes of its answer: the redirect server's logic.

DESIGN.md section 6. The handler is transport-free: the server hands it a
:class:`~shaken.adapters.sip.codec.SipRequest`, the listener it came in on and the source
address, and gets back the response bytes, ``None`` (nothing to send), or, for the rare request
that must wait for a certificate fetch, a coroutine that produces them.

What each request gets:

* ``INVITE`` on a signing listener: ``302`` with ``Contact`` = the Request-URI, the ``Identity``
  header, and a ``Date`` when the INVITE had none (RFC 8224 section 6.1 step 3). A call that
  cannot be signed (no profile, an unknown TN, no key) still gets its ``302``, without
  Identity and with ``X-Shaken-Reason`` saying why: attestation never blocks a call
  (``reference/asterisk.md`` section 3.1).
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
* Transaction rules of a stateless UAS that is still transaction-correct (RFC 3261 section
  17.2.1): a retransmitted INVITE gets the identical bytes (kept for Timer H, 64*T1 = 32 s),
  one that arrives while the first is still being worked on gets ``100 Trying``; ACKs are
  absorbed; ``CANCEL`` gets ``200`` (and a pending INVITE ``487``) or ``481`` (section 9.2);
  ``OPTIONS`` gets ``200`` (section 11.2); every other method ``405`` with ``Allow`` (8.2.1).
* Past ``max_in_flight`` requests waiting on I/O, ``503`` with ``Retry-After`` (RFC 3261
  section 21.5.4) instead of one more waiter.

The profile is the one bound to the listener, else the one whose ``sources`` hold the source
address, else the one the configured header names; with none, the call is not processed.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shaken import __version__
from shaken.adapters.sip.codec import (
    SipRequest,
    ack_transaction,
    build_response,
    stamp_via,
    valid_uri,
)
from shaken.adapters.wiring import ProfileRuntime, Runtime
from shaken.core.context import SipContext, called_identities, caller_identities
from shaken.core.errors import ShakenError, SigningError
from shaken.core.policy import Action, Decision, decide, strip_marks, strip_verstat, tag_uri
from shaken.core.reasons import REASONS, Verstat
from shaken.core.result import Outcome, VerificationResult
from shaken.core.tn import NameAddr, parse_name_addr
from shaken.services.calllog import CallLog, CallRecord
from shaken.services.verification import VerificationService

__all__ = ["GLOBAL_PROFILE", "Listener", "Reply", "Role", "SipHandler"]

log = logging.getLogger("shaken.sip")

#: The name that binds a listener to the global settings (no ``[profile]``), as in
#: ``shaken config show --effective global``.
GLOBAL_PROFILE = "global"
ALLOW = "INVITE, ACK, CANCEL, OPTIONS"
SERVER = f"shaken/{__version__}"
#: Timer H (64*T1, RFC 3261 section 17.2.1): how long an INVITE's answer is kept for
#: retransmissions.
TRANSACTION_TTL = 32.0

#: Source addresses whose profile is remembered (then the table starts afresh).
BY_SOURCE_ENTRIES = 4096

Reply = bytes | None | Coroutine[Any, Any, bytes | None]


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


#: What one table entry costs besides its key's and answer's characters: the tuple, the
#: entry object, the bytes header and the ordered dict's slot (measured with tracemalloc on
#: CPython 3.11, rounded up).
ENTRY_OVERHEAD = 400


@dataclass(slots=True)
class _Transaction:
    key: tuple[str, ...]
    expires: float
    cost: int
    _response: bytes | None = None  # None while the answer is being worked on
    cancelled: bool = False
    table: _Transactions | None = None

    @property
    def response(self) -> bytes | None:
        return self._response

    @response.setter
    def response(self, answer: bytes | None) -> None:
        if self.table is not None:
            self.table.answered(self, answer)
        else:
            self._response = answer


class _Transactions:
    """Answers by transaction key, for retransmissions (RFC 3261 17.2.1).

    Bounded in time (``ttl``, Timer H), in count (``size``) and in bytes (``max_bytes``: keys
    and stored answers, each entry's cost counted as :data:`ENTRY_OVERHEAD` plus its
    characters). Past the byte budget the oldest answered entries go first; an answer that
    cannot fit even then is sent but not kept, and its retransmission is answered afresh. A
    pending entry is never dropped for bytes: there are at most ``max_in_flight`` of them, each
    holding no more than its request already does.
    """

    def __init__(self, ttl: float, size: int, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.ttl = ttl
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, ...], _Transaction] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, ...], now: float) -> _Transaction | None:
        entry = self._entries.get(key)
        if entry is None or entry.expires < now:
            return None
        return entry

    def open(self, key: tuple[str, ...], now: float) -> _Transaction:
        cost = ENTRY_OVERHEAD + sum(len(part) for part in key)
        entry = _Transaction(key=key, expires=now + self.ttl, cost=cost, table=self)
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self._drop(old)
        entries[key] = entry
        self.bytes += cost
        while entries:
            first = next(iter(entries.values()))
            if len(entries) <= self.size and first.expires >= now:
                break
            if first.response is None and len(entries) <= self.size * 2:
                break  # never forget a pending answer while there is room at all
            self._drop(entries.popitem(last=False)[1])
        return entry

    def answered(self, entry: _Transaction, answer: bytes | None) -> None:
        """Keep ``answer`` for ``entry`` if it fits the byte budget (evicting older answers)."""
        if self._entries.get(entry.key) is not entry:
            entry.table = None  # forgotten or replaced meanwhile: nothing to account
            entry._response = answer
            return
        grow = len(answer) if answer is not None else 0
        shrink = len(entry._response) if entry._response is not None else 0
        entry._response = answer
        entry.cost += grow - shrink
        self.bytes += grow - shrink
        if self.bytes <= self.max_bytes:
            return
        entries = self._entries
        skipped = 0
        while self.bytes > self.max_bytes and skipped < len(entries):
            key, older = next(iter(entries.items()))
            if older is entry or older._response is None:
                entries.move_to_end(key)  # pending (at most max_in_flight) or this one: keep
                skipped += 1
                continue
            del entries[key]
            self._drop(older)
        if self.bytes > self.max_bytes:
            # Too big to keep even alone: sent, not kept (a retransmission is answered again).
            del entries[entry.key]
            self._drop(entry)

    def _drop(self, entry: _Transaction) -> None:
        self.bytes -= entry.cost
        entry.table = None

    def forget(self, key: tuple[str, ...]) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.response is not None:
            del self._entries[key]
            self._drop(entry)


def _transaction_key(request: SipRequest, method: str) -> tuple[str, ...]:
    """RFC 3261 section 17.2.3: the branch (magic cookie) names the transaction; for RFC 2543
    clients without one, Call-ID, CSeq number, From tag and the top Via stand in for it."""
    call_id = request.first("call-id") or ""
    top = request.vias[0] if request.vias else ""
    via = request.top_via
    branch = via.branch if via is not None else None
    if branch and branch.startswith("z9hG4bK"):
        return (branch, method, call_id)
    cseq = (request.first("cseq") or "").split(" ", 1)[0]
    return (call_id, method, cseq, request.first("from") or "", top)


@dataclass(slots=True)
class _Bindings:
    """What a runtime's ``[server]`` says about profile selection, resolved once per runtime."""

    listeners: dict[str, ProfileRuntime | None] = field(default_factory=dict)
    header: str | None = None
    by_source: dict[str, ProfileRuntime | None] = field(default_factory=dict)
    #: The display prefixes and suffixes of every action of every profile: what an inbound
    #: display name may not carry (issue: an attacker picks the most convincing one).
    marks: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())


class SipHandler:
    """Answer SIP requests with a :class:`Runtime`; swap :attr:`runtime` to reload.

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
        max_in_flight: int = 1000,
        retry_after: int = 1,
        transaction_ttl: float = TRANSACTION_TTL,
        transaction_size: int = 65536,
        transaction_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.call_log = call_log
        self.max_in_flight = max_in_flight
        self.retry_after = retry_after
        self.in_flight = 0
        #: 503s answered because ``max_in_flight`` requests were waiting on I/O.
        self.overloads = 0
        self.transactions = _Transactions(transaction_ttl, transaction_size, transaction_bytes)
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
        server = runtime.settings.server
        listeners: dict[str, ProfileRuntime | None] = {}
        for spec, name in dict(server.get("listener_profiles", {})).items():
            key = None if name == GLOBAL_PROFILE else name
            listeners[spec] = runtime.profiles.get(key)
        header = server.get("profile_header")
        prefixes: set[str] = set()
        suffixes: set[str] = set()
        for profile in runtime.profiles.values():
            prefixes.update(profile.actions.marks[0])
            suffixes.update(profile.actions.marks[1])
        return _Bindings(
            listeners=listeners,
            header=header.lower() if header else None,
            marks=(tuple(sorted(prefixes)), tuple(sorted(suffixes))),
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
        """The answer to ``request``: bytes, None, or a coroutine producing them."""
        if request.is_response:
            return None  # a stateless UAS sends no requests, so no response is ours
        method = request.method
        if request.problem is not None:
            if method == "ACK" or request.top_via is None:
                return None  # no response to an ACK, nowhere to send one without a Via
            return self._respond(
                request, source, request.problem[0], [("Warning", _warning(request.detail))]
            )
        try:
            if method == "INVITE":
                return self._invite(request, listener, source)
            if method == "ACK":
                self.transactions.forget(_transaction_key(request, "INVITE"))
                return None
            if method == "CANCEL":
                return self._cancel(request, source)
            if method == "OPTIONS":
                return self._respond(
                    request, source, 200, [("Allow", ALLOW), ("Accept", "application/sdp")]
                )
            return self._respond(request, source, 405, [("Allow", ALLOW)])
        except Exception:
            log.exception("internal error answering %s %s", method, request.first("call-id"))
            return self._respond(request, source, 500)

    def overloaded(self, request: SipRequest, source: tuple[str, int]) -> bytes | None:
        """The cheap ``503`` for a request shed before any work (RFC 3261 21.5.4), or None
        when it gets no answer (an ACK, a malformed request, one without a Via)."""
        if request.is_response or request.problem is not None or request.method == "ACK":
            return None
        return self._respond(request, source, 503, [("Retry-After", str(self.retry_after))])

    def absorb_ack(self, data: bytes) -> bool:
        """Take an ACK read by :func:`ack_transaction`; False when it needs a full parse."""
        found = ack_transaction(data)
        if found is None:
            return False
        self.transactions.forget((found[0], "INVITE", found[1]))
        return True

    def _respond(
        self,
        request: SipRequest,
        source: tuple[str, int],
        code: int,
        headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
        phrase: str | None = None,
    ) -> bytes:
        """The answer to ``request``; the phrase is the code's registered one unless given."""
        vias = list(request.vias)
        vias[0] = stamp_via(vias[0], source[0], source[1], parsed=request.top_via)
        return build_response(request, code, phrase, headers, vias=vias, server=SERVER)

    def _cancel(self, request: SipRequest, source: tuple[str, int]) -> bytes:
        # RFC 3261 section 9.2: a CANCEL matches the INVITE with the same branch.
        entry = self.transactions.get(_transaction_key(request, "INVITE"), self._monotonic())
        if entry is None:
            return self._respond(request, source, 481)
        if entry.response is None:
            entry.cancelled = True  # the pending INVITE is answered 487 when its work ends
        return self._respond(request, source, 200)

    def _invite(self, request: SipRequest, listener: Listener, source: tuple[str, int]) -> Reply:
        started = self._monotonic()
        key = _transaction_key(request, "INVITE")
        known = self.transactions.get(key, started)
        if known is not None:
            if known.response is not None:
                return known.response  # RFC 3261 17.2.1: the same answer again
            return self._respond(request, source, 100)
        require = request.values("require")
        if require:
            # RFC 3261 section 8.2.2.3: no extension is supported here.
            return self._respond(request, source, 420, [("Unsupported", ", ".join(require))])
        scheme = request.uri.partition(":")[0].lower()
        if scheme not in ("sip", "sips", "tel"):
            return self._respond(request, source, 416)
        transaction = self.transactions.open(key, started)
        try:
            now = self._runtime.clock.now()
            profile = self.select_profile(request, listener, source[0])
            if listener.role is Role.SIGN:
                answer: Reply = self._sign(request, source, profile, now, started)
            else:
                answer = self._verify(request, source, profile, now, started, transaction)
        except Exception:
            log.exception("internal error answering INVITE %s", request.first("call-id"))
            answer = self._respond(request, source, 500)
        if isinstance(answer, bytes):
            transaction.response = answer
        return answer

    # ------------------------------------------------------------------------------- signing

    def _sign(
        self,
        request: SipRequest,
        source: tuple[str, int],
        profile: ProfileRuntime | None,
        now: datetime,
        started: float,
    ) -> bytes:
        contact = ("Contact", f"<{request.uri}>")
        record = _record_base(request, "sign", profile, now)
        if profile is None or not profile.signs or profile.signer is None:
            why = "no profile" if profile is None else f"profile {profile.name} does not sign"
            return self._respond(request, source, 302, [contact, _x_reason("not_signed", why)])
        if request.fields.get("identity"):
            record.update(action="already_signed")
            self._log(record, started)
            return self._respond(
                request,
                source,
                302,
                [contact, _x_reason("already_signed", "the INVITE has an Identity header")],
            )
        context = _context(request)
        try:
            signed = profile.signer.sign_request(context, now=now)
        except SigningError as exc:
            record.update(action="not_signed", reason=str(exc), sip_code=302)
            self._log(record, started)
            return self._respond(
                request,
                source,
                302,
                [contact, _x_reason("not_signed", str(exc))],
            )
        headers = [contact, ("Identity", signed.identity)]
        if signed.rcd_identity is not None:
            # The brand asks for a separate ppt=rcd PASSporT (RFC 9795 section 4).
            headers.append(("Identity", signed.rcd_identity))
        if signed.date is not None:
            headers.append(("Date", signed.date))
        headers.append(("X-Shaken-Attest", signed.attest))
        record.update(
            action="signed",
            orig=signed.orig,
            dest=",".join(signed.dest),
            attest=signed.attest,
            x5u=signed.x5u,
            brand=signed.brand,
            sip_code=302,
        )
        answer = self._respond(request, source, 302, headers)
        self._log(record, started)
        return answer

    # -------------------------------------------------------------------------- verification

    def _verify(
        self,
        request: SipRequest,
        source: tuple[str, int],
        profile: ProfileRuntime | None,
        now: datetime,
        started: float,
        transaction: _Transaction,
    ) -> Reply:
        callers = _identities(request)
        if isinstance(callers, str):
            return self._respond(
                request, source, 400, [("Warning", _warning(f"malformed {callers}"))]
            )
        if profile is None or profile.behavior not in ("verify", "both"):
            why = "no profile" if profile is None else f"profile {profile.name} does not verify"
            marks = self._bindings.marks
            cleaned = [
                NameAddr(
                    display_name=strip_marks(caller.display_name, *marks),
                    uri=strip_verstat(caller.uri),
                ).format()
                for caller in callers
            ]
            headers = [("Contact", f"<{request.uri}>"), _asserted_header(cleaned)]
            headers.append(_x_reason("not_checked", why))
            return self._respond(request, source, 302, headers)
        context = _context(request)
        verifier = profile.verifier
        if verifier is None:
            result = VerificationResult(verstat=Verstat.NO_VALIDATION, outcome=Outcome.NOT_CHECKED)
            return self._decided(request, source, profile, now, started, result, context, callers)
        result_now = verifier.verify_warm(context, now=now, source=source[0])
        if result_now is not None:
            return self._decided(
                request, source, profile, now, started, result_now, context, callers
            )
        if self.in_flight >= self.max_in_flight:
            self.overloads += 1
            answer = self._respond(
                request,
                source,
                503,
                [("Retry-After", str(self.retry_after))],
            )
            transaction.response = answer
            return answer
        self.in_flight += 1
        return self._verify_later(
            request, source, profile, now, started, transaction, verifier, context, callers
        )

    async def _verify_later(
        self,
        request: SipRequest,
        source: tuple[str, int],
        profile: ProfileRuntime,
        now: datetime,
        started: float,
        transaction: _Transaction,
        verifier: VerificationService,
        context: SipContext,
        callers: list[NameAddr],
    ) -> bytes:
        try:
            try:
                result = await verifier.verify(context, now=now, source=source[0])
            except ShakenError:
                log.exception("verification of %s failed", context.call_id)
                answer = self._respond(request, source, 500)
            else:
                if transaction.cancelled:
                    answer = self._respond(request, source, 487)
                else:
                    answer = self._decided(
                        request, source, profile, now, started, result, context, callers
                    )
        except BaseException:
            transaction.response = self._respond(request, source, 500)
            raise
        finally:
            self.in_flight -= 1
        transaction.response = answer
        return answer

    def _decided(
        self,
        request: SipRequest,
        source: tuple[str, int],
        profile: ProfileRuntime,
        now: datetime,
        started: float,
        result: VerificationResult,
        context: SipContext,
        callers: list[NameAddr],
    ) -> bytes:
        marks = self._bindings.marks
        names = [strip_marks(caller.display_name, *marks) for caller in callers]
        decision = decide(result, profile.actions, display_name=names[0] if names else None)
        summary = _x_reason_result(result)
        record = _record_base(request, "verify", profile, now)
        orig, dest = result.orig, ",".join(result.dest) or None
        if orig is None or dest is None:
            orig, dest = _parties(context, orig, dest)
        record.update(
            orig=orig,
            dest=dest,
            attest=result.attest,
            verstat=result.verstat.value,
            reason=None if result.reason is None else result.reason.value,
            action=decision.action.value,
            allowed=decision.allowed,
            x5u=result.x5u,
            **_brand_fields(result),
        )
        if decision.sip_code is not None:
            record.update(sip_code=decision.sip_code)
            answer = self._respond(
                request, source, decision.sip_code, [summary], phrase=decision.sip_phrase
            )
            self._log(record, started)
            return answer
        headers = [("Contact", f"<{request.uri}>")]
        headers.append(_asserted_header(_asserted(callers, names, decision)))
        if result.attest:
            headers.append(("X-Shaken-Attest", result.attest))
        headers.append(summary)
        if decision.reason_header is not None:
            headers.append(("Reason", decision.reason_header))
        if decision.call_info is not None:
            # RFC 9796: the verified brand, one Call-Info field (built from checked values).
            headers.append(("Call-Info", decision.call_info))
        record.update(sip_code=302)
        answer = self._respond(request, source, 302, headers)
        self._log(record, started)
        return answer

    # -------------------------------------------------------------------------------- logging

    def _log(self, record: dict[str, Any], started: float) -> None:
        if self.call_log is None:
            return
        record["latency_ms"] = round((self._monotonic() - started) * 1000.0, 3)
        try:
            self.call_log.record(CallRecord(**record))
        except Exception:  # the call log must never take a call down
            log.exception("call log record failed")


# ------------------------------------------------------------------------------------ helpers


def _context(request: SipRequest) -> SipContext:
    return SipContext(
        identity=tuple(request.all("identity")),
        from_header=request.first("from"),
        pai=tuple(request.values("p-asserted-identity")),
        to=request.first("to"),
        request_uri=request.uri,
        date=request.first("date"),
        call_id=request.first("call-id"),
    )


def _parties(
    context: SipContext, orig: str | None, dest: str | None
) -> tuple[str | None, str | None]:
    """Caller and called as SIP shows them, for the log of a call whose PASSporT was not read."""
    if orig is None:
        callers = caller_identities(context)
        orig = str(callers[0]) if callers else None
    if dest is None:
        called = called_identities(context, sources=("to",))
        dest = str(called[0]) if called else None
    return orig, dest


def _brand_fields(result: VerificationResult) -> dict[str, Any]:
    """The call log's view of the branding verdict (RFC 9795), beside the SHAKEN one."""
    verdict = result.rcd
    if verdict is None:
        return {}
    return {
        "brand": verdict.nam,
        "rcd_status": verdict.status.value,
        "rcd_reason": None if verdict.reason is None else verdict.reason.value,
    }


def _record_base(
    request: SipRequest, direction: str, profile: ProfileRuntime | None, now: datetime
) -> dict[str, Any]:
    return {
        "time": now.timestamp(),
        "direction": direction,
        "interface": "sip",
        "call_id": request.first("call-id"),
        "profile": None if profile is None else (profile.name or GLOBAL_PROFILE),
    }


def _identities(request: SipRequest) -> list[NameAddr] | str:
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
    return out


def _asserted_header(values: list[str]) -> tuple[str, str]:
    """One P-Asserted-Identity field with every value (RFC 3325 section 9.1 allows the list):
    an SBC that copies the 302's first field of that name (``$T_rpl($hdr(...))`` in
    Kamailio) then passes on every identity."""
    return ("P-Asserted-Identity", ", ".join(values))


def _asserted(callers: list[NameAddr], names: list[str | None], decision: Decision) -> list[str]:
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
