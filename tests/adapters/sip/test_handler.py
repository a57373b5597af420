"""The redirect logic: what each request gets, with the lab's real configuration and keys."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shaken.adapters.runtime import Runtime
from shaken.adapters.sip.client import SipResponse, parse_response
from shaken.adapters.sip.codec import FramingError, StreamFramer, parse_request
from shaken.adapters.sip.handler import (
    BY_SOURCE_ENTRIES,
    Listener,
    NeedsCertificates,
    Role,
    SipHandler,
)
from shaken.adapters.store.calllog import SqliteCallLog, read_calls
from shaken.adapters.wiring import build_runtime
from shaken.config import load_config
from shaken.core.context import SipContext
from shaken.core.jws import load_private_key
from shaken.core.sign import sign_shaken
from shaken.toolkit.lab import Lab

from .conftest import DEST, ORIG, MemoryCallLog, RuntimeFactory, invite, warm, write_config

pytestmark = pytest.mark.anyio

SIGN = Listener("udp:127.0.0.1:5060", Role.SIGN)
VERIFY = Listener("udp:127.0.0.1:5062", Role.VERIFY)
LOOPBACK = ("127.0.0.1", 5070)
ELSEWHERE = ("192.0.2.44", 5070)
FROM = f'"Alice" <sip:{ORIG}@192.0.2.1>;tag=f1'


async def answer(
    handler: SipHandler, data: bytes, listener: Listener, source: tuple[str, int] = LOOPBACK
) -> SipResponse | None:
    reply = handler.handle(parse_request(data), listener, source)
    if reply is None:
        return None
    if isinstance(reply, NeedsCertificates):
        reply = await obtained(handler, reply)
    return parse_response(reply)


async def obtained(handler: SipHandler, pending: NeedsCertificates) -> bytes:
    """What a transport does with a call that needs certificates: wait, then resume."""
    return handler.resume(pending, await pending.obtain())


def identity(lab: Lab, *, orig: str = ORIG, dest: str = DEST, age: int = 0) -> str:
    key = load_private_key(lab.sp_key.read_bytes())
    when = datetime.now(UTC) - timedelta(seconds=age)
    return sign_shaken(key=key, x5u=lab.x5u, orig=orig, dest=dest, attest="A", now=when)


def tampered(value: str) -> str:
    token, _, params = value.partition(";")
    head, claims, signature = token.split(".")
    flipped = ("A" if signature[5] != "A" else "B") + signature[6:]
    return f"{head}.{claims}.{signature[:5]}{flipped};{params}"


async def ready(
    make: RuntimeFactory, lab: Lab, **config: str
) -> tuple[SipHandler, MemoryCallLog, Runtime]:
    runtime = make(**config)
    await warm(runtime, lab)
    calls = MemoryCallLog()
    return SipHandler(runtime, call_log=calls), calls, runtime


# ---------------------------------------------------------------------------------- signing


async def test_signing_answers_302_with_identity_and_date(
    runtimes: RuntimeFactory, lab: Lab
) -> None:
    handler, calls, runtime = await ready(runtimes, lab)
    response = await answer(handler, invite(from_value=FROM), SIGN)
    assert response is not None and response.code == 302
    assert response.first("contact") == f"<sip:{DEST}@192.0.2.9>"
    value = response.first("identity")
    assert value is not None and value.endswith(f";info=<{lab.x5u}>;alg=ES256;ppt=shaken")
    assert response.first("date") is not None  # the INVITE had none (RFC 8224 6.1 step 3)
    assert response.first("x-shaken-attest") == "A"
    # What we signed verifies, with the Date we returned.
    verifier = runtime.profiles["lab"].verifier
    assert verifier is not None
    result = await verifier.verify(
        SipContext(
            identity=(value,), from_header=FROM, to=f"<sip:{DEST}@h>", date=response.first("date")
        )
    )
    assert result.verified, result.detail
    [record] = calls.records
    assert (record.direction, record.action, record.attest, record.orig) == (
        "sign",
        "signed",
        "A",
        ORIG,
    )
    assert record.profile == "lab" and record.sip_code == 302 and record.allowed


async def test_signing_keeps_the_invites_date(runtimes: RuntimeFactory, lab: Lab) -> None:
    handler, _, _ = await ready(runtimes, lab)
    date = "Sun, 22 Nov 2026 12:00:00 GMT"
    response = await answer(handler, invite(headers=(("Date", date),)), SIGN)
    assert response is not None and response.code == 302
    assert response.first("identity") and response.first("date") is None


async def test_calls_that_cannot_be_signed_still_get_their_302(
    runtimes: RuntimeFactory, lab: Lab
) -> None:
    handler, calls, _ = await ready(runtimes, lab)
    # No profile for this source: no processing, logged as not_processed (with the reason).
    response = await answer(handler, invite(), SIGN, source=ELSEWHERE)
    assert response is not None and response.code == 302 and response.first("identity") is None
    assert (response.first("x-shaken-reason") or "").startswith("not_signed;")
    # No caller TN: the signer refuses, the call goes on unsigned (Asterisk section 3.1).
    response = await answer(
        handler, invite(from_value="<sip:anonymous@anonymous.invalid>;tag=1"), SIGN
    )
    assert response is not None and response.code == 302 and response.first("identity") is None
    assert "caller TN" in (response.first("x-shaken-reason") or "")
    # Already signed: left alone.
    response = await answer(handler, invite(headers=(("Identity", identity(lab)),)), SIGN)
    assert response is not None and response.first("identity") is None
    assert (response.first("x-shaken-reason") or "").startswith("already_signed")
    assert [r.action for r in calls.records] == ["not_processed", "not_signed", "already_signed"]
    assert calls.records[0].reason == "no profile" and calls.records[0].direction == "sign"


# ----------------------------------------------------------------------------- verification


async def test_a_verified_call(runtimes: RuntimeFactory, lab: Lab) -> None:
    handler, calls, _ = await ready(runtimes, lab)
    response = await answer(
        handler, invite(from_value=FROM, headers=(("Identity", identity(lab)),)), VERIFY
    )
    assert response is not None and response.code == 302
    assert response.first("contact") == f"<sip:{DEST}@192.0.2.9>"
    assert (
        response.first("p-asserted-identity")
        == f'"Alice" <sip:{ORIG};verstat=TN-Validation-Passed@192.0.2.1>'
    )
    assert response.first("x-shaken-attest") == "A"
    assert response.first("x-shaken-reason") == "verified"
    assert response.first("reason") is None
    [record] = calls.records
    assert (record.direction, record.verstat, record.reason, record.action) == (
        "verify",
        "TN-Validation-Passed",
        None,
        "continue",
    )
    assert record.x5u == lab.x5u and record.latency_ms is not None


async def test_pai_values_are_tagged_each(runtimes: RuntimeFactory, lab: Lab) -> None:
    handler, _, _ = await ready(runtimes, lab)
    pai = (
        ("P-Asserted-Identity", f"<sip:+1{ORIG[1:]}@192.0.2.1;user=phone>, <tel:+{ORIG}>"),
        ("Identity", identity(lab)),
    )
    response = await answer(handler, invite(headers=pai), VERIFY)
    assert response is not None and response.code == 302
    assert response.values("p-asserted-identity") == [
        f"<sip:+{ORIG};verstat=TN-Validation-Passed@192.0.2.1;user=phone>",
        f"<tel:+{ORIG};verstat=TN-Validation-Passed>",
    ]


@pytest.mark.parametrize(
    ("case", "reason", "code", "verstat"),
    [
        ("missing", "missing_identity", 428, "No-TN-Validation"),
        ("tampered", "bad_signature", 438, "TN-Validation-Failed"),
        ("stale", "stale_iat", 403, "No-TN-Validation"),
        ("wrong_caller", "orig_mismatch", 438, "No-TN-Validation"),
    ],
)
async def test_failures_continue_by_default(
    runtimes: RuntimeFactory, lab: Lab, case: str, reason: str, code: int, verstat: str
) -> None:
    handler, calls, _ = await ready(runtimes, lab)
    headers = {
        "missing": (),
        "tampered": (("Identity", tampered(identity(lab))),),
        "stale": (("Identity", identity(lab, age=600)),),
        "wrong_caller": (("Identity", identity(lab, orig="12025550199")),),
    }[case]
    response = await answer(handler, invite(from_value=FROM, headers=headers), VERIFY)
    assert response is not None and response.code == 302
    assert f"verstat={verstat}" in (response.first("p-asserted-identity") or "")
    summary = response.first("x-shaken-reason") or ""
    assert summary.startswith(f"{reason};cause={code};text=")
    assert response.first("reason") is None
    [record] = calls.records
    assert record.reason == reason and record.allowed and record.action == "continue"
    assert record.dest == DEST and record.orig is not None  # from SIP when not from a PASSporT


ACTIONS = """
[verification.on.verified]
action = "alert"
display_prefix = "(Verified) "

[verification.on.missing]
action = "alert"
display_prefix = "[No ID] "
display_suffix = " ?"

[verification.on.failed]
action = "reject"

[verification.on.reason.stale_iat]
action = "continue_with_reason"

[verification.on.reason.orig_mismatch]
action = "reject"
reject_code = 603
"""


async def test_actions_pass_stop_alert(runtimes: RuntimeFactory, lab: Lab) -> None:
    handler, calls, _ = await ready(runtimes, lab, extra=ACTIONS)
    verified = await answer(
        handler, invite(from_value=FROM, headers=(("Identity", identity(lab)),)), VERIFY
    )
    assert verified is not None and verified.code == 302
    assert verified.first("p-asserted-identity") == (
        f'"(Verified) Alice" <sip:{ORIG};verstat=TN-Validation-Passed@192.0.2.1>'
    )
    missing = await answer(handler, invite(), VERIFY)  # From has no display name
    assert missing is not None and missing.code == 302
    assert (
        missing.first("p-asserted-identity")
        == f'"[No ID]  ?" <sip:{ORIG};verstat=No-TN-Validation@192.0.2.1>'
    )
    rejected = await answer(
        handler, invite(from_value=FROM, headers=(("Identity", tampered(identity(lab))),)), VERIFY
    )
    assert rejected is not None
    assert (rejected.code, rejected.phrase) == (438, "Invalid Identity Header")
    assert (rejected.first("x-shaken-reason") or "").startswith("bad_signature;cause=438")
    assert rejected.first("contact") is None and rejected.first("p-asserted-identity") is None
    stale = await answer(
        handler, invite(from_value=FROM, headers=(("Identity", identity(lab, age=600)),)), VERIFY
    )
    assert stale is not None and stale.code == 302
    assert stale.first("reason") == 'STIR;cause=403;text="Stale Date"'  # RFC 9410
    declined = await answer(
        handler,
        invite(from_value=FROM, headers=(("Identity", identity(lab, orig="12025550199")),)),
        VERIFY,
    )
    assert declined is not None and (declined.code, declined.phrase) == (603, "Decline")
    assert [(r.action, r.allowed, r.sip_code) for r in calls.records] == [
        ("alert", True, 302),
        ("alert", True, 302),
        ("reject", False, 438),
        ("continue_with_reason", True, 302),
        ("reject", False, 603),
    ]


async def test_sip_reason_protocol_and_no_verstat(runtimes: RuntimeFactory, lab: Lab) -> None:
    handler, _, _ = await ready(
        runtimes,
        lab,
        verification='reason_protocol = "SIP"\ntag_verstat = false',
        extra='[profile.lab.on.missing]\naction = "continue_with_reason"\n',
    )
    response = await answer(handler, invite(), VERIFY)
    assert response is not None and response.code == 302
    assert response.first("reason") == 'SIP;cause=428;text="Use Identity Header"'  # RFC 3326
    # Nothing to tag or rename, yet the cleaned identity is there (issue 9 item 5).
    assert response.first("p-asserted-identity") == f"<sip:{ORIG}@192.0.2.1>"


async def test_profile_selection_listener_source_header(runtimes: RuntimeFactory, lab: Lab) -> None:
    extra = '[profile.carrier]\nbehavior = "verify"\nheader_value = "carrier-7"\n'
    extra += '[profile.carrier.on.missing]\naction = "reject"\nreject_code = 480\nreject_phrase = "No Identity"\n'
    runtime = runtimes(server='profile_header = "X-Profile"', extra=extra)
    handler = SipHandler(runtime)
    assert (
        handler.select_profile(parse_request(invite()), VERIFY, "127.0.0.1")
        is runtime.profiles["lab"]
    )
    assert handler.select_profile(parse_request(invite()), VERIFY, "192.0.2.44") is None
    headed = parse_request(invite(headers=(("X-Profile", "carrier-7"),)))
    assert handler.select_profile(headed, VERIFY, "192.0.2.44") is runtime.profiles["carrier"]
    response = await answer(
        handler, invite(headers=(("X-Profile", "carrier-7"),)), VERIFY, source=ELSEWHERE
    )
    assert response is not None and (response.code, response.phrase) == (480, "No Identity")
    # No profile at all: not processed.
    response = await answer(handler, invite(), VERIFY, source=ELSEWHERE)
    assert response is not None and response.code == 302
    assert (response.first("x-shaken-reason") or "").startswith("not_checked;")
    assert response.first("p-asserted-identity") == f"<sip:{ORIG}@192.0.2.1>"  # cleaned only
    # A listener bound to a profile wins over the source address.
    bound = runtimes(
        server='listener_profiles = { "udp:127.0.0.1:5062" = "carrier", "udp:127.0.0.1:5060" = "global" }',
        extra=extra,
    )
    handler.runtime = bound  # what a reload does
    assert (
        handler.select_profile(parse_request(invite()), VERIFY, "127.0.0.1")
        is bound.profiles["carrier"]
    )
    assert (
        handler.select_profile(parse_request(invite()), SIGN, "192.0.2.44") is bound.profiles[None]
    )
    response = await answer(handler, invite(), SIGN, source=ELSEWHERE)
    assert response is not None and response.first("identity") is not None  # global signs
    # The carrier profile does not sign.
    on_sign = Listener("udp:127.0.0.1:5062", Role.SIGN)
    response = await answer(handler, invite(), on_sign)
    assert response is not None and response.first("identity") is None


# ------------------------------------------------------------------------------ transactions


async def test_retransmissions_get_the_same_answer(runtimes: RuntimeFactory, lab: Lab) -> None:
    handler, calls, _ = await ready(runtimes, lab)
    data = invite(branch="z9hG4bKretrans1")
    first = handler.handle(parse_request(data), SIGN, LOOPBACK)
    again = handler.handle(parse_request(data), SIGN, LOOPBACK)
    assert isinstance(first, bytes) and first == again  # the same Identity, not a new one
    assert len(calls.records) == 1
    # The ACK of our 302 (same branch, RFC 3261 17.1.1.3) is absorbed and ends the transaction.
    call_id = parse_request(data).first("call-id")
    ack = invite(branch="z9hG4bKretrans1", method="ACK", call_id=call_id)
    assert handler.handle(parse_request(ack), SIGN, LOOPBACK) is None
    assert len(handler.transactions) == 0
    # The UDP server's shortcut for ACKs does the same without a full parse.
    again = invite(branch="z9hG4bKretrans2", call_id="c2")
    assert isinstance(handler.handle(parse_request(again), SIGN, LOOPBACK), bytes)
    assert len(handler.transactions) == 1
    assert handler.transactions.absorb_ack(
        invite(branch="z9hG4bKretrans2", method="ACK", call_id="c2")
    )
    assert len(handler.transactions) == 0
    assert not handler.transactions.absorb_ack(invite(branch="old-style", method="ACK"))


async def test_a_slow_verification_pending_retransmission_and_cancel(
    runtimes: RuntimeFactory, lab: Lab
) -> None:
    runtime = runtimes()
    runtime.cache.purge()  # cold: the repository does not answer, the fetch fails quickly
    handler = SipHandler(runtime)
    data = invite(headers=(("Identity", identity(lab)),), branch="z9hG4bKslow1", call_id="slow1")
    pending = handler.handle(parse_request(data), VERIFY, LOOPBACK)
    assert isinstance(pending, NeedsCertificates)
    assert handler.in_flight == 1
    trying = handler.handle(parse_request(data), VERIFY, LOOPBACK)
    assert isinstance(trying, bytes) and trying.startswith(b"SIP/2.0 100 Trying")
    cancel = invite(headers=(), branch="z9hG4bKslow1", call_id="slow1", method="CANCEL")
    answered = handler.handle(parse_request(cancel), VERIFY, LOOPBACK)
    assert isinstance(answered, bytes) and answered.startswith(b"SIP/2.0 200 OK")
    final = await obtained(handler, pending)
    assert final is not None and final.startswith(b"SIP/2.0 487 Request Terminated")
    # RFC 3261 9.2: the CANCEL's answer and the INVITE's carry the same To tag.
    assert parse_response(answered).first("to") == parse_response(final).first("to")
    assert handler.in_flight == 0
    assert handler.handle(parse_request(data), VERIFY, LOOPBACK) == final
    # A CANCEL for nothing we know: 481 (RFC 3261 9.2).
    stray = invite(branch="z9hG4bKnone", method="CANCEL")
    reply = handler.handle(parse_request(stray), VERIFY, LOOPBACK)
    assert isinstance(reply, bytes) and reply.startswith(b"SIP/2.0 481 ")


async def test_a_cold_verification_completes(runtimes: RuntimeFactory, lab: Lab) -> None:
    runtime = runtimes()
    runtime.cache.purge()
    handler = SipHandler(runtime)
    pending = handler.handle(
        parse_request(invite(headers=(("Identity", identity(lab)),))), VERIFY, LOOPBACK
    )
    assert isinstance(pending, NeedsCertificates)
    reply = await obtained(handler, pending)
    assert reply is not None
    response = parse_response(reply)
    assert response.code == 302
    assert (response.first("x-shaken-reason") or "").startswith("cert_fetch_failed;cause=436")


async def test_overload_answers_503(runtimes: RuntimeFactory, lab: Lab) -> None:
    runtime = runtimes(server="retry_after = 7")
    runtime.cache.purge()
    handler = SipHandler(runtime, max_in_flight=1, retry_after=7)
    first = handler.handle(
        parse_request(invite(headers=(("Identity", identity(lab)),))), VERIFY, LOOPBACK
    )
    assert isinstance(first, NeedsCertificates)
    second = await answer(handler, invite(headers=(("Identity", identity(lab)),)), VERIFY)
    assert second is not None and second.code == 503 and second.first("retry-after") == "7"
    # Warm requests need no waiting, so they are served even at the bound.
    missing = await answer(handler, invite(), VERIFY)
    assert missing is not None and missing.code == 302
    await obtained(handler, first)


@pytest.mark.parametrize(
    ("method", "code", "allow"),
    [("OPTIONS", 200, True), ("BYE", 405, True), ("REGISTER", 405, True), ("SUBSCRIBE", 405, True)],
)
async def test_other_methods(runtimes: RuntimeFactory, method: str, code: int, allow: bool) -> None:
    handler = SipHandler(runtimes())
    response = await answer(handler, invite(method=method), SIGN)
    assert response is not None and response.code == code
    assert response.first("allow") == "INVITE, ACK, CANCEL, OPTIONS"


async def test_extensions_schemes_and_malformed_requests(runtimes: RuntimeFactory) -> None:
    handler = SipHandler(runtimes())
    response = await answer(handler, invite(headers=(("Require", "100rel, timer"),)), SIGN)
    assert response is not None and response.code == 420
    assert response.first("unsupported") == "100rel, timer"  # RFC 3261 8.2.2.3
    response = await answer(handler, invite(uri="mailto:a@b.example"), SIGN)
    assert response is not None and response.code == 416
    bad = invite().replace(b"CSeq: 1 INVITE", b"CSeq: x")
    response = await answer(handler, bad, SIGN)
    assert response is not None and (response.code, response.phrase) == (400, "Bad Request")
    assert response.first("warning") == '399 shaken "malformed CSeq"'
    assert (response.first("via") or "").endswith("received=127.0.0.1")
    # Nothing to answer: a malformed ACK, a request without Via, a response.
    assert handler.handle(parse_request(bad.replace(b"INVITE", b"ACK")), SIGN, LOOPBACK) is None
    assert handler.handle(parse_request(b"INVITE sip:a@b SIP/2.0\r\n\r\n"), SIGN, LOOPBACK) is None
    assert handler.handle(parse_request(b"SIP/2.0 200 OK\r\n\r\n"), SIGN, LOOPBACK) is None


async def test_verification_disabled_is_not_checked(runtimes: RuntimeFactory) -> None:
    runtime = runtimes(
        verification="enabled = false",
        extra='[verification.on.not_checked]\naction = "reject"\nreject_code = 480\n',
    )
    calls = MemoryCallLog()
    response = await answer(SipHandler(runtime, call_log=calls), invite(), VERIFY)
    assert response is not None and response.code == 480
    assert response.first("x-shaken-reason") == "not_checked"
    assert [r.allowed for r in calls.records] == [False]


# ------------------------------------------------------------------------------ hypothesis

FRAGMENTS = st.sampled_from(
    [
        b"INVITE sip:1@h SIP/2.0\r\n",
        b"OPTIONS sip:1@h SIP/2.0\r\n",
        b"ACK sip:1@h SIP/2.0\r\n",
        b"CANCEL sip:1@h SIP/2.0\r\n",
        b"Via: SIP/2.0/UDP h:5060;branch=z9hG4bK1;rport\r\n",
        b"From: <sip:12025550123@h>;tag=1\r\n",
        b"To: <sip:13035550000@h>\r\n",
        b"Call-ID: c\r\n",
        b"CSeq: 1 INVITE\r\n",
        b"Identity: a.b.c;info=<https://x/y>;alg=ES256;ppt=shaken\r\n",
        b'P-Asserted-Identity: "x" <tel:+1>, <sip:@>\r\n',
        b"Require: x\r\n",
        b"Content-Length: 2\r\n",
        b"\r\n",
        b"\xff",
        b" ",
        b"\r",  # issue 17 item 3: stray controls, to prove none reaches an answer
        b"\n",
        b"\x00",
        b'From: "A\rP-Asserted-Identity: <sip:+1;verstat=TN-Validation-Passed@e>" <sip:1@h>\r\n',
    ]
)


@pytest.fixture(scope="module")
def fuzz_handler(lab: Lab) -> SipHandler:
    # Never awaited and never fetching: its HTTPS client is created on first use only.
    return SipHandler(build_runtime(load_config(write_config(lab))))


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.one_of(st.binary(max_size=400), st.lists(FRAGMENTS, max_size=14).map(b"".join)))
def test_any_bytes_get_an_answer_or_none(fuzz_handler: SipHandler, data: bytes) -> None:
    for listener in (SIGN, VERIFY):
        request = parse_request(data)
        reply = fuzz_handler.handle(request, listener, LOOPBACK)
        if isinstance(reply, NeedsCertificates):
            fuzz_handler.abandon(reply)  # a well-formed INVITE waiting on a fetch: not this
            continue
        assert reply is None or isinstance(reply, bytes)
        if isinstance(reply, bytes):
            head = reply.split(b"\r\n\r\n", 1)[0]
            for line in head.split(b"\r\n"):
                assert not any((c < 0x20 and c != 0x09) or c == 0x7F for c in line), reply
            assert b"verstat=TN-Validation-Passed@e" not in reply
            response = parse_response(reply)
            assert 100 <= response.code < 700
            if request.problem is not None:
                assert response.code == request.problem[0]


# ------------------------------------------- issue 9 item 5: nothing spoofable passes through

SPOOF_ACTIONS = """
[verification.on.verified]
action = "alert"
display_prefix = "(Verified) "

[verification.on.reason.stale_iat]
action = "alert"
display_suffix = " [stale]"
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        # Issue 9 item 5's reproduction: "missing Identity: continue" passed it unchanged.
        ("", '"IRS Refunds" <sip:12025550123;verstat=No-TN-Validation@192.0.2.1>'),
        # With an alert prefix it became "[No ID] (Verified) Mallory".
        (
            '[profile.lab.on.missing]\naction = "alert"\ndisplay_prefix = "[No ID] "\n',
            '"[No ID] IRS Refunds" <sip:12025550123;verstat=No-TN-Validation@192.0.2.1>',
        ),
    ],
)
async def test_9_5_an_unsigned_call_loses_a_forged_verdict_in_its_display_name(
    runtimes: RuntimeFactory, lab: Lab, extra: str, expected: str
) -> None:
    handler, _, _ = await ready(runtimes, lab, extra=SPOOF_ACTIONS + extra)
    forged = f'"(Verified) IRS Refunds" <sip:{ORIG}@192.0.2.1>;tag=f1'
    response = await answer(handler, invite(from_value=forged), VERIFY)
    assert response is not None and response.code == 302
    assert response.values("p-asserted-identity") == [expected]


async def test_9_5_stacked_marks_of_every_outcome_are_stripped_case_sensitively(
    runtimes: RuntimeFactory, lab: Lab
) -> None:
    handler, _, _ = await ready(runtimes, lab, extra=SPOOF_ACTIONS)
    pai = (
        "P-Asserted-Identity",
        f'"(Verified) (Verified)  IRS [stale] [stale]" <sip:{ORIG}@192.0.2.1>, '
        f'"(verified) Bob [stale]" <tel:+{ORIG}>',
    )
    response = await answer(handler, invite(headers=(pai,)), VERIFY)
    assert response is not None and response.code == 302
    assert response.values("p-asserted-identity") == [
        f'"IRS" <sip:{ORIG};verstat=No-TN-Validation@192.0.2.1>',
        f'"(verified) Bob" <tel:+{ORIG};verstat=No-TN-Validation>',  # not this case
    ]
    # One field with both: an SBC copying the 302's first PAI field passes on both.
    assert response.first("p-asserted-identity") == ", ".join(
        response.values("p-asserted-identity")
    )
    # A verified call: only shaken's own prefix, once.
    response = await answer(
        handler,
        invite(
            from_value=f'"(Verified) Alice" <sip:{ORIG}@192.0.2.1>;tag=f1',
            headers=(("Identity", identity(lab)),),
        ),
        VERIFY,
    )
    assert response is not None
    assert response.first("p-asserted-identity") == (
        f'"(Verified) Alice" <sip:{ORIG};verstat=TN-Validation-Passed@192.0.2.1>'
    )


async def test_9_5_inbound_verstat_is_removed_even_without_tagging(
    runtimes: RuntimeFactory, lab: Lab
) -> None:
    handler, _, _ = await ready(runtimes, lab, verification="tag_verstat = false")
    pai = (
        "P-Asserted-Identity",
        f"<sip:+{ORIG};verstat=TN-Validation-Passed@192.0.2.1;user=phone;VERSTAT=x>;verstat=y, "
        f"<tel:+{ORIG};verstat=TN-Validation-Passed;npdi>",
    )
    response = await answer(handler, invite(headers=(pai,)), VERIFY)
    assert response is not None and response.code == 302
    assert response.values("p-asserted-identity") == [
        f"<sip:+{ORIG}@192.0.2.1;user=phone>",
        f"<tel:+{ORIG};npdi>",
    ]
    # From alone, and nothing to tag or rename: the 302 still carries the cleaned identity,
    # so an SBC that keeps what it has when the 302 has none cannot pass the forgery on.
    forged = f"<sip:{ORIG};verstat=TN-Validation-Passed@192.0.2.1>;tag=f1"
    response = await answer(handler, invite(from_value=forged), VERIFY)
    assert response is not None
    assert response.values("p-asserted-identity") == [f"<sip:{ORIG}@192.0.2.1>"]


async def test_9_5_the_302_asserts_one_sip_and_one_tel_identity(
    runtimes: RuntimeFactory, lab: Lab
) -> None:
    """RFC 3325 section 9.1: at most one sip/sips and one tel value, the first of each, however
    many the request carried."""
    handler, _, _ = await ready(runtimes, lab, verification="tag_verstat = false")
    pai = (
        "P-Asserted-Identity",
        f"<sip:+{ORIG}@192.0.2.1;user=phone>, <tel:+{ORIG}>, <tel:+13035550199>, "
        f"<sips:+{ORIG}@192.0.2.2;user=phone>",
    )
    response = await answer(handler, invite(headers=(pai,)), VERIFY)
    assert response is not None and response.code == 302
    assert response.values("p-asserted-identity") == [
        f"<sip:+{ORIG}@192.0.2.1;user=phone>",
        f"<tel:+{ORIG}>",
    ]


async def test_9_5_an_unprocessed_call_also_loses_inbound_verdicts(
    runtimes: RuntimeFactory, lab: Lab
) -> None:
    handler, _, _ = await ready(runtimes, lab, extra=SPOOF_ACTIONS)
    forged = f'"(Verified) Mallory" <sip:{ORIG};verstat=TN-Validation-Passed@192.0.2.1>;tag=f'
    response = await answer(handler, invite(from_value=forged), VERIFY, source=ELSEWHERE)
    assert response is not None and response.code == 302
    assert (response.first("x-shaken-reason") or "").startswith("not_checked;")
    assert response.values("p-asserted-identity") == [f'"Mallory" <sip:{ORIG}@192.0.2.1>']


async def test_9_5_an_identity_that_does_not_parse_is_a_400_not_an_echo(
    runtimes: RuntimeFactory, lab: Lab
) -> None:
    handler, _, _ = await ready(runtimes, lab)
    for pai in ('"(Verified) Bob <sip:1@h>', "<sip:1@h", "<nonsense>", "<sip:a b@h>"):
        response = await answer(handler, invite(headers=(("P-Asserted-Identity", pai),)), VERIFY)
        assert response is not None and response.code == 400, pai
        assert "P-Asserted-Identity" in (response.first("warning") or "")
        assert response.first("p-asserted-identity") is None


# ------------------------------------------------- issue 9 item 7: phrases on the wire


async def test_9_7_reject_code_438_answers_invalid_identity_header(
    runtimes: RuntimeFactory, lab: Lab
) -> None:
    extra = '[profile.lab.on.missing]\naction = "reject"\nreject_code = 438\n'
    handler, _, _ = await ready(runtimes, lab, extra=extra)
    response = await answer(handler, invite(), VERIFY)
    assert response is not None and (response.code, response.phrase) == (
        438,
        "Invalid Identity Header",
    )


# ---------------------------------- issue 17 item 3: nothing echoed without re-rendering


async def test_17_3_bare_cr_in_from_gets_400_without_the_forged_header(
    runtimes: RuntimeFactory, lab: Lab
) -> None:
    handler, _, _ = await ready(runtimes, lab)
    forged = f'"Alice\rP-Asserted-Identity: <sip:+1202;verstat=TN-Validation-Passed@evil>" <sip:{ORIG}@h>;tag=1'
    for listener in (SIGN, VERIFY):
        reply = handler.handle(parse_request(invite(from_value=forged)), listener, LOOPBACK)
        assert isinstance(reply, bytes) and reply.startswith(b"SIP/2.0 400 Bad Request\r\n")
        assert b"evil" not in reply and b"\r" not in reply.replace(b"\r\n", b"")


# -------------------------------- issue 17 item 4: the profile header is not a name lookup

HEADER_PROFILES = """
[profile.pbx]
behavior = "sign"
header_value = "s3cret-pbx-token"
"""


async def test_17_4_profile_header_does_not_select_by_name_or_bound_profiles(
    runtimes: RuntimeFactory, lab: Lab
) -> None:
    runtime = runtimes(server='profile_header = "X-Shaken-Profile"', extra=HEADER_PROFILES)
    await warm(runtime, lab)
    handler = SipHandler(runtime)
    # From an address no profile lists: the names "pbx" and "lab" select nothing ...
    for value in ("pbx", "lab", " lab ", "global"):
        response = await answer(
            handler, invite(headers=(("X-Shaken-Profile", value),)), SIGN, source=ELSEWHERE
        )
        assert response is not None and response.code == 302
        assert response.first("identity") is None, value
        assert (response.first("x-shaken-reason") or "").startswith("not_signed;")
    # ... only the configured secret value does.
    response = await answer(
        handler,
        invite(headers=(("X-Shaken-Profile", "s3cret-pbx-token"),)),
        SIGN,
        source=ELSEWHERE,
    )
    assert response is not None and response.first("identity") is not None
    assert runtime.profile_for_header("pbx") is None
    assert runtime.profile_for_header("s3cret-pbx-token") is runtime.profiles["pbx"]


async def test_17_4_a_profile_with_sources_is_never_selected_by_header(
    runtimes: RuntimeFactory, lab: Lab
) -> None:
    extra = (
        '[profile.lab2]\nbehavior = "both"\nsources = ["198.51.100.0/24"]\nheader_value = "lab-2"\n'
    )
    runtime = runtimes(server='profile_header = "X-Shaken-Profile"', extra=extra)
    handler = SipHandler(runtime)
    headed = parse_request(invite(headers=(("X-Shaken-Profile", "lab-2"),)))
    assert handler.select_profile(headed, SIGN, "192.0.2.44") is None
    assert handler.select_profile(headed, SIGN, "198.51.100.7") is runtime.profiles["lab2"]


# ---------------------------------------- issue 17 item 7: tables bounded in bytes


def _retained_after(work: Callable[[], None]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


async def test_17_7_transaction_table_keeps_answers_within_its_byte_budget(
    runtimes: RuntimeFactory, lab: Lab
) -> None:
    budget = 4 * 1024 * 1024
    handler = SipHandler(runtimes(), transaction_bytes=budget)
    pad = "A" * 60_000
    answers: list[bytes] = []

    def flood() -> None:
        for i in range(600):  # 600 signing INVITEs with a 60 KB From: 36 MB of answers
            data = invite(from_value=f'"{pad}" <sip:{ORIG}@192.0.2.1>;tag={i}', call_id=f"big{i}")
            reply = handler.handle(parse_request(data), SIGN, LOOPBACK)
            assert isinstance(reply, bytes) and len(reply) > 60_000
            answers.append(reply[:0])

    kept = _retained_after(flood)
    table = handler.transactions
    assert table.bytes <= budget
    assert kept < budget + 2 * 1024 * 1024, kept  # the table, and no more than slack
    # What fits is still kept: the latest answers are retransmitted byte for byte.
    last = invite(from_value=f'"{pad}" <sip:{ORIG}@192.0.2.1>;tag=599', call_id="big599")
    again = handler.handle(parse_request(last), SIGN, LOOPBACK)
    assert isinstance(again, bytes)
    small = invite(branch="z9hG4bKsmall1", call_id="small1")
    first = handler.handle(parse_request(small), SIGN, LOOPBACK)
    assert handler.handle(parse_request(small), SIGN, LOOPBACK) == first
    assert len(table) < 100


async def test_17_7_an_answer_larger_than_the_budget_is_sent_not_kept(
    runtimes: RuntimeFactory,
) -> None:
    handler = SipHandler(runtimes(), transaction_bytes=10_000)
    data = invite(from_value=f'"{"A" * 20_000}" <sip:{ORIG}@192.0.2.1>;tag=1')
    reply = handler.handle(parse_request(data), SIGN, LOOPBACK)
    assert isinstance(reply, bytes) and reply.startswith(b"SIP/2.0 302 ")
    assert len(handler.transactions) == 0 and handler.transactions.bytes == 0
    ordinary = invite(branch="z9hG4bKfits")
    first = handler.handle(parse_request(ordinary), SIGN, LOOPBACK)
    assert handler.handle(parse_request(ordinary), SIGN, LOOPBACK) == first  # 17.2.1 kept


async def test_17_7_by_source_table_has_a_byte_ceiling(runtimes: RuntimeFactory) -> None:
    handler = SipHandler(runtimes())
    request = parse_request(invite())

    def many_sources() -> None:
        for i in range(20_000):
            handler.select_profile(request, VERIFY, f"2001:db8:{i >> 8:x}:{i & 255:x}::{i:x}")
        handler.select_profile(request, VERIFY, "fe80::1%" + "x" * 5000)  # not kept

    kept = _retained_after(many_sources)
    assert len(handler._bindings.by_source) <= BY_SOURCE_ENTRIES
    assert kept < BY_SOURCE_ENTRIES * 250, kept  # an address and a dict slot each


# ------------------------------------------------------- broken framing: an event, not a request


async def test_broken_framing_is_refused_from_the_head_alone(runtimes: RuntimeFactory) -> None:
    """The stream framer's FramingError is answered from its head's Via/From/To/Call-ID/CSeq,
    with the framing's code and why; an ACK's broken stream gets no answer."""
    handler = SipHandler(runtimes())
    for method, expected in (("INVITE", 513), ("OPTIONS", 513), ("ACK", None)):
        data = invite(method=method, call_id=f"broken-{method}")
        data = data.replace(b"Content-Length: 0\r\n\r\n", b"X-Pad: " + b"a" * 3000)
        [failure] = StreamFramer(max_size=1024).feed(data)
        assert isinstance(failure, FramingError)
        head = parse_request(failure.head, stream=True, max_size=1024)
        reply = handler.refuse(head, LOOPBACK, failure.code, failure.detail)
        if expected is None:
            assert reply is None
            continue
        assert reply is not None
        response = parse_response(reply)
        assert (response.code, response.first("call-id")) == (expected, f"broken-{method}")
        assert response.first("warning") == '399 shaken "no end of headers"'
        assert response.first("cseq") == f"1 {method}"


async def test_a_retransmission_answered_by_another_worker_is_one_record(
    runtimes: RuntimeFactory, lab: Lab, tmp_path: Path
) -> None:
    """Workers share one UDP socket and each keeps its own transactions: the worker that
    reads a retransmission answers it afresh, and its record has the same record_id as the
    first one's, so the call log keeps one row (the store skips an id it holds)."""
    runtime = runtimes()
    await warm(runtime, lab)
    store = SqliteCallLog(tmp_path / "calls.sqlite", flush_interval=0.01)
    first, second = SipHandler(runtime, call_log=store), SipHandler(runtime, call_log=store)
    request = invite(headers=(("Identity", identity(lab)),))
    other = invite(headers=(("Identity", identity(lab)),))  # another call: its own branch
    for handler, data in ((first, request), (second, request), (first, other)):
        response = await answer(handler, data, VERIFY)
        assert response is not None and response.code == 302
    store.close()
    rows = read_calls(store.path)
    assert len(rows) == 2
    assert {row["call_id"] for row in rows} == {
        parse_request(request).first("call-id"),
        parse_request(other).first("call-id"),
    }
