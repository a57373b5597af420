"""The sans-IO SIP codec: RFC 3261 grammar, framing, limits, and answers to build."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shaken.adapters.sip.codec import (
    FramingError,
    KeepAlive,
    Message,
    SipRequest,
    StreamEvent,
    StreamFramer,
    ack_transaction,
    build_response,
    parse_request,
    parse_via,
    response_address,
    split_list,
    stamp_via,
    to_tag_for,
)

from .conftest import invite

IDENTITY = "eyJh.eyJi.c2ln;info=<https://cr.example.org/a,b.pem>;alg=ES256;ppt=shaken"


def test_a_plain_invite() -> None:
    request = parse_request(invite(headers=(("Identity", IDENTITY),), call_id="c1"))
    assert request.problem is None, request.detail
    assert (request.method, request.uri) == ("INVITE", "sip:13035550000@192.0.2.9")
    assert request.first("call-id") == "c1"
    assert request.all("identity") == [IDENTITY]  # never split, even with a comma in it
    assert request.top_via is not None and request.top_via.branch is not None


def test_compact_names_folding_and_lists() -> None:
    data = (
        b"\r\n\r\nINVITE sip:1@h SIP/2.0\r\n"  # leading CRLFs are ignored (RFC 3261 7.5)
        b"v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa, SIP/2.0/TCP [2001:db8::1]:5070"
        b";branch=z9hG4bKb\r\n"
        b"V: SIP/2.0/UDP 192.0.2.3;branch=z9hG4bKc\r\n"
        b"f: <sip:12025550123@h>;tag=1\r\n"
        b"t: <sip:13035550000@h>\r\n"
        b"i: abc\r\n"
        b"CSeq: 7\r\n   INVITE\r\n"  # folded: the continuation is one SP (RFC 3261 7.3.1)
        b'P-Asserted-Identity: "A, B" <sip:+12025550123@h>, <tel:+12025550123>\r\n'
        b"y: " + IDENTITY.encode() + b"\r\n"
        b"l: 0\r\n\r\n"
    )
    request = parse_request(data)
    assert request.problem is None, request.detail
    assert request.vias == [
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa",
        "SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKb",
        "SIP/2.0/UDP 192.0.2.3;branch=z9hG4bKc",
    ]
    assert request.first("cseq") == "7 INVITE"
    assert request.values("p-asserted-identity") == [
        '"A, B" <sip:+12025550123@h>',
        "<tel:+12025550123>",
    ]
    assert request.all("identity") == [IDENTITY]
    assert request.first("from") == "<sip:12025550123@h>;tag=1"


def test_bare_lf_line_ends_are_read() -> None:
    data = invite().replace(b"\r\n", b"\n")
    assert parse_request(data).problem is None


def test_body_is_cut_at_content_length_on_udp() -> None:
    data = invite().replace(b"Content-Length: 0", b"Content-Length: 3") + b"abcdef"
    request = parse_request(data)
    assert request.problem is None and request.body == b"abc"


@pytest.mark.parametrize(
    ("mutate", "code", "detail"),
    [
        (lambda d: d.replace(b"Content-Length: 0", b"Content-Length: 9"), 400, "exceeds"),
        (lambda d: d.replace(b"Content-Length: 0", b"Content-Length: x"), 400, "Content-Length"),
        (lambda d: d.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505, "not SIP/2.0"),
        (lambda d: d.replace(b"INVITE sip", b"INV<ITE sip", 1), 400, "not a token"),
        (lambda d: d.replace(b"Call-ID", b"X-Call-ID"), 400, "missing Call-Id"),
        (lambda d: d.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), 400, "CSeq method"),
        (lambda d: d.replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE"), 400, "malformed CSeq"),
        (lambda d: d.replace(b"Via: SIP/2.0/UDP", b"Via: HTTP/1.1"), 400, "malformed Via"),
        (lambda d: d.replace(b"Max-Forwards: 70", b"Max Forwards: 70"), 400, "not a token"),
        (lambda d: d.replace(b"Max-Forwards: 70", b"Max-Forwards 70"), 400, "without a name"),
        (lambda d: d.replace(b"\r\n\r\n", b"\r\n"), 400, "no empty line"),
    ],
)
def test_malformed_requests_carry_a_clear_problem(
    mutate: Callable[[bytes], bytes], code: int, detail: str
) -> None:
    request = parse_request(mutate(invite()))
    assert request.problem is not None
    assert request.problem[0] == code
    assert detail in request.detail


def test_size_limits() -> None:
    big = invite(headers=(("X-Pad", "a" * 70000),))
    assert parse_request(big).problem == (513, "Message Too Large")
    many = invite(headers=tuple((f"X-H{i}", "v") for i in range(300)))
    assert parse_request(many).problem == (513, "Message Too Large")


def test_a_response_is_recognised() -> None:
    request = parse_request(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\r\n")
    assert request.is_response


def test_split_list_respects_quotes_and_brackets() -> None:
    assert split_list('"a,\\"b" <sip:x@h;p=1,2>, <tel:+1>,,') == [
        '"a,\\"b" <sip:x@h;p=1,2>',
        "<tel:+1>",
    ]
    assert split_list("  ") == []


def test_via_parsing() -> None:
    via = parse_via("SIP / 2.0 / udp client.example.com:5070 ;branch=z9hG4bK1;rport;ttl=3")
    assert via is not None
    assert (via.transport, via.host, via.port) == ("UDP", "client.example.com", 5070)
    assert via.params == {"branch": "z9hG4bK1", "rport": None, "ttl": "3"}
    assert parse_via("SIP/2.0/UDP [2001:db8::1]").port is None  # type: ignore[union-attr]
    assert parse_via("SIP/2.0/UDP host:99999") is None
    assert parse_via("SIP/2.0/UDP") is None


def test_received_and_rport() -> None:
    # RFC 3261 18.2.1: received when the sent-by host is not the source address.
    assert stamp_via("SIP/2.0/UDP h.example:5060;branch=z9hG4bK1", "192.0.2.7", 5999).endswith(
        ";branch=z9hG4bK1;received=192.0.2.7"
    )
    same = "SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1"
    assert stamp_via(same, "192.0.2.7", 5060) == same
    # RFC 3581 section 4: rport filled with the source port, received added.
    stamped = stamp_via("SIP/2.0/UDP 192.0.2.7:5060;rport;branch=z9hG4bK1", "192.0.2.7", 6000)
    assert stamped == "SIP/2.0/UDP 192.0.2.7:5060;rport=6000;branch=z9hG4bK1;received=192.0.2.7"
    assert response_address(parse_via(stamped), ("192.0.2.7", 6000)) == ("192.0.2.7", 6000)
    assert response_address(parse_via(same), ("192.0.2.8", 7000)) == ("192.0.2.8", 5060)
    no_port = parse_via("SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1")
    assert response_address(no_port, ("192.0.2.7", 7000)) == ("192.0.2.7", 5060)


def test_build_response_copies_the_dialog_fields() -> None:
    invite_bytes = invite(call_id="c9", headers=(("Via", "SIP/2.0/UDP p:5060"),))
    request = parse_request(invite_bytes)
    answer = build_response(request, 302, "Moved Temporarily", [("Contact", "<sip:x@h>")])
    text = answer.decode()
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    assert lines[0] == "SIP/2.0 302 Moved Temporarily"
    assert [line for line in lines if line.startswith("Via: ")] == [
        f"Via: {v}" for v in request.vias
    ]
    tag = to_tag_for(request)
    assert f"To: <sip:13035550000@192.0.2.9>;tag={tag}" in lines
    assert "Call-ID: c9" in lines and "CSeq: 1 INVITE" in lines
    assert "Contact: <sip:x@h>" in lines and "Content-Length: 0" in lines and body == ""
    # A retransmission (the same bytes) gets the same tag; 100 Trying gets none.
    again = parse_request(invite_bytes)
    assert to_tag_for(again) == tag
    assert ";tag=" not in build_response(request, 100, "Trying").decode().split("To: ")[1][:40]
    tagged = parse_request(invite(to_value="<sip:1@h>;tag=abc"))
    assert "To: <sip:1@h>;tag=abc\r\n" in build_response(tagged, 481, "No").decode()


def test_stream_framing() -> None:
    one = invite(headers=(("Content-Length", "5"),)).replace(b"Content-Length: 0\r\n", b"")
    one += b"hello"
    two = invite()
    framer = StreamFramer()
    out = framer.feed(b"\r\n\r\n" + one + two[:10])
    assert out == [KeepAlive(), Message(one)]  # RFC 5626 ping, then a message with its body
    assert framer.feed(two[10:]) == [Message(two)]
    assert parse_request(one, stream=True).body == b"hello"
    # Byte by byte gives the same messages.
    framer = StreamFramer()
    got: list[StreamEvent] = []
    for i in range(len(one + two)):
        got += framer.feed((one + two)[i : i + 1])
    assert got == [Message(one), Message(two)]


def test_stream_framing_failures() -> None:
    framer = StreamFramer(max_size=2048)
    bad = invite().replace(b"Content-Length: 0", b"Content-Length: 12x")
    out = framer.feed(bad + invite())
    assert len(out) == 1 and isinstance(out[0], FramingError) and out[0].code == 400
    assert framer.broken and framer.feed(invite()) == []
    framer = StreamFramer(max_size=2048)
    huge = invite().replace(b"Content-Length: 0", b"Content-Length: 99999")
    out = framer.feed(huge)
    assert isinstance(out[0], FramingError) and out[0].code == 513
    framer = StreamFramer(max_size=1024)
    out = framer.feed(b"INVITE " + b"a" * 2000)
    assert isinstance(out[0], FramingError) and out[0].code == 513
    # No Content-Length on a stream: framed as an empty body, then answered 400.
    missing = invite().replace(b"Content-Length: 0\r\n", b"")
    framer = StreamFramer()
    assert framer.feed(missing) == [Message(missing)]
    request = parse_request(missing, stream=True)
    assert request.problem == (400, "Bad Request") and "stream" in request.detail


# ------------------------------------------------------------------------------ hypothesis

SIP_TEXT = st.sampled_from(
    [
        b"INVITE ",
        b"ACK ",
        b"sip:1@h ",
        b"SIP/2.0",
        b"\r\n",
        b"\n",
        b": ",
        b"Via: SIP/2.0/UDP h:5060;branch=z9hG4bK1",
        b"v:",
        b"l: 3",
        b"Content-Length: ",
        b"CSeq: 1 INVITE",
        b"From: <sip:1@h>;tag=1",
        b"To: <sip:2@h>",
        b"Call-ID: x",
        b" ",
        b"\t",
        b",",
        b";rport",
        b"\xff\xfe",
        b"\x00",
        b"9999999999",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=600), st.lists(SIP_TEXT, max_size=40).map(b"".join)))
def test_no_input_raises(data: bytes) -> None:
    request = parse_request(data)
    assert isinstance(request, SipRequest)
    if request.problem is None and not request.is_response:
        assert request.top_via is not None and request.first("call-id") is not None
    if request.top_via is not None:
        answer = build_response(request, *(request.problem or (200, "OK")))
        assert answer.startswith(b"SIP/2.0 ")
    for item in StreamFramer(max_size=1024).feed(data):
        if isinstance(item, Message):
            parse_request(item.data, stream=True, max_size=1024)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=30))
def test_framing_does_not_depend_on_chunking(cuts: list[int]) -> None:
    messages = [invite(call_id="a"), invite(call_id="b"), invite(call_id="c")]
    parts = [Message(messages[0]), KeepAlive(), Message(messages[1]), Message(messages[2])]
    stream = messages[0] + b"\r\n\r\n" + messages[1] + messages[2]
    framer = StreamFramer()
    got: list[StreamEvent] = []
    position = 0
    for cut in cuts * 100:
        if position >= len(stream):
            break
        got += framer.feed(stream[position : position + cut])
        position += cut
    got += framer.feed(stream[position:])
    assert got == parts


def test_ack_transaction_reads_just_the_key() -> None:
    ack = invite(method="ACK", branch="z9hG4bKack1", call_id="call-7")
    assert ack_transaction(ack) == ("z9hG4bKack1", "call-7")
    compact = ack.replace(b"Via:", b"v:").replace(b"Call-ID:", b"i:")
    assert ack_transaction(compact) == ("z9hG4bKack1", "call-7")
    two = ack.replace(b"Via: ", b"Via: SIP/2.0/UDP p;branch=z9hG4bKtop, ", 1)
    assert ack_transaction(two) == ("z9hG4bKtop", "call-7")  # the top Via names it
    assert ack_transaction(ack.replace(b"z9hG4bKack1", b"rfc2543")) is None
    assert ack_transaction(ack.replace(b"Call-ID: call-7", b"Call-ID: call-7\r\n folded")) is None
    assert ack_transaction(b"ACK sip:a@b SIP/2.0\r\n\r\n") is None


# ---------------------------------------------------- issue 17 item 3: no header injection

FORGED = "P-Asserted-Identity: <sip:+12025550100;verstat=TN-Validation-Passed@evil>"


def _is_clean(answer: bytes) -> bool:
    """Every line ends with CRLF, and no other control character but HTAB is in the head."""
    head = answer.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    return all(not any((c < 0x20 and c != 0x09) or c == 0x7F for c in line) for line in lines)


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("bare_cr", "\r"),
        ("bare_lf", "\n"),
        ("nul", "\x00"),
        ("escape", "\x1b"),
        ("vertical_tab", "\x0b"),
        ("del", "\x7f"),
    ],
)
@pytest.mark.parametrize("header", ["From", "P-Asserted-Identity", "To", "Call-ID", "Via"])
def test_17_3_control_character_in_a_header_gets_400_and_is_not_echoed(
    name: str, bad: str, header: str
) -> None:
    values = {
        "From": f'"Alice{bad}{FORGED}" <sip:12025550123@h>;tag=f1',
        "P-Asserted-Identity": f'"Alice{bad}{FORGED}" <sip:12025550123@h>',
        "To": f"<sip:13035550000@h>{bad}{FORGED}",
        "Call-ID": f"abc{bad}{FORGED}",
        "Via": f"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbad{bad}{FORGED}",
    }
    data = invite(
        from_value=values["From"] if header == "From" else "<sip:12025550123@h>;tag=f1",
        to_value=values["To"] if header == "To" else "<sip:13035550000@h>",
        call_id=values["Call-ID"] if header == "Call-ID" else "cid-1",
        headers=(("P-Asserted-Identity", values[header]),)
        if header == "P-Asserted-Identity"
        else (),
    )
    if header == "Via":
        data = data.replace(
            b"Via: SIP/2.0/UDP 192.0.2.1:5060;",
            b"Via: " + values["Via"].encode() + b"\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;",
            1,
        )
    request = parse_request(data)
    assert request.problem is not None and request.problem[0] == 400, (name, header)
    assert "control character" in request.detail
    # The forged identity never becomes a header field of its own.
    assert request.first("p-asserted-identity") is None or "evil" not in "".join(
        request.all("p-asserted-identity")
    )
    if request.top_via is not None:
        answer = build_response(request, 400, "Bad Request")
        assert _is_clean(answer)
        assert b"evil" not in answer


def test_17_3_bare_cr_in_from_gets_400() -> None:
    data = invite(from_value=f'"Alice\r{FORGED}" <sip:12025550123@h>;tag=f1')
    request = parse_request(data)
    assert request.problem == (400, "Bad Request")
    answer = build_response(request, 400, "Bad Request")
    assert b"\rP-Asserted" not in answer and b"evil" not in answer and _is_clean(answer)
    assert b"Via: SIP/2.0/UDP 192.0.2.1:5060" in answer  # still routable


def test_17_3_lf_only_messages_still_parse_but_a_cr_inside_is_refused() -> None:
    lf = invite().replace(b"\r\n", b"\n")
    assert parse_request(lf).problem is None
    bad = lf.replace(b"From: <sip:", b'From: "A\rB" <sip:', 1)
    assert parse_request(bad).problem == (400, "Bad Request")


def test_17_3_tab_and_utf8_are_still_fine() -> None:
    data = invite(from_value='"Zoë\tMüller" <sip:12025550123@h>;tag=f1')
    assert parse_request(data).problem is None


def test_17_3_request_uri_call_id_and_cseq_follow_their_grammar() -> None:
    assert parse_request(invite(uri="sip:1@h\x00x")).problem is not None
    assert "Request-URI" in parse_request(invite(uri="sip:1@h{x")).detail
    spaced = parse_request(invite(call_id="a b"))
    assert spaced.problem == (400, "Bad Request") and "Call-ID" in spaced.detail
    assert b"Call-ID: a b" not in build_response(spaced, 400, "Bad Request")
    # CSeq is rendered from its parsed parts.
    request = parse_request(invite().replace(b"CSeq: 1 INVITE", b"CSeq: 1\t  INVITE"))
    assert request.problem is None
    assert b"\r\nCSeq: 1 INVITE\r\n" in build_response(request, 200, "OK")


def test_17_3_every_via_must_parse() -> None:
    data = invite().replace(b"Via: ", b"Via: SIP/2.0/UDP ok:5060;branch=z9hG4bKa, junk here, ", 1)
    request = parse_request(data)
    assert request.problem == (400, "Bad Request") and "Via" in request.detail


def test_9_7_codec_phrases_come_from_the_table() -> None:
    request = parse_request(invite())
    assert build_response(request, 438).startswith(b"SIP/2.0 438 Invalid Identity Header\r\n")
    assert build_response(request, 607).startswith(b"SIP/2.0 607 Unwanted\r\n")


# ------------------------------------------- issue 17 item 13: the 513 keeps its Via


def test_17_13_oversized_header_block_keeps_the_head_for_the_513() -> None:
    framer = StreamFramer(max_size=1024)
    data = invite().replace(b"Content-Length: 0\r\n\r\n", b"X-Pad: " + b"a" * 3000)
    [failure] = framer.feed(data)
    assert isinstance(failure, FramingError) and failure.code == 513
    assert failure.head.startswith(b"INVITE sip:")
    request = parse_request(failure.head + b"\r\n\r\n", max_size=1024)
    assert request.top_via is not None
