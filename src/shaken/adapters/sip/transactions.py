"""The server transactions of the redirect server (RFC 3261 section 17.2), sans-IO.

Requests and the monotonic time go in; the bytes to send, or a new transaction for the
redirect logic to answer, come out. Nothing here reads a socket or a clock, so every rule can
be driven event by event (the way h11 keeps an HTTP connection's states in one place).

An INVITE server transaction (section 17.2.1) moves through the states of :class:`State`:

* **Proceeding**: the redirect logic is working on the answer (at once for nearly every call;
  a certificate fetch for the rest). A retransmitted INVITE gets ``100 Trying``; a ``CANCEL``
  gets ``200`` and, once the logic is back, the INVITE gets ``487`` instead of its answer
  (section 9.2).
* **Completed**: the final answer is sent and kept; a retransmitted INVITE gets the same bytes
  until Timer H (64*T1 = 32 s) ends the transaction. A ``CANCEL`` now gets ``200`` and
  changes nothing (section 9.2).
* **Confirmed**: the ACK for the answer arrived. Timer I, whose job is to absorb the ACK's own
  retransmissions, is zero here, as on reliable transports: this server absorbs every ACK,
  matched or not (an ACK is never answered, section 17), so the transaction is
  **Terminated** at once and its answer forgotten.

A ``CANCEL`` for no transaction gets ``481`` (section 9.2). Non-INVITE requests (OPTIONS, the
``405`` answers, CANCEL itself) keep no state: their answer is a pure function of the request,
so a retransmission gets the same bytes, which is what section 17.2.2's stored response gives.

The table of transactions is bounded in time (Timer H), in count and in bytes
(``server.transaction_memory``): past the byte budget the oldest answered entries go first; an
answer that cannot fit even then is sent but not kept, and its retransmission is answered
afresh. A transaction still in Proceeding is never dropped for bytes: there are at most
``max_in_flight`` of them, each holding no more than its request already does.

Written here rather than taken from a SIP stack: the Python ones (pjsua bindings, aiosip) bring
a UA's full transaction machinery and their own transports, where a stateless redirect server
needs only these rules, on its own sockets and within its own memory bounds.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

from shaken.adapters.sip.codec import SipRequest, ack_transaction, respond

__all__ = [
    "ENTRY_OVERHEAD",
    "TIMER_H",
    "ServerTransaction",
    "ServerTransactions",
    "State",
    "invite_key",
]

#: Timer H (64*T1, RFC 3261 section 17.2.1): how long an INVITE's answer is kept for
#: retransmissions.
TIMER_H = 32.0
#: What one table entry costs besides its key's and answer's characters: the tuple, the
#: entry object, the bytes header and the ordered dict's slot (measured with tracemalloc on
#: CPython 3.11, rounded up).
ENTRY_OVERHEAD = 400


class State(enum.Enum):
    """The states of an INVITE server transaction (RFC 3261 section 17.2.1, figure 7)."""

    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


# Looked up once: an Enum member read from its class costs a descriptor call, on every request.
_PROCEEDING = State.PROCEEDING
_COMPLETED = State.COMPLETED
_CONFIRMED = State.CONFIRMED
_TERMINATED = State.TERMINATED


def invite_key(request: SipRequest) -> tuple[str, ...]:
    """The INVITE transaction ``request`` (an INVITE, its ACK or its CANCEL) belongs to.

    RFC 3261 section 17.2.3: the top Via's branch (with the magic cookie) names the
    transaction; for RFC 2543 clients without one, Call-ID, CSeq number, From (with its tag)
    and the top Via stand in for it.
    """
    call_id = request.first("call-id") or ""
    via = request.top_via
    branch = via.branch if via is not None else None
    if branch and branch.startswith("z9hG4bK"):
        return (branch, "INVITE", call_id)
    cseq = (request.first("cseq") or "").split(" ", 1)[0]
    top = request.vias[0] if request.vias else ""
    return (call_id, "INVITE", cseq, request.first("from") or "", top)


@dataclass(slots=True, eq=False)
class ServerTransaction:
    """One INVITE server transaction.

    ``request`` and ``source`` are kept while in Proceeding (for the ``487`` or ``500`` the
    transaction may have to send itself) and let go once the final answer is out.
    """

    key: tuple[str, ...]
    expires: float
    cost: int
    request: SipRequest | None
    source: tuple[str, int]
    state: State = State.PROCEEDING
    #: The final answer, kept for retransmissions while Completed (None: not kept).
    answer: bytes | None = None
    #: A CANCEL arrived while in Proceeding: the INVITE is answered 487 (RFC 3261 9.2).
    cancelled: bool = False
    #: Whether the table still holds this transaction (its bytes are counted there).
    held: bool = True


class ServerTransactions:
    """The INVITE server transactions by key, and the transaction rules of the server.

    :param ttl: Timer H, seconds.
    :param size: how many transactions are kept at most (twice that while many are pending).
    :param max_bytes: the byte budget of the keys and answers kept.
    """

    def __init__(self, ttl: float, size: int, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.ttl = ttl
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, ...], ServerTransaction] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, key: tuple[str, ...], now: float) -> ServerTransaction | None:
        """The live transaction of ``key``; one past Timer H is Terminated and not found."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires < now:
            if entry.state is _COMPLETED:
                entry.state = _TERMINATED  # Timer H fired
            return None
        return entry

    # ------------------------------------------------------------------------ events in

    def receive_invite(
        self, request: SipRequest, source: tuple[str, int], now: float
    ) -> bytes | ServerTransaction:
        """An INVITE: the bytes to send for a retransmission, or a new transaction to answer.

        RFC 3261 section 17.2.1: in Completed the final answer again; in Proceeding
        ``100 Trying`` (the provisional answer this server gives).
        """
        key = invite_key(request)
        known = self.find(key, now)
        if known is not None:
            if known.answer is not None:
                return known.answer
            return respond(request, source, 100)
        return self._open(key, request, source, now)

    def receive_ack(self, request: SipRequest) -> None:
        """An ACK (never answered): Completed, through Confirmed, to Terminated."""
        self._confirm(invite_key(request))

    def absorb_ack(self, data: bytes) -> bool:
        """:meth:`receive_ack` from an ACK's bytes read by :func:`ack_transaction` (two
        regular expressions instead of a parse: every call ends with one); False when the
        ACK needs a full parse first."""
        found = ack_transaction(data)
        if found is None:
            return False
        self._confirm((found[0], "INVITE", found[1]))
        return True

    def receive_cancel(self, request: SipRequest, source: tuple[str, int], now: float) -> bytes:
        """A CANCEL's answer (RFC 3261 section 9.2): ``481`` when it matches no transaction,
        else ``200``; a transaction still in Proceeding is marked to answer ``487``."""
        entry = self.find(invite_key(request), now)
        if entry is None:
            return respond(request, source, 481)
        if entry.state is _PROCEEDING:
            entry.cancelled = True
        return respond(request, source, 200)

    # ------------------------------------------------------------------ answers from the TU

    def resumed(self, entry: ServerTransaction) -> bytes | None:
        """What a transaction answers itself once its work is done, before the redirect
        logic does: ``487`` when a CANCEL came meanwhile (RFC 3261 section 9.2), else None."""
        if not entry.cancelled or entry.request is None:
            return None
        return self.send_final(entry, respond(entry.request, entry.source, 487))

    def abandoned(self, entry: ServerTransaction) -> bytes | None:
        """The work on ``entry`` ended without an answer (the server is stopping): a ``500``
        is its final answer, for the retransmissions still to come."""
        if entry.request is None:
            return None
        return self.send_final(entry, respond(entry.request, entry.source, 500))

    def send_final(self, entry: ServerTransaction, answer: bytes) -> bytes:
        """Proceeding to Completed with ``answer``, kept within the byte budget; returns it.

        A transaction the table let go of meanwhile (past Timer H while still working) sends
        its answer and is Terminated: there is nothing left to retransmit it from.
        """
        if entry.state is not _PROCEEDING:
            return answer  # the final answer was given already
        entry.request = None
        if not entry.held:
            entry.state = _TERMINATED
            return answer
        entry.state = _COMPLETED
        entry.answer = answer
        entry.cost += len(answer)
        self.bytes += len(answer)
        if self.bytes > self.max_bytes:
            self._fit(entry)
        return answer

    # ------------------------------------------------------------------------------ table

    def _open(
        self, key: tuple[str, ...], request: SipRequest, source: tuple[str, int], now: float
    ) -> ServerTransaction:
        cost = ENTRY_OVERHEAD + sum(map(len, key))
        entry = ServerTransaction(key, now + self.ttl, cost, request, source)
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
            if first.state is _PROCEEDING and len(entries) <= self.size * 2:
                break  # never forget a pending answer while there is room at all
            self._drop(entries.popitem(last=False)[1])
        return entry

    def _fit(self, entry: ServerTransaction) -> None:
        """Evict the oldest answered entries until the budget holds; else drop ``entry``."""
        entries = self._entries
        skipped = 0
        while self.bytes > self.max_bytes and skipped < len(entries):
            key, older = next(iter(entries.items()))
            if older is entry or older.state is _PROCEEDING:
                entries.move_to_end(key)  # pending (at most max_in_flight) or this one: keep
                skipped += 1
                continue
            del entries[key]
            self._drop(older)
        if self.bytes > self.max_bytes:
            # Too big to keep even alone: sent, not kept (a retransmission is answered again).
            del entries[entry.key]
            self._drop(entry)

    def _confirm(self, key: tuple[str, ...]) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.state is _COMPLETED:
            entry.state = _CONFIRMED
            del self._entries[key]  # Timer I is zero: straight on to Terminated
            self._drop(entry)

    def _drop(self, entry: ServerTransaction) -> None:
        """Out of the table: a finished transaction is Terminated (one still working is not:
        its answer is sent when it comes, just not kept)."""
        self.bytes -= entry.cost
        entry.held = False
        if entry.state is not _PROCEEDING:
            entry.state = _TERMINATED
