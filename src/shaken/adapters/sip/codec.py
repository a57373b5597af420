"""SIP messages as bytes in, values out, bytes back: the sans-IO codec of the redirect server.

Nothing here touches a socket, a clock or an event loop, so every rule can be tested with
plain bytes (and fuzzed). What it implements, and where the rules come from:

* the request grammar of RFC 3261 section 7 and its ABNF in section 25: a request line, header
  fields, an empty line, a body; leading empty lines ignored (section 7.5);
* header folding: a line starting with SP or HTAB continues the previous field, the fold
  counting as one SP (section 7.3.1);
* compact header names (section 7.3.3, plus RFC 8224's ``y`` for Identity and the other
  IANA-registered one-letter forms), matched case-insensitively (section 7.3.1);
* several values in one field, comma-separated (section 7.3.1), split outside quotes and
  angle brackets for the fields whose grammar is a list (Via, P-Asserted-Identity, ...);
  Identity is never split (a PASSporT has no comma, and RFC 8224 gives it no list form);
* Content-Length framing: on UDP a shorter body is cut and a longer claim is a 400 (section
  18.3); on TCP, :class:`StreamFramer` cuts the byte stream into events: a :class:`Message`,
  an RFC 5626 :class:`KeepAlive` ping, or a :class:`FramingError` for what cannot be framed
  (too large, a malformed Content-Length), after which the stream is done;
* the response side: Via, From, To, Call-ID and CSeq copied from the request (section 8.2.6.2),
  a To tag on every non-100 response, Via ``received``/``rport`` (section 18.2.1, RFC 3581),
  the reason phrase of each code from :data:`shaken.core.reasons.SIP_PHRASES`.

Nothing received reaches a response unless it passed its grammar here: RFC 3261's grammar has
no place for a control character in a header (only HTAB, as whitespace), so a bare CR, a bare
LF inside a CRLF message, NUL, any other C0 control or DEL makes the request a 400 and the
field that held it is dropped, never copied into the 400 (a CR copied into a response is a
header a CR-splitting parser reads as forged). Every Via must parse, the Call-ID must be a
``callid`` (section 25.1) and the Request-URI an RFC 3986 URI; CSeq is rendered from its parsed
number and method.

Malformed input never raises out of :func:`parse_request`: the result carries ``problem`` (the
status code and phrase to answer) and whatever headers could be read, so the handler can send
a clean 400 when the request had a Via to answer to, and drop it otherwise.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from shaken import __version__
from shaken.core.fastinit import positional_constructor
from shaken.core.reasons import sip_phrase

__all__ = [
    "COMPACT_FORMS",
    "MAX_HEADERS",
    "MAX_MESSAGE_SIZE",
    "PONG",
    "SERVER",
    "FramingError",
    "KeepAlive",
    "Message",
    "SipRequest",
    "StreamEvent",
    "StreamFramer",
    "Via",
    "ack_transaction",
    "build_response",
    "parse_request",
    "parse_via",
    "respond",
    "response_address",
    "split_list",
    "stamp_via",
    "to_tag_for",
    "valid_uri",
]

#: The largest message accepted (a UDP datagram cannot be larger; RFC 3261 section 18.1.1).
MAX_MESSAGE_SIZE = 65535
#: The most header fields accepted in one request.
MAX_HEADERS = 256
#: The Server header field of every response (RFC 3261 section 20.35).
SERVER = f"shaken/{__version__}"

#: Compact forms: RFC 3261 section 7.3.3 and the IANA SIP parameters registry (RFC 8224 ``y``).
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "y": "identity",
}

#: Fields whose grammar is a comma-separated list (RFC 3261 section 7.3.1 allows the combined
#: form only for these); :meth:`SipRequest.values` splits them.
LIST_FIELDS = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "p-asserted-identity",
        "p-preferred-identity",
        "require",
        "proxy-require",
        "supported",
        "allow",
        "unsupported",
    }
)

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# Names seen in nearly every request, accepted without the token regex.
_COMMON_NAMES = frozenset(
    {
        "via",
        "from",
        "to",
        "call-id",
        "cseq",
        "contact",
        "max-forwards",
        "content-length",
        "content-type",
        "date",
        "identity",
        "p-asserted-identity",
        "allow",
        "supported",
        "record-route",
        "route",
    }
)
_CSEQ = re.compile(r"([0-9]{1,10})[ \t]+([A-Za-z0-9\-.!%*_+`'~]+)")
# RFC 3261 section 25.1: callid = word [ "@" word ].
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALL_ID = re.compile(rf"{_WORD}(?:@{_WORD})?")
# An absolute URI of RFC 3986: scheme ":" then unreserved, reserved and pct-encoded characters.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
# Controls other than HTAB, CR and LF (those are looked at as line structure).
_CTL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Every control byte but HTAB, for bytes.translate.
_CONTROL_BYTES = bytes([*range(0x09), *range(0x0A, 0x20), 0x7F])
# Any control but HTAB: what a header line may not hold once split on its real line ends.
_LINE_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def valid_uri(text: str) -> bool:
    """True when ``text`` is an absolute URI made only of RFC 3986 characters."""
    return _URI.fullmatch(text) is not None


_CONTENT_LENGTH = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)")


@dataclass(slots=True)
class SipRequest:
    """One request as read from the wire, or as much of it as could be read.

    ``fields`` maps each header's long lower-case name to its values, one per header field
    line as received (unfolded and trimmed, not comma-split). ``problem`` is ``None`` for a
    well-formed request, else the (code, phrase) to answer; ``detail`` says why.
    """

    method: str = ""
    uri: str = ""
    version: str = "SIP/2.0"
    fields: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    problem: tuple[int, str] | None = None
    detail: str = ""
    is_response: bool = False
    #: Every Via value, top first (split once: the response copies them all).
    vias: list[str] = field(default_factory=list)
    #: The top Via, parsed; None when missing or malformed.
    top_via: Via | None = None
    #: CSeq as (number, method) when it parses; responses render it from these.
    cseq: tuple[int, str] | None = None

    def first(self, name: str) -> str | None:
        """The first value of the field ``name`` (lower-case long name), or None."""
        values = self.fields.get(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        """Every field line of ``name``, in order (no comma splitting)."""
        return self.fields.get(name, [])

    def values(self, name: str) -> list[str]:
        """Every value of the list field ``name``: each line split on top-level commas."""
        out: list[str] = []
        for line in self.fields.get(name, ()):
            out.extend(split_list(line))
        return out


def split_list(value: str) -> list[str]:
    """Split a list field on commas outside quoted strings and ``<...>`` (RFC 3261 7.3.1)."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    out: list[str] = []
    start = 0
    quoted = escaped = False
    angle = 0
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle += 1
        elif ch == ">":
            angle = max(0, angle - 1)
        elif ch == "," and angle == 0:
            part = value[start:i].strip()
            if part:
                out.append(part)
            start = i + 1
    part = value[start:].strip()
    if part:
        out.append(part)
    return out


def _bad(request: SipRequest, detail: str, code: int = 400) -> None:
    if request.problem is None:
        request.problem = (code, sip_phrase(code))
        request.detail = detail


def _header_end(data: bytes) -> tuple[int, int]:
    """(end of the header block, start of the body); (-1, -1) when there is no empty line."""
    end = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if end >= 0 and (lf < 0 or end < lf):
        return end, end + 4
    if lf >= 0:
        return lf, lf + 2
    return -1, -1


def parse_request(
    data: bytes,
    *,
    stream: bool = False,
    max_size: int = MAX_MESSAGE_SIZE,
    max_headers: int = MAX_HEADERS,
) -> SipRequest:
    """Read one SIP request from ``data`` (a datagram, or one frame of a stream).

    ``stream`` says the bytes came framed by :class:`StreamFramer` (TCP/TLS), where the body is
    exactly what Content-Length announced. Never raises: problems are in ``problem``.
    """
    request = SipRequest()
    if len(data) > max_size:
        _bad(request, f"message of {len(data)} bytes exceeds {max_size}", 513)
        data = data[:max_size]
    # RFC 3261 section 7.5: empty lines before the start line are ignored.
    data = data.lstrip(b"\r\n")
    head_end, body_start = _header_end(data)
    if head_end < 0:
        head, body = data, b""
        if not stream:
            _bad(request, "no empty line after the header fields")
    else:
        head, body = data[:head_end], data[body_start:]
    # Header text is UTF-8 (RFC 3261 section 25, TEXT-UTF8); bytes that are not survive the
    # round trip into the response unchanged thanks to surrogateescape.
    text = head.decode("utf-8", "surrogateescape")
    # Line ends are CRLF (RFC 3261 section 7), or LF throughout (tolerated). A CR anywhere else,
    # an LF inside a CRLF message or another control makes the slow, field-by-field path run.
    # Fast check first: when every control character of the head is a CR or LF of a CRLF
    # pair, it is clean (one C-speed pass and one count, instead of three counts and a scan).
    crlf = head.count(b"\r\n")
    tainted = len(head) - len(head.translate(None, _CONTROL_BYTES)) != 2 * crlf and (
        text.count("\r") != crlf
        or (crlf > 0 and text.count("\n") != crlf)
        or _CTL.search(text) is not None
    )
    if tainted:
        lines = text.split("\r\n" if crlf else "\n")
        start, rest = lines[0], lines[1:]
        if _LINE_CTL.search(start) is not None:
            _bad(request, "control character in the request line")
            start = ""
    else:
        newline = text.find("\n")
        start = (text if newline < 0 else text[:newline]).removesuffix("\r")
        rest = text[newline + 1 :].split("\n") if newline >= 0 else []
    parts = start.split(" ")
    if start.startswith("SIP/"):
        request.is_response = True
        _bad(request, "a response, not a request")
        return request
    if len(parts) != 3:
        _bad(request, "request line is not 'METHOD SP Request-URI SP SIP-Version'")
    else:
        method, uri, version = parts
        if _TOKEN.fullmatch(method) is None:
            _bad(request, f"method {method[:32]!r} is not a token")
        else:
            request.method = method
        if _URI.fullmatch(uri) is None:
            _bad(request, "malformed Request-URI")
        else:
            request.uri = uri
        if version.upper() != "SIP/2.0":
            if version.upper().startswith("SIP/"):
                _bad(request, f"{version[:16]} is not SIP/2.0", 505)
            else:
                _bad(request, "malformed SIP-Version")
        request.version = "SIP/2.0"
    if rest:
        _read_fields(request, rest, max_headers, tainted)
    if crlf and body_start - head_end == 2:
        _bad(request, "bare LF line ends in a CRLF message")
    _check_body(request, body, stream)
    request.vias = vias = request.values("via")
    if vias:
        request.top_via = parse_via(vias[0])
        for other in vias[1:]:
            if parse_via(other) is None:
                _bad(request, "malformed Via")
                break
    _check_required(request)
    return request


def _read_fields(request: SipRequest, lines: list[str], max_headers: int, strict: bool) -> None:
    """Header fields line by line: folding (RFC 3261 7.3.1), limits, and every problem named.

    ``strict``: the lines are split on their real line ends and may hold controls; a field with
    one is dropped (with its continuation lines) and the request gets a 400.
    """
    fields = request.fields
    name: str | None = None
    count = 0
    for raw in lines:
        if strict and _LINE_CTL.search(raw) is not None:
            if raw[:1] in (" ", "\t") and name is not None:
                fields[name].pop()  # the field this line continues goes too
                if not fields[name]:
                    del fields[name]
            label = raw.partition(":")[0][:40] if raw[:1] not in (" ", "\t") else "a continuation"
            _bad(request, f"control character in header field {label.strip()!r}")
            name = None
            continue
        line = raw.removesuffix("\r")
        if not line:
            continue
        if line[0] in " \t":
            # RFC 3261 section 7.3.1: a continuation line is folded into the previous field.
            if name is None:
                if not strict or request.problem is None:
                    _bad(request, "continuation line before any header field")
                continue
            values = fields[name]
            folded = line.strip(" \t")
            values[-1] = f"{values[-1]} {folded}" if values[-1] else folded
            continue
        count += 1
        if count > max_headers:
            _bad(request, f"more than {max_headers} header fields", 513)
            break
        label, colon, rest = line.partition(":")
        if not colon or not label:
            _bad(request, f"header line without a name and colon: {line[:40]!r}")
            name = None
            continue
        name = label.rstrip(" \t").lower()
        if name not in _COMMON_NAMES:
            if _TOKEN.fullmatch(name) is None:
                _bad(request, f"header name {name[:40]!r} is not a token")
                name = None
                continue
            if len(name) == 1:
                name = COMPACT_FORMS.get(name, name)
        value = rest.strip(" \t")
        existing = fields.get(name)
        if existing is None:
            fields[name] = [value]
        else:
            existing.append(value)


def _check_body(request: SipRequest, body: bytes, stream: bool) -> None:
    lengths = request.fields.get("content-length")
    if lengths is None:
        request.body = body
        if stream:
            # RFC 3261 section 18.3: Content-Length MUST be used on stream transports.
            _bad(request, "Content-Length is required on a stream transport")
        return
    if len(set(lengths)) != 1 or not lengths[0].isdigit() or not lengths[0].isascii():
        _bad(request, "malformed or repeated Content-Length")
        request.body = body
        return
    length = int(lengths[0])
    if length > len(body):
        # RFC 3261 section 18.3: a request that ends before its announced body gets a 400.
        _bad(request, f"Content-Length {length} exceeds the {len(body)} bytes of body")
        request.body = body
        return
    request.body = body[:length]


def _check_required(request: SipRequest) -> None:
    """RFC 3261 section 8.1.1: To, From, CSeq, Call-ID and Via are mandatory.

    Max-Forwards is mandatory too, but a redirect server forwards nothing, so its absence is
    tolerated rather than answered with a 400.
    """
    fields = request.fields
    for name in ("via", "from", "to", "call-id", "cseq"):
        values = fields.get(name)
        if not values or not values[0]:
            _bad(request, f"missing {name.title()} header field")
            return
    for name in ("from", "to", "call-id", "cseq"):
        if len(fields[name]) > 1:
            _bad(request, f"more than one {name.title()} header field")
            return
    if _CALL_ID.fullmatch(fields["call-id"][0]) is None:
        _bad(request, "malformed Call-ID")
        del fields["call-id"]  # not copied into the 400
        return
    match = _CSEQ.fullmatch(fields["cseq"][0])
    if match is None:
        _bad(request, "malformed CSeq")
    elif request.method and match.group(2) != request.method and request.method != "ACK":
        # The CSeq method must be the request's (RFC 3261 section 8.1.1.5); an ACK's CSeq
        # names ACK too, but a mismatch there cannot be answered anyway.
        _bad(request, "CSeq method does not match the request method")
        request.cseq = (int(match.group(1)), match.group(2))
    elif int(match.group(1)) >= 2**31:
        _bad(request, "CSeq number must be less than 2**31")
    else:
        request.cseq = (int(match.group(1)), match.group(2))
    if request.top_via is None:
        _bad(request, "malformed Via")


# ------------------------------------------------------------------------------------- ACK

_ACK_BRANCH = re.compile(
    rb"^(?:via|v)[ \t]*:[^\r\n]*?;[ \t]*branch[ \t]*=[ \t]*(z9hG4bK[^;,\s]*)",
    re.IGNORECASE | re.MULTILINE,
)
_ACK_CALL_ID = re.compile(
    rb"^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE
)


def ack_transaction(data: bytes) -> tuple[str, str] | None:
    """(top Via branch, Call-ID) of an ACK, without a full parse; None when not plain.

    An ACK is never answered (RFC 3261 section 17), so a server only needs its transaction
    key to forget the answer it kept; this reads just that, which matters because every call
    through a redirect server ends with one. Folded headers, or a branch without the RFC 3261
    magic cookie, give None: parse the message fully then.
    """
    if b"\n " in data or b"\n\t" in data:
        return None
    branch = _ACK_BRANCH.search(data)
    call_id = _ACK_CALL_ID.search(data)
    if branch is None or call_id is None:
        return None
    return (
        branch.group(1).decode("utf-8", "surrogateescape"),
        call_id.group(1).decode("utf-8", "surrogateescape"),
    )


# ------------------------------------------------------------------------------------- Via


@dataclass(frozen=True, slots=True)
class Via:
    """The parts of one Via value the server needs (RFC 3261 section 20.42)."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")


#: Via(transport, host, port, params), positionally: every request's top Via is parsed
#: (:mod:`shaken.core.fastinit` says why).
_make_via: Callable[..., Via] = positional_constructor(Via)

_VIA = re.compile(
    r"SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?[ \t]*(;.*)?",
    re.IGNORECASE | re.DOTALL,
)


def parse_via(value: str) -> Via | None:
    """``SIP/2.0/UDP host:port;branch=...;rport`` as a :class:`Via`, or None if malformed."""
    match = _VIA.fullmatch(value.strip())
    if match is None:
        return None
    transport, host, port, tail = match.groups()
    params: dict[str, str | None] = {}
    if tail:
        for item in tail.split(";")[1:]:
            key, eq, val = item.partition("=")
            key = key.strip().lower()
            if not key:
                return None
            params[key] = val.strip() if eq else None
    number = int(port) if port else None
    if number is not None and not 0 < number < 65536:
        return None
    return _make_via(transport.upper(), host, number, params)


# An ``rport`` without a value, to fill in (RFC 3581 section 4).
_EMPTY_RPORT = re.compile(r";[ \t]*rport[ \t]*(?=;|$)", re.IGNORECASE)


def stamp_via(value: str, source_ip: str, source_port: int, *, parsed: Via | None = None) -> str:
    """The top Via as a server transport records it (RFC 3261 18.2.1, RFC 3581 section 4).

    ``received`` is added when the sent-by host is not the packet's source address, and an
    empty ``rport`` is filled in with the source port (which then implies ``received``).
    ``parsed`` saves parsing ``value`` again.
    """
    via = parsed if parsed is not None else parse_via(value)
    if via is None:
        return value
    host = via.host.strip("[]")
    wants_rport = "rport" in via.params and not via.params["rport"]
    if host == source_ip and not wants_rport:
        return value
    out = value.rstrip(" \t")
    if wants_rport:
        out = _EMPTY_RPORT.sub(f";rport={source_port}", out, count=1)
    if "received" not in via.params:
        out += f";received={source_ip}"
    return out


def response_address(via: Via | None, source: tuple[str, int]) -> tuple[str, int]:
    """Where an unreliable-transport response goes (RFC 3261 18.2.2, RFC 3581 section 4).

    With ``rport``, back to the source address and port; otherwise to the source address
    (the ``received`` host) and the sent-by port, 5060 by default.
    """
    if via is None or "rport" in via.params:
        return source
    return source[0], via.port or 5060


# ---------------------------------------------------------------------------------- replies


def to_tag_for(request: SipRequest) -> str:
    """A To tag derived from the transaction, so a retransmission gets the same one.

    RFC 3261 section 16.11 recommends exactly this for stateless elements: a hash of the
    Call-ID, From tag and top Via branch instead of state.
    """
    return _to_tag(request, request.first("call-id"), request.first("from"))


def _to_tag(request: SipRequest, call_id: str | None, from_value: str | None) -> str:
    # The CSeq number, not its method: a CANCEL's answer carries the INVITE's tag (RFC 3261
    # section 9.2), and the CANCEL has the INVITE's Call-ID, From, top Via and CSeq number.
    cseq = (request.first("cseq") or "").split(maxsplit=1)
    seed = "|".join(
        (
            call_id or "",
            from_value or "",
            request.vias[0] if request.vias else "",
            cseq[0] if cseq else "",
        )
    )
    return hashlib.blake2s(seed.encode("utf-8", "surrogateescape"), digest_size=6).hexdigest()


_HAS_TAG = re.compile(r";[ \t]*tag[ \t]*=", re.IGNORECASE)


def build_response(
    request: SipRequest,
    code: int,
    phrase: str | None = None,
    headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
    *,
    vias: list[str] | None = None,
    server: str | None = None,
) -> bytes:
    """The response bytes for ``request``: the copied fields, then ``headers``, no body.

    ``phrase`` defaults to the registered one of ``code``. ``vias`` replaces the request's Via
    values (the transport's stamped copy). A To without a tag gets one on every response but
    100 (RFC 3261 section 8.2.6.2). CSeq is rendered from its parsed parts, and left out when
    it did not parse.
    """
    lines = [f"SIP/2.0 {code} {phrase or sip_phrase(code)}"]
    for via in vias if vias is not None else request.vias:
        lines.append(f"Via: {via}")
    first = request.first
    from_value = first("from")
    if from_value is not None:
        lines.append(f"From: {from_value}")
    call_id = first("call-id")
    to_value = first("to")
    if to_value is not None:
        if code != 100 and _HAS_TAG.search(_after_uri(to_value)) is None:
            to_value = f"{to_value};tag={_to_tag(request, call_id, from_value)}"
        lines.append(f"To: {to_value}")
    if call_id is not None:
        lines.append(f"Call-ID: {call_id}")
    if request.cseq is not None:
        lines.append(f"CSeq: {request.cseq[0]} {request.cseq[1]}")
    for name, value in headers:
        lines.append(f"{name}: {value}")
    if server:
        lines.append(f"Server: {server}")
    lines.append("Content-Length: 0")
    lines.append("")
    lines.append("")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


def respond(
    request: SipRequest,
    source: tuple[str, int],
    code: int,
    headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
    phrase: str | None = None,
) -> bytes:
    """The server's answer to ``request`` received from ``source``: :func:`build_response`
    with the top Via as the server transport records it (:func:`stamp_via`) and
    :data:`SERVER`. The request must have a Via (one without cannot be answered)."""
    vias = list(request.vias)
    vias[0] = stamp_via(vias[0], source[0], source[1], parsed=request.top_via)
    return build_response(request, code, phrase, headers, vias=vias, server=SERVER)


def _after_uri(value: str) -> str:
    """The header parameters of a name-addr (after ``>``), where a To tag lives."""
    gt = value.rfind(">")
    return value[gt + 1 :] if gt >= 0 else value


# ------------------------------------------------------------------------------- TCP framing


@dataclass(frozen=True, slots=True)
class Message:
    """One whole SIP message cut from a stream: its bytes, body included (RFC 3261 18.3)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """An RFC 5626 section 4.4.1 keep-alive ping (CRLFCRLF): answer it with :data:`PONG`."""


#: The pong that answers a :class:`KeepAlive` ping (RFC 5626 section 4.4.1: a single CRLF).
PONG = b"\r\n"


@dataclass(frozen=True, slots=True)
class FramingError:
    """The stream cannot be framed any further: answer ``code`` (if possible), then close.

    ``head`` is the header block of the offending message, enough to address the answer.
    """

    code: int
    phrase: str
    detail: str
    head: bytes


#: What :meth:`StreamFramer.feed` yields.
StreamEvent = Message | KeepAlive | FramingError
_KEEP_ALIVE = KeepAlive()


class StreamFramer:
    """Cut a TCP/TLS byte stream into SIP messages with Content-Length (RFC 3261 18.3).

    :meth:`feed` returns the events the bytes complete: a :class:`Message` for each whole
    message, a :class:`KeepAlive` for each RFC 5626 ping, and a :class:`FramingError` once the
    stream is beyond repair, after which nothing more is framed.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self.broken = False

    def feed(self, data: bytes) -> list[StreamEvent]:
        if self.broken:
            return []
        buffer = self._buffer
        buffer += data
        out: list[StreamEvent] = []
        while buffer:
            if buffer[0] in b"\r\n":
                # Leading CRLFs: keep-alive pings (CRLFCRLF) or the RFC 3261 7.5 slack.
                if buffer.startswith(b"\r\n\r\n"):
                    del buffer[:4]
                    out.append(_KEEP_ALIVE)
                    continue
                if len(buffer) < 4 and b"\r\n\r\n".startswith(bytes(buffer)):
                    break  # maybe the start of a ping
                del buffer[:1]
                continue
            head_end, body_start = _header_end(bytes(buffer[: self.max_size + 4]))
            if head_end < 0:
                if len(buffer) > self.max_size:
                    out.append(self._fail(513, "no end of headers", buffer))
                break
            head = bytes(buffer[:head_end])
            match = _CONTENT_LENGTH.search(head)
            if match is None:
                length = 0  # parse_request answers the missing Content-Length with a 400
            else:
                raw = match.group(1).strip()
                if not raw.isdigit() or len(raw) > 9:
                    out.append(self._fail(400, "malformed Content-Length", head))
                    break
                length = int(raw)
            total = body_start + length
            if total > self.max_size:
                out.append(self._fail(513, f"{total} bytes", head))
                break
            if len(buffer) < total:
                break
            out.append(Message(bytes(buffer[:total])))
            del buffer[:total]
        return out

    @property
    def pending(self) -> int:
        """Bytes of a message begun but not complete (what a message deadline watches)."""
        return len(self._buffer)

    def _fail(self, code: int, detail: str, head: bytes | bytearray) -> FramingError:
        # Copy the head out first: it may be the buffer itself (an unended header block).
        failure = FramingError(code, sip_phrase(code), detail, bytes(head[: self.max_size]))
        self.broken = True
        self._buffer.clear()
        return failure
