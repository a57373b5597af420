"""Instructions per SIP call through the real codec and redirect handler, counted with callgrind.

``bench/instructions.py`` counts the core recipe paths; this counts what the SIP adapter adds
around them, on the path a UDP worker runs: the INVITE's bytes parsed, the handler's answer
(profile, transaction, sign or warm verify, decision, the 302, the call record), the answer's
bytes, then the ACK absorbed from its bytes. The lab's real configuration, keys and a warm
certificate cache are used; the ECDSA operation is stubbed out (its cost is OpenSSL's, counted
by ``bench/instructions.py``), so what is left is the Python work this adapter controls.

    .venv/bin/python bench/sip_instructions.py [--calls 1000]

Each case runs under ``valgrind --tool=callgrind`` twice, with N calls and with 0 (the same
set-up, the same requests built), and prints the difference divided by N. Needs valgrind
(Debian package); takes about two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ORIG = "12025550123"
DEST = "13035550000"
SOURCE = ("127.0.0.1", 5070)


def _message(method: str, n: int, identity: str | None) -> bytes:
    lines = [
        f"{method} sip:{DEST}@192.0.2.9 SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbench{n:08d};rport",
        "Max-Forwards: 70",
        f'From: "Alice" <sip:{ORIG}@192.0.2.1>;tag=f{n}',
        f"To: <sip:{DEST}@192.0.2.9>",
        f"Call-ID: bench-{n:08d}@192.0.2.1",
        f"CSeq: 1 {method}",
    ]
    if identity is not None:
        lines.append(f"Identity: {identity}")
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def child(mode: str, calls: int, built: int, directory: Path) -> None:
    from shaken.adapters.sip.codec import parse_request
    from shaken.adapters.sip.handler import Listener, Role, SipHandler
    from shaken.adapters.wiring import build_runtime
    from shaken.config import load_config
    from shaken.core import sign, verify
    from shaken.core.jws import load_private_key
    from shaken.core.sign import sign_shaken
    from shaken.toolkit.lab import open_lab

    lab = open_lab(directory)
    # One instant for the whole run: at valgrind's speed a wall clock would age the
    # PASSporT built below past max_iat_age and turn the warm path into fetches.
    at = datetime.now(UTC)

    class Frozen:
        def now(self) -> datetime:
            return at

    runtime = build_runtime(load_config(lab.config), clock=Frozen())
    runtime.cache.import_chain(lab.x5u, lab.sp_chain.read_bytes())
    asyncio.run(runtime.cache.get(lab.x5u, now=at))  # validated once, as a first call is
    identity = None
    if mode == "verify":
        key = load_private_key(lab.sp_key.read_bytes())
        now = at
        identity = sign_shaken(key=key, x5u=lab.x5u, orig=ORIG, dest=DEST, attest="A", now=now)
        verify.verify_es256 = lambda key, data, sig: True  # type: ignore[assignment]
    else:
        fixed = bytes(64)
        sign.sign_es256 = lambda key, data, deterministic=True: fixed  # type: ignore[assignment]

    class Sink:
        last: object = None

        def record(self, record: object) -> None:
            self.last = record

    handler = SipHandler(runtime, call_log=Sink())  # type: ignore[arg-type]
    listener = Listener("udp:127.0.0.1:5060", Role.SIGN if mode == "sign" else Role.VERIFY)
    invites = [_message("INVITE", n, identity) for n in range(built)]
    acks = [_message("ACK", n, None) for n in range(built)]
    absorb_ack = handler.transactions.absorb_ack
    for n in range(calls):
        reply = handler.handle(parse_request(invites[n]), listener, SOURCE)
        assert isinstance(reply, bytes) and reply.startswith(b"SIP/2.0 302 "), reply
        assert absorb_ack(acks[n])
    if calls and mode == "verify":
        assert b"verstat=TN-Validation-Passed" in reply, reply
    elif calls:
        assert b"\r\nIdentity: " in reply, reply
    asyncio.run(runtime.aclose())


def count(mode: str, calls: int, built: int, directory: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--child",
                mode,
                "--calls",
                str(calls),
                "--built",
                str(built),
                "--lab",
                str(directory),
            ],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict layouts in each run
        )
    match = re.search(r"refs:\s+([\d,]+)", proc.stderr)
    if proc.returncode != 0 or match is None:
        raise SystemExit(f"the {mode} run failed:\n{proc.stderr[-3000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--built", type=int, default=0)
    parser.add_argument("--child")
    parser.add_argument("--lab", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.calls, args.built, args.lab)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    from shaken.toolkit.lab import init_lab

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "lab"
        init_lab(directory, now=datetime.now(UTC))
        for mode in ("verify", "sign"):
            total = count(mode, args.calls, args.calls, directory)
            base = count(mode, 0, args.calls, directory)
            print(f"sip_{mode}_instructions_per_call={(total - base) // args.calls}")


if __name__ == "__main__":
    main()
