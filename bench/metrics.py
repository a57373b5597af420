"""What recording a request's metrics costs, as a share of one raw ECDSA verify (same run).

Run: ``.venv/bin/python bench/metrics.py``. A request records one counter increment and one
histogram observation. Measured three ways: plain prometheus-client instruments in a registry
(what shaken does: each worker counts in memory, and snapshots make one scrape answer for all
workers, see ``shaken.adapters.metrics``), the same instruments in prometheus-client's
multiprocess mode (an mmap write under a lock per update; the alternative that was measured
and not taken), and the raw ``cryptography`` ECDSA verify as the baseline. Pinned to one CPU;
medians of alternating rounds.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import os, sys, time, statistics
from prometheus_client import CollectorRegistry, Counter, Histogram
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
registry = CollectorRegistry()
counter = Counter("shaken_requests", "r", ("endpoint", "outcome", "reason"), registry=registry)
child = counter.labels("verification", "verified", "")
histogram = Histogram("shaken_verification_seconds", "s", registry=registry)
key = ec.generate_private_key(ec.SECP256R1())
data = b"x" * 200
signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
public = key.public_key()

def record():
    child.inc()
    histogram.observe(0.0001)

def verify():
    public.verify(signature, data, ec.ECDSA(hashes.SHA256()))

def rate(fn, n):
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n

record_ns, verify_ns = [], []
for _ in range(15):
    record_ns.append(rate(record, 20000))
    verify_ns.append(rate(verify, 2000))
print(statistics.median(record_ns), statistics.median(verify_ns))
"""


def run(multiprocess: bool) -> tuple[float, float]:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as directory:
        if multiprocess:
            env["PROMETHEUS_MULTIPROC_DIR"] = directory
        else:
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        cpu = sorted(os.sched_getaffinity(0))[-1]
        out = subprocess.run(
            ["taskset", "-c", str(cpu), sys.executable, "-c", CHILD],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    for name, mode in (("plain", False), ("multiprocess", True)):
        samples = [run(mode) for _ in range(3)]
        record = statistics.median(s[0] for s in samples)
        verify = statistics.median(s[1] for s in samples)
        print(
            f"{name:13} record {record / 1000:.2f} us per request,"
            f" raw verify {verify / 1000:.1f} us: {record / verify:.1%} of one raw verify"
        )


if __name__ == "__main__":
    main()
