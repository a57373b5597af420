"""Kamailio 5.6 as the SBC of the seeds' picture, with ``shaken serve`` as its redirect server.

sipp (caller) -> Kamailio, customer side: shaken signs (302 + Identity), Kamailio copies the
Identity into the INVITE and sends it to its own carrier side -> shaken verifies (302 with
P-Asserted-Identity, X-Shaken-*) and Kamailio applies the verdict -> sipp (far end), which
checks the headers it received. Calls sent straight to the carrier side show the other
verdicts: a tampered PASSporT rejected (the 438 goes back to the caller), a call without
Identity let through with an alerting display name, a stale one with an RFC 9410 Reason in the
200 sent back. The Kamailio configuration is the documented example in ``examples/kamailio``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shaken.core.jws import load_private_key
from shaken.core.sign import sign_shaken
from shaken.toolkit.lab import Lab

from .sip_peers import (
    DEST,
    SIPP,
    SippRun,
    free_port,
    headers_of,
    make_lab,
    sipp,
    start_shaken,
    start_sipp_server,
)

KAMAILIO = shutil.which("kamailio")
if SIPP is None or KAMAILIO is None:
    pytest.skip(
        "needs sipp (Debian sip-tester) and kamailio (Debian kamailio 5.6)",
        allow_module_level=True,
    )

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "kamailio" / "shaken-sbc.cfg"
MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")

ACTIONS = """
[verification.on.verified]
action = "alert"
display_prefix = "(Verified) "

[verification.on.missing]
action = "alert"
display_prefix = "[No ID] "

[verification.on.failed]
action = "reject"

[verification.on.reason.stale_iat]
action = "continue_with_reason"
"""

# The callers, one per case, told apart at the far end by their number.
SIGNED, MISSING, STALE, TAMPERED = "12025550111", "12025550112", "12025550113", "12025550114"

CALLER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="caller {name}">
  <send retrans="500"><![CDATA[
      INVITE sip:{dest}@127.0.0.1:{far} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:{orig}@[local_ip]>;tag=[call_number]
      To: <sip:{dest}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{orig}@[local_ip]:[local_port]>
      Max-Forwards: 70
{identity}      Content-Length: 0

  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="{code}" rrs="true">{check}</recv>
{tail}</scenario>
"""
REASON_CHECK = """
    <action>
      <ereg regexp="Reason: STIR;cause=403;text=.Stale Date." search_in="msg" check_it="true"
            assign_to="reason"/>
    </action>
  """
ANSWERED = """  <send><![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:{orig}@[local_ip]>;tag=[call_number]
      To: <sip:{dest}@[remote_ip]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <send retrans="500"><![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:{orig}@[local_ip]>;tag=[call_number]
      To: <sip:{dest}@[remote_ip]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <recv response="200"/>
{reference}"""
REJECTED = """  <send><![CDATA[
      ACK sip:{dest}@127.0.0.1:{far} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:{orig}@[local_ip]>;tag=[call_number]
      To: <sip:{dest}@[remote_ip]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
"""
FAR_END = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="far end">
  <recv request="INVITE">
    <action>
      <ereg regexp="verstat=" search_in="hdr" header="P-Asserted-Identity:" check_it="true"
            assign_to="pai"/>
      <ereg regexp="[a-z]" search_in="hdr" header="X-Shaken-Reason:" check_it="true"
            assign_to="summary"/>
    </action>
  </recv>
  <Reference variables="pai,summary"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]far[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

  ]]></send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
</scenario>
"""


class Picture:
    def __init__(
        self, lab: Lab, work: Path, kamailio: subprocess.Popen[str], ports: dict[str, int]
    ):
        self.lab = lab
        self.work = work
        self.kamailio = kamailio
        self.ports = ports

    def identity(self, orig: str, *, age: int = 0) -> str:
        key = load_private_key(self.lab.sp_key.read_bytes())
        when = datetime.now(UTC) - timedelta(seconds=age)
        return sign_shaken(key=key, x5u=self.lab.x5u, orig=orig, dest=DEST, attest="A", now=when)

    def call(
        self,
        name: str,
        *,
        orig: str,
        side: str,
        code: int,
        identity: str | None = None,
        reason: bool = False,
    ) -> SippRun:
        line = ""
        if identity is not None:
            line = f"      Identity: {identity}\n"
        tail = (ANSWERED if code == 200 else REJECTED).format(
            orig=orig,
            dest=DEST,
            far=self.ports["far"],
            reference='  <Reference variables="reason"/>\n' if reason else "",
        )
        text = CALLER.format(
            name=name,
            orig=orig,
            dest=DEST,
            far=self.ports["far"],
            identity=line,
            code=code,
            check=REASON_CHECK if reason else "",
            tail=tail,
        )
        scenario = self.work / f"caller-{name}.xml"
        scenario.write_text(text)
        return sipp(scenario, f"127.0.0.1:{self.ports[side]}", self.work, calls=1, rate=1)


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Picture]:
    work = tmp_path_factory.mktemp("kamailio")
    lab = make_lab(work / "lab")
    shaken = start_shaken(lab, work, extra=ACTIONS)
    ports = {"orig": free_port(), "term": free_port(), "far": free_port()}
    defines = {
        "ORIG_PORT": str(ports["orig"]),
        "TERM_PORT": str(ports["term"]),
        "CHILDREN": "1",
        "SHAKEN_SIGN": f'"sip:127.0.0.1:{shaken.sign}"',
        "SHAKEN_VERIFY": f'"sip:127.0.0.1:{shaken.verify}"',
        "NEXT_HOP": f'"sip:127.0.0.1:{ports["term"]}"',
    }
    args = [KAMAILIO, "-f", str(CONFIG), "-DD", "-E", "-P", str(work / "kamailio.pid")]
    args += ["-Y", str(work), "-w", str(work)]
    for name, value in defines.items():
        args += ["-A", f"{name}={value}"]
    log = (work / "kamailio.log").open("w")
    kamailio = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.5)  # Kamailio forks its children; nothing to wait on but time
    if kamailio.poll() is not None:
        shaken.stop()
        pytest.fail(f"kamailio did not start: {(work / 'kamailio.log').read_text()[-2000:]}")
    try:
        yield Picture(lab, work, kamailio, ports)
    finally:
        kamailio.terminate()
        try:
            kamailio.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kamailio.kill()
            kamailio.wait()
        log.close()
        shaken.stop()


def test_sign_forward_verify_and_apply(picture: Picture) -> None:
    scenario = picture.work / "far.xml"
    scenario.write_text(FAR_END)
    far = start_sipp_server(scenario, picture.work, calls=3, port=picture.ports["far"])
    time.sleep(0.5)  # let the far end bind its port
    try:
        # 1. Signed by the customer side, verified by the carrier side: "(Verified) Alice".
        run = picture.call("signed", orig=SIGNED, side="orig", code=200)
        assert run.returncode == 0, run.errors + run.screen
        # 2. A carrier sends a call without Identity: let through, the caller alerted.
        run = picture.call("missing", orig=MISSING, side="term", code=200)
        assert run.returncode == 0, run.errors + run.screen
        # 3. A stale PASSporT: through, with an RFC 9410 Reason back in the 200.
        run = picture.call(
            "stale",
            orig=STALE,
            side="term",
            code=200,
            identity=picture.identity(STALE, age=600),
            reason=True,
        )
        assert run.returncode == 0, run.errors + run.screen
        [ok] = [m for m in run.logged("received", "SIP/2.0 200") if "CSeq: 1 INVITE" in m]
        assert headers_of(ok)["reason"] == ['STIR;cause=403;text="Stale Date"']
        # 4. A tampered one: rejected, shaken's 438 back to the caller; the far end sees nothing.
        tampered = picture.identity(TAMPERED)
        token, _, params = tampered.partition(";")
        tampered = f"{token[:-10]}{'A' if token[-10] != 'A' else 'B'}{token[-9:]};{params}"
        run = picture.call("tampered", orig=TAMPERED, side="term", code=438, identity=tampered)
        assert run.returncode == 0, run.errors + run.screen
        [rejected] = run.logged("received", "SIP/2.0 438")
        assert headers_of(rejected)["x-shaken-reason"][0].startswith("bad_signature;cause=438")
        far.wait(timeout=60)
    finally:
        if far.poll() is None:
            far.kill()
            far.wait()
    assert far.returncode == 0, (
        (picture.work / "far.errors").read_text() if (picture.work / "far.errors").exists() else ""
    )
    received = SippRun(0, (picture.work / "far.messages").read_text(), "", "").logged(
        "received", "INVITE "
    )
    by_caller = {}
    for message in received:
        headers = headers_of(message)
        caller = headers["from"][0].split("sip:", 1)[1].split("@", 1)[0]
        by_caller[caller] = headers
    assert set(by_caller) == {SIGNED, MISSING, STALE}
    signed = by_caller[SIGNED]
    assert signed["identity"][0].endswith(f";info=<{picture.lab.x5u}>;alg=ES256;ppt=shaken")
    assert signed["date"]  # shaken added it, Kamailio copied it
    assert signed["p-asserted-identity"] == [
        f'"(Verified) Alice" <sip:{SIGNED};verstat=TN-Validation-Passed@127.0.0.1>'
    ]
    assert signed["x-shaken-attest"] == ["A"] and signed["x-shaken-reason"] == ["verified"]
    missing = by_caller[MISSING]
    assert missing["p-asserted-identity"] == [
        f'"[No ID] Alice" <sip:{MISSING};verstat=No-TN-Validation@127.0.0.1>'
    ]
    assert missing["x-shaken-reason"][0].startswith("missing_identity;cause=428")
    stale = by_caller[STALE]
    assert "verstat=No-TN-Validation" in stale["p-asserted-identity"][0]
    assert stale["x-shaken-reason"][0].startswith("stale_iat;cause=403")
