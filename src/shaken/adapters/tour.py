"""``make run``: a lab with its real servers, and five SIP calls through them.

What happens, all on 127.0.0.1 with free ports:

1. ``shaken lab init`` makes a test STI-CA, an SP certificate and a configuration with the
   seeds' PASS / STOP / ALERT actions: a verified caller is shown as "(Verified) <name>", a
   call without Identity as "[No ID] <name>", and any failed check rejects the call with its
   RFC 8224 code. The tour uses that configuration as it is.
2. ``shaken lab up`` runs the certificate repository (HTTPS), the SIP redirect servers and the
   REST API from that configuration, in a child process.
3. Five INVITEs over UDP, each answered by the real servers: one signed by the STI-AS, then
   verified by the STI-VS (its x5u fetched from the repository over HTTPS, CRL included); the
   same PASSporT with its caller rewritten by a "spoofer"; a call without Identity; a stale
   PASSporT (signed two minutes ago).
4. The verdicts, then the call log (``shaken calls``) and where it is.

:func:`sign_call` and :func:`verify_call` place such calls into any running lab; ``shaken lab
call`` is them on the command line.

TEST MATERIAL: the keys and certificates of the lab are throwaway ones.
"""

from __future__ import annotations

import asyncio
import secrets
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

__all__ = [
    "CALLED",
    "CALLER",
    "free_port",
    "main",
    "run_tour",
    "sign_call",
    "verdict",
    "verify_call",
]

CALLER, SPOOFED, CALLED = "12025550100", "12025550142", "13035550000"


def free_port() -> int:
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


def verdict(response: SipResponse, indent: int = 6) -> str:
    """A redirect server's answer as the tour prints it: the status, then the verdict headers."""
    parts = [f"{response.code} {response.phrase}"]
    pai = response.first("p-asserted-identity")
    if pai:
        parts.append(f"P-Asserted-Identity: {pai}")
    for name in ("x-shaken-attest", "x-shaken-reason", "reason"):
        value = response.first(name)
        if value:
            parts.append(f"{name.title()}: {value}")
    return ("\n" + " " * indent).join(parts)


def _invite(
    lab: Lab, called: str, from_value: str, headers: tuple[tuple[str, str], ...] = ()
) -> Callable[[tuple[str, int]], bytes]:
    """The builder of an INVITE from ``from_value`` to ``called`` at the lab's host."""
    host = lab.settings.url_host

    def build(local: tuple[str, int]) -> bytes:
        return build_invite(
            request_uri=f"sip:{called}@{host}",
            from_value=from_value,
            to_value=f"<sip:{called}@{host}>",
            local=local,
            headers=list(headers),
        )

    return build


async def _ask(
    lab: Lab, kind: str, invite: Callable[[tuple[str, int]], bytes], timeout: float
) -> SipResponse:
    host, port = lab.sip_address(kind)
    try:
        return await send_invite((host, port), invite, timeout=timeout)
    except TimeoutError:
        raise TimeoutError(
            f"no answer from the lab's {kind} listener {host}:{port} (is 'shaken lab up' running?)"
        ) from None


def _from(lab: Lab, caller: str, name: str) -> str:
    return f'"{name}" <sip:{caller}@{lab.settings.url_host}>;tag={secrets.token_hex(4)}'


async def sign_call(
    lab: Lab,
    *,
    caller: str = CALLER,
    called: str = CALLED,
    name: str = "Alice",
    timeout: float = 10,
) -> SipResponse:
    """Ask the lab's STI-AS to sign a call from ``caller``: its 302, with Identity and Date.

    :raises TimeoutError: the signing listener does not answer.
    """
    frm = _from(lab, caller, name)
    return await _ask(lab, "sip_sign", _invite(lab, called, frm), timeout)


async def verify_call(
    lab: Lab,
    signed: SipResponse | None,
    *,
    caller: str = CALLER,
    called: str = CALLED,
    name: str = "Alice",
    spoof: str | None = None,
    clock: Clock,
    timeout: float = 10,
) -> SipResponse:
    """Send the call ``signed`` (the STI-AS's answer; None: no Identity) to the lab's STI-VS.

    ``spoof`` rewrites the caller, in From and in the signed PASSporT, to another number: what
    a spoofer does (:func:`shaken.adapters.demo.spoof_orig`).

    :raises TimeoutError: the verification listener does not answer.
    """
    headers: tuple[tuple[str, str], ...] = ()
    identity = signed.first("identity") if signed is not None else None
    if signed is not None and identity:
        if spoof is not None:
            identity = spoof_orig(identity, spoof)
        date = signed.first("date") or format_sip_date(clock.now())
        headers = (("Identity", identity), ("Date", date))
    frm = _from(lab, spoof or caller, name)
    return await _ask(lab, "sip_verify", _invite(lab, called, frm, headers), timeout)


async def _calls(lab: Lab, out: TextIO, clock: Clock) -> None:
    signed = await sign_call(lab)
    identity = signed.first("identity") or ""
    attest = signed.first("x-shaken-attest")
    print(f"1. {'signed':12} {signed.code} {signed.phrase}, attestation {attest}", file=out)
    print(f"      Identity: {identity[:60]}...", file=out)
    if not identity:
        raise RuntimeError(f"the signing server did not sign: {signed.first('x-shaken-reason')}")
    cases = [
        ("verified", await verify_call(lab, signed, clock=clock)),
        ("tampered", await verify_call(lab, signed, name="Bank", spoof=SPOOFED, clock=clock)),
        ("no Identity", await verify_call(lab, None, clock=clock)),
    ]
    alice = _from(lab, CALLER, "Alice")
    stale = _invite(lab, CALLED, alice, (("Identity", _stale(lab, clock.now())),))
    cases.append(("stale", await _ask(lab, "sip_verify", stale, 10)))
    for number, (title, response) in enumerate(cases, start=2):
        print(f"{number}. {title:12} {verdict(response)}", file=out)


def _stale(lab: Lab, now: datetime) -> str:
    key = load_private_key(lab.sp_key.read_bytes())
    when = now - timedelta(minutes=2)
    return sign_shaken(key=key, x5u=lab.x5u, orig=CALLER, dest=CALLED, attest="A", now=when)


def run_tour(directory: Path, out: TextIO, clock: Clock | None = None) -> int:
    """Make the lab in ``directory``, run it, place the calls; 0 when all went as expected."""
    settings = LabSettings(
        repository_port=free_port(),
        sip_signing_port=free_port(),
        sip_verification_port=free_port(),
        rest_port=free_port(),
    )
    clock = clock or SystemClock()
    lab = init_lab(directory, now=clock.now(), settings=settings)
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
