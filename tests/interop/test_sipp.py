"""sipp (Debian sip-tester) against ``shaken serve``: signing, and every verification outcome.

Each case is a sipp scenario that sends real INVITEs over UDP, expects one response code and
checks the headers that matter with sipp's own regular expressions (a call whose check fails
counts as failed, so sipp's exit status says it all); the message log is then read for exact
values. What the signer produced is also checked by secsipidx (asipto), an implementation no
one here wrote.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shaken.core.jws import load_private_key
from shaken.core.sign import sign_shaken
from shaken.testing import make_sti_pki
from shaken.toolkit.lab import Lab

from .sip_peers import DEST, ORIG, SIPP, ShakenServer, headers_of, make_lab, sipp, start_shaken

if SIPP is None:
    pytest.skip("sipp (Debian package sip-tester) is not installed", allow_module_level=True)

SECSIPIDX = shutil.which("secsipidx")

ACTIONS = """
[verification.on.verified]
action = "alert"
display_prefix = "(Verified) "

[verification.on.missing]
action = "reject"

[verification.on.failed]
action = "reject"

[verification.on.reason.orig_mismatch]
action = "continue_with_reason"
"""

SIGN_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="shaken sign">
  <send retrans="500"><![CDATA[
      INVITE sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:[field0]@[local_ip]>;tag=[call_number]
      To: <sip:[field1]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="302">
    <action>
      <ereg regexp="^ *[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+;info=&lt;https://[^&gt;]+&gt;;alg=ES256;ppt=shaken$"
            search_in="hdr" header="Identity:" check_it="true" assign_to="identity"/>
      <ereg regexp="^ *A$" search_in="hdr" header="X-Shaken-Attest:" check_it="true" assign_to="attest"/>
      <ereg regexp="GMT" search_in="hdr" header="Date:" check_it="true" assign_to="date"/>
    </action>
  </recv>
  <Reference variables="identity,attest,date"/>
  <send><![CDATA[
      ACK sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:[field0]@[local_ip]>;tag=[call_number]
      To: <sip:[field1]@[remote_ip]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
</scenario>
"""

VERIFY_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="shaken verify {name}">
  <send retrans="500"><![CDATA[
      INVITE sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:[field0]@[local_ip]>;tag=[call_number]
      To: <sip:[field1]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
{identity}      Content-Length: 0

  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="{code}">
    <action>
      <ereg regexp="{regexp}" {where} check_it="true" assign_to="v"/>
    </action>
  </recv>
  <Reference variables="v"/>
  <send><![CDATA[
      ACK sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:[field0]@[local_ip]>;tag=[call_number]
      To: <sip:[field1]@[remote_ip]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
</scenario>
"""
IDENTITY_LINE = "      Identity: [field2];info=<[field3]>;alg=ES256;ppt=shaken\n"


@dataclass
class Setup:
    lab: Lab
    server: ShakenServer
    work: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("sipp")
    lab = make_lab(work / "lab")
    # An SP certificate from another STI-CA, cached under its own URL: it cannot be trusted.
    pki = make_sti_pki(now=datetime.now(UTC))
    foreign = work / "foreign.pem"
    foreign.write_bytes(pki.chain_pem)
    server = start_shaken(lab, work, extra=ACTIONS, cached=((foreign, foreign_url(lab)),))
    (work / "foreign.key").write_bytes(pki.leaf_key_pem)
    try:
        yield Setup(lab, server, work)
    finally:
        server.stop()


def foreign_url(lab: Lab) -> str:
    return lab.x5u.replace("sp.pem", "foreign.pem")


def identity(
    setup: Setup, *, orig: str = ORIG, age: int = 0, x5u: str | None = None, key: Path | None = None
) -> str:
    private = load_private_key((key or setup.lab.sp_key).read_bytes())
    now = datetime.now(UTC) - timedelta(seconds=age)
    return sign_shaken(
        key=private, x5u=x5u or setup.lab.x5u, orig=orig, dest=DEST, attest="A", now=now
    )


def injection(setup: Setup, name: str, values: list[str]) -> Path:
    """A sipp CSV: orig;dest;token;x5u (sipp splits on ';', so the scenario rebuilds params)."""
    lines = ["SEQUENTIAL"]
    for value in values:
        token, _, params = value.partition(";")
        x5u = params.split("info=<", 1)[1].split(">", 1)[0] if params else ""
        lines.append(f"{ORIG};{DEST};{token};{x5u}")
    path = setup.work / f"{name}.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def scenario(setup: Setup, name: str, text: str) -> Path:
    path = setup.work / f"{name}.xml"
    path.write_text(text)
    return path


def test_signing(setup: Setup) -> None:
    inf = injection(setup, "sign", [""] * 5)
    run = sipp(
        scenario(setup, "sign", SIGN_SCENARIO),
        f"127.0.0.1:{setup.server.sign}",
        setup.work,
        calls=5,
        inf=inf,
    )
    assert run.returncode == 0, run.errors + run.screen
    redirects = run.logged("received", "SIP/2.0 302")
    assert len(redirects) == 5
    values = [headers_of(m)["identity"][0] for m in redirects]
    assert len(set(values)) == 5  # a fresh PASSporT per call
    if SECSIPIDX is not None:
        for n, value in enumerate(values):
            file = setup.work / f"identity-{n}.txt"
            file.write_text(value)
            check = subprocess.run(
                [
                    SECSIPIDX,
                    "-check",
                    "-fidentity",
                    str(file),
                    "-fpubkey",
                    str(setup.lab.sp_chain),
                    "-expire",
                    "300",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert check.returncode == 0 and check.stdout.split() == ["ok"], (
                check.stdout + check.stderr
            )


CASES = {
    # name: (Identity values or None, expected code, header, regexp)
    "verified": (
        "ok",
        302,
        "P-Asserted-Identity",
        '^"\\(Verified\\) Alice" <sip:12025550123;verstat=TN-Validation-Passed@',
    ),
    "missing": (None, 428, "X-Shaken-Reason", "^missing_identity;cause=428"),
    "tampered": ("tampered", 438, "X-Shaken-Reason", "^bad_signature;cause=438"),
    "stale": ("stale", 403, "X-Shaken-Reason", "^stale_iat;cause=403"),
    # search_in="hdr" finds "Reason:" inside "X-Shaken-Reason:": search the message instead.
    "wrong_caller": (
        "wrong_caller",
        302,
        "",
        '\nReason: STIR;cause=438;text="Invalid Identity Header"',
    ),
    "unreachable_x5u": ("unreachable", 436, "X-Shaken-Reason", "^cert_fetch_failed;cause=436"),
    "untrusted": ("untrusted", 437, "X-Shaken-Reason", "^cert_untrusted;cause=437"),
}


def values_for(setup: Setup, case: str) -> list[str]:
    if case == "ok":
        return [identity(setup) for _ in range(4)]
    if case == "tampered":  # one character of the signature changed
        out = []
        for value in (identity(setup) for _ in range(4)):
            token, _, params = value.partition(";")
            flipped = "A" if token[-10] != "A" else "B"
            out.append(f"{token[:-10]}{flipped}{token[-9:]};{params}")
        return out
    if case == "stale":
        return [identity(setup, age=300) for _ in range(4)]
    if case == "wrong_caller":
        return [identity(setup, orig="12025550199") for _ in range(4)]
    if case == "unreachable":
        return [identity(setup, x5u=setup.lab.x5u.replace("sp.pem", "gone.pem")) for _ in range(4)]
    assert case == "untrusted"
    return [
        identity(setup, x5u=foreign_url(setup.lab), key=setup.work / "foreign.key")
        for _ in range(4)
    ]


@pytest.mark.parametrize("name", sorted(CASES))
def test_verification_outcomes(setup: Setup, name: str) -> None:
    kind, code, header, regexp = CASES[name]
    values = [] if kind is None else values_for(setup, kind)
    inf = injection(setup, name, values or [""] * 4)
    text = VERIFY_SCENARIO.format(
        name=name,
        identity="" if kind is None else IDENTITY_LINE,
        code=code,
        where=f'search_in="hdr" header="{header}:"' if header else 'search_in="msg"',
        regexp=(" *".join(["^", regexp[1:]]) if header else regexp)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;"),
    )
    run = sipp(
        scenario(setup, f"verify-{name}", text),
        f"127.0.0.1:{setup.server.verify}",
        setup.work,
        calls=4,
        inf=inf,
    )
    assert run.returncode == 0, run.errors + run.screen
    answers = run.logged("received", f"SIP/2.0 {code} ")
    trying = run.logged("received", "SIP/2.0 100 ")
    # One answer per INVITE, and one more for any INVITE sipp retransmitted after 500 ms on a
    # busy machine: a retransmission gets the same answer once it is sent, and 100 Trying
    # while the call is still being decided (RFC 3261 17.2.1).
    assert len(answers) + len(trying) == len(run.logged("sent", "INVITE "))
    assert len(answers) >= 4
