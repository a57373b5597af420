"""Instructions per SIP and REST request, ECDSA included, as ratios to raw ECDSA in the same run.

The noise-free measure of issue "halve the CPU per SIP and REST request": a shared machine
moves wall-clock figures by half between runs; callgrind's instruction counts move by about
0.1 %. Each case runs the real code in process, with the lab's configuration, keys and a warm
certificate cache, and the real ECDSA operation (nothing stubbed):

* ``sip-verify`` / ``sip-sign``: what a UDP worker does for one call: the INVITE's bytes parsed
  (``parse_request``), ``SipHandler.handle`` (profile, server transaction, sign or warm verify,
  decision, the 302's bytes, the call record handed to the call log), the ACK absorbed;
* ``rest-verify`` / ``rest-sign``: one ATIS-1000082 request through the ASGI application as
  uvicorn calls it (scope, ``receive``, ``send``): API key, headers, JSON body, the service,
  the answer's bytes and the call record. uvicorn's own HTTP parsing (httptools, C) is not
  included: its floor is measured in BENCHMARKS.md with wrk;
* ``raw-verify`` / ``raw-sign``: one P-256 ECDSA verify, and one deterministic sign (RFC 6979,
  what signing does), through ``cryptography`` directly: the baseline.

Each case runs under ``valgrind --tool=callgrind`` with N requests and with 0 (the same set-up,
the same requests built) and the figure is the difference divided by N. The ratios printed
are request / raw (verify cases against raw verify, sign cases against raw sign); the goals
are SIP verification at most 2.0 and REST verification at most 2.5.

With ``--stages``, the SIP verification is also cut into what each step adds (parse only;
parse and the service's verification; the whole handler), for the per-request budget.

    .venv/bin/python bench/request_instructions.py [--calls 500] [--stages] [--json]

Needs valgrind (Debian package); takes about five minutes (ten with ``--stages``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from callgrind import instructions  # bench/callgrind.py, beside this script

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


class _Frozen:
    """The clock of every case: one instant, so a slow run (valgrind is 50x slower) never ages
    the PASSporTs built at set-up past ``max_iat_age``."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at


class _Sink:
    """The call log: records handed over, as the writer's queue takes them."""

    last: object = None

    def record(self, record: object) -> None:
        self.last = record


def _raw(mode: str, calls: int) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    data = b"x" * 300
    signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    public = key.public_key()
    deterministic = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    for _ in range(calls):
        if mode == "raw-verify":
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            key.sign(data, deterministic)


def _sip(mode: str, calls: int, built: int, directory: Path) -> None:
    """The SIP cases; a mode ending in ``-python`` stubs the ECDSA operation out, leaving the
    Python work alone (``bench/sip_instructions.py``)."""
    python_only = mode.endswith("-python")
    mode = mode.removesuffix("-python")
    from shaken.adapters.sip.codec import parse_request
    from shaken.adapters.sip.handler import Listener, Role, SipHandler
    from shaken.adapters.sip.handler import _context as sip_context
    from shaken.adapters.wiring import build_runtime
    from shaken.config import load_config
    from shaken.core.jws import load_private_key
    from shaken.core.sign import sign_shaken
    from shaken.toolkit.lab import open_lab

    lab = open_lab(directory)
    clock = _Frozen()
    runtime = build_runtime(load_config(lab.config), clock=clock)
    runtime.cache.import_chain(lab.x5u, lab.sp_chain.read_bytes())
    asyncio.run(runtime.cache.get(lab.x5u, now=clock.at))  # validated once, as a first call
    identity = None
    if mode in ("sip-verify", "stage-parse", "stage-service"):
        key = load_private_key(lab.sp_key.read_bytes())
        identity = sign_shaken(key=key, x5u=lab.x5u, orig=ORIG, dest=DEST, attest="A", now=clock.at)
    invites = [_message("INVITE", n, identity) for n in range(built)]
    acks = [_message("ACK", n, None) for n in range(built)]
    if mode == "stage-parse":
        for n in range(calls):
            parse_request(invites[n])
        return
    if mode == "stage-service":
        # Parsing, then the verification service's warm path on the request's parts.
        service = runtime.profiles[None].verifier
        assert service is not None
        now = clock.at
        result: object = None
        for n in range(calls):
            request = parse_request(invites[n])
            # The handler's own reading of the request's parts, not a copy of it.
            result = service.verify_warm(sip_context(request), now=now)
        assert calls == 0 or getattr(result, "verified", False), result
        return
    if python_only:
        from shaken.core import sign, verify

        fixed = bytes(64)
        verify.verify_es256 = lambda key, data, sig: True  # type: ignore[assignment]
        sign.sign_es256 = lambda key, data, deterministic=True: fixed  # type: ignore[assignment]
    handler = SipHandler(runtime, call_log=_Sink())  # type: ignore[arg-type]
    role = Role.SIGN if mode == "sip-sign" else Role.VERIFY
    listener = Listener("udp:127.0.0.1:5060", role)
    absorb_ack = handler.transactions.absorb_ack
    reply: object = None
    for n in range(calls):
        reply = handler.handle(parse_request(invites[n]), listener, SOURCE)
        assert isinstance(reply, bytes) and reply.startswith(b"SIP/2.0 302 "), reply
        assert absorb_ack(acks[n])
    if calls and mode == "sip-verify":
        assert isinstance(reply, bytes) and b"verstat=TN-Validation-Passed" in reply, reply
    elif calls:
        assert isinstance(reply, bytes) and b"\r\nIdentity: " in reply, reply
    asyncio.run(runtime.aclose())


def _rest(mode: str, calls: int, built: int, directory: Path) -> None:
    from shaken.adapters.http.app import create_app
    from shaken.adapters.wiring import build_runtime
    from shaken.config import load_config
    from shaken.core.jws import load_private_key
    from shaken.core.sign import sign_shaken
    from shaken.toolkit.lab import open_lab

    lab = open_lab(directory)
    api_key = (lab.directory / "secrets" / "rest-api-key").read_text().strip()
    clock = _Frozen()
    runtime = build_runtime(load_config(lab.config), clock=clock)
    runtime.cache.import_chain(lab.x5u, lab.sp_chain.read_bytes())
    asyncio.run(runtime.cache.get(lab.x5u, now=clock.at))
    app = create_app(runtime, call_log=_Sink(), clock=clock)  # type: ignore[arg-type]
    now = int(clock.at.timestamp())
    if mode == "rest-verify":
        key = load_private_key(lab.sp_key.read_bytes())
        identity = sign_shaken(key=key, x5u=lab.x5u, orig=ORIG, dest=DEST, attest="A", now=clock.at)
        path = b"/stir/v1/verification"
        body = {
            "verificationRequest": {
                "from": {"tn": ORIG},
                "to": {"tn": [DEST]},
                "time": now,
                "identity": identity,
            }
        }
    else:
        path = b"/stir/v1/signing"
        body = {
            "signingRequest": {
                "orig": {"tn": ORIG},
                "dest": {"tn": [DEST]},
                "attest": "A",
                "iat": now,
            }
        }
    payload = json.dumps(body).encode()
    headers = [
        (b"host", b"api"),
        (b"content-type", b"application/json"),
        (b"accept", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"x-api-key", api_key.encode()),
    ]
    scopes = [
        {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path.decode(),
            "raw_path": path,
            "query_string": b"",
            "headers": [*headers, (b"x-requestid", f"bench-{n:08d}".encode())],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8080),
        }
        for n in range(built)
    ]
    message = {"type": "http.request", "body": payload, "more_body": False}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    async def run() -> None:
        for n in range(calls):
            sent.clear()
            await app(scopes[n], receive, send)
            assert sent[0]["status"] == 200, sent

    asyncio.run(run())
    if calls:
        answer = json.loads(sent[-1]["body"])
        text = json.dumps(answer)
        assert ("TN-Validation-Passed" in text) if mode == "rest-verify" else ("identity" in text)
    asyncio.run(runtime.aclose())


def child(mode: str, calls: int, built: int, directory: Path) -> None:
    if mode.startswith("raw-"):
        _raw(mode, calls)
    elif mode.startswith("rest-"):
        _rest(mode, calls, built, directory)
    else:
        _sip(mode, calls, built, directory)


def count(mode: str, calls: int, built: int, directory: Path) -> int:
    return instructions(
        __file__,
        ["--child", mode, "--calls", str(calls), "--built", str(built), "--lab", str(directory)],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--stages", action="store_true", help="also the SIP verification's steps")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
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

    modes = ["raw-verify", "raw-sign", "sip-verify", "sip-sign", "rest-verify", "rest-sign"]
    if args.stages:
        modes += ["stage-parse", "stage-service"]
    per_call: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "lab"
        init_lab(directory, now=datetime.now(UTC))
        for mode in modes:
            total = count(mode, args.calls, args.calls, directory)
            base = count(mode, 0, args.calls, directory)
            per_call[mode] = (total - base) // args.calls
            print(f"{mode}: {per_call[mode]:,} instructions per request", file=sys.stderr)
    figures: dict[str, float | int] = dict(per_call)
    for mode in ("sip-verify", "rest-verify"):
        figures[f"{mode}_ratio"] = round(per_call[mode] / per_call["raw-verify"], 3)
    for mode in ("sip-sign", "rest-sign"):
        figures[f"{mode}_ratio"] = round(per_call[mode] / per_call["raw-sign"], 3)
    if args.json:
        print(json.dumps(figures))
        return
    for name, value in figures.items():
        if name.endswith("_ratio"):
            print(f"{name.replace('-', '_')}={value}")


if __name__ == "__main__":
    main()
