"""Runs tests/data/conformance.json: each case is one request and its expected Reason.

A case starts from a valid signed call and applies its changes (``build`` for the Identity
header, ``sip`` for the request, ``certificate`` for what the x5u returns, ``profile`` for the
verifier's knobs). Adding a case is adding one row to the manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from shaken.core.branding import judge
from shaken.core.certs import Spc, TnRange
from shaken.core.chain import TrustAnchors
from shaken.core.context import SipContext, format_sip_date
from shaken.core.errors import CertificateFetchError, VerificationFailure, X5uRejected
from shaken.core.identity import IdentityHeader
from shaken.core.jws import PrivateKey, b64url_encode, generate_private_key, sign_es256
from shaken.core.passport import canonical_json
from shaken.core.reasons import REASONS, Reason
from shaken.core.sign import sign_div
from shaken.core.tn import NANP
from shaken.core.verify import (
    SHAKEN,
    CertificateMaterial,
    DatePolicy,
    ReplayWindow,
    VerificationProfile,
    complete,
    prepare,
)
from shaken.testing import StiPki, make_sti_pki
from tests.support.branding import rcd_claims, row_constraints, served_content

MANIFEST = Path(__file__).resolve().parents[1] / "data" / "conformance.json"
CASES: list[dict[str, Any]] = json.loads(MANIFEST.read_text())["cases"]
RCD_CASES: list[dict[str, Any]] = json.loads(MANIFEST.read_text())["rcd_cases"]
NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
X5U = "https://cr.example.test/sp.pem"
ORIG, DEST = "12025550100", "12025550101"
ORIGID = "123e4567-e89b-12d3-a456-426655440000"


class Lab:
    """The PKIs every case draws from, made once."""

    def __init__(self) -> None:
        self.pki = make_sti_pki(NOW)
        self.other = make_sti_pki(NOW)
        self.expired = make_sti_pki(NOW, leaf_validity=(timedelta(days=30), timedelta(seconds=-1)))
        self.scoped_here = self.pki.delegate((TnRange(start="12025550100", count=100),))
        self.scoped_elsewhere = self.pki.delegate((TnRange(start="13035550100", count=100),))
        self.no_tnauthlist_leaf, self.no_tnauthlist_key = _leaf_without_tnauthlist(self.pki)

    def chain_and_key(self, variant: str) -> tuple[bytes, PrivateKey]:
        pki = self.pki
        if variant == "untrusted":
            return self.other.chain_pem, self.other.leaf_key
        if variant == "expired":
            return self.expired.chain_pem, self.expired.leaf_key
        if variant == "leaf_only":
            return _pem(pki.leaf), pki.leaf_key
        if variant == "no_tnauthlist":
            return _pem(self.no_tnauthlist_leaf, pki.intermediate), self.no_tnauthlist_key
        if variant == "tn_scoped_here":
            return self.scoped_here.chain_pem, self.scoped_here.leaf_key
        if variant == "tn_scoped_elsewhere":
            return self.scoped_elsewhere.chain_pem, self.scoped_elsewhere.leaf_key
        return pki.chain_pem, pki.leaf_key


def _pem(*certs: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def _leaf_without_tnauthlist(pki: StiPki) -> tuple[x509.Certificate, PrivateKey]:
    key = generate_private_key()
    name = x509.Name(
        [
            x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "No TNAuthList (TEST ONLY)"),
            x509.NameAttribute(x509.NameOID.COMMON_NAME, "SHAKEN 1234"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(pki.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(pki.intermediate_key, hashes.SHA256())
    )
    return cert, key


@pytest.fixture(scope="module")
def lab() -> Lab:
    return Lab()


def _identity(spec: dict[str, Any], key: PrivateKey, x5u: str) -> str:
    """One Identity header value built from a case's ``build`` spec."""
    if "raw" in spec:
        return str(spec["raw"])
    jose: dict[str, Any] = {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": x5u}
    claims: dict[str, Any] = {
        "attest": "A",
        "dest": {"tn": [DEST]},
        "iat": int(NOW.timestamp()),
        "orig": {"tn": ORIG},
        "origid": ORIGID,
    }
    for target, changes in ((jose, spec.get("header", {})), (claims, spec.get("claims", {}))):
        for name, value in changes.items():
            if value is None:
                target.pop(name, None)
            elif name == "iat" and isinstance(value, int):
                target[name] = int(NOW.timestamp()) + value
            elif name == "iat" and value == "string":
                target[name] = str(int(NOW.timestamp()))
            else:
                target[name] = value
    head = b64url_encode(canonical_json(jose))
    payload = b64url_encode(
        spec["payload_raw"].encode() if "payload_raw" in spec else canonical_json(claims)
    )
    signer = generate_private_key() if spec.get("other_key") else key
    signature = sign_es256(signer, f"{head}.{payload}".encode())
    if spec.get("tamper") == "signature":
        signature = bytes([signature[0] ^ 0x01]) + signature[1:]
    if spec.get("tamper") == "payload":
        claims["origid"] = "00000000-0000-4000-8000-000000000000"
        payload = b64url_encode(canonical_json(claims))
    token = f"{head}.{payload}.{b64url_encode(signature)}"
    if spec.get("form") == "compact":
        token = f"..{b64url_encode(signature)}"
    token = spec.get("token", token)
    if "raw_params" in spec:
        return token + spec["raw_params"]
    params: dict[str, str | None] = {"info": x5u, "alg": "ES256", "ppt": "shaken"}
    params.update(spec.get("params", {}))
    ppt = params["ppt"]
    if ppt is not None and ppt.startswith('"'):
        return (
            IdentityHeader(token=token, info=params["info"], alg=params["alg"]).format()
            + f";ppt={ppt}"
        )
    return IdentityHeader(token=token, info=params["info"], alg=params["alg"], ppt=ppt).format()


def _profile(changes: dict[str, Any]) -> VerificationProfile:
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "numbering_plan":
            values[name] = NANP
        elif name == "date_policy":
            values[name] = DatePolicy(value)
        else:
            values[name] = value
    return replace(SHAKEN, **values)


@dataclass(frozen=True)
class Request:
    """One case as a request and what the verifier is given: every entry point runs this."""

    context: SipContext
    profile: VerificationProfile
    material: CertificateMaterial
    crls: tuple[bytes, ...]
    anchors: TrustAnchors
    crl_signers: tuple[x509.Certificate, ...]
    replay: bool
    x5u: str


def request_of(case: dict[str, Any], lab: Lab) -> Request:
    build = case.get("build", {})
    x5u = build.get("x5u", X5U)
    chain, key = lab.chain_and_key(case.get("certificate", "good"))
    identities: list[str] = []
    if not build.get("none"):
        identities.append(_identity(build, key, x5u))
        for extra in build.get("extra_identities", []):
            value = _identity(extra, key, x5u)
            identities.insert(0, value) if build.get("extra_first") else identities.append(value)
        if "div" in build:
            identities.append(
                sign_div(
                    key=key,
                    x5u=x5u,
                    orig=ORIG,
                    diverted_from=build["div"]["from"],
                    dest=build["div"]["to"],
                    iat=int(NOW.timestamp()),
                )
            )
    sip = case.get("sip", {})
    date = sip.get("date")
    if "date_offset" in sip:
        date = format_sip_date(NOW + timedelta(seconds=sip["date_offset"]))
    context = SipContext(
        identity=tuple(identities),
        from_header=sip.get("from", f"<sip:+{ORIG}@sbc.example.test;user=phone>;tag=a"),
        pai=tuple(sip.get("pai", ())),
        to=sip.get("to", f"<sip:+{DEST}@sbc.example.test;user=phone>"),
        request_uri=sip.get("request_uri"),
        date=date,
    )
    variant = case.get("certificate", "good")
    material: CertificateMaterial = chain
    if variant == "unavailable":
        material = CertificateFetchError(Reason.CERT_FETCH_FAILED, "connection refused")
    elif variant == "garbage":
        material = b"<html>404 Not Found</html>"
    crls: list[bytes] = []
    if variant == "revoked":
        crls.append(lab.pki.sti_pa_crl(revoked=[lab.pki.leaf.serial_number]))
    return Request(
        context=context,
        profile=_profile(case.get("profile", {})),
        material=material,
        crls=tuple(crls),
        # The expired leaf comes from its own PKI: trust its root too, so only the dates fail.
        anchors=TrustAnchors(certificates=(lab.pki.root, lab.expired.root)),
        crl_signers=(lab.pki.sti_pa,),
        replay=bool(case.get("replay")),
        x5u=x5u,
    )


def run_case(case: dict[str, Any], lab: Lab) -> Any:
    """The case through the core's two steps, prepare then complete (twice for replay)."""
    request = request_of(case, lab)
    context, profile = request.context, request.profile
    step = prepare(context, now=NOW, profile=profile)
    if not hasattr(step, "urls"):
        return step
    replay = ReplayWindow() if request.replay else None
    certificates = dict.fromkeys(step.urls, request.material)
    anchors, signers = request.anchors, request.crl_signers
    result = complete(
        step, certificates, anchors, crls=request.crls, crl_signers=signers, replay=replay
    )
    if replay is not None:
        again = prepare(context, now=NOW, profile=profile)
        assert hasattr(again, "urls")
        result = complete(again, certificates, anchors, crl_signers=signers, replay=replay)
    return result


def outcome(result: Any) -> dict[str, Any]:
    """What the manifest expects of a result: its Reason, SIP code and verstat."""
    return {
        "reason": None if result.reason is None else result.reason.value,
        "sip_code": result.sip_code,
        "verstat": result.verstat.value,
    }


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_conformance_case(case: dict[str, Any], lab: Lab) -> None:
    result = run_case(case, lab)
    expect = case["expect"]
    assert outcome(result) == expect, "\n".join(c.describe() for c in result.checks)
    assert result.verified is (expect["reason"] is None)


def test_every_reason_has_a_case() -> None:
    covered = {c["expect"]["reason"] for c in CASES} | {c["expect"]["reason"] for c in RCD_CASES}
    missing = {r.value for r in Reason} - covered
    assert not missing, f"no conformance case for {sorted(missing)}"


def test_expected_codes_agree_with_the_reason_table() -> None:
    for case in CASES:
        reason = case["expect"]["reason"]
        if reason is not None:
            info = REASONS[Reason(reason)]
            assert (info.sip_code, info.verstat.value) == (
                case["expect"]["sip_code"],
                case["expect"]["verstat"],
            ), case["id"]


def test_spc_and_subject_are_reported(lab: Lab) -> None:
    result = run_case({"id": "valid"}, lab)
    assert result.spc == "1234"
    assert result.certificate_subject is not None and "SHAKEN 1234" in result.certificate_subject
    assert result.attest == "A" and result.orig == ORIG and result.dest == (DEST,)
    assert [c.name for c in result.checks if not c.passed] == []
    assert Spc(code="1234").code == result.spc


def _constrained_leaf(case: dict[str, Any], lab: Lab) -> x509.Certificate:
    constraints = row_constraints(case)
    if constraints is None:
        return lab.pki.leaf
    return lab.pki.delegate((TnRange(start=ORIG, count=10),), constraints=constraints).leaf


@pytest.mark.parametrize("case", RCD_CASES, ids=[c["id"] for c in RCD_CASES])
def test_rcd_conformance_case_judged(case: dict[str, Any], lab: Lab) -> None:
    """Each Rich Call Data row through the pure verdict (the service test runs it end to end)."""
    claims = {"attest": "A", "dest": {"tn": [DEST]}, "iat": 0, "orig": {"tn": ORIG}}
    claims.update(rcd_claims(case))
    contents: dict[str, bytes | VerificationFailure] = {}
    for url, body in served_content(case).items():
        host = url.split("/")[2]
        if host in case.get("resolve", {}):
            contents[url] = X5uRejected(Reason.X5U_REJECTED, f"{host} is special-purpose")
        elif body is None:
            contents[url] = CertificateFetchError(Reason.CERT_FETCH_FAILED, f"{url}: HTTP 404")
        else:
            contents[url] = body
    verdict = judge(claims, _constrained_leaf(case, lab), contents)
    got = {"status": verdict.status.value, "reason": verdict.reason and verdict.reason.value}
    assert got == case["expect"], verdict.detail
