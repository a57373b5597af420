"""Instructions per call of the recipe paths, ECDSA excluded, counted with callgrind.

Wall-clock ratios move with the neighbours on a shared machine; instruction counts do not.
This runs ``shaken.verify_identity`` (warm: a validated certificate in hand) and
``shaken.sign_identity`` under ``valgrind --tool=callgrind`` with the ECDSA operation
stubbed out, N calls and 0 calls, and prints the difference divided by N; then the same for
raw ``cryptography`` ECDSA verify and sign (randomized and deterministic) for scale.

    .venv/bin/python bench/instructions.py [--calls 2000]

Needs valgrind (Debian package); takes about a minute.
"""

from __future__ import annotations

import argparse
import shutil

from callgrind import instructions  # bench/callgrind.py, beside this script


def child(mode: str, calls: int) -> None:
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    import shaken
    from shaken.core import jws, verify
    from shaken.testing import make_sti_pki

    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    pki = make_sti_pki(now)
    x5u = "https://cr.example.test/sp.pem"
    if mode == "verify":
        value = shaken.sign_identity(
            key=pki.leaf_key, x5u=x5u, orig="12025550100", dest="12025550101", attest="A", now=now
        )
        validated = verify.validate_certificate(pki.chain_pem, pki.trust_anchors, now=now)
        verify.verify_es256 = lambda key, data, sig: True  # type: ignore[assignment]
        jws.verify_es256 = verify.verify_es256  # type: ignore[assignment]
        for _ in range(calls):
            result = shaken.verify_identity(
                value,
                orig="12025550100",
                dest="12025550101",
                certificate=validated,
                trust_anchors=None,
                now=now,
            )
        assert calls == 0 or result.verified
    elif mode == "sign":
        real = pki.leaf_key
        fixed = real.sign(b"x", ec.ECDSA(hashes.SHA256()))

        class Stub:  # the ECDSA operation is what we leave out
            curve = real.curve

            def sign(self, data: bytes, algorithm: object) -> bytes:
                return fixed

        ec.EllipticCurvePrivateKey.register(Stub)
        key = Stub()
        for _ in range(calls):
            shaken.sign_identity(
                key=key,
                x5u=x5u,
                orig="12025550100",
                dest="12025550101",
                attest="A",
                now=now,  # type: ignore[arg-type]
            )
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        data = b"x" * 300
        algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=mode == "raw-sign-det")
        signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
        public = key.public_key()
        for _ in range(calls):
            if mode == "raw-verify":
                public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            else:
                key.sign(data, algorithm)


def count(mode: str, calls: int) -> int:
    return instructions(__file__, ["--child", mode, "--calls", str(calls)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.calls)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    for mode, calls in (
        ("verify", args.calls),
        ("sign", args.calls),
        ("raw-verify", 500),
        ("raw-sign", 500),
        ("raw-sign-det", 500),
    ):
        per_call = (count(mode, calls) - count(mode, 0)) // calls
        print(f"{mode}_instructions_per_call={per_call}")


if __name__ == "__main__":
    main()
