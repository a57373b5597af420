"""The complete call record, through real SIP sockets and the REST app.

Each row holds where the request came from, the identities as presented (verbatim), the
PASSporT's origid and the signer's SPC, and the instance that decided; a call no profile
applies to is recorded as ``not_processed`` with the reason.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from shaken.adapters.http import create_app
from shaken.adapters.runtime import Runtime
from shaken.adapters.sip.client import build_invite, send_invite
from shaken.adapters.sip.handler import Listener, Role, SipHandler
from shaken.adapters.sip.server import SipServer, bind_listeners
from shaken.adapters.store.calllog import SqliteCallLog, read_calls
from shaken.adapters.wiring import build_runtime
from shaken.config import load_config
from shaken.core.identity import IdentityHeader
from shaken.core.passport import decode_token
from shaken.toolkit.lab import Lab, init_lab
from tests.adapters.http.conftest import key_entry

ORIG, DEST = "12025550123", "13035550000"
SECRET = "call-record-test-key-0123456789"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = init_lab(tmp_path_factory.mktemp("record") / "lab", now=datetime.now(UTC))
    text = lab.config.read_text()
    text = text.replace('sources = ["127.0.0.0/8", "::1/128"]', 'sources = ["127.0.0.1/32"]')
    text = text.replace("[server]\n", '[server]\ninstance = "sbc-east-1"\n', 1)
    lab.config.write_text(text + "\n" + key_entry("rec", SECRET, tns=[ORIG], profiles=["lab"]))
    return lab


@pytest.fixture
async def served(
    lab: Lab, tmp_path: Path
) -> AsyncIterator[tuple[Runtime, SqliteCallLog, SipServer]]:
    runtime = build_runtime(load_config(lab.config))
    runtime.cache.import_chain(lab.x5u, lab.sp_chain.read_bytes())
    calls = SqliteCallLog(tmp_path / "calls.sqlite", flush_interval=0.02)
    bound = bind_listeners(
        [Listener("udp:127.0.0.1:0", Role.SIGN), Listener("udp:127.0.0.1:0", Role.VERIFY)]
    )
    sip = SipServer(SipHandler(runtime, call_log=calls), bound)
    await sip.start()
    yield runtime, calls, sip
    await sip.stop(grace=1.0)
    calls.close()
    await runtime.aclose()


def _invite(frm: str, *headers: tuple[str, str]):  # type: ignore[no-untyped-def]
    def build(local: tuple[str, int]) -> bytes:
        return build_invite(
            request_uri=f"sip:{DEST}@127.0.0.1;user=phone",
            from_value=frm,
            to_value=f"<sip:{DEST}@127.0.0.1>",
            local=local,
            headers=list(headers),
        )

    return build


async def test_sip_records_hold_source_presented_identities_origid_and_spc(
    served: tuple[Runtime, SqliteCallLog, SipServer], lab: Lab
) -> None:
    _runtime, calls, sip = served
    sign, verify = (b.address for b in sip.bound)
    frm = f'"Alice" <sip:{ORIG}@127.0.0.1>;tag=a1'
    pai = ("P-Asserted-Identity", f"<sip:+{ORIG}@127.0.0.1;user=phone>")
    signed = await send_invite(sign, _invite(frm, pai), timeout=10)
    identity = signed.first("identity")
    assert signed.code == 302 and identity
    origid = decode_token(IdentityHeader.parse(identity).token).payload["origid"]
    verified = await send_invite(
        verify,
        _invite(frm, pai, ("Identity", identity), ("Date", signed.first("date") or "")),
        timeout=10,
    )
    assert verified.code == 302
    # From an address no profile lists: answered, and recorded as not processed.
    unprocessed = await send_invite(verify, _invite(frm), timeout=10, local_host="127.0.0.2")
    assert unprocessed.code == 302
    calls.close()
    rows = {row["outcome"]: row for row in read_calls(calls.path)}
    assert set(rows) == {"signed", "verified", "not_processed"}
    for row in rows.values():
        assert row["instance"] == "sbc-east-1"
        assert row["source_ip"] in ("127.0.0.1", "127.0.0.2") and row["source_port"] > 0
        assert row["presented_from"] == frm
        assert row["presented_to"] == f"<sip:{DEST}@127.0.0.1>"
        assert row["request_uri"] == f"sip:{DEST}@127.0.0.1;user=phone"
        assert row["record_id"]
    assert rows["signed"]["presented_pai"] == pai[1]
    assert rows["signed"]["origid"] == origid
    assert rows["verified"]["origid"] == origid and rows["verified"]["spc"] == "1234"
    # The signer's certificate, by serial (issue 13): the leaf of the lab's chain.
    leaf = x509.load_pem_x509_certificates(lab.sp_chain.read_bytes())[0]
    assert rows["verified"]["cert_serial"] == format(leaf.serial_number, "x")
    assert rows["verified"]["attest"] == "A"
    assert rows["not_processed"]["source_ip"] == "127.0.0.2"
    assert rows["not_processed"]["reason"] == "no profile"
    assert rows["not_processed"]["direction"] == "verify"


async def test_rest_records_hold_the_client_and_the_origid(
    served: tuple[Runtime, SqliteCallLog, SipServer],
) -> None:
    runtime, calls, _ = served
    app = create_app(runtime, call_log=calls)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.77", 40123))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://shaken.test") as client:
        response = await client.post(
            "/stir/v1/signing",
            json={
                "signingRequest": {
                    "orig": {"tn": ORIG},
                    "dest": {"tn": [DEST]},
                    "attest": "A",
                    "iat": int(datetime.now(UTC).timestamp()),
                }
            },
            headers={"X-API-Key": SECRET},
        )
    assert response.status_code == 200, response.text
    origid = decode_token(
        IdentityHeader.parse(response.json()["signingResponse"]["identity"]).token
    ).payload["origid"]
    calls.close()
    [row] = [r for r in read_calls(calls.path) if r["interface"] == "rest"]
    assert (row["source_ip"], row["source_port"]) == ("192.0.2.77", 40123)
    assert row["origid"] == origid and row["instance"] == "sbc-east-1"
    assert (row["presented_from"], row["presented_to"]) == (ORIG, DEST)
    assert row["call_id"] == response.headers["x-requestid"]
    assert json.loads(json.dumps(row))  # every value is plain JSON for exports
