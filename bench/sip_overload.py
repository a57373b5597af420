#!/usr/bin/env python3
"""The SIP verification listener under overload, beside Kamailio + secsipid, with sipp.

    .venv/bin/python bench/sip_overload.py [--workdir DIR] [--rates "2000 3000 ..."]
        [--duration 10] [--skip-kamailio] [--json]

What it measures, in one run on one machine (sipp, the server under test and its peer share
the cores):

1. The clean capacity: the highest rate of the ladder at which every call got a 302 with no
   INVITE retransmitted (5 s of calls per rate), as ``bench/sip.sh`` defines it.
2. At 2x and 3x that rate, for ``--duration`` seconds each: answered calls per second (302s),
   503s, calls that got no answer at all, and p50/p99 of the time from the INVITE's first send
   to its final answer (sipp's response-time distribution, 1 ms resolution), with the resident
   memory of the server's processes before and after.
   ``--factors`` sets the multiples: ``--factors 0.8`` is the decision latency at 80 % of the
   clean rate (the performance issue's latency figure), for both servers.
3. The same for Kamailio 5.6 + secsipid (2 children, bare public key, the peer harness's
   ``kamailio-verify.cfg``), where it runs.

The peer harness in ``../shared/bench-peers`` is used as is, never copied: ``make_pki.py`` (PKI),
``gen_identities.py`` (identities signed with pyca/cryptography, fresh for each run) and the
Kamailio configuration template. The scenario is ``bench/uac-overload.xml`` (the harness's
``uac-verify.xml`` with response-time measurement and a 503 branch). shaken runs as
``shaken serve`` with 2 workers on the same PKI, its certificate cache warm (``shaken cache
import``), the call log on, and the configuration's defaults otherwise: overload is shed by
queueing age (``udp_max_age_ms`` 100, answered 503).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCENARIO = HERE / "uac-overload.xml"
X5U = "https://certs.example.org/sp-chain.pem"


def peers_dir() -> Path:
    found = Path(os.environ.get("PEERS", REPO.parent / "shared" / "bench-peers"))
    if not (found / "gen_identities.py").exists():
        sys.exit(f"bench/sip_overload.py: the peer scripts are not at {found} (set PEERS=DIR)")
    return found


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def identities(peers: Path, work: Path, count: int) -> Path:
    path = work / "ids.csv"
    subprocess.run(
        [
            sys.executable,
            str(peers / "gen_identities.py"),
            str(work / "sp.key"),
            X5U,
            str(count),
            str(path),
        ],
        check=True,
    )
    return path


def run_sipp(peers: Path, work: Path, port: int, rate: int, seconds: float) -> dict[str, float]:
    """One sipp run of ``rate`` calls/s for ``seconds``; counts and latency percentiles."""
    calls = int(rate * seconds)
    ids = identities(peers, work, calls)
    run = Path(tempfile.mkdtemp(dir=work))
    started = time.monotonic()
    subprocess.run(
        [
            "sipp",
            "-sf",
            str(SCENARIO),
            "-inf",
            str(ids),
            f"127.0.0.1:{port}",
            "-m",
            str(calls),
            "-r",
            str(rate),
            "-l",
            "1000000",
            "-recv_timeout",
            "5000",
            "-timeout",
            f"{int(seconds) + 40}s",
            "-trace_rtt",
            "-rtt_freq",
            "1",
            "-trace_screen",
            "-nostdin",
            "-buff_size",
            str(8 * 1024 * 1024),  # sipp's own default (64 KB) loses bursts of answers
        ],
        cwd=run,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    elapsed = time.monotonic() - started
    screen = next(run.glob("*_screen.log")).read_text(errors="replace")
    counts = {"302": 0, "503": 0, "438": 0}
    retrans = 0
    for line in screen.splitlines():
        # "302 <---------- E-RTD1 15000 0 0 0": the name, the arrow, an RTD mark, the counts.
        parts = [p for p in line.split() if "RTD" not in p]
        if len(parts) >= 3 and parts[0] in counts and parts[1].startswith("<-"):
            counts[parts[0]] = max(counts[parts[0]], int(parts[2]))
        if len(parts) >= 4 and parts[0] == "INVITE" and parts[1].startswith("-"):
            retrans = max(retrans, int(parts[3]))
    times = []
    for rtt in run.glob("*_rtt.csv"):
        for line in rtt.read_text().splitlines()[1:]:
            fields = line.split(";")
            if len(fields) >= 2:
                times.append(float(fields[1]))
    times.sort()

    def pct(p: float) -> float:
        return times[min(len(times) - 1, int(p * len(times)))] if times else float("nan")

    shutil.rmtree(run, ignore_errors=True)
    answered = counts["302"] + counts["438"]
    return {
        "rate": rate,
        "calls": calls,
        "answered": answered,
        "answered_per_s": answered / seconds,
        "code_503": counts["503"],
        "no_answer": calls - answered - counts["503"],
        "invite_retrans": retrans,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "elapsed_s": round(elapsed, 1),
    }


def clean_capacity(peers: Path, work: Path, port: int, rates: list[int], label: str) -> int:
    best = 0
    for rate in rates:
        result = run_sipp(peers, work, port, rate, 5.0)
        print(f"  {label} ladder {result}", file=sys.stderr)
        if result["answered"] == result["calls"] and result["invite_retrans"] == 0:
            best = rate
        else:
            break
    return best


def overload(
    peers: Path,
    work: Path,
    port: int,
    pids: Callable[[], list[int]],
    clean: int,
    seconds: float,
    label: str,
    factors: list[float],
) -> dict[str, object]:
    out: dict[str, object] = {"clean_cps": clean}
    for factor in factors if clean else ():
        before = rss_kib(pids())
        result = run_sipp(peers, work, port, round(clean * factor), seconds)
        after = rss_kib(pids())
        result.update(rss_before_kib=before, rss_after_kib=after)
        print(f"  {label} {factor:g}x {result}", file=sys.stderr)
        out[f"x{factor:g}"] = result
    return out


def start_shaken(work: Path, port: int, call_log: bool = True) -> subprocess.Popen[bytes]:
    shaken = os.environ.get("SHAKEN", str(REPO / ".venv" / "bin" / "shaken"))
    (work / "sp.key").chmod(0o600)
    subprocess.run(
        [
            shaken,
            "cache",
            "import",
            str(work / "sp-chain.pem"),
            "--url",
            X5U,
            "--cache-dir",
            str(work / "cache"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    config = work / "shaken.toml"
    config.write_text(
        f"""# bench/sip_overload.py: shaken verifying on the peers' PKI.
[verification]
trust_anchors = ["{work / "ca.pem"}"]
cache_dir = "{work / "cache"}"

[server]
sip_verify = ["udp:127.0.0.1:{port}"]
listener_profiles = {{ "udp:127.0.0.1:{port}" = "global" }}
workers = 2
{f'call_log = "{work / "calls.sqlite"}"' if call_log else "# no call log (--no-call-log)"}
"""
    )
    subprocess.run([shaken, "config", "check", str(config)], check=True, stdout=subprocess.DEVNULL)
    out = (work / "serve.out").open("wb")
    server = subprocess.Popen(
        [shaken, "serve", "--config", str(config)],
        stdout=out,
        stderr=(work / "serve.log").open("wb"),
    )
    for _ in range(150):
        if b"ready" in (work / "serve.out").read_bytes():
            return server
        if server.poll() is not None:
            sys.exit((work / "serve.log").read_text())
        time.sleep(0.2)
    sys.exit("shaken serve did not start")


def start_kamailio(peers: Path, work: Path, port: int) -> subprocess.Popen[bytes] | None:
    if shutil.which("kamailio") is None:
        return None
    template = (peers / "kamailio-verify.cfg").read_text()
    config = work / "kamailio-verify.cfg"
    config.write_text(
        template.replace("#CHILDREN#", "2")
        .replace("#PORT#", str(port))
        .replace("#PUBKEY#", str(work / "pub.pem"))
    )
    process = subprocess.Popen(
        ["kamailio", "-f", str(config), "-P", str(work / "kam.pid"), "-DD", "-E"],
        stdout=subprocess.DEVNULL,
        stderr=(work / "kamailio.log").open("wb"),
    )
    time.sleep(2.0)
    return process if process.poll() is None else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--rates", default="2000 3000 4000 5000 6000 7000 8000 9000 10000")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--factors",
        default="2 3",
        help="offered rates as multiples of the clean rate; 0.8 gives the latency at 80%%",
    )
    parser.add_argument("--skip-kamailio", action="store_true")
    parser.add_argument("--skip-shaken", action="store_true")
    parser.add_argument(
        "--no-call-log", action="store_true", help="shaken without its call log (a knob)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    peers = peers_dir()
    work = args.workdir or Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, str(peers / "make_pki.py"), str(work)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    rates = [int(r) for r in args.rates.split()]
    factors = [float(f) for f in args.factors.split()]
    report: dict[str, object] = {}
    if not args.skip_shaken:
        server = start_shaken(work, 5192, call_log=not args.no_call_log)
        try:
            clean = clean_capacity(peers, work, 5192, rates, "shaken")
            report["shaken"] = overload(
                peers,
                work,
                5192,
                lambda: children(server.pid),
                clean,
                args.duration,
                "shaken",
                factors,
            )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    if not args.skip_kamailio:
        kamailio = start_kamailio(peers, work, 5170)
        if kamailio is not None:
            try:

                def kam_pids() -> list[int]:
                    return [kamailio.pid, *children(kamailio.pid)]

                clean = clean_capacity(peers, work, 5170, rates, "kamailio")
                report["kamailio"] = overload(
                    peers, work, 5170, kam_pids, clean, args.duration, "kamailio", factors
                )
            finally:
                kamailio.send_signal(signal.SIGTERM)
                kamailio.wait(30)
    if args.json:
        print(json.dumps(report))
    else:
        for name, figures in report.items():
            assert isinstance(figures, dict)
            print(f"{name}_clean_cps={figures['clean_cps']}")
            if not figures["clean_cps"]:
                continue
            for factor in (key for key in figures if key.startswith("x")):
                r = figures[factor]
                assert isinstance(r, dict)
                print(
                    f"{name}_{factor}: offered={r['rate']}/s answered/s={r['answered_per_s']:.0f}"
                    f" 503={r['code_503']} no_answer={r['no_answer']}"
                    f" p50={r['p50_ms']:.2f}ms p99={r['p99_ms']:.2f}ms"
                    f" rss_kib={r['rss_before_kib']}->{r['rss_after_kib']}"
                )
            clean = figures["clean_cps"]
            if "x3" in figures:
                x3 = figures["x3"]["answered_per_s"]
                print(f"{name}_x3_answered_vs_clean={x3 / clean if clean else float('nan'):.2f}")
    print(f"workdir={work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
