"""Where a REST verification spends its time: HTTP server, REST layer, verification, ECDSA.

    python bench/rest_profile.py WORKDIR PEERS      # WORKDIR as bench/rest.sh leaves it

Run by ``PROFILE=1 bench/rest.sh``. Everything is pinned: the code measured to CPU 1, wrk (for
the HTTP cases) to CPU 0, so a figure is the cost on one core. Cases, each in microseconds per
request (the median over alternating rounds):

* ``ecdsa``: ``public_key.verify`` of the request's signature, the floor of any verifier;
* ``verify``: ``VerificationService.verify`` of the request's SipContext, warm cache;
* ``rest app``: the whole ASGI application called directly (headers, body, JSON, validation,
  verification, response, metrics), no sockets;
* ``rest layer``: the same with the verification service answering a stored result, i.e. the
  REST layer's own cost;
* ``http floor``: a do-nothing ASGI app (reads the body, answers a constant) under the same
  uvicorn/httptools/uvloop configuration as serve_rest, driven by wrk: 1e6 / requests per second;
* ``http rest``: serve_rest with one worker, driven by wrk the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

X5U = "https://certs.example.org/sp-chain.pem"


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def _bodies(work: Path) -> list[tuple[str, str, str, bytes]]:
    now = int(time.time())
    out = []
    for line in (work / "ids.atis").read_text().splitlines()[:2000]:
        orig, dest, identity = line.split("|", 2)
        request = {"from": {"tn": orig}, "to": {"tn": [dest]}, "time": now, "identity": identity}
        body = json.dumps({"verificationRequest": request}).encode()
        out.append((orig, dest, identity, body))
    return out


async def _in_process(work: Path) -> dict[str, float]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    from cryptography.x509 import load_pem_x509_certificate

    from shaken.adapters.http import create_app
    from shaken.adapters.wiring import build_runtime
    from shaken.config import load_config
    from shaken.core.context import SipContext
    from shaken.core.jws import b64url_decode

    runtime = build_runtime(load_config(work / "shaken.toml"))
    runtime.cache.import_chain(X5U, (work / "sp-chain.pem").read_bytes())
    app = create_app(runtime)
    verifier = runtime.profiles[None].verifier
    assert verifier is not None
    # A second app whose verification service answers at once with a stored result.
    stub_runtime = build_runtime(load_config(work / "shaken.toml"))
    stub_runtime.cache.import_chain(X5U, (work / "sp-chain.pem").read_bytes())
    stub_verifier = stub_runtime.profiles[None].verifier
    assert stub_verifier is not None
    bodies = _bodies(work)
    key = load_pem_x509_certificate((work / "sp.pem").read_bytes()).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    raw = []
    for _, _, identity, _ in bodies:
        token = identity.split(";", 1)[0]
        header, payload, signature = token.split(".")
        rs = b64url_decode(signature)
        der = encode_dss_signature(int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big"))
        raw.append((der, f"{header}.{payload}".encode()))
    contexts = [
        SipContext(identity=(identity,), from_header=f"<tel:{o}>", to=f"<tel:{d}>")
        for o, d, identity, _ in bodies
    ]

    stored = await verifier.verify(contexts[0])

    async def answer(context: SipContext, *, now: Any = None) -> Any:
        return stored

    stub_verifier.verify = answer  # type: ignore[method-assign]
    stub_app = create_app(stub_runtime)

    async def ecdsa(n: int) -> None:
        for i in range(n):
            der, data = raw[i % len(raw)]
            key.verify(der, data, ec.ECDSA(hashes.SHA256()))

    async def verify(n: int) -> None:
        for i in range(n):
            result = await verifier.verify(contexts[i % len(contexts)])
            assert result.verified

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def rest_app(n: int, app: Any = app) -> None:
        for i in range(n):
            body = bodies[i % len(bodies)][3]
            message = {"type": "http.request", "body": body, "more_body": False}

            async def receive(message: dict[str, Any] = message) -> dict[str, Any]:
                return message

            scope = {
                "type": "http",
                "method": "POST",
                "path": "/stir/v1/verification",
                "headers": [
                    (b"host", b"127.0.0.1"),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
            await app(scope, receive, send)
            sent.clear()

    async def rest_layer(n: int) -> None:
        await rest_app(n, stub_app)

    cases: dict[str, Callable[[int], Awaitable[None]]] = {
        "ecdsa": ecdsa,
        "verify": verify,
        "rest app": rest_app,
        "rest layer": rest_layer,
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for run in cases.values():
        await run(500)  # warm up
    for round_ in range(15):
        order = list(cases.items()) if round_ % 2 == 0 else list(reversed(cases.items()))
        for name, run in order:
            n = 2000
            start = time.perf_counter()
            await run(n)
            samples[name].append((time.perf_counter() - start) / n * 1e6)
    await runtime.aclose()
    await stub_runtime.aclose()
    return {name: statistics.median(values) for name, values in samples.items()}


_FLOOR = """
import asyncio, os, socket, sys
import uvicorn, uvloop
os.sched_setaffinity(0, {1})
BODY = b'{"verificationResponse":{"verstat":"TN-Validation-Passed"}}'
async def app(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]})
    await send({"type": "http.response.body", "body": BODY})
async def main():
    sock = socket.socket(); sock.bind(("127.0.0.1", int(sys.argv[1]))); sock.listen(2048)
    config = uvicorn.Config(app, loop="none", http="httptools", ws="none", lifespan="off",
        interface="asgi3", log_config=None, log_level="warning", access_log=False,
        server_header=False, proxy_headers=False)
    await uvicorn.Server(config).serve(sockets=[sock])
with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
    runner.run(main())
"""

_REST = """
import asyncio, os, sys
import uvloop
os.sched_setaffinity(0, {1})
from shaken.adapters.http import serve_rest
from shaken.adapters.wiring import build_runtime
from shaken.config import load_config
async def main():
    runtime = build_runtime(load_config(sys.argv[2]))
    runtime.cache.import_chain(sys.argv[3], open(sys.argv[4], "rb").read())
    await serve_rest(runtime, [f"http:127.0.0.1:{sys.argv[1]}"], None)
with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
    runner.run(main())
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wrk(port: int, work: Path, peers: Path, seconds: int) -> float:
    env = {**os.environ, "IDENTITIES": str(work / "ids.atis"), "BODY_FORMAT": "atis"}
    script = str(peers / "wrk-post-identities.lua")
    url = f"http://127.0.0.1:{port}/stir/v1/verification"
    out = subprocess.run(
        ["taskset", "-c", "0", "wrk", "-t1", "-c32", f"-d{seconds}s", "-s", script, url],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    return next(float(line.split()[1]) for line in out.splitlines() if "Requests/sec" in line)


def _http(work: Path, peers: Path) -> dict[str, float]:
    samples: dict[str, list[float]] = {"http floor": [], "http rest": []}
    for round_ in range(2):
        names = ["http floor", "http rest"] if round_ % 2 == 0 else ["http rest", "http floor"]
        for name in names:
            port = _free_port()
            code = _FLOOR if name == "http floor" else _REST
            args = [sys.executable, "-c", code, str(port)]
            if name == "http rest":
                args += [str(work / "shaken.toml"), X5U, str(work / "sp-chain.pem")]
            server = subprocess.Popen(args)
            try:
                time.sleep(2.0)
                _wrk(port, work, peers, 2)  # warm up
                samples[name].append(1e6 / _wrk(port, work, peers, 5))
            finally:
                server.terminate()
                server.wait()
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    work, peers = Path(sys.argv[1]), Path(sys.argv[2])
    _pin(1)
    figures = asyncio.run(_in_process(work))
    figures.update(_http(work, peers))
    rest_layer = figures["rest layer"]
    python = figures["verify"] - figures["ecdsa"]
    print("us per request, one core (median):", file=sys.stderr)
    for name, value in figures.items():
        print(f"  {name:<12} {value:8.1f}", file=sys.stderr)
    print(
        f"  = http server {figures['http floor']:.0f} + REST layer {rest_layer:.0f}"
        f" + verification {figures['verify']:.0f} (ECDSA {figures['ecdsa']:.0f},"
        f" Python {python:.0f}); measured over HTTP: {figures['http rest']:.0f}",
        file=sys.stderr,
    )
    for name, value in figures.items():
        print(f"profile_{name.replace(' ', '_')}_us={value:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
