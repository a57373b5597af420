"""The HTTP server under the REST API: uvicorn (what ``serve_rest`` runs) against granian.

    .venv/bin/python bench/http_servers.py [--rounds 3] [--seconds 5] [--json]

The performance issue names granian (a Rust HTTP server for Python apps, ASGI and its own
RSGI interface) as a candidate for a lower per-request floor than uvicorn; this measures it.
Each case is one server process pinned to CPU 1, driven by ``wrk -t1 -c32`` pinned to CPU 0
with the peer harness's ``wrk-post-identities.lua`` (a different ATIS-1000082 verification
request per request, identities from its ``gen_identities.py``), requests per second, the
median of ``--rounds`` rounds that alternate the order of the cases:

* ``uvicorn floor``: a do-nothing ASGI app (reads the body, answers the constant verification
  response) under uvicorn with httptools and uvloop, configured as ``serve_rest`` configures it;
* ``granian asgi floor`` / ``granian rsgi floor``: the same app under granian (one worker, one
  runtime thread, uvloop), through its ASGI and its RSGI interface;
* ``shaken uvicorn``: ``serve_rest`` itself, the REST API with its limits (header and body
  deadlines, connection caps, the descriptor reserve), a warm certificate cache, no call log;
* ``shaken granian asgi``: the same application (``create_app`` on the same runtime) under
  granian's ASGI interface, without ``serve_rest``'s protocol-level limits, which granian does
  not let an application install.

Needs wrk and ``pip install granian`` (the granian cases are skipped, and say so, without it),
and the peer harness at ``../shared/bench-peers`` (or ``PEERS``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The REST profile's wrk run, port picking and uvicorn servers (bench/rest_profile.py, beside
# this): the uvicorn cases here are exactly its "http floor" and "http rest".
from rest_profile import _FLOOR, _REST, X5U, _free_port, _wrk

REPO = Path(__file__).resolve().parents[1]

_FLOOR_APP = """
BODY = b'{"verificationResponse":{"verstat":"TN-Validation-Passed"}}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})

class RsgiApp:
    async def __rsgi__(self, scope, protocol):
        await protocol()
        protocol.response_bytes(200, [("content-type", "application/json")], BODY)

rsgi = RsgiApp()
"""

_SHAKEN_APP = """
import os
from shaken.adapters.http.app import create_app
from shaken.adapters.wiring import build_runtime
from shaken.config import load_config

_runtime = build_runtime(load_config(os.environ["BENCH_CONFIG"]))
with open(os.environ["BENCH_CHAIN"], "rb") as _chain:
    _runtime.cache.import_chain(os.environ["BENCH_X5U"], _chain.read())
app = create_app(_runtime)
"""


def _peers() -> Path:
    peers = Path(os.environ.get("PEERS", REPO.parent / "shared" / "bench-peers"))
    if not (peers / "wrk-post-identities.lua").is_file():
        raise SystemExit(f"http_servers.py: no peer harness in {peers} (set PEERS)")
    return peers


def _granian(target: str, port: int, interface: str, work: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        interface,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--runtime-threads",
        "1",
        "--runtime-mode",
        "st",
        "--loop",
        "uvloop",
        "--no-ws",
        "--http",
        "1",
        "--log-level",
        "warning",
        "--working-dir",
        str(work),
        target,
    ]


def _command(case: str, port: int, work: Path) -> list[str]:
    if case == "uvicorn floor":
        return [sys.executable, "-c", _FLOOR, str(port)]  # the REST profile's own floor
    if case == "granian asgi floor":
        return _granian("floor_app:app", port, "asgi", work)
    if case == "granian rsgi floor":
        return _granian("floor_app:rsgi", port, "rsgi", work)
    if case == "shaken uvicorn":
        config, chain = str(work / "shaken.toml"), str(work / "sp-chain.pem")
        return [sys.executable, "-c", _REST, str(port), config, X5U, chain]
    if case == "shaken granian asgi":
        return _granian("shaken_app:app", port, "asgi", work)
    raise ValueError(case)


def _wait_ready(port: int, server: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the server did not start")


def _prepare(work: Path, peers: Path) -> None:
    subprocess.run(
        [sys.executable, str(peers / "make_pki.py"), str(work)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [
            sys.executable,
            str(peers / "gen_identities.py"),
            str(work / "sp.key"),
            X5U,
            "20000",
            str(work / "ids.csv"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    lines = (work / "ids.csv").read_text().splitlines()[1:]
    with (work / "ids.atis").open("w") as out:
        for line in lines:
            orig, dest, token, _date, x5u = line.split(";")[:5]
            out.write(f"{orig}|{dest}|{token};info=<{x5u}>;alg=ES256;ppt=shaken\n")
    (work / "shaken.toml").write_text(
        '[verification]\ntrust_anchors = ["ca.pem"]\nmax_iat_age = 3600\ncache_dir = "cache"\n\n'
        '[server]\nverification_open = true\napi_schema = "atis"\n'
    )
    (work / "floor_app.py").write_text(_FLOOR_APP)
    (work / "shaken_app.py").write_text(_SHAKEN_APP)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("http_servers.py: wrk is not installed (apt-get install wrk)")
    peers = _peers()
    cases = ["uvicorn floor", "shaken uvicorn"]
    if importlib.util.find_spec("granian") is not None:
        cases += ["granian asgi floor", "granian rsgi floor", "shaken granian asgi"]
    else:
        print(
            "granian is not installed (pip install granian): its cases are skipped", file=sys.stderr
        )
    samples: dict[str, list[float]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _prepare(work, peers)
        env = {
            **os.environ,
            "BENCH_CONFIG": str(work / "shaken.toml"),
            "BENCH_CHAIN": str(work / "sp-chain.pem"),
            "BENCH_X5U": X5U,
            "PYTHONPATH": os.pathsep.join(
                [str(work), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
        for round_ in range(args.rounds):
            order = cases if round_ % 2 == 0 else list(reversed(cases))
            for case in order:
                port = _free_port()
                server = subprocess.Popen(
                    ["taskset", "-c", "1", *_command(case, port, work)], env=env, cwd=work
                )
                try:
                    _wait_ready(port, server)
                    _wrk(port, work, peers, 2)  # warm-up: caches, the first validation
                    rps = _wrk(port, work, peers, args.seconds)
                finally:
                    server.terminate()
                    server.wait(30)
                samples[case].append(rps)
                print(f"  round {round_ + 1} {case}: {rps:,.0f} req/s", file=sys.stderr)
    medians = {case: statistics.median(values) for case, values in samples.items()}
    if args.json:
        print(json.dumps({"rounds": samples, "median_rps": medians}))
        return 0
    for case, rps in medians.items():
        print(f"{case.replace(' ', '_')}_rps={rps:.0f} ({1e6 / rps:.0f} us per request)")
    if "shaken granian asgi" in medians:
        ratio = medians["shaken granian asgi"] / medians["shaken uvicorn"]
        print(f"shaken_granian_vs_uvicorn={ratio:.2f}")
        floor = medians["granian asgi floor"] / medians["uvicorn floor"]
        print(f"floor_granian_asgi_vs_uvicorn={floor:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
