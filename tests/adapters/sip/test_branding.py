"""Branded calling through the SIP redirect servers on real sockets: the lab's branded TN is
signed with its brand, and verifying the call presents "(Verified) Acme Bank" with an RFC 9796
Call-Info; a changed logo keeps SHAKEN and drops the brand. The logo comes from the lab's own
repository over HTTPS on loopback; the call log records the brand and its verdict."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from shaken.adapters.runtime import Runtime
from shaken.adapters.sip.client import build_invite, send_invite
from shaken.adapters.sip.handler import Listener, Role, SipHandler
from shaken.adapters.sip.server import SipServer, bind_listeners
from shaken.core.identity import IdentityHeader
from shaken.core.passport import decode_token
from shaken.core.rcd import content_digest
from shaken.toolkit.lab import BRAND_LOGO, Lab, brand_logo

from .conftest import DEST, MemoryCallLog, RuntimeFactory, warm

pytestmark = pytest.mark.anyio


@pytest.fixture
def repository(lab: Lab) -> Iterator[None]:
    server = lab.serve().start()
    try:
        yield
    finally:
        server.close()
        (lab.repo_dir / BRAND_LOGO).write_bytes(brand_logo())


@pytest.fixture
async def servers(
    runtimes: RuntimeFactory, lab: Lab
) -> AsyncIterator[tuple[SipServer, MemoryCallLog, Runtime]]:
    runtime = runtimes()  # the lab presents verified brands: prefix and Call-Info
    await warm(runtime, lab)
    calls = MemoryCallLog()
    bound = bind_listeners(
        [Listener("udp:127.0.0.1:0", Role.SIGN), Listener("udp:127.0.0.1:0", Role.VERIFY)]
    )
    sip = SipServer(SipHandler(runtime, call_log=calls), bound)  # type: ignore[arg-type]
    await sip.start()
    yield sip, calls, runtime
    await sip.stop(grace=1.0)


def _address(sip: SipServer, role: Role) -> tuple[str, int]:
    return next(b.address for b in sip.bound if b.listener.role is role)


async def _call(sip: SipServer, role: Role, orig: str, identity: tuple[str, ...] = ()) -> object:
    def build(local: tuple[str, int]) -> bytes:
        return build_invite(
            request_uri=f"sip:{DEST}@127.0.0.1",
            from_value=f'"Mallory" <sip:+{orig}@127.0.0.1;user=phone>;tag=t1',
            to_value=f"<sip:{DEST}@127.0.0.1>",
            local=local,
            headers=[("Identity", value) for value in identity],
        )

    return await send_invite(_address(sip, role), build, timeout=10.0)


async def test_branded_call_is_signed_verified_and_presented(
    servers: tuple[SipServer, MemoryCallLog, Runtime], lab: Lab, repository: None
) -> None:
    sip, calls, runtime = servers
    brand_tn = lab.settings.brand_tn
    signed = await _call(sip, Role.SIGN, brand_tn)
    assert signed.code == 302  # type: ignore[attr-defined]
    identity = signed.first("identity")  # type: ignore[attr-defined]
    claims = decode_token(IdentityHeader.parse(identity).token).payload
    logo_url = lab.settings.repository_url + BRAND_LOGO
    assert claims["rcd"] == {"nam": "Acme Bank", "icn": logo_url}
    assert claims["rcdi"] == {"/icn": content_digest(brand_logo())}

    verified = await _call(sip, Role.VERIFY, brand_tn, (identity,))
    assert verified.code == 302  # type: ignore[attr-defined]
    pai = verified.first("p-asserted-identity")  # type: ignore[attr-defined]
    assert pai.startswith('"(Verified) Acme Bank" <sip:+'), calls.records[-1]
    assert "verstat=TN-Validation-Passed" in pai
    assert verified.first("call-info") == (  # type: ignore[attr-defined]
        f'<{logo_url}>;purpose=icon;integrity="{content_digest(brand_logo())}"'
        ';verified=true;call-reason="Account security alert"'
    )
    record = calls.records[-1]
    assert (record.brand, record.rcd_status, record.rcd_reason) == ("Acme Bank", "verified", None)
    assert calls.records[0].brand == "Acme Bank"  # the signing record

    # The logo changes after signing: SHAKEN passes, the brand is not shown.
    (lab.repo_dir / BRAND_LOGO).write_bytes(brand_logo() + b"tampered")
    # The same server caches the logo it fetched (rcd_cache_ttl); let that hour pass.
    for profile in runtime.profiles.values():
        if profile.verifier is not None and profile.verifier.branding is not None:
            profile.verifier.branding.content.forget()
    refused = await _call(sip, Role.VERIFY, brand_tn, (identity,))
    pai = refused.first("p-asserted-identity")  # type: ignore[attr-defined]
    assert pai.startswith('"Mallory" <sip:+') and "verstat=TN-Validation-Passed" in pai
    assert refused.first("call-info") is None  # type: ignore[attr-defined]
    record = calls.records[-1]
    assert (record.rcd_status, record.rcd_reason) == ("integrity_failed", "rcd_integrity_failed")


async def test_a_caller_cannot_send_the_brand_mark_itself(
    servers: tuple[SipServer, MemoryCallLog, Runtime], lab: Lab
) -> None:
    sip, _, _ = servers
    unbranded = "12025550123"
    signed = await _call(sip, Role.SIGN, unbranded)
    identity = signed.first("identity")  # type: ignore[attr-defined]

    def build(local: tuple[str, int]) -> bytes:
        return build_invite(
            request_uri=f"sip:{DEST}@127.0.0.1",
            from_value=f'"(Verified) Acme Bank" <sip:+{unbranded}@127.0.0.1;user=phone>;tag=t1',
            to_value=f"<sip:{DEST}@127.0.0.1>",
            local=local,
            headers=[
                ("Identity", identity),
                ("Call-Info", "<https://evil.example/x.png>;purpose=icon"),
            ],
        )

    verified = await send_invite(_address(sip, Role.VERIFY), build, timeout=10.0)
    pai = verified.first("p-asserted-identity") or ""
    assert "(Verified)" not in pai and "Acme Bank" in pai
    assert verified.first("call-info") is None
