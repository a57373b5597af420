"""``shaken demo``: one signed call, verified, then tampered with and verified again.

Everything is made on the spot: a throwaway STI PKI (root, intermediate, SP certificate with a
TNAuthList SPC), a PASSporT signed with the SP key, and the certificate chain handed to the
verifier as if fetched from its x5u URL.
"""

from __future__ import annotations

import json
from typing import TextIO

from shaken import sign_identity, verify_identity
from shaken.core.identity import IdentityHeader
from shaken.core.jws import b64url_decode, b64url_encode
from shaken.core.passport import canonical_json
from shaken.core.result import VerificationResult
from shaken.services.ports import Clock, SystemClock
from shaken.testing import make_sti_pki

ORIG = "+1 202 555 0100"
DEST = "+1 202 555 0199"
SPOOFED = "12025550142"
X5U = "https://cr.example.test/sti/demo-sp.pem"


def spoof_orig(identity: str, orig_tn: str) -> str:
    """Rewrite the orig claim, keep the signature: what a spoofer would try."""
    header = IdentityHeader.parse(identity)
    head, payload, signature = header.token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims["orig"] = {"tn": orig_tn}
    forged = f"{head}.{b64url_encode(canonical_json(claims))}.{signature}"
    return IdentityHeader(token=forged, info=header.info, alg=header.alg, ppt=header.ppt).format()


def _show(title: str, result: VerificationResult, out: TextIO) -> None:
    print(f"\n== {title}", file=out)
    for check in result.checks:
        print("   " + check.describe(), file=out)
    if result.verified:
        print(
            f"   => VERIFIED: verstat={result.verstat.value}, attestation {result.attest},"
            f" SPC {result.spc}, certificate {result.certificate_subject}",
            file=out,
        )
    else:
        assert result.reason is not None
        print(
            f"   => NOT VERIFIED: {result.reason.value} -> SIP {result.sip_code}"
            f" {result.phrase}, verstat={result.verstat.value}",
            file=out,
        )


def run_demo(out: TextIO, clock: Clock | None = None) -> int:
    """Sign, verify, tamper and verify again at ``clock``'s now (the system clock's)."""
    now = (clock or SystemClock()).now().replace(microsecond=0)
    pki = make_sti_pki(now)
    print("shaken demo: a throwaway STI PKI (test material, never trust it)", file=out)
    print(f"   root:         {pki.root.subject.rfc4514_string()}", file=out)
    print(f"   intermediate: {pki.intermediate.subject.rfc4514_string()}", file=out)
    print(f"   SP cert:      {pki.leaf.subject.rfc4514_string()}", file=out)

    identity = sign_identity(
        key=pki.leaf_key_pem, x5u=X5U, orig=ORIG, dest=DEST, attest="A", now=now
    )
    print(f"\nSigned call {ORIG} -> {DEST} at attestation A:\n   Identity: {identity}", file=out)

    good = verify_identity(
        identity,
        orig=ORIG,
        dest=DEST,
        certificate=pki.chain_pem,
        trust_anchors=pki.root_pem,
        now=now,
    )
    _show("The call as signed", good, out)

    forged = spoof_orig(identity, SPOOFED)
    bad = verify_identity(
        forged,
        orig=SPOOFED,
        dest=DEST,
        certificate=pki.chain_pem,
        trust_anchors=pki.root_pem,
        now=now,
    )
    _show(f"The same PASSporT with orig rewritten to {SPOOFED}", bad, out)
    ok = good.verified and not bad.verified
    print("\nDemo " + ("succeeded." if ok else "FAILED: unexpected results."), file=out)
    return 0 if ok else 1
