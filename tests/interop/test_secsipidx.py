"""Interoperability with secsipidx (asipto/secsipidx; Debian bookworm ships 1.2.0).

What these tests pin down about secsipidx 1.2.0 (each confirmed by a test below):

* ``-check`` only verifies with ``-fpubkey`` (it never fetches ``info``): without it, exit 255.
  ``-expire`` defaults to 0 (the token must be checked in the second it was signed), so we pass
  ``-expire 300``. The exit status is the negative library code modulo 256: 5 = -251 signature,
  3 = -253 signature size, 24 = -232 expired token, 25 = -231 payload ("empty payload" for the
  compact form), 51 = -205 x5u differs from info, 209/210/211 = -303/-302/-301 Identity ppt/alg/
  parse, 155 = -101 certificate invalid, 153 = -103 certificate expired.
* Chain verification works with ``-ca-file <root> -ca-inter <intermediate> -cert-verify 12``
  (4 custom roots + 8 custom intermediates; 13 adds the time check, 15 the system roots). Go's
  x509 accepts our ATIS-1000080 leaf (critical BasicConstraints and KeyUsage, no EKU, non-critical
  TNAuthList). Bit 4 without bit 8 ignores ``-ca-inter``; an intermediate that follows the leaf in
  the ``-fpubkey`` file is used though. Any non-zero mask runs Go's full verification, which checks
  validity against the system clock even without bit 1 (then the error is -101, not -103).
* ``-sign-full`` prints ``<jws>;info=<x5u>;alg=ES256;ppt=shaken`` (ppt unquoted), generates a UUID
  origid and **ignores** ``-iat`` (always the current time); ``-sign`` with parameters honours
  ``-iat``, writes ``"origid":""`` and prints the bare JWS; ``-sign`` with ``-header``/``-payload``
  signs the JSON text verbatim (whitespace, key order) unless ``-json-parse``. TNs are copied
  verbatim.
* secsipidx checks claims only by decoding them into a Go struct: wrong JSON types fail, but a
  future iat, a missing dest or origid, an empty TN and any attest pass; we reject those.

secsipidx reads the clock, so ``now`` here is the real current time.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

import shaken
from shaken.core.jws import b64url_decode, b64url_encode, generate_private_key, sign_es256
from shaken.core.passport import canonical_json, decode_token
from shaken.core.reasons import Reason
from shaken.core.sign import sign_shaken
from shaken.testing import StiPki, make_sti_pki

SECSIPIDX = shutil.which("secsipidx")
if SECSIPIDX is None:
    pytest.skip("secsipidx not installed", allow_module_level=True)

pytestmark = pytest.mark.real_clock(
    "secsipidx is a Go program: it reads the kernel's clock, which faketime does not shift"
)

X5U = "https://cr.example.test/sp.pem"
ORIG, DEST = "12025550100", "12025550101"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PEM = serialization.Encoding.PEM


def secsipidx(*args: str) -> subprocess.CompletedProcess[str]:
    assert SECSIPIDX is not None
    return subprocess.run(
        [SECSIPIDX, *args], capture_output=True, text=True, timeout=30, check=False
    )


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, output(proc)
    assert proc.stdout.split() == ["ok"], output(proc)


def assert_not_ok(proc: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    assert proc.returncode == code, output(proc)
    assert "not-ok" in proc.stdout.split(), output(proc)
    assert message in output(proc)


@dataclass(frozen=True, slots=True)
class Lab:
    """A PKI around the real current time, written to files secsipidx can read."""

    now: datetime
    pki: StiPki
    leaf: Path
    chain: Path
    intermediate: Path
    root: Path
    key: Path

    def verify(self, value: str, **overrides: Any) -> shaken.VerificationResult:
        args: dict[str, Any] = {
            "orig": ORIG,
            "dest": DEST,
            "certificate": self.pki.chain_pem,
            "trust_anchors": self.pki.root_pem,
            "now": self.now,
        }
        args.update(overrides)
        return shaken.verify_identity(value, **args)


def _write_lab(folder: Path, pki: StiPki, now: datetime) -> Lab:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "leaf": pki.leaf.public_bytes(PEM),
        "chain": pki.chain_pem,
        "intermediate": pki.intermediate.public_bytes(PEM),
        "root": pki.root_pem,
        "key": pki.leaf_key_pem,
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(data)
    return Lab(now=now, pki=pki, **paths)


@pytest.fixture(scope="module")
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, now: datetime) -> Lab:
    return _write_lab(tmp_path_factory.mktemp("lab"), make_sti_pki(now), now)


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory, now: datetime) -> Lab:
    """An unrelated PKI: its root does not anchor ``lab``."""
    return _write_lab(tmp_path_factory.mktemp("other"), make_sti_pki(now), now)


@pytest.fixture(scope="module")
def expired(tmp_path_factory: pytest.TempPathFactory, now: datetime) -> Lab:
    """A PKI whose leaf expired a minute ago."""
    pki = make_sti_pki(now, leaf_validity=(timedelta(days=30), timedelta(seconds=-60)))
    return _write_lab(tmp_path_factory.mktemp("expired"), pki, now)


def check(
    value: str, tmp_path: Path, pubkey: Path, *extra: str, expire: str | None = "300"
) -> subprocess.CompletedProcess[str]:
    """``secsipidx -check`` of an Identity header value, read from a file."""
    identity = tmp_path / "identity.txt"
    identity.write_text(value)
    args = ["-check", "-fidentity", str(identity), "-fpubkey", str(pubkey)]
    if expire is not None:
        args += ["-expire", expire]
    return secsipidx(*args, *extra)


def split(value: str) -> tuple[str, str, str, str]:
    """header_b64, payload_b64, signature_b64 and the ``;params`` of an Identity value."""
    token, _, params = value.partition(";")
    head, body, sig = token.split(".")
    return head, body, sig, ";" + params


def sign_claims(key: Any, claims: dict[str, Any], x5u: str = X5U) -> str:
    """An Identity value over exactly these claims (no validation on our side)."""
    head = b64url_encode(
        canonical_json({"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": x5u})
    )
    body = b64url_encode(canonical_json(claims))
    sig = b64url_encode(sign_es256(key, f"{head}.{body}".encode()))
    return f"{head}.{body}.{sig};info=<{x5u}>;alg=ES256;ppt=shaken"


def _claims(now: datetime, **changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "attest": "A",
        "dest": {"tn": [DEST]},
        "iat": int(now.timestamp()),
        "orig": {"tn": ORIG},
        "origid": "123e4567-e89b-12d3-a456-426655440000",
    }
    claims.update(changes)
    return claims


# --------------------------------------------------------------------------------------------
# Tokens we sign, checked by secsipidx.

SIGNERS: dict[str, Callable[[Lab], str]] = {
    "recipe": lambda lab: shaken.sign_identity(
        key=lab.pki.leaf_key_pem, x5u=X5U, orig=ORIG, dest=DEST, attest="A", now=lab.now
    ),
    "core-two-dests-attest-C": lambda lab: sign_shaken(
        key=lab.pki.leaf_key,
        x5u=X5U,
        orig="+1 (202) 555-0100",
        dest=[DEST, "12025550102"],
        attest="C",
        now=lab.now,
    ),
}


@pytest.mark.parametrize("signer", sorted(SIGNERS))
@pytest.mark.parametrize("pubkey", ["leaf", "chain"])
def test_secsipidx_accepts_our_identity(lab: Lab, tmp_path: Path, signer: str, pubkey: str) -> None:
    value = SIGNERS[signer](lab)
    assert_ok(check(value, tmp_path, getattr(lab, pubkey)))
    assert lab.verify(value).verified


@pytest.mark.parametrize("mask", ["12", "13", "15"])
def test_secsipidx_verifies_our_chain(lab: Lab, tmp_path: Path, mask: str) -> None:
    value = SIGNERS["recipe"](lab)
    chain_args = ("-ca-file", str(lab.root), "-ca-inter", str(lab.intermediate))
    assert_ok(check(value, tmp_path, lab.leaf, *chain_args, "-cert-verify", mask))


def test_secsipidx_takes_the_intermediate_from_the_pubkey_file(lab: Lab, tmp_path: Path) -> None:
    """Without bit 8, ``-ca-inter`` is unused, but an intermediate after the leaf is used."""
    value = SIGNERS["recipe"](lab)
    args = ("-ca-file", str(lab.root), "-cert-verify", "5")
    assert_ok(check(value, tmp_path, lab.chain, *args))
    without = check(value, tmp_path, lab.leaf, *args, "-ca-inter", str(lab.intermediate))
    assert_not_ok(without, 155, "certificate signed by unknown authority")


@pytest.mark.parametrize(
    ("case", "mask", "code", "message", "reason"),
    [
        ("system-roots-only", "1", 155, "certificate signed by unknown authority", None),
        ("other-root", "13", 155, "certificate signed by unknown authority", "untrusted"),
        ("expired-leaf-time-bit", "13", 153, "certificate expired", "expired"),
        ("expired-leaf-go-clock", "12", 155, "certificate has expired", "expired"),
    ],
)
def test_secsipidx_chain_rejections(
    lab: Lab,
    other: Lab,
    expired: Lab,
    tmp_path: Path,
    case: str,
    mask: str,
    code: int,
    message: str,
    reason: str | None,
) -> None:
    signer = expired if case.startswith("expired") else lab
    value = SIGNERS["recipe"](signer)
    args: list[str] = []
    if case != "system-roots-only":
        root = other.root if case == "other-root" else signer.root
        args = ["-ca-file", str(root), "-ca-inter", str(signer.intermediate)]
    proc = check(value, tmp_path, signer.leaf, *args, "-cert-verify", mask)
    assert_not_ok(proc, code, message)
    # We reject the same material for the same cause.
    if reason == "untrusted":
        ours = signer.verify(value, trust_anchors=other.pki.root_pem)
        assert ours.reason is Reason.CERT_UNTRUSTED
    elif reason == "expired":
        ours = signer.verify(value, certificate=expired.pki.chain_pem)
        assert ours.reason is Reason.CERT_EXPIRED


# --------------------------------------------------------------------------------------------
# Tampered tokens: secsipidx rejects them, and so do we.


def _tamper(case: str, lab: Lab, other: Lab) -> tuple[str, dict[str, Any]]:
    """A bad Identity value, and the verify_identity overrides under which it reaches its flaw."""
    value = SIGNERS["recipe"](lab)
    head, body, sig, params = split(value)
    if case == "signature-bit":
        raw = bytearray(b64url_decode(sig))
        raw[20] ^= 0x01
        return f"{head}.{body}.{b64url_encode(bytes(raw))}{params}", {}
    if case == "payload-swapped":
        claims = json.loads(b64url_decode(body))
        claims["orig"] = {"tn": "12025550199"}
        swapped = b64url_encode(canonical_json(claims))
        return f"{head}.{swapped}.{sig}{params}", {"orig": "12025550199"}
    if case == "other-key":
        return SIGNERS["recipe"](other), {}
    if case == "truncated-signature":
        return f"{head}.{body}.{sig[:40]}{params}", {}
    if case == "compact-form":
        return f"..{sig}{params}", {}
    if case == "info-mismatch":
        return f"{head}.{body}.{sig};info=<https://other.example.test/sp.pem>;alg=ES256", {}
    if case == "alg-param":
        return value.replace(";alg=ES256", ";alg=ES384"), {}
    if case == "ppt-param":
        return value.replace(";ppt=shaken", ";ppt=div"), {}
    if case == "stale-iat":
        stale = lab.now - timedelta(seconds=3600)
        return SIGNERS["recipe"](Lab(**{**_fields(lab), "now": stale})), {}
    raise AssertionError(case)


def _fields(lab: Lab) -> dict[str, Any]:
    return {name: getattr(lab, name) for name in Lab.__dataclass_fields__}


@pytest.mark.parametrize(
    ("case", "code", "message", "reason"),
    [
        ("signature-bit", 5, "ECDSA verification failed", Reason.BAD_SIGNATURE),
        ("payload-swapped", 5, "ECDSA verification failed", Reason.BAD_SIGNATURE),
        ("other-key", 5, "ECDSA verification failed", Reason.BAD_SIGNATURE),
        ("truncated-signature", 3, "signature size", Reason.BAD_SIGNATURE),
        ("compact-form", 25, "empty payload", Reason.COMPACT_FORM),
        ("info-mismatch", 51, "mismatching value for x5u and info", Reason.X5U_INFO_MISMATCH),
        ("alg-param", 210, "invalid value for alg", Reason.UNSUPPORTED_ALG),
        ("ppt-param", 209, "invalid value for ppt", Reason.PPT_MISMATCH),
        ("stale-iat", 24, "expired token", Reason.STALE_IAT),
    ],
)
def test_secsipidx_rejects_tampered_identity(
    lab: Lab, other: Lab, tmp_path: Path, case: str, code: int, message: str, reason: Reason
) -> None:
    value, overrides = _tamper(case, lab, other)
    assert_not_ok(check(value, tmp_path, lab.leaf), code, message)
    ours = lab.verify(value, **overrides)
    assert ours.reason is reason, ours.detail


def test_secsipidx_check_needs_fpubkey(lab: Lab, tmp_path: Path) -> None:
    identity = tmp_path / "identity.txt"
    identity.write_text(SIGNERS["recipe"](lab))
    proc = secsipidx("-check", "-fidentity", str(identity), "-expire", "300")
    assert_not_ok(proc, 255, "path to public key not provided")


def test_secsipidx_expire_defaults_to_zero(lab: Lab, tmp_path: Path) -> None:
    """A token two seconds old is 'expired' unless -expire is given."""
    value = sign_claims(lab.pki.leaf_key, _claims(lab.now - timedelta(seconds=2)))
    assert_not_ok(check(value, tmp_path, lab.leaf, expire=None), 24, "expired token")
    assert_ok(check(value, tmp_path, lab.leaf))


def test_secsipidx_accepts_a_future_iat_that_we_reject(lab: Lab, tmp_path: Path) -> None:
    value = sign_claims(lab.pki.leaf_key, _claims(lab.now + timedelta(hours=1)))
    assert_ok(check(value, tmp_path, lab.leaf))
    assert lab.verify(value).reason is Reason.STALE_IAT


CLAIM_VARIANTS: dict[str, tuple[dict[str, Any], int, Reason | None]] = {
    # name: (claim changes, secsipidx exit status, our Reason; None = verified)
    "attest-N": ({"attest": "N"}, 0, Reason.INVALID_ATTEST),
    "empty-orig-tn": ({"orig": {"tn": ""}}, 0, Reason.INVALID_CLAIM),
    "no-dest": ({"dest": None}, 0, Reason.MISSING_CLAIM),
    "no-origid": ({"origid": None}, 0, Reason.MISSING_CLAIM),
    "orig-json-string": ({"orig": json.dumps({"tn": ORIG})}, 25, Reason.INVALID_CLAIM),
    "iat-string": ({"iat": "string"}, 25, Reason.INVALID_CLAIM),
    "dest-tn-bare-string": ({"dest": {"tn": DEST}}, 25, None),
}


@pytest.mark.parametrize("variant", list(CLAIM_VARIANTS))
def test_claim_checks_compared(lab: Lab, tmp_path: Path, variant: str) -> None:
    """secsipidx decodes claims into a Go struct and checks nothing else: wrong JSON types fail
    (-231, exit 25), missing or empty claims and any attest pass. We reject all of those, but
    accept a bare-string dest.tn (RFC 8946's div-o example sends one)."""
    changes, code, reason = CLAIM_VARIANTS[variant]
    claims = _claims(lab.now)
    for name, value in changes.items():
        if value is None:
            del claims[name]
        elif value == "string":
            claims[name] = str(claims[name])
        else:
            claims[name] = value
    value = sign_claims(lab.pki.leaf_key, claims)
    proc = check(value, tmp_path, lab.leaf)
    if code == 0:
        assert_ok(proc)
    else:
        assert_not_ok(proc, code, "invalid payload")
    ours = lab.verify(value)
    assert ours.reason is reason, ours.detail
    assert ours.verified is (reason is None)


# --------------------------------------------------------------------------------------------
# Tokens secsipidx signs, verified by us.


def _sign_full(lab: Lab, *extra: str, attest: str = "A", orig: str = ORIG) -> str:
    proc = secsipidx(
        "-sign-full",
        "-fprvkey",
        str(lab.key),
        "-x5u",
        X5U,
        "-orig-tn",
        orig,
        "-dest-tn",
        DEST,
        "-attest",
        attest,
        *extra,
    )
    assert proc.returncode == 0, output(proc)
    return proc.stdout.strip()


def _at_iat(value: str, seconds: int = 1) -> datetime:
    """A verification time ``seconds`` after the token's iat."""
    iat = decode_token(value.partition(";")[0]).payload["iat"]
    return datetime.fromtimestamp(iat + seconds, UTC)


@pytest.mark.parametrize("attest", ["A", "B", "C"])
def test_we_verify_secsipidx_sign_full(lab: Lab, tmp_path: Path, attest: str) -> None:
    value = _sign_full(lab, attest=attest)
    assert value.endswith(f";info=<{X5U}>;alg=ES256;ppt=shaken")
    token = decode_token(value.split(";")[0])
    assert dict(token.header) == {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": X5U}
    assert set(token.payload) == {"attest", "dest", "iat", "orig", "origid"}
    assert UUID.fullmatch(token.payload["origid"])
    result = lab.verify(value, now=_at_iat(value))
    assert result.verified, f"{result.reason}: {result.detail}"
    assert (result.attest, result.orig, result.dest) == (attest, ORIG, (DEST,))
    assert result.origid == token.payload["origid"]
    assert_ok(check(value, tmp_path, lab.leaf))  # and secsipidx agrees with itself


def test_secsipidx_sign_full_ignores_iat(lab: Lab) -> None:
    value = _sign_full(lab, "-iat", "1700000000")
    iat = decode_token(value.split(";")[0]).payload["iat"]
    assert iat != 1700000000
    assert abs(iat - datetime.now(UTC).timestamp()) < 120
    assert lab.verify(value, now=_at_iat(value)).verified


def test_secsipidx_copies_tns_verbatim_and_we_canonicalize(lab: Lab) -> None:
    value = _sign_full(lab, orig="+1-202-555-0100")
    assert decode_token(value.split(";")[0]).payload["orig"] == {"tn": "+1-202-555-0100"}
    result = lab.verify(value, now=_at_iat(value))
    assert result.verified, f"{result.reason}: {result.detail}"


def test_we_verify_secsipidx_sign_with_parameters_and_iat(lab: Lab) -> None:
    iat = int(lab.now.timestamp()) - 30
    proc = secsipidx(
        "-sign",
        "-fprvkey",
        str(lab.key),
        "-x5u",
        X5U,
        "-orig-tn",
        ORIG,
        "-dest-tn",
        DEST,
        "-attest",
        "B",
        "-iat",
        str(iat),
    )
    assert proc.returncode == 0, output(proc)
    jws = proc.stdout.strip()
    assert ";" not in jws  # -sign prints the bare JWS
    payload = decode_token(jws).payload
    assert payload["iat"] == iat
    assert payload["origid"] == ""
    value = f"{jws};info=<{X5U}>;alg=ES256;ppt=shaken"
    result = lab.verify(value, now=datetime.fromtimestamp(iat + 2, UTC))
    assert result.verified, f"{result.reason}: {result.detail}"
    assert (result.attest, result.origid) == ("B", "")
    assert any(c.name == "claims" and "origid is not a UUID" in c.detail for c in result.checks)


RAW_HEADER = f'{{ "typ": "passport", "alg": "ES256", "x5u": "{X5U}", "ppt": "shaken" }}'


def _raw_payload(iat: int) -> str:
    """Claims JSON as a person types it: spaces, a newline, no key order."""
    return (
        f'{{"orig": {{"tn": "{ORIG}"}}, "dest": {{"tn": ["{DEST}"]}}, "iat": {iat},\n'
        ' "origid": "123e4567-e89b-12d3-a456-426655440000", "attest": "A"}'
    )


@pytest.mark.parametrize("mode", ["inline", "files", "json-parse"])
def test_we_verify_secsipidx_sign_of_raw_json(lab: Lab, tmp_path: Path, mode: str) -> None:
    """secsipidx signs the JSON text as given: we verify over the segments as received."""
    iat = int(lab.now.timestamp())
    payload = _raw_payload(iat)
    if mode == "files":
        (tmp_path / "header.json").write_text(RAW_HEADER)
        (tmp_path / "payload.json").write_text(payload)
        args = [
            "-fheader",
            str(tmp_path / "header.json"),
            "-fpayload",
            str(tmp_path / "payload.json"),
        ]
    else:
        args = ["-header", RAW_HEADER, "-payload", payload]
    if mode == "json-parse":
        args.append("-json-parse")
    proc = secsipidx("-sign", "-fprvkey", str(lab.key), *args)
    assert proc.returncode == 0, output(proc)
    jws = proc.stdout.strip()
    token = decode_token(jws)
    if mode == "json-parse":
        assert token.header_b64 == b64url_encode(canonical_json(json.loads(RAW_HEADER)))
        assert token.payload_b64 == b64url_encode(canonical_json(json.loads(payload)))
    else:
        assert b64url_decode(token.header_b64).decode() == RAW_HEADER
        assert b64url_decode(token.payload_b64).decode() == payload
    result = lab.verify(f"{jws};info=<{X5U}>;alg=ES256;ppt=shaken")
    assert result.verified, f"{result.reason}: {result.detail}"
    assert result.attest == "A"


def test_secsipidx_signature_with_a_foreign_key_fails_with_us(lab: Lab, tmp_path: Path) -> None:
    """secsipidx signs with any P-256 key it is given; the certificate decides for us."""
    stranger = tmp_path / "stranger.pem"
    stranger.write_bytes(
        generate_private_key().private_bytes(
            PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    foreign = Lab(**{**_fields(lab), "key": stranger})
    value = _sign_full(foreign)
    assert lab.verify(value, now=_at_iat(value)).reason is Reason.BAD_SIGNATURE
