"""The INVITE server transaction (RFC 3261 section 17.2.1): driven event by event, sans-IO,
then through a real UDP server with a certificate fetch held open."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shaken.adapters.sip.client import parse_response
from shaken.adapters.sip.codec import SipRequest, parse_request, respond
from shaken.adapters.sip.handler import Listener, Role, SipHandler
from shaken.adapters.sip.server import SipServer, bind_listeners
from shaken.adapters.sip.transactions import (
    TIMER_H,
    ServerTransaction,
    ServerTransactions,
    State,
)
from shaken.adapters.wiring import build_runtime
from shaken.config import load_config
from shaken.core.jws import load_private_key
from shaken.core.sign import sign_shaken
from shaken.toolkit.lab import Lab

from .conftest import DEST, ORIG, invite

SOURCE = ("192.0.2.1", 5060)


def request(method: str = "INVITE", **fields: str) -> SipRequest:
    fields.setdefault("branch", "z9hG4bKtx1")
    fields.setdefault("call_id", "tx-1")
    return parse_request(invite(method=method, **fields))  # type: ignore[arg-type]


def opened(table: ServerTransactions, now: float = 0.0, **fields: str) -> ServerTransaction:
    arrived = table.receive_invite(request(**fields), SOURCE, now)
    assert isinstance(arrived, ServerTransaction)
    return arrived


def final(code: int = 302, **fields: str) -> bytes:
    return respond(request(**fields), SOURCE, code, [("Contact", "<sip:x@h>")])


def code_of(data: bytes | None) -> int:
    assert data is not None
    return parse_response(data).code


# ------------------------------------------------------------------------------ sans-IO


def test_a_call_goes_proceeding_completed_confirmed_terminated() -> None:
    table = ServerTransactions(TIMER_H, 100)
    transaction = opened(table)
    assert transaction.state is State.PROCEEDING and len(table) == 1
    # A retransmission while the answer is being worked on: 100 Trying (17.2.1).
    trying = table.receive_invite(request(), SOURCE, 0.1)
    assert isinstance(trying, bytes) and code_of(trying) == 100
    assert parse_response(trying).first("to") == f"<sip:{DEST}@192.0.2.9>"  # no tag on a 100
    answer = final()
    assert table.send_final(transaction, answer) is answer
    assert transaction.state is State.COMPLETED and transaction.request is None
    # Retransmissions now get the final answer, byte for byte.
    assert table.receive_invite(request(), SOURCE, 1.0) is answer
    # The ACK: Confirmed, and with Timer I zero, Terminated; the answer is forgotten.
    table.receive_ack(request("ACK"))
    assert transaction.state is State.TERMINATED and len(table) == 0 and table.bytes == 0
    # The same INVITE afterwards opens a new transaction.
    assert opened(table, 2.0) is not transaction


def test_timer_h_ends_a_completed_transaction() -> None:
    table = ServerTransactions(TIMER_H, 100)
    transaction = opened(table)
    answer = table.send_final(transaction, final())
    assert table.receive_invite(request(), SOURCE, TIMER_H - 0.5) is answer
    again = table.receive_invite(request(), SOURCE, TIMER_H + 0.5)
    assert transaction.state is State.TERMINATED
    assert isinstance(again, ServerTransaction) and again.state is State.PROCEEDING


def test_an_ack_is_absorbed_in_any_state_and_changes_only_a_completed_one() -> None:
    table = ServerTransactions(TIMER_H, 100)
    table.receive_ack(request("ACK", branch="z9hG4bKnone"))  # no transaction: absorbed
    transaction = opened(table)
    table.receive_ack(request("ACK"))  # no final answer yet: nothing to confirm
    assert transaction.state is State.PROCEEDING and len(table) == 1
    table.send_final(transaction, final())
    # The ACK read from its bytes alone (the UDP path) does what the parsed one does.
    assert table.absorb_ack(invite(method="ACK", branch="z9hG4bKtx1", call_id="tx-1"))
    assert transaction.state is State.TERMINATED and len(table) == 0


def test_an_rfc_2543_ack_matches_without_a_branch() -> None:
    """Section 17.2.3: without the magic cookie, Call-ID, CSeq, From and top Via match."""
    table = ServerTransactions(TIMER_H, 100)
    transaction = opened(table, branch="old-1")
    table.send_final(transaction, final(branch="old-1"))
    ack = invite(method="ACK", branch="old-1", call_id="tx-1")
    assert not table.absorb_ack(ack)  # needs the full parse
    table.receive_ack(parse_request(ack))
    assert transaction.state is State.TERMINATED


def test_cancel_in_proceeding_makes_the_invite_answer_487() -> None:
    table = ServerTransactions(TIMER_H, 100)
    transaction = opened(table)
    answered = table.receive_cancel(request("CANCEL"), SOURCE, 0.5)
    assert code_of(answered) == 200 and transaction.cancelled
    assert transaction.state is State.PROCEEDING
    terminated = table.resumed(transaction)
    assert code_of(terminated) == 487 and transaction.state is State.COMPLETED
    # RFC 3261 9.2: the CANCEL's 200 and the INVITE's 487 carry the same To tag.
    assert parse_response(answered).first("to") == parse_response(terminated).first("to")
    assert parse_response(terminated).first("cseq") == "1 INVITE"
    assert table.receive_invite(request(), SOURCE, 1.0) == terminated


def test_cancel_after_the_answer_changes_nothing_and_one_for_nothing_is_481() -> None:
    table = ServerTransactions(TIMER_H, 100)
    transaction = opened(table)
    answer = table.send_final(transaction, final())
    assert code_of(table.receive_cancel(request("CANCEL"), SOURCE, 0.5)) == 200
    assert not transaction.cancelled and table.resumed(transaction) is None
    assert table.receive_invite(request(), SOURCE, 1.0) is answer
    stray = table.receive_cancel(request("CANCEL", branch="z9hG4bKother"), SOURCE, 1.0)
    assert code_of(stray) == 481
    # Past Timer H the INVITE is forgotten: its CANCEL matches nothing.
    assert code_of(table.receive_cancel(request("CANCEL"), SOURCE, TIMER_H + 1)) == 481


def test_an_abandoned_transaction_keeps_a_500_for_its_retransmissions() -> None:
    table = ServerTransactions(TIMER_H, 100)
    transaction = opened(table)
    kept = table.abandoned(transaction)
    assert code_of(kept) == 500 and transaction.state is State.COMPLETED
    assert table.receive_invite(request(), SOURCE, 1.0) == kept
    assert table.send_final(transaction, final()) is not None  # a late answer changes nothing
    assert table.receive_invite(request(), SOURCE, 2.0) == kept


def test_the_byte_budget_evicts_old_answers_and_never_a_pending_one() -> None:
    answer = final()
    per_entry = len(answer) + 400 + 100
    table = ServerTransactions(TIMER_H, 100, max_bytes=3 * per_entry)
    pending = opened(table, branch="z9hG4bKpending")
    done = []
    for i in range(6):
        transaction = opened(table, float(i), branch=f"z9hG4bKdone{i}")
        table.send_final(transaction, answer)
        done.append(transaction)
        assert table.bytes <= table.max_bytes
    assert pending.state is State.PROCEEDING and pending.held
    assert [t.state for t in done[:4]] == [State.TERMINATED] * 4
    assert [t.state for t in done[4:]] == [State.COMPLETED] * 2
    # An answer larger than the whole budget is sent but not kept.
    big = opened(table, 7.0, branch="z9hG4bKbig")
    huge = answer + b"x" * (4 * per_entry)
    assert table.send_final(big, huge) is huge
    assert big.state is State.TERMINATED and not big.held
    assert isinstance(
        table.receive_invite(request(branch="z9hG4bKbig"), SOURCE, 8.0), ServerTransaction
    )


def test_a_transaction_let_go_while_working_still_sends_its_answer() -> None:
    """A pending transaction is kept past Timer H while the table has room (twice its size);
    beyond that even it goes, and its answer is sent, not kept."""
    table = ServerTransactions(ttl=1.0, size=1)
    slow = opened(table)
    opened(table, 5.0, branch="z9hG4bKlater1")
    assert slow.held
    opened(table, 6.0, branch="z9hG4bKlater2")
    assert not slow.held
    answer = final()
    assert table.send_final(slow, answer) is answer
    assert slow.state is State.TERMINATED and len(table) == 2


# ------------------------------------------------------------ through a real UDP server


@pytest.fixture
def stalling_repository() -> Iterator[socket.socket]:
    """A TCP listener that accepts and says nothing: an x5u fetch from it hangs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock


@pytest.fixture
async def cold_server(
    lab: Lab, tmp_path: Path, stalling_repository: socket.socket
) -> AsyncIterator[tuple[SipServer, str]]:
    port = stalling_repository.getsockname()[1]
    text = lab.config.read_text(encoding="utf-8")
    text = text.replace("x5u_allowed_ports = [", f"x5u_allowed_ports = [{port}, ", 1)
    config = lab.directory / f"cold-{port}.toml"
    config.write_text(text, encoding="utf-8")
    runtime = build_runtime(load_config(config))
    key = load_private_key(lab.sp_key.read_bytes())
    x5u = f"https://127.0.0.1:{port}/sp.pem"
    identity = sign_shaken(
        key=key, x5u=x5u, orig=ORIG, dest=DEST, attest="A", now=runtime.clock.now()
    )
    bound = bind_listeners([Listener("udp:127.0.0.1:0", Role.VERIFY)])
    sip = SipServer(SipHandler(runtime), bound)
    await sip.start()
    try:
        yield sip, identity
    finally:
        await sip.stop(grace=1.0)
        await runtime.aclose()


@pytest.mark.anyio
async def test_cancel_while_certificates_are_fetched_over_udp(
    cold_server: tuple[SipServer, str], stalling_repository: socket.socket
) -> None:
    sip, identity = cold_server
    target = sip.bound[0].address
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        port = client.getsockname()[1]
        via = f"127.0.0.1:{port}"
        data = invite(
            headers=(("Identity", identity),), branch="z9hG4bKcold1", call_id="cold-1", via_host=via
        )

        async def reply() -> bytes:
            return await asyncio.wait_for(loop.sock_recv(client, 65535), 10.0)

        client.sendto(data, target)
        # The fetch is under way once the repository has the connection.
        stalling_repository.setblocking(False)
        held, _ = await asyncio.wait_for(loop.sock_accept(stalling_repository), 10.0)
        with held:
            assert sip.handler.in_flight == 1 and len(sip.tasks) == 1
            client.sendto(data, target)  # a retransmission: the transaction is Proceeding
            assert code_of(await reply()) == 100
            cancel = invite(branch="z9hG4bKcold1", call_id="cold-1", method="CANCEL", via_host=via)
            client.sendto(cancel, target)
            assert code_of(await reply()) == 200
        # The repository hangs up: the fetch ends, and the cancelled INVITE gets its 487.
        terminated = await reply()
        assert code_of(terminated) == 487
        assert sip.handler.in_flight == 0
        client.sendto(data, target)  # Completed: the same 487 again
        assert await reply() == terminated
        client.sendto(
            invite(branch="z9hG4bKcold1", call_id="cold-1", method="ACK", via_host=via), target
        )
        # After the ACK the same INVITE is a new transaction: verified afresh, at once now
        # (the failed fetch is remembered), and rejected as the lab's actions say.
        client.sendto(data, target)
        fresh = parse_response(await reply())
        assert fresh.code == 436
        assert (fresh.first("x-shaken-reason") or "").startswith("cert_fetch_failed")
