"""The conformance manifest through the SIP redirect server's handler, as SIP bytes.

``tests/test_conformance_entry_points.py`` runs every case of ``tests/data/conformance.json``
through the library's and the service's entry points; here each case becomes a real INVITE
(its Identity headers, From, To, P-Asserted-Identity, Request-URI and Date), parsed by the
codec and answered by :class:`SipHandler` with the lab's configuration and default actions,
its verification service being the one the entry-point test builds for the case (a real
certificate cache over a repository serving the case's certificate). The answer must carry
the manifest's outcome: the Reason and its SIP code in ``X-Shaken-Reason``, the verstat in
``P-Asserted-Identity`` (3GPP TS 24.229).
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Any

import pytest

from shaken.adapters.sip.client import parse_response
from shaken.adapters.sip.codec import parse_request
from shaken.adapters.sip.handler import Listener, NeedsCertificates, Role, SipHandler
from shaken.core.context import SipContext
from shaken.toolkit.lab import Lab
from tests.core.test_conformance import CASES, NOW, request_of
from tests.core.test_conformance import Lab as ConformanceLab
from tests.support.fakes import ManualClock
from tests.test_conformance_entry_points import _service

from .conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

VERIFY = Listener("udp:127.0.0.1:5062", Role.VERIFY)
LOOPBACK = ("127.0.0.1", 5070)
IDS = [c["id"] for c in CASES]


@pytest.fixture(scope="module")
def conformance() -> ConformanceLab:
    return ConformanceLab()


def _invite(context: SipContext) -> bytes | None:
    """The request as an INVITE, or None when SIP cannot carry it (no From)."""
    if context.from_header is None or context.to is None:
        return None
    # Without a Request-URI of its own, the case's To URI (so it adds no called identity).
    uri = context.request_uri or context.to.partition("<")[2].partition(">")[0]
    lines = [
        f"INVITE {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{uuid.uuid4().hex[:16]}",
        "Max-Forwards: 70",
        f"From: {context.from_header}",
        f"To: {context.to}",
        f"Call-ID: {uuid.uuid4().hex}",
        "CSeq: 1 INVITE",
        *(f"P-Asserted-Identity: {value}" for value in context.pai),
        *(f"Identity: {value}" for value in context.identity),
        *([f"Date: {context.date}"] if context.date is not None else []),
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


async def _answer(handler: SipHandler, data: bytes) -> Any:
    reply = handler.handle(parse_request(data), VERIFY, LOOPBACK)
    if isinstance(reply, NeedsCertificates):
        reply = handler.resume(reply, await reply.obtain())
    assert isinstance(reply, bytes)
    return parse_response(reply)


def _outcome(response: Any) -> dict[str, Any]:
    """The manifest's three fields, read off the SIP answer."""
    summary = response.first("x-shaken-reason") or ""
    name, _, rest = summary.partition(";")
    cause = re.search(r"cause=(\d+)", rest)
    asserted = response.first("p-asserted-identity") or ""
    verstat = re.search(r"verstat=([A-Za-z-]+)", asserted)
    return {
        "reason": None if name == "verified" else name,
        "sip_code": int(cause.group(1)) if cause else None,
        "verstat": verstat.group(1) if verstat else None,
    }


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_sip_handler(
    case: dict[str, Any], conformance: ConformanceLab, lab: Lab, runtimes: RuntimeFactory
) -> None:
    request = request_of(case, conformance)
    data = _invite(request.context)
    if data is None:
        pytest.skip("a SIP request always has a From and a To")
    runtime = runtimes()
    service = _service(request, conformance)
    for name, profile in list(runtime.profiles.items()):
        if profile.verifier is not None:
            runtime.profiles[name] = dataclasses.replace(profile, verifier=service)
    runtime.clock = ManualClock(NOW)  # the manifest's requests are made at NOW
    handler = SipHandler(runtime)
    try:
        response = await _answer(handler, data)
        if request.replay:  # the second sighting is the replay
            response = await _answer(handler, data.replace(b"branch=z9hG4bK", b"branch=z9hG4bKx"))
    finally:
        await service.cache.aclose()
    assert response.code == 302, response
    assert _outcome(response) == case["expect"]
