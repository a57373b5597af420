"""The whole lifecycle in the lab, and a rollover under load that no call notices.

``lab init``; ``lab up`` (its repository, test STI-PA and ACME STI-CA, a subprocess);
``cert acquire`` through them; calls signed and verified with the acquired certificate. Then
``shaken serve`` with two workers takes a steady sipp load (each call signed by the signing
listener, then verified by the verification listener), and ``cert renew --force`` rolls the
certificate over in the middle of it: sipp must count zero failed calls, the call log must hold
only signed and verified calls, and both certificates must have signed some of them.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shaken.adapters.cli import main
from shaken.adapters.store.calllog import read_calls
from shaken.toolkit.lab import Lab, LabSettings, init_lab

from .sip_peers import DEST, ORIG, SIPP, ShakenServer, free_port, sipp, start_shaken

if SIPP is None:
    pytest.skip("sipp (Debian package sip-tester) is not installed", allow_module_level=True)

#: Sign at one listener, then present the Identity it returned to the other one.
#: Each INVITE is its own sipp transaction: on a loaded machine an answer can take longer than
#: T1, sipp retransmits, and the server rightly answers the retransmission with the same 302;
#: matched by transaction, that late copy of the signing 302 counts as a retransmission instead
#: of being taken for the verification's answer.
SIGN_THEN_VERIFY = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="shaken sign then verify">
  <send retrans="500" start_txn="sign"><![CDATA[
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
  <recv response="100" optional="true" response_txn="sign"/>
  <recv response="302" response_txn="sign">
    <action>
      <ereg regexp="^ *([A-Za-z0-9_.-]+;info=&lt;https://[^&gt;]+&gt;;alg=ES256;ppt=shaken)$"
            search_in="hdr" header="Identity:" check_it="true" assign_to="all,identity"/>
    </action>
  </recv>
  <send ack_txn="sign"><![CDATA[
      ACK sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:[field0]@[local_ip]>;tag=[call_number]
      To: <sip:[field1]@[remote_ip]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <nop><action><setdest host="127.0.0.1" port="[field2]" protocol="udp"/></action></nop>
  <send retrans="500" start_txn="verify"><![CDATA[
      INVITE sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:[field0]@[local_ip]>;tag=v[call_number]
      To: <sip:[field1]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 INVITE
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Identity: [$identity]
      Content-Length: 0

  ]]></send>
  <recv response="100" optional="true" response_txn="verify"/>
  <recv response="302" response_txn="verify">
    <action>
      <ereg regexp="verstat=TN-Validation-Passed" search_in="hdr" header="P-Asserted-Identity:"
            check_it="true" assign_to="verstat"/>
    </action>
  </recv>
  <Reference variables="all,verstat"/>
  <send ack_txn="verify"><![CDATA[
      ACK sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:[field0]@[local_ip]>;tag=v[call_number]
      To: <sip:[field1]@[remote_ip]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
</scenario>
"""


def _tcp_port() -> int:
    return free_port(socket.SOCK_STREAM)


@pytest.fixture(scope="module")
def lab_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    work = tmp_path_factory.mktemp("rollover")
    settings = LabSettings(
        repository_port=_tcp_port(),
        sip_signing_port=free_port(),
        sip_verification_port=free_port(),
        rest_port=_tcp_port(),
        sti_pa_port=_tcp_port(),
        acme_port=_tcp_port(),
    )
    lab = init_lab(work / "lab", now=datetime.now(UTC), settings=settings)
    log = (work / "lab-up.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "shaken.adapters.cli", "lab", "up", str(lab.directory), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert process.stdout is not None
    out: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        out.append(line)
        if line.startswith("Ctrl-C to stop"):
            break
    else:
        process.kill()
    assert out and out[-1].startswith("Ctrl-C"), out
    assert any(line.startswith("sti-pa ") for line in out), out
    assert any(line.startswith("acme ") and "/acme/directory" in line for line in out), out
    threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
    try:
        yield lab
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _status(lab: Lab, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    code = main(["cert", "status", "--json", "--config", str(lab.config)])
    report: dict[str, object] = json.loads(capsys.readouterr().out)
    report["exit"] = code
    return report


def _inf(work: Path, verify_port: int, calls: int) -> Path:
    path = work / "calls.csv"
    path.write_text("SEQUENTIAL\n" + f"{ORIG};{DEST};{verify_port}\n" * calls)
    return path


def test_acquire_then_sign_and_verify_with_the_certificate(
    lab_up: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = lab_up
    assert _status(lab, capsys)["exit"] == 2  # CRITICAL: nothing acquired yet
    assert main(["cert", "acquire", "--config", str(lab.config)]) == 0
    said = capsys.readouterr().out
    assert said.startswith("signing with certificate ")
    report = _status(lab, capsys)
    assert report["exit"] == 0 and report["x5u_serves"] == "the current certificate"
    current = report["current"]
    assert isinstance(current, dict) and current["spc"] == lab.settings.spc
    # A second acquire does nothing: the certificate is current and not due.
    assert main(["cert", "acquire", "--config", str(lab.config)]) == 0
    assert capsys.readouterr().out.startswith("a current certificate exists: ")

    server = start_shaken(lab, tmp_path)
    try:
        scenario = tmp_path / "sign-verify.xml"
        scenario.write_text(SIGN_THEN_VERIFY)
        run = sipp(
            scenario,
            f"127.0.0.1:{server.sign}",
            tmp_path,
            calls=5,
            inf=_inf(tmp_path, server.verify, 5),
        )
        assert run.returncode == 0, run.errors + run.screen
    finally:
        server.stop()  # the call log is written in batches: all of it is there once stopped
    calls = read_calls(tmp_path / "calls.sqlite")
    signed = [c for c in calls if c["outcome"] == "signed"]
    verified = [c for c in calls if c["outcome"] == "verified"]
    assert len(signed) == 5 and len(verified) == 5
    assert {c["x5u"] for c in signed} == {current["x5u"]}  # the acquired certificate


def test_rollover_under_load_fails_no_call(
    lab_up: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = lab_up
    if _status(lab, capsys)["current"] is None:
        assert main(["cert", "acquire", "--config", str(lab.config)]) == 0
    before = _status(lab, capsys)["current"]
    assert isinstance(before, dict)
    server: ShakenServer = start_shaken(lab, tmp_path, workers=2)
    rate, calls = 25, 750  # 30 s of steady load on two shared cores
    scenario = tmp_path / "sign-verify.xml"
    scenario.write_text(SIGN_THEN_VERIFY)
    result: dict[str, object] = {}

    def load() -> None:
        result["run"] = sipp(
            scenario,
            f"127.0.0.1:{server.sign}",
            tmp_path,
            calls=calls,
            rate=rate,
            inf=_inf(tmp_path, server.verify, calls),
            timeout=240,
        )

    runner = threading.Thread(target=load)
    try:
        runner.start()
        time.sleep(8)  # the load is running on the old certificate
        capsys.readouterr()
        assert main(["cert", "renew", "--force", "--config", str(lab.config)]) == 0
        renewed = capsys.readouterr().out
        assert renewed.startswith("signing with certificate "), renewed
        runner.join(timeout=300)
        run = result["run"]
        assert run.returncode == 0, run.errors + run.screen  # type: ignore[attr-defined]
    finally:
        runner.join(timeout=1)
        server.stop()
    after = _status(lab, capsys)
    current = after["current"]
    assert isinstance(current, dict) and current["serial"] != before["serial"]
    # The call log: every call signed, every signature verified, by both certificates.
    records = read_calls(tmp_path / "calls.sqlite")
    signing = [r for r in records if r["direction"] == "sign"]
    verifying = [r for r in records if r["direction"] == "verify"]
    # Every call once. The workers share one UDP socket and each keeps its own server
    # transactions: a retransmission the other worker reads is answered again, and its
    # record, with the same transaction's record_id, is not stored twice.
    assert len(signing) == calls and len(verifying) == calls
    assert len({r["call_id"] for r in verifying}) == calls
    assert {r["outcome"] for r in signing} == {"signed"}
    assert {r["outcome"] for r in verifying} == {"verified"}
    used = {r["x5u"] for r in signing}
    assert used == {before["x5u"], current["x5u"]}, used
    # The old certificate is still published (its last signatures are still in flight).
    assert (lab.repo_dir / str(before["x5u"]).rsplit("/", 1)[1]).is_file()
    log = server.log.read_text()
    assert log.count("the signing certificate changed") == 2, log  # each worker saw the switch
