"""A minimal SIP client: enough to ask a redirect server one question.

Used by ``make run`` (the lab tour) and by the tests; an SBC does this job in production. It
sends one INVITE over UDP, retransmits it on RFC 3261 Timer A (T1 = 500 ms, doubling) until a
final response arrives or Timer B (64*T1) expires, acknowledges a non-2xx final response with
an ACK in the same transaction (section 17.1.1.3), and returns the final response.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from shaken.adapters.sip.codec import COMPACT_FORMS, split_list

__all__ = ["SipResponse", "build_invite", "parse_response", "send_invite"]

T1 = 0.5


@dataclass(slots=True)
class SipResponse:
    """A response: status, phrase and header values by lower-case long name."""

    code: int
    phrase: str
    fields: dict[str, list[str]] = field(default_factory=dict)
    raw: bytes = b""

    def first(self, name: str) -> str | None:
        values = self.fields.get(name.lower())
        return values[0] if values else None

    def values(self, name: str) -> list[str]:
        out: list[str] = []
        for line in self.fields.get(name.lower(), ()):
            out.extend(split_list(line))
        return out


def parse_response(data: bytes) -> SipResponse:
    """Read a SIP response. :raises ValueError: not a response."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "surrogateescape")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] != "SIP/2.0" or not parts[1].isdigit():
        raise ValueError(f"not a SIP response: {lines[0][:60]!r}")
    response = SipResponse(int(parts[1]), parts[2] if len(parts) > 2 else "", raw=data)
    name = ""
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and name:
            response.fields[name][-1] += " " + line.strip()
            continue
        key, colon, value = line.partition(":")
        if not colon:
            continue
        name = key.strip().lower()
        name = COMPACT_FORMS.get(name, name)
        response.fields.setdefault(name, []).append(value.strip())
    return response


def build_invite(
    *,
    request_uri: str,
    from_value: str,
    to_value: str,
    local: tuple[str, int],
    headers: list[tuple[str, str]] | None = None,
    call_id: str | None = None,
    branch: str | None = None,
    method: str = "INVITE",
    cseq: int = 1,
) -> bytes:
    """An INVITE (or another request) from ``local`` over UDP, with ``headers`` added."""
    host, port = local
    lines = [
        f"{method} {request_uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch={branch or 'z9hG4bK' + secrets.token_hex(8)};rport",
        "Max-Forwards: 70",
        f"From: {from_value}",
        f"To: {to_value}",
        f"Call-ID: {call_id or secrets.token_hex(12)}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:{host}:{port}>",
    ]
    lines += [f"{name}: {value}" for name, value in headers or []]
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def _ack_for(invite: bytes, response: SipResponse) -> bytes:
    """The ACK of a non-2xx final response: same branch, To with the response's tag."""
    text = invite.decode("utf-8", "surrogateescape")
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    uri = head[0].split(" ")[1]
    keep = {"via", "from", "call-id", "max-forwards"}
    lines = [f"ACK {uri} SIP/2.0"]
    for line in head[1:]:
        name = line.partition(":")[0].strip().lower()
        if name in keep:
            lines.append(line)
        elif name == "cseq":
            lines.append(f"CSeq: {line.partition(':')[2].split()[0]} ACK")
    lines.append(f"To: {response.first('to') or ''}")
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.final: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self.provisional = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            response = parse_response(data)
        except ValueError:
            return
        if response.code < 200:
            self.provisional += 1
        elif not self.final.done():
            self.final.set_result(response)


async def send_invite(
    server: tuple[str, int],
    build: Callable[[tuple[str, int]], bytes],
    *,
    local_host: str = "127.0.0.1",
    timeout: float = 64 * T1,
) -> SipResponse:
    """Send the request ``build(local_address)`` returns and wait for its final response.

    ``build`` is called with the bound local (host, port) so Via and Contact name it.

    :raises TimeoutError: no final response within ``timeout``.
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _Client, local_addr=(local_host, 0), remote_addr=server
    )
    try:
        host, port = transport.get_extra_info("sockname")[:2]
        message = build((str(host), int(port)))
        interval = T1
        deadline = loop.time() + timeout
        transport.sendto(message)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no final response from {server[0]}:{server[1]}")
            try:
                response = await asyncio.wait_for(
                    asyncio.shield(protocol.final), min(interval, remaining)
                )
                break
            except TimeoutError:
                if protocol.provisional == 0:
                    transport.sendto(message)  # Timer A: retransmit until a response arrives
                interval = min(interval * 2, 4.0)
        if message.startswith(b"INVITE") and response.code >= 300:
            transport.sendto(_ack_for(message, response))
        return response
    finally:
        transport.close()
