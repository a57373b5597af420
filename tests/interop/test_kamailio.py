"""Kamailio 5.6 as the SBC of the seeds' picture, with ``shaken serve`` as its redirect server.

sipp (caller) -> Kamailio, customer side: shaken signs (302 + Identity), Kamailio copies the
Identity into the INVITE and sends it to its own carrier side -> shaken verifies (302 with
P-Asserted-Identity, X-Shaken-*) and Kamailio applies the verdict -> sipp (far end), which
checks the headers it received. Calls sent straight to the carrier side show the other
verdicts: a tampered PASSporT rejected (the 438 goes back to the caller), a call without
Identity let through with an alerting display name, a stale one with an RFC 9410 Reason in the
200 sent back. The Kamailio configuration is the documented example in ``examples/kamailio``.

Then the calls that get no verdict (issue 9 item 5): shaken stopped, a stand-in for a broken
shaken (503, 500, a bare 302, silence), no route to it. A carrier INVITE forging a verdict
must reach the far end (a recorder on its own UDP port) cleaned, or be rejected when the
configuration says so; with the real shaken, only shaken's verdict reaches it.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shaken.adapters.sip.client import SipResponse, build_invite, send_invite
from shaken.adapters.sip.codec import SipRequest
from shaken.core.jws import load_private_key
from shaken.core.sign import sign_shaken
from shaken.toolkit.lab import Lab

from .sip_peers import (
    DEST,
    SIPP,
    Answer,
    SippRun,
    UdpPeer,
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

# The lab's PASS / STOP / ALERT, and what examples/kamailio/shaken.toml adds to it.
ACTIONS = """
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


@contextmanager
def running_kamailio(work: Path, defines: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """The example configuration in a Kamailio of its own, ``-A`` for each define; it is ready
    once both its ports answer an OPTIONS (the example's 405)."""
    assert KAMAILIO is not None
    args = [KAMAILIO, "-f", str(CONFIG), "-DD", "-E", "-P", str(work / "kamailio.pid")]
    args += ["-Y", str(work), "-w", str(work)]
    for name, value in defines.items():
        args += ["-A", f"{name}={value}"]
    path = work / "kamailio.log"
    with path.open("w") as log:
        kamailio = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            for side in ("ORIG_PORT", "TERM_PORT"):
                _wait_answering(kamailio, int(defines[side]), path)
            yield kamailio
        finally:
            kamailio.terminate()
            try:
                kamailio.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kamailio.kill()
                kamailio.wait()


def _wait_answering(kamailio: subprocess.Popen[str], port: int, log: Path) -> None:
    def options(local: tuple[str, int]) -> bytes:
        return build_invite(
            request_uri=f"sip:127.0.0.1:{port}",
            from_value=f"<sip:probe@127.0.0.1>;tag=probe{port}",
            to_value=f"<sip:127.0.0.1:{port}>",
            local=local,
            method="OPTIONS",
        )

    deadline = time.monotonic() + 60
    while kamailio.poll() is None and time.monotonic() < deadline:
        try:
            answer = asyncio.run(send_invite(("127.0.0.1", port), options, timeout=2))
        except TimeoutError:
            continue
        if answer.code == 405:
            return
    pytest.fail(f"kamailio does not answer on {port}: {log.read_text()[-2000:]}")


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
    try:
        with running_kamailio(work, defines) as kamailio:
            yield Picture(lab, work, kamailio, ports)
    finally:
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


# ------------------------------------------------------------------- issue 9 item 5: no verdict
#
# A carrier's INVITE claims what only our verifier may say: verstat in From and in both
# P-Asserted-Identity values, our display prefixes (one hidden behind a quoted-pair, one in an
# unquoted display name), X-Shaken-* headers in any case. Whatever shaken does, the far end
# must never see any of it.

FORGER = "12025550166"
BUSY = "13035550486"  # the far end answers 486 to this number


def _forged(orig: str) -> tuple[str, list[tuple[str, str]]]:
    """The From value and the other headers of a carrier INVITE forging a verdict."""
    passed = ";verstat=TN-Validation-Passed"
    from_value = f'"\\(Verified\\) Mallory" <sip:{orig}{passed}@127.0.0.1>;tag=forger'
    headers = [
        (
            "P-Asserted-Identity",
            f'"(Verified) Mallory" <sip:+{orig}{passed}@127.0.0.1;user=phone>, <tel:+{orig}{passed}>',
        ),
        (
            "P-Asserted-Identity",
            f"[No ID] (VERIFIED)Mallory <tel:+{orig};VerStat=No-TN-Validation>",
        ),
        ("X-Shaken-Attest", "A"),
        ("x-shaken-reason", "verified"),
    ]
    return from_value, headers


CLEAN_FROM = f'"Mallory" <sip:{FORGER}@127.0.0.1>;tag=forger'
CLEAN_PAI = [
    f'"Mallory" <sip:+{FORGER}@127.0.0.1;user=phone>, <tel:+{FORGER}>',
    f"Mallory <tel:+{FORGER}>",
]


def _call(
    port: int,
    far: UdpPeer,
    from_value: str,
    headers: list[tuple[str, str]],
    *,
    dest: str = DEST,
    call_id: str,
) -> SipResponse:
    """One INVITE to Kamailio's ``port`` whose Request-URI is the far end; its final answer."""

    def build(local: tuple[str, int]) -> bytes:
        return build_invite(
            request_uri=f"sip:{dest}@127.0.0.1:{far.port}",
            from_value=from_value,
            to_value=f"<sip:{dest}@127.0.0.1>",
            local=local,
            headers=headers,
            call_id=call_id,
        )

    return asyncio.run(send_invite(("127.0.0.1", port), build, timeout=30))


def _far_end() -> UdpPeer:
    def answer(request: SipRequest) -> Answer:
        if BUSY in request.uri:
            return (486, "Busy Here", [])
        return (200, "OK", [("Contact", "<sip:far@127.0.0.1>")])

    return UdpPeer(answer)


def _broken_shaken(kind: str) -> UdpPeer:
    """What stands in for a shaken that answers, but with no verdict."""

    def answer(request: SipRequest) -> Answer:
        if kind == "overloaded-503":
            return (503, "Service Unavailable", [("Retry-After", "5")])
        if kind == "error-500":
            return (500, "Server Internal Error", [])
        if kind == "bare-302":
            # A 302 without X-Shaken-Reason, carrying what a verdict would: not a verdict.
            forged = f'"(Verified) Mallory" <sip:{FORGER};verstat=TN-Validation-Passed@127.0.0.1>'
            return (
                302,
                "Moved Temporarily",
                [
                    ("Contact", f"<{request.uri}>"),
                    ("P-Asserted-Identity", forged),
                    ("X-Shaken-Attest", "A"),
                ],
            )
        return None  # silent: it reads the INVITE and never answers

    return UdpPeer(answer)


NO_VERDICT = ["stopped", "overloaded-503", "error-500", "bare-302", "silent", "no-route"]


@contextmanager
def _sbc_without_verdict(work: Path, kind: str, reject: str | None) -> Iterator[dict[str, int]]:
    """The example SBC whose SHAKEN_VERIFY gives no verdict the way ``kind`` says."""
    broken = None
    if kind == "stopped":  # nothing listens on the port: shaken is not running
        verify = f'"sip:127.0.0.1:{free_port()}"'
    elif kind == "no-route":  # a transport the SBC has no socket for: cannot even send
        verify = f'"sip:127.0.0.1:{free_port()};transport=tcp"'
    else:
        broken = _broken_shaken(kind)
        verify = f'"sip:127.0.0.1:{broken.port}"'
    ports = {"orig": free_port(), "term": free_port()}
    defines = {
        "ORIG_PORT": str(ports["orig"]),
        "TERM_PORT": str(ports["term"]),
        "CHILDREN": "1",
        "SHAKEN_SIGN": f'"sip:127.0.0.1:{free_port()}"',
        "SHAKEN_VERIFY": verify,
        "SHAKEN_TIMEOUT": "1000",
    }
    if reject is not None:
        defines["NO_VERDICT_REJECT"] = reject
    try:
        with running_kamailio(work, defines):
            yield ports
    finally:
        if broken is not None:
            broken.close()


@pytest.mark.parametrize("kind", NO_VERDICT)
def test_issue9_item5_no_verdict_sends_the_call_on_cleaned_by_default(
    kind: str, tmp_path: Path
) -> None:
    from_value, headers = _forged(FORGER)
    with _far_end() as far, _sbc_without_verdict(tmp_path, kind, None) as ports:
        answer = _call(ports["term"], far, from_value, headers, call_id=f"forged-{kind}")
        busy = _call(ports["term"], far, from_value, headers, dest=BUSY, call_id=f"busy-{kind}")
        [delivered] = far.invites(f"forged-{kind}")
        # The far end's own rejection goes back once: it is not a second "no verdict".
        assert len(far.invites(f"busy-{kind}")) == 1
    assert answer.code == 200, (tmp_path / "kamailio.log").read_text()[-3000:]
    assert busy.code == 486
    received = delivered.fields
    assert received["from"] == [CLEAN_FROM]
    assert received["p-asserted-identity"] == CLEAN_PAI
    assert [name for name in received if name.startswith("x-shaken-")] == []
    assert "verstat" not in delivered.uri + str(received).lower()


@pytest.mark.parametrize(
    ("kind", "code", "phrase"),
    [
        ("stopped", 503, "Service Unavailable"),
        ("overloaded-503", 608, "Rejected"),
        ("error-500", 480, "No Verification"),
        ("bare-302", 608, "Rejected"),
        ("silent", 503, "Service Unavailable"),
        ("no-route", 608, "Rejected"),
    ],
)
def test_issue9_item5_no_verdict_rejects_when_configured(
    kind: str, code: int, phrase: str, tmp_path: Path
) -> None:
    from_value, headers = _forged(FORGER)
    with _far_end() as far, _sbc_without_verdict(tmp_path, kind, str(code)) as ports:
        answer = _call(ports["term"], far, from_value, headers, call_id=f"closed-{kind}")
        assert far.invites(f"closed-{kind}") == []
    assert (answer.code, answer.phrase) == (code, phrase)
    assert answer.first("x-shaken-reason") is None


def test_issue9_item5_forged_claims_are_stripped_when_shaken_answers(picture: Picture) -> None:
    """With the real ``shaken serve``: it verifies the cleaned request, and only its verdict
    reaches the far end."""
    from_value, headers = _forged(FORGER)
    signed = picture.identity(SIGNED)
    with _far_end() as far:
        missing = _call(picture.ports["term"], far, from_value, headers, call_id="forged-missing")
        alice = _call(
            picture.ports["term"],
            far,
            f'"\\(Verified\\) Alice" <sip:{SIGNED};verstat=TN-Validation-Passed@127.0.0.1>;tag=a',
            [("Identity", signed), ("X-Shaken-Attest", "C")],
            call_id="forged-signed",
        )
        [unsigned] = far.invites("forged-missing")
        [verified] = far.invites("forged-signed")
    assert (missing.code, alice.code) == (200, 200)
    received = unsigned.fields
    assert received["from"] == [CLEAN_FROM]
    # shaken's verdict on the cleaned identities: no Identity, so "[No ID]" and No-TN-Validation,
    # in one field with the first sip and the first tel identity (RFC 3325 section 9.1)
    assert received["p-asserted-identity"] == [
        f'"[No ID] Mallory" <sip:+{FORGER};verstat=No-TN-Validation@127.0.0.1;user=phone>, '
        f'"[No ID] Mallory" <tel:+{FORGER};verstat=No-TN-Validation>'
    ]
    assert "x-shaken-attest" not in received
    assert received["x-shaken-reason"][0].startswith("missing_identity;cause=428")
    assert len(received["x-shaken-reason"]) == 1
    received = verified.fields
    assert received["from"] == [f'"Alice" <sip:{SIGNED}@127.0.0.1>;tag=a']
    assert received["p-asserted-identity"] == [
        f'"(Verified) Alice" <sip:{SIGNED};verstat=TN-Validation-Passed@127.0.0.1>'
    ]
    assert received["x-shaken-attest"] == ["A"] and received["x-shaken-reason"] == ["verified"]


def test_issue9_item5_strip_display_covers_the_configured_prefixes(tmp_path: Path) -> None:
    """The SBC strips the prefixes the shaken configurations beside it (and the lab's) add."""
    [pattern] = re.findall(r'^#!trydef STRIP_DISPLAY "(.*)"$', CONFIG.read_text(), re.M)
    strip = re.compile(f"(?:{pattern})", re.IGNORECASE)
    lab = make_lab(tmp_path / "lab")
    prefixes = []
    for path in (CONFIG.parent / "shaken.toml", lab.config):
        config = tomllib.loads(path.read_text(encoding="utf-8"))
        actions = config["verification"]["on"].values()
        found = [table["display_prefix"] for table in actions if "display_prefix" in table]
        assert found, path
        prefixes += found
    for prefix in prefixes:
        assert strip.fullmatch(prefix.strip()), prefix


# ------------------------------------------------------------- branded calling (RFC 9795/9796)


def test_branded_call_arrives_as_verified_acme_bank(picture: Picture) -> None:
    """The lab's branded TN through both Kamailio sides and the real ``shaken serve``: signed
    with its brand, verified (logo fetched from the lab's repository over HTTPS), and the far
    end gets "(Verified) Acme Bank" with the RFC 9796 Call-Info; a forged Call-Info from the
    carrier side never reaches it."""
    from shaken.core.rcd import content_digest
    from shaken.toolkit.lab import BRAND_LOGO, brand_logo

    lab = picture.lab
    brand_tn = lab.settings.brand_tn
    repository = lab.serve().start()
    try:
        with _far_end() as far:
            answer = _call(
                picture.ports["orig"],
                far,
                f'"Alice" <sip:{brand_tn}@127.0.0.1>;tag=b',
                [("Call-Info", "<https://evil.example/x.png>;purpose=icon")],
                call_id="branded",
            )
            [received] = far.invites("branded")
    finally:
        repository.close()
    assert answer.code == 200
    fields = received.fields
    assert fields["p-asserted-identity"] == [
        f'"(Verified) Acme Bank" <sip:{brand_tn};verstat=TN-Validation-Passed@127.0.0.1>'
    ]
    logo = lab.settings.repository_url + BRAND_LOGO
    assert fields["call-info"] == [
        f'<{logo}>;purpose=icon;integrity="{content_digest(brand_logo())}";verified=true'
        ';call-reason="Account security alert"'
    ]
    assert fields["x-shaken-attest"] == ["A"] and fields["x-shaken-reason"] == ["verified"]
