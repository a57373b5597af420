"""Every token case of the third-party corpora, driven through our verifier.

Sources (see the README of each folder of the shared corpus): libstirshaken (MIT),
asterisk-testsuite (GPL-2.0), yeti-sems (GPL-2.0-or-later), stirshaken-scenarios (MIT) and RFC
examples (IETF). The MIT and IETF files are vendored in ``tests/data/corpus`` so their cases always
run; the GPL files are never copied: they are read from the shared corpus (``shared/corpus``
beside the repository) and their cases skip, saying why, when it is absent.

Each case is verified the way a SIP peer would meet it: an ``identity-header`` value as found; a
bare token (``passport``, ``spc-token``, ``jws``) wrapped as ``<token>;info=<x5u>;alg=ES256``
(plus ``;ppt=`` when its header has one) with the x5u of its own header; ``claims-only`` signed
with a throwaway key. ``now`` is the token's iat plus 2 s and the caller and callee are the
token's own orig and dest where usable, so that freshness and the TN binding never hide the
Reason a case is about. Certificates are the corpus files a case names.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

import shaken
from shaken.core.certs import TNAUTHLIST_OID, Spc, TNAuthList
from shaken.core.errors import PassportError
from shaken.core.jws import (
    PublicKey,
    b64url_decode,
    b64url_encode,
    generate_private_key,
    load_private_key,
    load_public_key,
    same_public_key,
    sign_es256,
    verify_es256,
)
from shaken.core.passport import PassportClaims, canonical_json, decode_token
from shaken.core.reasons import REASONS, Reason
from shaken.core.verify import SHAKEN
from shaken.testing import StiPki, make_sti_pki

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
VENDORED = REPO / "tests" / "data" / "corpus"

SOURCES = (
    "libstirshaken",
    "asterisk-testsuite",
    "yeti-sems",
    "stirshaken-scenarios",
    "rfc-examples",
)
VENDORED_SOURCES = ("libstirshaken", "stirshaken-scenarios", "rfc-examples")
GPL_SOURCES = ("asterisk-testsuite", "yeti-sems")

if not SHARED.is_dir() and not VENDORED.is_dir():
    pytest.skip(
        f"token corpus absent: no shared corpus at {SHARED} and no vendored copy at {VENDORED}",
        allow_module_level=True,
    )

# The CA each source's certificates chain to; sources without one get a throwaway root.
ANCHOR_FILES = {
    "libstirshaken": "certs/ca.pem",
    "asterisk-testsuite": "keys/astdev-ca.crt",
    "yeti-sems": "test.pem",
}
DEFAULT_INFO = "https://cert.example.test/unknown.pem"
DEFAULT_ORIG, DEFAULT_DEST = "12025550100", "12025550101"
FALLBACK_NOW = datetime(2024, 1, 1, tzinfo=UTC)
SHAKEN_PARAMS = ";alg=ES256;ppt=shaken"
LAB_X5U = "https://cr.example.test/sp.pem"


def source_dir(source: str) -> Path | None:
    """The shared corpus folder when present (it may hold more cases), else the vendored copy."""
    shared = SHARED / source
    if (shared / "cases.jsonl").is_file():
        return shared
    vendored = VENDORED / source
    if source in VENDORED_SOURCES and (vendored / "cases.jsonl").is_file():
        return vendored
    return None


def absent_reason(source: str) -> str:
    licence = "GPL data is not vendored" if source in GPL_SOURCES else "no vendored copy"
    return f"{source}: shared corpus absent ({SHARED}) and {licence}"


@dataclass(frozen=True, slots=True)
class Case:
    source: str
    folder: Path
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def kind(self) -> str:
        return str(self.data["kind"])

    @property
    def value(self) -> str | None:
        return self.data.get("value")

    @property
    def header(self) -> dict[str, Any]:
        header = self.data.get("decoded_header")
        return header if isinstance(header, dict) else {}

    @property
    def payload(self) -> dict[str, Any]:
        payload = self.data.get("decoded_payload")
        return payload if isinstance(payload, dict) else {}

    @property
    def token(self) -> str:
        assert self.value is not None
        return self.value.split(";", 1)[0]


def load_cases(source: str) -> list[Case]:
    folder = source_dir(source)
    if folder is None:
        return []
    lines = (folder / "cases.jsonl").read_text(encoding="utf-8").splitlines()
    return [Case(source, folder, json.loads(line)) for line in lines if line.strip()]


ALL_CASES = {source: load_cases(source) for source in SOURCES}


def get_case(source: str, case_id: str) -> Case:
    if source_dir(source) is None:
        pytest.skip(absent_reason(source))
    for case in ALL_CASES[source]:
        if case.id == case_id:
            return case
    pytest.fail(f"{source} has no case {case_id!r}: the corpus changed")


def _case_params() -> list[Any]:
    params: list[Any] = []
    for source in SOURCES:
        if source_dir(source) is None:
            params.append(
                pytest.param(
                    None,
                    id=f"{source}/absent",
                    marks=pytest.mark.skip(reason=absent_reason(source)),
                )
            )
            continue
        params.extend(pytest.param(c, id=f"{source}/{c.id}") for c in ALL_CASES[source])
    return params


# --------------------------------------------------------------------------------------------
# What we expect for each known case: the Reason, a fragment of its detail, and why.


@dataclass(frozen=True, slots=True)
class Expect:
    reason: Reason
    detail: str
    why: str


_SPC_TOKEN = Expect(
    Reason.BAD_PASSPORT_HEADER,
    "no string 'ppt'",
    "an STI-PA SPC token (typ JWT, no ppt) is not a PASSporT",
)
_STRING_CLAIMS = Expect(
    Reason.INVALID_CLAIM,
    "'orig' is not a JSON object",
    "orig/dest are JSON strings holding JSON; the signature itself is valid",
)
_LEGACY_ASTERISK = Expect(
    Reason.INVALID_HEADER,
    "expected ';'",
    "no ';' between info=<...> and alg= (pre-2024 Asterisk)",
)

EXPECTED: dict[str, Expect] = {
    "ls-ref-passport": _STRING_CLAIMS,
    "ls-ref-identity-header": _STRING_CLAIMS,
    "ls-ref-spc-token": _SPC_TOKEN,
    "ls-readme-spc-token-101": _SPC_TOKEN,
    "ls-readme-passport": Expect(
        Reason.CERT_NO_TNAUTHLIST,
        "found IA5String",
        "sp.pem's TNAuthList is an IA5String URL; every earlier check passes",
    ),
    "asterisk-legacy-6efdb4dd": _LEGACY_ASTERISK,
    "asterisk-legacy-f73e3889": _LEGACY_ASTERISK,
    "sems-00": Expect(
        Reason.INVALID_CLAIM,
        "'orig.tn' is not a non-empty string",
        "valid signature but orig.tn and dest.tn are empty: nothing to bind to the call",
    ),
    "sems-02": Expect(
        Reason.INVALID_HEADER, "expected ';'", "a fragment ('o=<url>;...') with no PASSporT"
    ),
    "sems-03": Expect(
        Reason.COMPACT_FORM, "compact form", "'..signature': SHAKEN requires the full form"
    ),
    "sems-04": Expect(
        Reason.UNSUPPORTED_ALG,
        "Identity alg parameter 'ES25'",
        "Identity alg=ES25 (the reused signature is valid)",
    ),
    "sems-06": Expect(
        Reason.X5U_INFO_MISMATCH,
        "caert.pem",
        "info differs from x5u (the reused signature is valid)",
    ),
    "sems-07": Expect(Reason.UNSUPPORTED_ALG, "'ES266'", "JOSE alg ES266"),
    "sems-08": Expect(
        Reason.UNSUPPORTED_ALG, "'ES265'", "JOSE alg ES265 (alg is checked before ppt 'shakec')"
    ),
    "sems-10": Expect(Reason.INVALID_TOKEN, "header is not JSON", "JOSE header is not JSON"),
    "sems-11": Expect(Reason.INVALID_TOKEN, "header is not JSON", "unquoted JSON values"),
    "sems-13": Expect(Reason.BAD_PASSPORT_HEADER, "no string 'ppt'", "'pdt' instead of 'ppt'"),
    "sems-14": Expect(Reason.MISSING_CLAIM, "iat", "'ia' instead of 'iat' (dest also a string)"),
    "sems-16": Expect(Reason.INVALID_ATTEST, "'N'", "attest N"),
    "scenarios-010-identity-garbage": Expect(
        Reason.MISSING_INFO,
        "no info parameter",
        "no info parameter: we report 436 before looking at the (garbage) token",
    ),
    "rfc8225-appendix-a": Expect(
        Reason.BAD_PASSPORT_HEADER,
        "no string 'ppt'",
        "a plain RFC 8225 PASSporT (no ppt) is not SHAKEN; its signature fails too",
    ),
    "rfc7515-appendix-a3": Expect(
        Reason.BAD_PASSPORT_HEADER, "no string 'typ'", "a generic JWS, not a PASSporT"
    ),
    "rfc8588-section6-example-claims": Expect(
        Reason.INVALID_CLAIM,
        "'iat' is not an integer",
        'iat is the string "1443208345" (RFC errata 6656)',
    ),
}


# --------------------------------------------------------------------------------------------
# Running a case.


@pytest.fixture(scope="module")
def lab() -> StiPki:
    return make_sti_pki(FALLBACK_NOW)


def wrap(token: str, header: dict[str, Any], ppt: bool = True) -> str:
    """A bare token as an Identity header value, with its own x5u as info."""
    x5u = header.get("x5u")
    value = f"{token};info=<{x5u if isinstance(x5u, str) else DEFAULT_INFO}>;alg=ES256"
    if ppt and isinstance(header.get("ppt"), str):
        value += f";ppt={header['ppt']}"
    return value


def identity_value(case: Case, lab: StiPki) -> str:
    if case.kind == "claims-only":
        head = b64url_encode(canonical_json(case.header))
        body = b64url_encode(canonical_json(case.payload))
        signature = sign_es256(lab.leaf_key, f"{head}.{body}".encode())
        return wrap(f"{head}.{body}.{b64url_encode(signature)}", case.header)
    assert case.value is not None
    if case.kind == "identity-header":
        return case.value
    return wrap(case.value, case.header)


def parties(case: Case) -> tuple[str, str]:
    """The token's own orig and dest where usable, so the binding checks pass."""
    orig, dest = case.payload.get("orig"), case.payload.get("dest")
    tn = orig.get("tn") if isinstance(orig, dict) else None
    caller = tn if isinstance(tn, str) and tn else DEFAULT_ORIG
    called = DEFAULT_DEST
    if isinstance(dest, dict):
        for name in ("tn", "uri"):
            value = dest.get(name)
            first = value[0] if isinstance(value, list) and value else value
            if isinstance(first, str) and first:
                called = first
                break
    return caller, called


def case_now(case: Case) -> datetime:
    iat = case.payload.get("iat")
    if isinstance(iat, str) and iat.isdigit():
        iat = int(iat)
    if isinstance(iat, int) and not isinstance(iat, bool):
        return datetime.fromtimestamp(iat + 2, UTC)
    return FALLBACK_NOW


def certificate_file(case: Case) -> Path | None:
    """The certificate a case names; a libstirshaken ``keys/X.pub`` maps to ``certs/X.pem``."""
    name = case.data.get("verification_key")
    if not name:
        return None
    path = case.folder / name
    if path.suffix == ".pub":
        path = case.folder / "certs" / f"{path.stem}.pem"
    if path.is_file() and b"BEGIN CERTIFICATE" in path.read_bytes():
        return path
    return None


def material(case: Case, lab: StiPki) -> tuple[bytes, bytes]:
    cert = certificate_file(case)
    anchor = ANCHOR_FILES.get(case.source)
    anchors = (case.folder / anchor).read_bytes() if anchor else lab.root_pem
    return (cert.read_bytes() if cert else lab.chain_pem), anchors


def run_case(case: Case, lab: StiPki) -> shaken.VerificationResult:
    orig, dest = parties(case)
    certificate, anchors = material(case, lab)
    return shaken.verify_identity(
        identity_value(case, lab),
        orig=orig,
        dest=dest,
        certificate=certificate,
        trust_anchors=anchors,
        now=case_now(case),
    )


def public_key_of(case: Case) -> PublicKey:
    """The key a case says verifies it: a JWK, a public key file or a certificate."""
    jwk = case.data.get("jwk")
    if jwk is not None:
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(b64url_decode(jwk["x"]), "big"),
            int.from_bytes(b64url_decode(jwk["y"]), "big"),
            ec.SECP256R1(),
        )
        return numbers.public_key()
    data = (case.folder / case.data["verification_key"]).read_bytes()
    if b"BEGIN CERTIFICATE" in data:
        key = x509.load_pem_x509_certificate(data).public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return key
    return load_public_key(data)


def flip(signature: bytes) -> bytes:
    return signature[:10] + bytes([signature[10] ^ 0x01]) + signature[11:]


# --------------------------------------------------------------------------------------------
# One test per case.


@pytest.mark.parametrize("case", _case_params())
def test_corpus_case(case: Case, lab: StiPki) -> None:
    result = run_case(case, lab)
    expect = EXPECTED.get(case.id)
    if expect is None:
        # A case this table does not know (e.g. the held-out third of the corpus): it must still
        # end in a result naming a Reason with a detail, never an exception.
        assert result.verified or (result.reason in REASONS and result.detail), result
        return
    assert result.reason is expect.reason, f"{result.reason}: {result.detail}"
    assert expect.detail in result.detail
    assert not result.verified
    assert result.sip_code == REASONS[expect.reason].sip_code
    assert [c.name for c in result.checks if not c.passed], "the failing check is recorded"


def test_every_known_case_is_in_the_corpus() -> None:
    """The expectation table and the corpus agree (a renamed case would silently lose its test)."""
    present = {c.id for cases in ALL_CASES.values() for c in cases}
    available = {s for s in SOURCES if source_dir(s) is not None}
    prefixes = {
        "libstirshaken": "ls-",
        "asterisk-testsuite": "asterisk-",
        "yeti-sems": "sems-",
        "stirshaken-scenarios": "scenarios-",
        "rfc-examples": "rfc",
    }
    wanted = {
        case_id for case_id in EXPECTED if any(case_id.startswith(prefixes[s]) for s in available)
    }
    assert wanted - present == set()


@pytest.mark.parametrize("source", VENDORED_SOURCES)
def test_vendored_copy_matches_shared_corpus(source: str) -> None:
    """Every vendored case and file is still in the shared corpus, unchanged."""
    shared = SHARED / source
    if not shared.is_dir():
        pytest.skip(f"shared corpus absent ({SHARED}): nothing to compare the vendored copy with")
    vendored = VENDORED / source
    shared_lines = set((shared / "cases.jsonl").read_text(encoding="utf-8").splitlines())
    for line in (vendored / "cases.jsonl").read_text(encoding="utf-8").splitlines():
        assert line in shared_lines, f"vendored case differs: {line[:80]}"
    for path in vendored.rglob("*"):
        if path.is_file() and path.name != "cases.jsonl":
            assert path.read_bytes() == (shared / path.relative_to(vendored)).read_bytes()


# --------------------------------------------------------------------------------------------
# libstirshaken


@pytest.mark.parametrize("case_id", [c.id for c in ALL_CASES["libstirshaken"]])
def test_libstirshaken_signature_verifies_at_jws_layer(case_id: str) -> None:
    case = get_case("libstirshaken", case_id)
    token = decode_token(case.token)
    key = public_key_of(case)
    assert verify_es256(key, token.signing_input, token.signature)
    assert not verify_es256(key, token.signing_input, flip(token.signature))
    # The certificate we serve for the case carries the very key the case lists.
    cert = certificate_file(case)
    assert cert is not None
    cert_key = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    assert isinstance(cert_key, ec.EllipticCurvePublicKey)
    assert same_public_key(cert_key, key)


@pytest.mark.parametrize("case_id", ["ls-ref-passport", "ls-ref-identity-header"])
def test_libstirshaken_string_encoded_orig_dest_rejected_although_signed(case_id: str) -> None:
    case = get_case("libstirshaken", case_id)
    token = decode_token(case.token)
    assert isinstance(token.payload["orig"], str)
    assert isinstance(token.payload["dest"], str)
    assert verify_es256(public_key_of(case), token.signing_input, token.signature)
    with pytest.raises(PassportError) as caught:
        PassportClaims.from_json(token.payload, ppt="shaken")
    assert caught.value.reason is Reason.INVALID_CLAIM


@pytest.mark.parametrize("case_id", ["ls-ref-spc-token", "ls-readme-spc-token-101"])
def test_libstirshaken_spc_token_is_not_an_identity_header(case_id: str) -> None:
    case = get_case("libstirshaken", case_id)
    assert case.header["typ"] == "JWT" and "ppt" not in case.header
    common: dict[str, Any] = {
        "orig": DEFAULT_ORIG,
        "dest": DEFAULT_DEST,
        "certificate": (case.folder / "certs" / "pa.pem").read_bytes(),
        "trust_anchors": (case.folder / "certs" / "pa.pem").read_bytes(),
        "now": FALLBACK_NOW,
    }
    as_found = shaken.verify_identity(case.token, **common)
    assert as_found.reason is Reason.MISSING_INFO
    wrapped = shaken.verify_identity(wrap(case.token, case.header) + ";ppt=shaken", **common)
    assert wrapped.reason is Reason.BAD_PASSPORT_HEADER
    assert "'ppt'" in wrapped.detail


def _readme_passport(case: Case) -> str:
    return wrap(case.token, case.header)


def test_libstirshaken_readme_passport_fails_only_on_the_tnauthlist() -> None:
    case = get_case("libstirshaken", "ls-readme-passport")
    result = shaken.verify_identity(
        _readme_passport(case),
        orig="01256500600",
        dest="01256700800",
        certificate=(case.folder / "certs" / "sp.pem").read_bytes(),
        trust_anchors=(case.folder / "certs" / "ca.pem").read_bytes(),
        now=case_now(case),
    )
    assert result.reason is Reason.CERT_NO_TNAUTHLIST
    assert [c.name for c in result.checks if not c.passed] == ["chain_trusted"]
    passed = {c.name for c in result.checks if c.passed}
    assert {"claims", "iat_fresh", "orig_matches", "dest_matches", "x5u_policy"} <= passed


def test_libstirshaken_wrong_sp_is_untrusted() -> None:
    case = get_case("libstirshaken", "ls-readme-passport")
    result = shaken.verify_identity(
        _readme_passport(case),
        orig="01256500600",
        dest="01256700800",
        certificate=(case.folder / "certs" / "wrongsp.pem").read_bytes(),
        trust_anchors=(case.folder / "certs" / "ca.pem").read_bytes(),
        now=case_now(case),
    )
    assert result.reason is Reason.CERT_UNTRUSTED


def test_require_tnauthlist_false_waives_a_malformed_tnauthlist() -> None:
    """The knob off, sp.pem's IA5String TNAuthList no longer stops verification: there is no
    SPC to report and no TN scope to check."""
    case = get_case("libstirshaken", "ls-readme-passport")
    result = shaken.verify_identity(
        _readme_passport(case),
        orig="01256500600",
        dest="01256700800",
        certificate=(case.folder / "certs" / "sp.pem").read_bytes(),
        trust_anchors=(case.folder / "certs" / "ca.pem").read_bytes(),
        now=case_now(case),
        profile=replace(SHAKEN, require_tnauthlist=False),
    )
    assert result.verified, result.detail
    assert result.spc is None


def test_require_tnauthlist_false_accepts_a_leaf_without_tnauthlist(lab: StiPki) -> None:
    """Not a corpus case: the unambiguous form of the same bug (the extension is absent)."""
    key = generate_private_key()
    chain = _leaf_for(lab, key.public_key(), tnauthlist=False)
    value = shaken.sign_identity(
        key=key, x5u=LAB_X5U, orig=DEFAULT_ORIG, dest=DEFAULT_DEST, attest="A", now=FALLBACK_NOW
    )
    common: dict[str, Any] = {
        "orig": DEFAULT_ORIG,
        "dest": DEFAULT_DEST,
        "certificate": chain,
        "trust_anchors": lab.root_pem,
        "now": FALLBACK_NOW,
    }
    # The knob on (default), the leaf is refused for its missing TNAuthList: the control.
    assert shaken.verify_identity(value, **common).reason is Reason.CERT_NO_TNAUTHLIST
    result = shaken.verify_identity(
        value, **common, profile=replace(SHAKEN, require_tnauthlist=False)
    )
    assert result.verified, f"{result.reason}: {result.detail}"


# --------------------------------------------------------------------------------------------
# asterisk-testsuite (GPL: read from the shared corpus only)

ASTERISK_IDS = ["asterisk-legacy-6efdb4dd", "asterisk-legacy-f73e3889"]


def _lenient_b64(segment: str) -> bytes:
    """Standard or url-safe base64, padded or not (what legacy Asterisk emitted)."""
    text = segment.replace("-", "+").replace("_", "/").rstrip("=")
    return base64.b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize(
    ("case_id", "reason", "detail"),
    [
        ("asterisk-legacy-6efdb4dd", Reason.INVALID_TOKEN, "not unpadded base64url"),
        ("asterisk-legacy-f73e3889", Reason.MISSING_CLAIM, "dest"),
    ],
)
def test_asterisk_legacy_header_with_separator_repaired(
    case_id: str, reason: Reason, detail: str
) -> None:
    """With the missing ';' put back, the next defect is named: padded base64, or no dest."""
    case = get_case("asterisk-testsuite", case_id)
    assert case.value is not None and ">alg=" in case.value
    repaired = case.value.replace(">alg=", ">;alg=")
    result = shaken.verify_identity(
        repaired,
        orig="1234567",
        dest=DEFAULT_DEST,
        certificate=b"",
        trust_anchors=(case.folder / "keys" / "astdev-ca.crt").read_bytes(),
        now=case_now(case),
    )
    assert result.reason is reason
    assert detail in result.detail


@pytest.mark.parametrize("case_id", ASTERISK_IDS)
def test_asterisk_legacy_signature_is_der_over_raw_json(case_id: str) -> None:
    """The legacy signature only verifies as DER over raw JSON; our ES256 layer refuses it."""
    case = get_case("asterisk-testsuite", case_id)
    head, body, sig = case.token.split(".")
    signature = _lenient_b64(sig)
    key = public_key_of(case)
    assert 70 <= len(signature) <= 72
    assert not verify_es256(key, f"{head}.{body}".encode(), signature)
    raw_input = _lenient_b64(head) + b"." + _lenient_b64(body)
    key.verify(signature, raw_input, ec.ECDSA(hashes.SHA256()))  # the key is the right one
    with pytest.raises(InvalidSignature):
        key.verify(signature, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))


# --------------------------------------------------------------------------------------------
# yeti-sems (GPL: read from the shared corpus only)


@pytest.mark.parametrize("case_id", ["sems-00", "sems-04", "sems-06"])
def test_sems_reused_signature_is_valid_so_parameters_decide(case_id: str, lab: StiPki) -> None:
    case = get_case("yeti-sems", case_id)
    assert case.data["es256_signature_check"] == "valid"
    token = decode_token(case.token)
    assert verify_es256(public_key_of(case), token.signing_input, token.signature)
    assert run_case(case, lab).reason is EXPECTED[case_id].reason


def test_sems_compact_form_without_parameters() -> None:
    """``..signature`` alone: the missing info is reported first (436, RFC 8224 ABNF), while
    the JWS layer names it compact form; with parameters the pipeline says compact_form."""
    case = get_case("yeti-sems", "sems-03")
    assert case.value is not None and case.value.startswith("..")
    common: dict[str, Any] = {
        "orig": DEFAULT_ORIG,
        "dest": DEFAULT_DEST,
        "certificate": (case.folder / "test.pem").read_bytes(),
        "trust_anchors": (case.folder / "test.pem").read_bytes(),
        "now": FALLBACK_NOW,
    }
    assert shaken.verify_identity(case.value, **common).reason is Reason.MISSING_INFO
    with pytest.raises(PassportError) as caught:
        decode_token(case.value)
    assert caught.value.reason is Reason.COMPACT_FORM
    wrapped = f"{case.value};info=<https://curl.haxx.se/ca/cacert.pem>{SHAKEN_PARAMS}"
    assert shaken.verify_identity(wrapped, **common).reason is Reason.COMPACT_FORM


# --------------------------------------------------------------------------------------------
# stirshaken-scenarios


def test_scenarios_garbage_with_parameters_is_invalid_token(lab: StiPki) -> None:
    case = get_case("stirshaken-scenarios", "scenarios-010-identity-garbage")
    assert case.value is not None
    result = shaken.verify_identity(
        f"{case.value};info=<https://cert.example.test/sp.pem>{SHAKEN_PARAMS}",
        orig=DEFAULT_ORIG,
        dest=DEFAULT_DEST,
        certificate=lab.chain_pem,
        trust_anchors=lab.root_pem,
        now=FALLBACK_NOW,
    )
    assert result.reason is Reason.INVALID_TOKEN
    assert result.sip_code == case.data["expected"]["scenario_expects_sip_response"] == 438


# --------------------------------------------------------------------------------------------
# RFC examples


def test_rfc7515_a3_verifies_at_jws_layer() -> None:
    case = get_case("rfc-examples", "rfc7515-appendix-a3")
    token = decode_token(case.token)
    key = public_key_of(case)
    assert token.header == {"alg": "ES256"}
    assert verify_es256(key, token.signing_input, token.signature)
    assert not verify_es256(key, token.signing_input, flip(token.signature))


def test_rfc8225_canonical_json_reproduces_the_segments() -> None:
    case = get_case("rfc-examples", "rfc8225-appendix-a")
    token = decode_token(case.token)
    assert b64url_encode(canonical_json(dict(token.header))) == token.header_b64
    assert b64url_encode(canonical_json(dict(token.payload))) == token.payload_b64


def test_rfc8225_published_signature_verifies_with_neither_key() -> None:
    case = get_case("rfc-examples", "rfc8225-appendix-a")
    token = decode_token(case.token)
    printed = load_public_key(
        (case.folder / "rfc8225-appendix-a-public-as-printed.pem").read_bytes()
    )
    derived = load_public_key(
        (case.folder / "rfc8225-appendix-a-public-derived-from-private.pem").read_bytes()
    )
    private = load_private_key((case.folder / "rfc8225-appendix-a-private.pem").read_bytes())
    assert same_public_key(private.public_key(), derived)
    assert not same_public_key(printed, derived)
    for key in (printed, derived):
        assert not verify_es256(key, token.signing_input, token.signature)


def _leaf_for(pki: StiPki, key: ec.EllipticCurvePublicKey, *, tnauthlist: bool = True) -> bytes:
    """A lab leaf certifying ``key`` (SPC 1234 unless not ``tnauthlist``), plus the intermediate."""
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "SHAKEN 1234")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(pki.intermediate.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(pki.now - timedelta(days=1))
        .not_valid_after(pki.now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if tnauthlist:
        der = TNAuthList(entries=(Spc(code="1234"),)).to_der()
        builder = builder.add_extension(
            x509.UnrecognizedExtension(TNAUTHLIST_OID, der), critical=False
        )
    leaf = builder.sign(pki.intermediate_key, hashes.SHA256())
    pem = serialization.Encoding.PEM
    return leaf.public_bytes(pem) + pki.intermediate.public_bytes(pem)


def test_rfc8225_token_fails_the_signature_check_of_the_pipeline() -> None:
    """With a certificate for the RFC's own key and ppt not required, only the signature fails;
    the same segments re-signed with the RFC's private key verify (the control)."""
    case = get_case("rfc-examples", "rfc8225-appendix-a")
    token = decode_token(case.token)
    private = load_private_key((case.folder / "rfc8225-appendix-a-private.pem").read_bytes())
    now = case_now(case)
    pki = make_sti_pki(now)
    profile = replace(SHAKEN, full_form_only=False)
    info = f";info=<{token.header['x5u']}>;alg=ES256"
    common: dict[str, Any] = {
        "orig": "12155551212",
        "dest": "sip:alice@example.com",
        "certificate": _leaf_for(pki, private.public_key()),
        "trust_anchors": pki.root_pem,
        "now": now,
        "profile": profile,
    }
    published = shaken.verify_identity(case.token + info, **common)
    assert published.reason is Reason.BAD_SIGNATURE
    resigned = sign_es256(private, token.signing_input)
    control = f"{token.header_b64}.{token.payload_b64}.{b64url_encode(resigned)}"
    result = shaken.verify_identity(control + info, **common)
    assert result.verified, f"{result.reason}: {result.detail}"


def test_rfc8588_example_claims_with_string_iat_are_invalid() -> None:
    case = get_case("rfc-examples", "rfc8588-section6-example-claims")
    claims = case.payload
    assert isinstance(claims["iat"], str)
    with pytest.raises(PassportError) as caught:
        PassportClaims.from_json(claims, ppt="shaken")
    assert caught.value.reason is Reason.INVALID_CLAIM
    fixed = PassportClaims.from_json({**claims, "iat": int(claims["iat"])}, ppt="shaken")
    assert fixed.iat == 1443208345


# --------------------------------------------------------------------------------------------
# The table.


def _source_expectation(case: Case) -> str:
    expected = case.data.get("expected", {})
    for key in (
        "sems_unit_test_expectation",
        "scenario_expects_sip_response",
        "rfc8225_verifier",
        "rfc8225_8588_conformance",
        "rfc8588_conformance",
        "signature",
        "notes",
    ):
        if key in expected:
            text = str(expected[key])
            return f"SIP {text}" if key == "scenario_expects_sip_response" else text
    return ""


def test_summary_table(lab: StiPki) -> None:
    """Print (under ``-s``) what we answer for every case next to what its source expects."""
    rows: list[tuple[str, str, str, str]] = []
    for source in SOURCES:
        if source_dir(source) is None:
            rows.append((source, "(absent)", "skipped", absent_reason(source)))
            continue
        for case in ALL_CASES[source]:
            result = run_case(case, lab)
            ours = "verified" if result.verified else f"{result.reason} ({result.sip_code})"
            rows.append((source, case.id, ours, _source_expectation(case)[:70]))
            assert result.verified or result.reason in REASONS
            if case.id in EXPECTED:
                assert not result.verified, f"{case.id} verified under the SHAKEN profile"
    header = ("source", "case", "our reason", "source expectation")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(3)]
    print()
    for row in (header, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
        print("  ".join([*cells, row[3]]).rstrip())
        if row is header:
            print("  ".join("-" * w for w in (*widths, len(header[3]))))
    assert len(rows) >= sum(len(c) for c in ALL_CASES.values())
