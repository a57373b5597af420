"""``make run``: a lab with its real servers, and five SIP calls through them.

What happens, all on 127.0.0.1 with free ports:

1. ``shaken lab init`` makes a test STI-CA, an SP certificate and a configuration, to which
   the tour adds the seeds' PASS / STOP / ALERT actions: a verified caller is shown as
   "(Verified) <name>", a call without Identity as "[No ID] <name>", and any failed check
   rejects the call with its RFC 8224 code.
2. ``shaken lab up`` runs the certificate repository (HTTPS), the SIP redirect servers and the
   REST API from that configuration, in a child process.
3. Five INVITEs over UDP, each answered by the real servers: one signed by the STI-AS, then
   verified by the STI-VS (its x5u fetched from the repository over HTTPS, CRL included); the
   same PASSporT with its caller rewritten by a "spoofer"; a call without Identity; a stale
   PASSporT (signed two minutes ago).
4. The verdicts, then the call log (``shaken calls``) and where it is.

TEST MATERIAL: the keys and certificates of the lab are throwaway ones.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

from shaken.adapters.demo import spoof_orig
from shaken.adapters.sip.client import SipResponse, build_invite, send_invite
from shaken.core.context import format_sip_date
from shaken.core.jws import load_private_key
from shaken.core.sign import sign_shaken
from shaken.services.ports import Clock, SystemClock
from shaken.toolkit.lab import Lab, LabSettings, init_lab

__all__ = ["main", "run_tour"]

CALLER, SPOOFED, CALLED = "12025550100", "12025550142", "13035550000"
ACTIONS = """
# Added by the tour (make run): the PBX guide's PASS / STOP / ALERT.
[verification.on.verified]
action = "alert"  # ALERT: the display name says the caller was verified
display_prefix = "(Verified) "

[verification.on.missing]
action = "alert"  # ALERT: no Identity at all
display_prefix = "[No ID] "

[verification.on.failed]
action = "reject"  # STOP: the RFC 8224 code of what failed (438, 403, 436, 437)
"""


def _free_port() -> int:
    """A port free for both UDP and TCP (the SIP listeners use both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise OSError("no free port")


def _verdict(response: SipResponse) -> str:
    parts = [f"{response.code} {response.phrase}"]
    pai = response.first("p-asserted-identity")
    if pai:
        parts.append(f"P-Asserted-Identity: {pai}")
    for name in ("x-shaken-attest", "x-shaken-reason", "reason"):
        value = response.first(name)
        if value:
            parts.append(f"{name.title()}: {value}")
    return "\n      ".join(parts)


async def _calls(lab: Lab, out: TextIO, clock: Clock) -> None:
    s = lab.settings
    sign = ("127.0.0.1", s.sip_signing_port)
    verify = ("127.0.0.1", s.sip_verification_port)
    alice = f'"Alice" <sip:{CALLER}@127.0.0.1>;tag=tour'
    to = f"<sip:{CALLED}@127.0.0.1>"

    def invite(frm: str, *headers: tuple[str, str]) -> Callable[[tuple[str, int]], bytes]:
        def build(local: tuple[str, int]) -> bytes:
            return build_invite(
                request_uri=f"sip:{CALLED}@127.0.0.1",
                from_value=frm,
                to_value=to,
                local=local,
                headers=list(headers),
            )

        return build

    signed = await send_invite(sign, invite(alice), timeout=10)
    identity = signed.first("identity") or ""
    date = signed.first("date") or format_sip_date(clock.now())
    attest = signed.first("x-shaken-attest")
    print(f"1. {'signed':12} {signed.code} {signed.phrase}, attestation {attest}", file=out)
    print(f"      Identity: {identity[:60]}...", file=out)
    if not identity:
        raise RuntimeError(f"the signing server did not sign: {signed.first('x-shaken-reason')}")
    cases: list[tuple[str, str, tuple[tuple[str, str], ...]]] = [
        ("verified", alice, (("Identity", identity), ("Date", date))),
        (
            "tampered",
            f'"Bank" <sip:{SPOOFED}@127.0.0.1>;tag=tour',
            (("Identity", spoof_orig(identity, SPOOFED)), ("Date", date)),
        ),
        ("no Identity", alice, ()),
        ("stale", alice, (("Identity", _stale(lab, clock.now())),)),
    ]
    for number, (title, frm, headers) in enumerate(cases, start=2):
        response = await send_invite(verify, invite(frm, *headers), timeout=10)
        print(f"{number}. {title:12} {_verdict(response)}", file=out)


def _stale(lab: Lab, now: datetime) -> str:
    key = load_private_key(lab.sp_key.read_bytes())
    when = now - timedelta(minutes=2)
    return sign_shaken(key=key, x5u=lab.x5u, orig=CALLER, dest=CALLED, attest="A", now=when)


def run_tour(directory: Path, out: TextIO, clock: Clock | None = None) -> int:
    """Make the lab in ``directory``, run it, place the calls; 0 when all went as expected."""
    settings = LabSettings(
        repository_port=_free_port(),
        sip_signing_port=_free_port(),
        sip_verification_port=_free_port(),
        rest_port=_free_port(),
    )
    clock = clock or SystemClock()
    lab = init_lab(directory, now=clock.now(), settings=settings)
    with lab.config.open("a", encoding="utf-8") as config:
        config.write(ACTIONS)
    print(f"lab in {lab.directory} (TEST MATERIAL)", file=out)
    command = [sys.executable, "-m", "shaken.adapters.cli", "lab", "up", str(directory), "--quiet"]
    log = (directory / "lab-up.log").open("w")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "(not started" in line:
                raise RuntimeError(f"the lab's servers did not start: {line.strip()}")
            if line.startswith(("repository", "sip-", "rest")):
                print(f"  {line.rstrip()}", file=out)
            if line.startswith("Ctrl-C"):
                break
        else:
            raise RuntimeError(f"shaken lab up stopped: see {directory / 'lab-up.log'}")
        print("calls:", file=out)
        asyncio.run(_calls(lab, out, clock))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
    calls = directory / "calls.sqlite"
    time.sleep(0.3)  # the call log commits within its window; the servers have stopped anyway
    print(f"call log: {calls}   (shaken calls --db {calls})", file=out)
    listing = subprocess.run(
        [sys.executable, "-m", "shaken.adapters.cli", "calls", "--db", str(calls)],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in listing.stdout.splitlines():
        print(f"  {line}", file=out)
    return 0 if listing.returncode == 0 else 1


def main() -> int:
    directory = Path(tempfile.mkdtemp(prefix="shaken-lab-")) / "lab"
    try:
        return run_tour(directory, sys.stdout)
    except (RuntimeError, OSError, TimeoutError) as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
