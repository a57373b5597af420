"""The core recipe path on one core, against raw ``cryptography`` ECDSA in the same run.

Run it with ``.venv/bin/python bench/core.py`` (``--quick`` for a ~5 s smoke run, ``--json``
for one JSON object on stdout, ``--profile`` for where the non-crypto time of verify goes).

What is measured, per operation:

* ``verify`` (ours, warm): ``shaken.verify_identity`` with a :class:`ValidatedCertificate`
  already in hand, as a certificate cache holds it. That is the full warm path: Identity header
  parse, JWS decode, PASSporT header and claims checks, iat freshness, From/To parsing, TN
  canonicalization and orig/dest match, x5u policy, TN scope, the ES256 signature check and the
  :class:`VerificationResult`.
* ``verify`` (ours, cold): the same with the chain PEM and trust anchors, so the chain is
  validated on every call. Informational only; no goal applies to it.
* ``verify`` (raw): ``public_key.verify(der_sig, signing_input, ECDSA(SHA256))`` on the very
  bytes and key that the warm path checks.
* ``sign`` (ours): ``shaken.sign_identity`` with a key object (a fresh origid every call).
* ``sign`` (raw): ``private_key.sign(signing_input, ECDSA(SHA256))``, and the deterministic
  (RFC 6979) variant that ``shaken`` uses per RFC 8225 section 4.2.

Method: machines are shared and noisy, so only ratios measured in the same run mean anything.
The process is pinned to one CPU; each case is warmed up and calibrated to a fixed block
duration; then rounds run every case once, in alternating order (A B C ... then ... C B A) so
that drift hits every case alike; each round yields ops/s for every case and the figure is the
median over rounds. ``ratio = median ops/s (ours) / median ops/s (raw)``; the median of the
per-round (paired) ratios is printed beside it as a check on noise.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import itertools
import json
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cryptography
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

import shaken
from shaken.core.jws import b64url_decode
from shaken.core.verify import ValidatedCertificate, validate_certificate
from shaken.testing import StiPki, make_sti_pki

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
ORIG = "12025550100"
DEST = "12025550101"
X5U = "https://cert.example.test/sti/1234/sp.pem"

VERIFY_GOAL = 0.80
SIGN_GOAL = 0.70


@dataclass(frozen=True, slots=True)
class Mode:
    rounds: int
    block_s: float
    warmup_s: float
    profile_calls: int


FULL = Mode(rounds=41, block_s=0.100, warmup_s=0.5, profile_calls=5000)
QUICK = Mode(rounds=15, block_s=0.040, warmup_s=0.1, profile_calls=1000)


@dataclass(slots=True)
class Case:
    key: str
    label: str
    op: Callable[[], object]
    informational: bool = False
    per_block: int = 1
    samples: list[float] = field(default_factory=list)  # ops/s, one per round

    @property
    def ops(self) -> float:
        return statistics.median(self.samples)

    def quartiles(self) -> tuple[float, float]:
        if len(self.samples) < 4:
            return min(self.samples), max(self.samples)
        q = statistics.quantiles(self.samples, n=4)
        return q[0], q[2]


# --------------------------------------------------------------------------------------------
# Fixtures


@dataclass(frozen=True, slots=True)
class Fixture:
    pki: StiPki
    validated: ValidatedCertificate
    identity: str
    signing_input: bytes
    der_signature: bytes
    public_key: ec.EllipticCurvePublicKey
    private_key: ec.EllipticCurvePrivateKey


def make_fixture() -> Fixture:
    pki = make_sti_pki(NOW)
    validated = validate_certificate(pki.chain_pem, pki.trust_anchors, now=NOW)
    identity = shaken.sign_identity(
        key=pki.leaf_key, x5u=X5U, orig=ORIG, dest=DEST, attest="A", now=NOW
    )
    # The raw baseline checks exactly the bytes the recipe checks: the received
    # "header.payload" segments and the JOSE R || S signature re-encoded as DER.
    token = identity.partition(";")[0]
    header_b64, payload_b64, signature_b64 = token.split(".")
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    jose = b64url_decode(signature_b64)
    der_signature = encode_dss_signature(
        int.from_bytes(jose[:32], "big"), int.from_bytes(jose[32:], "big")
    )
    return Fixture(
        pki=pki,
        validated=validated,
        identity=identity,
        signing_input=signing_input,
        der_signature=der_signature,
        public_key=validated.public_key,
        private_key=pki.leaf_key,
    )


def make_cases(fx: Fixture) -> list[Case]:
    verify_identity = shaken.verify_identity
    sign_identity = shaken.sign_identity
    identity, validated = fx.identity, fx.validated
    chain_pem, anchors = fx.pki.chain_pem, fx.pki.trust_anchors
    data, der_sig = fx.signing_input, fx.der_signature
    raw_verify, raw_sign = fx.public_key.verify, fx.private_key.sign
    private_key = fx.private_key
    # Built once, as shaken.core.jws does, so neither side pays for the object per call.
    ecdsa = ec.ECDSA(hashes.SHA256())
    ecdsa_det = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)

    def verify_warm() -> object:
        return verify_identity(
            identity, orig=ORIG, dest=DEST, certificate=validated, trust_anchors=None, now=NOW
        )

    def verify_cold() -> object:
        return verify_identity(
            identity, orig=ORIG, dest=DEST, certificate=chain_pem, trust_anchors=anchors, now=NOW
        )

    def verify_raw() -> object:
        return raw_verify(der_sig, data, ecdsa)

    loads = json.loads

    def verify_floor() -> object:
        # The least any verifier does with cryptography: split the header, decode the three
        # segments and the two JSON objects, re-encode the signature as DER and verify it.
        # No check, no result object: the ceiling of a verifier written in Python.
        token = identity.partition(";")[0]
        h64, p64, s64 = token.split(".")
        loads(b64url_decode(h64))
        loads(b64url_decode(p64))
        jose = b64url_decode(s64)
        der = encode_dss_signature(
            int.from_bytes(jose[:32], "big"), int.from_bytes(jose[32:], "big")
        )
        return raw_verify(der, f"{h64}.{p64}".encode("ascii"), ecdsa)

    def sign_ours() -> object:
        return sign_identity(key=private_key, x5u=X5U, orig=ORIG, dest=DEST, attest="A", now=NOW)

    def sign_raw() -> object:
        return raw_sign(data, ecdsa)

    def sign_raw_det() -> object:
        return raw_sign(data, ecdsa_det)

    # Correctness first: a benchmark of a failing path measures nothing.
    for name, result in (("warm", verify_warm()), ("cold", verify_cold())):
        if not getattr(result, "verified", False):
            raise SystemExit(f"the {name} verify fixture does not verify: {result!r}")
    verify_raw()  # raises InvalidSignature if the baseline bytes were wrong
    fresh = verify_identity(
        str(sign_ours()), orig=ORIG, dest=DEST, certificate=validated, trust_anchors=None, now=NOW
    )
    if not fresh.verified:
        raise SystemExit(f"a freshly signed header does not verify: {fresh!r}")
    if sign_raw_det() != sign_raw_det():
        raise SystemExit("deterministic_signing=True did not give deterministic signatures")

    return [
        Case("verify_ours", "verify  ours (warm, cached cert)", verify_warm),
        Case("verify_raw", "verify  raw ECDSA P-256", verify_raw),
        Case("sign_ours", "sign    ours (sign_identity)", sign_ours),
        Case("sign_raw", "sign    raw ECDSA P-256", sign_raw),
        Case("sign_raw_det", "sign    raw ECDSA P-256 deterministic", sign_raw_det),
        Case("verify_cold", "verify  ours (cold, chain each call)", verify_cold, True),
        Case("verify_floor", "verify  floor (decode + raw verify)", verify_floor, True),
    ]


# --------------------------------------------------------------------------------------------
# Timing


def _time_block(op: Callable[[], object], n: int) -> int:
    counter = time.perf_counter_ns
    repeat = itertools.repeat
    start = counter()
    for _ in repeat(None, n):
        op()
    return counter() - start


def calibrate(case: Case, mode: Mode) -> None:
    """Warm the case up for ``warmup_s`` and size its block to about ``block_s``."""
    n, spent, done = 1, 0, 0
    deadline = mode.warmup_s * 1e9
    while spent < deadline:
        spent += _time_block(case.op, n)
        done += n
        n = min(n * 2, max(1, done))
    per_op = spent / done
    case.per_block = max(1, round(mode.block_s * 1e9 / per_op))


def run_rounds(cases: list[Case], mode: Mode, log: Callable[[str], None]) -> None:
    gc.collect()
    gc.freeze()  # the fixtures are long-lived; keep them out of every collection
    for r in range(mode.rounds):
        order = cases if r % 2 == 0 else cases[::-1]
        for case in order:
            ns = _time_block(case.op, case.per_block)
            case.samples.append(case.per_block * 1e9 / ns)
        if (r + 1) % 10 == 0:
            log(f"  round {r + 1}/{mode.rounds}")
    gc.unfreeze()


def paired_ratio(ours: Case, raw: Case) -> float:
    return statistics.median(a / b for a, b in zip(ours.samples, raw.samples, strict=True))


# --------------------------------------------------------------------------------------------
# Machine


def pin_cpu(requested: int | None) -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    cpu = requested if requested is not None else allowed[-1]
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return None
    return cpu


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(cpu: int | None) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "pinned_cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cryptography": cryptography.__version__,
        "openssl": openssl_backend.openssl_version_text(),
        "shaken": shaken.__version__,
        "platform": platform.platform(),
    }


# --------------------------------------------------------------------------------------------
# Profile (--profile)


def stage_breakdown(fx: Fixture, calls: int) -> list[tuple[str, float]]:
    """Microseconds per call of the pieces of the warm verify path, timed one by one.

    These call ``shaken.core`` internals, which move; a stage that no longer fits is reported
    as unavailable rather than stopping the benchmark.
    """
    from shaken.core.chain import check_tn_scope
    from shaken.core.context import SipContext, called_identities, caller_identities
    from shaken.core.identity import IdentityHeader
    from shaken.core.jws import verify_es256
    from shaken.core.passport import PassportClaims, PassportHeader, decode_token
    from shaken.core.verify import complete, prepare
    from shaken.core.x5u import check_x5u

    ctx = SipContext(identity=(fx.identity,), from_header=f"<tel:{ORIG}>", to=f"<tel:{DEST}>")
    header = IdentityHeader.parse(fx.identity)
    token = decode_token(header.token)
    jose = token.signature
    certs = {X5U: fx.validated}
    ecdsa = ec.ECDSA(hashes.SHA256())

    def prepare_and_complete() -> object:
        plan = prepare(ctx, now=NOW)
        return complete(plan, certs, None, now=NOW)  # type: ignore[arg-type]

    stages: list[tuple[str, Callable[[], object]]] = [
        (
            "verify_identity (whole warm path)",
            lambda: shaken.verify_identity(
                fx.identity,
                orig=ORIG,
                dest=DEST,
                certificate=fx.validated,
                trust_anchors=None,
                now=NOW,
            ),
        ),
        ("  prepare + complete", prepare_and_complete),
        ("  prepare (checks 1-11, no crypto)", lambda: prepare(ctx, now=NOW)),
        ("    IdentityHeader.parse", lambda: IdentityHeader.parse(fx.identity)),
        ("    decode_token (b64url + strict JSON)", lambda: decode_token(header.token)),
        ("    PassportHeader.from_json", lambda: PassportHeader.from_json(token.header)),
        (
            "    PassportClaims.from_json",
            lambda: PassportClaims.from_json(token.payload, ppt="shaken"),
        ),
        (
            "    caller_identities + called_identities",
            lambda: (caller_identities(ctx), called_identities(ctx)),
        ),
        ("    check_x5u", lambda: check_x5u(X5U)),
        ("  check_tn_scope (per call)", lambda: check_tn_scope(fx.validated.chain, ORIG)),
        (
            "  verify_es256 (JOSE->DER + verify)",
            lambda: verify_es256(fx.public_key, fx.signing_input, jose),
        ),
        (
            "  raw public_key.verify",
            lambda: fx.public_key.verify(fx.der_signature, fx.signing_input, ecdsa),
        ),
    ]
    # Interleaved like the main rounds (every stage once per round). The minimum over rounds
    # is the usual microbenchmark estimator: on a shared machine noise only ever adds time.
    n, rounds = max(20, calls // 25), 15
    samples: dict[str, list[float]] = {name: [] for name, _ in stages}
    broken: dict[str, str] = {}
    for _ in range(rounds):
        for name, op in stages:
            if name in broken:
                continue
            try:
                samples[name].append(_time_block(op, n) / n / 1000)
            except Exception as exc:  # an internal moved; say so and go on
                broken[name] = f"{type(exc).__name__}: {exc}"
    out: list[tuple[str, float]] = []
    for name, _ in stages:
        if name in broken:
            out.append((f"{name} [unavailable: {broken[name]}]", float("nan")))
        else:
            out.append((name, min(samples[name])))
    return out


# How cProfile names the two ECDSA entry points of cryptography's Rust bindings.
_ECDSA_PROFILE_NAMES = frozenset(
    {
        "<method 'verify' of 'cryptography.hazmat.bindings._rust.openssl.ec.ECPublicKey' objects>",
        "<method 'sign' of 'cryptography.hazmat.bindings._rust.openssl.ec.ECPrivateKey' objects>",
    }
)


def cprofile_top(op: Callable[[], object], calls: int, top: int) -> tuple[str, float, float]:
    """(pstats text, total seconds, seconds inside ECDSA verify/sign) for ``calls`` runs."""
    for _ in range(min(calls, 200)):
        op()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        op()
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(top)
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    crypto = sum(
        v[2]
        for (filename, _line, func), v in raw.items()
        if filename == "~" and func in _ECDSA_PROFILE_NAMES
    )
    text = buf.getvalue()
    # Drop the pstats preamble up to the column header.
    start = text.find("   ncalls")
    return (text[start:] if start >= 0 else text).rstrip(), total, crypto


def profile_report(fx: Fixture, calls: int, log: Callable[[str], None]) -> dict[str, Any]:
    cases = {c.key: c for c in make_cases(fx)}
    log("")
    log("== stage breakdown of the warm verify (us/call, min of 15 interleaved rounds) ==")
    stages = stage_breakdown(fx, calls)
    whole = stages[0][1]
    for name, us in stages:
        log(f"  {name:<56} {us:9.1f} us  {us / whole:6.1%}")
    result: dict[str, Any] = {"stages_us": dict(stages)}
    for key, what in (("verify_ours", "warm verify_identity"), ("sign_ours", "sign_identity")):
        text, total, crypto = cprofile_top(cases[key].op, calls, 15)
        share = crypto / total if total else float("nan")
        log("")
        log(f"== cProfile: {calls} x {what}, top 15 by tottime ==")
        log(
            f"  profiled total {total / calls * 1e6:.1f} us/call; ECDSA inside cryptography "
            f"{crypto / calls * 1e6:.1f} us/call ({share:.0%}); the rest is Python"
            " (cProfile inflates the Python share)"
        )
        log(text)
        result[key] = {
            "profiled_us_per_call": total / calls * 1e6,
            "ecdsa_us_per_call": crypto / calls * 1e6,
            "top": text,
        }
    return result


# --------------------------------------------------------------------------------------------
# Main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~5 s run instead of ~30 s")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--profile", action="store_true", help="also profile the warm verify")
    parser.add_argument("--rounds", type=int, help="rounds (default 41, quick 15)")
    parser.add_argument("--block-ms", type=float, help="target ms per case per round")
    parser.add_argument("--cpu", type=int, help="CPU to pin to (default: the last allowed)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    args = parser.parse_args(argv)

    mode = QUICK if args.quick else FULL
    if args.rounds is not None or args.block_ms is not None:
        mode = Mode(
            rounds=args.rounds if args.rounds is not None else mode.rounds,
            block_s=args.block_ms / 1000 if args.block_ms is not None else mode.block_s,
            warmup_s=mode.warmup_s,
            profile_calls=mode.profile_calls,
        )
    human = sys.stderr if args.json else sys.stdout

    def log(line: str) -> None:
        print(line, file=human, flush=True)

    cpu = None if args.no_pin else pin_cpu(args.cpu)
    machine = machine_info(cpu)
    started = time.perf_counter()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

    fx = make_fixture()
    cases = make_cases(fx)
    log(
        f"bench/core.py: {mode.rounds} rounds, ~{mode.block_s * 1000:.0f} ms per case per round,"
        f" interleaved; pinned to CPU {cpu if cpu is not None else '(not pinned)'}"
    )
    log(
        f"machine: nproc={machine['nproc']}, {machine['cpu_model']}, Python {machine['python']},"
        f" cryptography {machine['cryptography']} ({machine['openssl']})"
    )
    for case in cases:
        calibrate(case, mode)
    run_rounds(cases, mode, log)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None

    by = {c.key: c for c in cases}
    verify_ratio = by["verify_ours"].ops / by["verify_raw"].ops
    sign_ratio = by["sign_ours"].ops / by["sign_raw"].ops
    sign_ratio_det = by["sign_ours"].ops / by["sign_raw_det"].ops

    log("")
    log(f"{'case':<40} {'ops/s':>9} {'us/op':>8}   {'IQR ops/s':>17}  {'ops/block':>9}")
    for case in cases:
        lo, hi = case.quartiles()
        note = "  (informational)" if case.informational else ""
        log(
            f"{case.label:<40} {case.ops:9,.0f} {1e6 / case.ops:8.1f}   "
            f"{lo:8,.0f}-{hi:<8,.0f}  {case.per_block:9d}{note}"
        )
    log("")
    log(
        f"verify: ours/raw = {verify_ratio:.3f} (paired median "
        f"{paired_ratio(by['verify_ours'], by['verify_raw']):.3f}); goal >= {VERIFY_GOAL:.2f}"
        f" {'met' if verify_ratio >= VERIFY_GOAL else 'NOT met'}"
    )
    log(
        f"sign:   ours/raw = {sign_ratio:.3f} (paired median "
        f"{paired_ratio(by['sign_ours'], by['sign_raw']):.3f}); goal >= {SIGN_GOAL:.2f}"
        f" {'met' if sign_ratio >= SIGN_GOAL else 'NOT met'}"
    )
    log(
        f"sign:   ours/raw deterministic (what shaken does, RFC 8225 4.2) = {sign_ratio_det:.3f}"
        f" (paired median {paired_ratio(by['sign_ours'], by['sign_raw_det']):.3f})"
    )
    log(
        f"cold verify (chain validated per call): {by['verify_cold'].ops:,.0f} ops/s,"
        f" {by['verify_cold'].ops / by['verify_raw'].ops:.3f} x raw verify"
    )
    log(
        f"verify floor (decode the token, raw verify; no checks): "
        f"{by['verify_floor'].ops / by['verify_raw'].ops:.3f} x raw verify"
    )
    log(f"elapsed {elapsed:.1f} s; load average before {load_before}, after {load_after}")
    if not args.json:
        print(f"verify_ratio={verify_ratio:.2f}")
        print(f"sign_ratio={sign_ratio:.2f}")

    profile = profile_report(fx, mode.profile_calls, log) if args.profile else None

    if args.json:
        figures: dict[str, Any] = {
            "verify_ratio": round(verify_ratio, 4),
            "sign_ratio": round(sign_ratio, 4),
            "sign_ratio_deterministic_baseline": round(sign_ratio_det, 4),
            "verify_ratio_paired": round(paired_ratio(by["verify_ours"], by["verify_raw"]), 4),
            "sign_ratio_paired": round(paired_ratio(by["sign_ours"], by["sign_raw"]), 4),
            "cold_verify_ratio": round(by["verify_cold"].ops / by["verify_raw"].ops, 4),
            "floor_verify_ratio": round(by["verify_floor"].ops / by["verify_raw"].ops, 4),
            "goals": {"verify_ratio": VERIFY_GOAL, "sign_ratio": SIGN_GOAL},
            "goals_met": verify_ratio >= VERIFY_GOAL and sign_ratio >= SIGN_GOAL,
            "ops_per_s": {c.key: round(c.ops, 1) for c in cases},
            "iqr_ops_per_s": {c.key: [round(x, 1) for x in c.quartiles()] for c in cases},
            "ops_per_block": {c.key: c.per_block for c in cases},
            "rounds": mode.rounds,
            "block_ms": mode.block_s * 1000,
            "elapsed_s": round(elapsed, 2),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "machine": machine,
        }
        if profile is not None:
            figures["profile"] = profile
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
