"""Attestation follows the source as well as the number.

The reproduced problem: a ``[profile.gateway]`` with ``attest = "C"`` for traffic from an
international gateway signed a call from that source with one of our own numbers (a
``[tn_range]`` at A) at **A**, while ``config show --effective gateway`` said C. A real SIP
signing listener on loopback now signs it C, the call log says C, and ``config show --effective
gateway --tn TN`` prints the level and why.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shaken.adapters.cli import main
from shaken.adapters.runtime import Runtime
from shaken.adapters.sip.client import build_invite, send_invite
from shaken.adapters.sip.handler import Listener, Role, SipHandler
from shaken.adapters.sip.server import SipServer, bind_listeners
from shaken.adapters.wiring import build_runtime
from shaken.config import load_config
from shaken.core.identity import IdentityHeader
from shaken.core.passport import decode_token
from shaken.services.calllog import CallRecord
from shaken.toolkit.lab import Lab, init_lab
from tests.support.fakes import ManualClock

OURS = "12025550150"  # in the lab's [tn_range.lab], at A
UNKNOWN = "14155550100"  # no entry: unknown_tn_attest C
DEST = "13035550000"
GATEWAY_SOURCE = "127.0.0.2"
NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)

pytestmark = pytest.mark.anyio

PROFILES = f"""
[profile.gateway]
# Calls from the international gateway: we cannot vouch for the caller.
behavior = "sign"
sources = ["{GATEWAY_SOURCE}/32"]
attest = "C"

[profile.pbx]
# A PBX customer whose numbers we know, but not each call's user: at most B.
behavior = "sign"
sources = ["127.0.0.3/32"]
attest = "B"
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = init_lab(tmp_path_factory.mktemp("attest") / "lab", now=NOW)
    text = lab.config.read_text().replace(
        'sources = ["127.0.0.0/8", "::1/128"]', 'sources = ["127.0.0.1/32"]'
    )
    lab.config.write_text(text + PROFILES)
    return lab


class Log:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def record(self, record: CallRecord) -> None:
        self.records.append(record)


@pytest.fixture
async def runtime(lab: Lab) -> AsyncIterator[Runtime]:
    runtime = build_runtime(load_config(lab.config), clock=ManualClock(NOW), now=NOW)
    yield runtime
    await runtime.aclose()


def _attest(identity: str | None) -> str:
    assert identity
    return str(decode_token(IdentityHeader.parse(identity).token).payload["attest"])


async def _sign_from(sip: SipServer, source: str, orig: str) -> tuple[str | None, str | None]:
    address = sip.bound[0].address

    def request(local: tuple[str, int]) -> bytes:
        return build_invite(
            request_uri=f"sip:{DEST}@127.0.0.1",
            from_value=f"<sip:{orig}@127.0.0.1>;tag=a1",
            to_value=f"<sip:{DEST}@127.0.0.1>",
            local=local,
        )

    response = await send_invite(address, request, timeout=5.0, local_host=source)
    assert response.code == 302
    return response.first("identity"), response.first("x-shaken-attest")


@pytest.mark.parametrize(
    ("source", "orig", "expected"),
    [
        ("127.0.0.1", OURS, "A"),  # the lab profile: our number, our customer
        (GATEWAY_SOURCE, OURS, "C"),  # our number, through the gateway: the profile's ceiling
        ("127.0.0.3", OURS, "B"),  # the PBX profile caps at B
        (GATEWAY_SOURCE, UNKNOWN, "C"),  # unknown_tn_attest C, under a C ceiling
        ("127.0.0.3", UNKNOWN, "C"),  # the weaker of B and the unknown-number level C
    ],
)
async def test_signed_at_the_weaker_of_source_and_number(
    runtime: Runtime, source: str, orig: str, expected: str
) -> None:
    log = Log()
    sip = SipServer(
        SipHandler(runtime, call_log=log), bind_listeners([Listener("udp:127.0.0.1:0", Role.SIGN)])
    )
    await sip.start()
    try:
        identity, header = await _sign_from(sip, source, orig)
    finally:
        await sip.stop(grace=1.0)
    assert _attest(identity) == expected and header == expected
    (record,) = log.records
    assert record.attest == expected and record.action == "signed"


async def test_a_client_still_lowers_below_the_ceiling(runtime: Runtime) -> None:
    signer = runtime.profiles["pbx"].signer
    assert signer is not None
    signed = signer.sign(orig=OURS, dest=DEST, attest="C", now=NOW)
    assert signed.attest == "C"
    assert (
        signed.why
        == "[tn_range.lab] allows A; [profile.pbx] allows at most B; the request asked for C"
    )
    assert signer.sign(orig=OURS, dest=DEST, attest="A", now=NOW).attest == "B"


@pytest.mark.parametrize(
    ("profile", "tn", "line"),
    [
        (
            "gateway",
            OURS,
            "attestation for 12025550150 = C    # [tn_range.lab] allows A; [profile.gateway] allows at most C",
        ),
        ("lab", OURS, "attestation for 12025550150 = A    # [tn_range.lab] allows A"),
        (
            "global",
            "+1 415 555 0100",
            "attestation for 14155550100 = C    # 14155550100 has no [tn] or [tn_range] entry: unknown_tn_attest is C",
        ),
        (
            "pbx",
            UNKNOWN,
            "attestation for 14155550100 = C    # 14155550100 has no [tn] or [tn_range] entry: unknown_tn_attest is C",
        ),
    ],
)
def test_config_show_effective_tn_prints_the_level_and_why(
    capsys: pytest.CaptureFixture[str], lab: Lab, profile: str, tn: str, line: str
) -> None:
    code = main(
        ["config", "show", "--effective", profile, "--tn", tn, str(lab.config)],
        clock=ManualClock(NOW),
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[-1] == line


def test_config_show_tn_of_a_profile_that_does_not_sign(
    capsys: pytest.CaptureFixture[str], lab: Lab, tmp_path: Path
) -> None:
    config = tmp_path / "shaken.toml"
    config.write_text(
        lab.config.read_text()
        .replace("[profile.pbx]\n# A PBX", "[profile.pbx]\n# A PBX")
        .replace(
            'behavior = "sign"\nsources = ["127.0.0.3/32"]',
            'behavior = "verify"\nsources = ["127.0.0.3/32"]',
        )
        .replace('"sp/sp.key"', json.dumps(str(lab.sp_key)))
        .replace('"ca/', f'"{lab.directory}/ca/')
        .replace('"tls/', f'"{lab.directory}/tls/')
        .replace('"repo/', f'"{lab.directory}/repo/')
    )
    assert main(["config", "show", "--effective", "pbx", "--tn", OURS, str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "attestation for 12025550150: not signed (profile pbx does not sign)"
    )
    assert main(["config", "show", "--tn", OURS, str(config)]) == 1
