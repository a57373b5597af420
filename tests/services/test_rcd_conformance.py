"""The Rich Call Data conformance rows end to end, and the branding step's fetching and cache.

Each row of ``tests/data/conformance.json`` ``rcd_cases`` becomes a real call: a lab delegate
certificate carrying the row's claim constraints (real X.509 from ``cryptography``), its chain
and the brand's logo and jCard on a real HTTPS server on loopback, the HTTPS fetcher under the
x5u URL policy, the certificate cache, and the verification service with its branding step.
The SHAKEN verdict of every row is verified; the rcd verdict is the row's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shaken.adapters.fetch import HttpsFetcher
from shaken.core.branding import RcdStatus
from shaken.core.certs import TnRange
from shaken.core.context import SipContext
from shaken.core.identity import IdentityHeader
from shaken.core.passport import decode_token
from shaken.core.reasons import Reason
from shaken.core.sign import sign_shaken
from shaken.core.x5u import X5uPolicy
from shaken.services.cert_cache import CertificateCache
from shaken.services.rcd import BrandingService, BrandingSettings, ContentCache
from shaken.services.trust import TrustStore
from shaken.services.verification import VerificationService
from shaken.testing import StiPki, make_sti_pki
from tests.support.branding import (
    ICN,
    JCL,
    LOGO,
    rcd_claims,
    row_constraints,
    served_content,
    signed_content,
)
from tests.support.fakes import ManualClock
from tests.support.https import LAB_NAMES, RepositoryServer, Route, mapping_resolver

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
ORIG, DEST = "12025550100", "12025550101"
CR, PA, BRAND = "cr.example.test", "sti-pa.example.test", "brand.example.test"
MANIFEST = Path(__file__).resolve().parents[1] / "data" / "conformance.json"
RCD_CASES: list[dict[str, Any]] = json.loads(MANIFEST.read_text())["rcd_cases"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server() -> Iterator[RepositoryServer]:
    with RepositoryServer(names=(*LAB_NAMES, BRAND)) as srv:
        yield srv


@pytest.fixture(scope="module")
def pki(server: RepositoryServer) -> StiPki:
    return make_sti_pki(NOW, crl_url=server.url("/crl", host=PA))


def _localize(case: dict[str, Any], server: RepositoryServer) -> dict[str, Any]:
    """The row with the brand URLs on the lab server's port."""
    text = json.dumps(case)
    for url in (ICN, JCL):
        path = url.split(BRAND, 1)[1]
        text = text.replace(url, server.url(path, host=BRAND))
    return dict(json.loads(text))


def _lab(server: RepositoryServer, pki: StiPki, case: dict[str, Any]) -> VerificationService:
    table: dict[str, str | list[str]] = {CR: "127.0.0.1", PA: "127.0.0.1", BRAND: "127.0.0.1"}
    table.update(case.get("resolve", {}))
    allowed = tuple(h for h in (CR, PA, BRAND) if h not in case.get("resolve", {}))
    resolver, _ = mapping_resolver(table)
    fetcher = HttpsFetcher(
        policy=X5uPolicy(allowed_hosts=allowed, allowed_ports=(443, 8443, server.port)),
        resolver=resolver,
        tls_ca_file=server.ca_file,
    )
    cache = CertificateCache(
        fetcher, TrustStore(pki.trust_anchors, (pki.sti_pa,)), clock=ManualClock(NOW)
    )
    cache_profile = cache.profile
    branding = BrandingService(cache, ContentCache(fetcher, BrandingSettings()))
    return VerificationService(
        cache,
        clock=ManualClock(NOW),
        profile=_with_policy(cache_profile, fetcher.policy),
        branding=branding,
    )


def _with_policy(profile: Any, policy: X5uPolicy) -> Any:
    from dataclasses import replace

    return replace(profile, x5u_policy=policy)


def _serve(server: RepositoryServer, contents: dict[str, bytes | None]) -> None:
    for url, body in contents.items():
        path = url.split(str(server.port), 1)[1]
        if body is None:
            server.route(
                path, Route(status=404, body=b"gone", headers={"Content-Type": "text/plain"})
            )
        else:
            kind = "application/json" if path.endswith(".json") else "image/png"
            server.route(path, Route(body=body, headers={"Content-Type": kind}))


@pytest.mark.anyio
@pytest.mark.parametrize("row", RCD_CASES, ids=[c["id"] for c in RCD_CASES])
async def test_rcd_conformance_case_end_to_end(
    row: dict[str, Any], server: RepositoryServer, pki: StiPki
) -> None:
    case = _localize(row, server)
    constraints = row_constraints(case)
    delegate = pki.delegate((TnRange(start=ORIG, count=10),), constraints=constraints)
    chain_path = f"/rcd/{row['id']}.pem"
    server.route(chain_path, Route(body=delegate.chain_pem))
    server.route(
        "/crl", Route(body=pki.sti_pa_crl(), headers={"Content-Type": "application/pkix-crl"})
    )
    # Signing time: the brand's content as published, digested into rcdi.
    signed = {_here(server, u): b for u, b in signed_content(row).items()}
    claims = rcd_claims(case, signed)
    identity = sign_shaken(
        key=delegate.leaf_key,
        x5u=server.url(chain_path),
        orig=ORIG,
        dest=DEST,
        attest="A",
        iat=int(NOW.timestamp()),
        extra_claims=claims,
    )
    # Verification time: what the server holds now (maybe changed since).
    served = {_here(server, u): b for u, b in served_content(row).items()}
    _serve(server, served)
    service = _lab(server, pki, case)
    server.reset_counters()
    context = SipContext(identity=(identity,), from_header=f"<tel:+{ORIG}>", to=f"<tel:+{DEST}>")
    async with service.cache._fetcher:  # type: ignore[attr-defined]
        result = await service.verify(context)
    assert result.verified, result.detail
    assert result.rcd is not None
    got = {
        "status": result.rcd.status.value,
        "reason": result.rcd.reason and result.rcd.reason.value,
    }
    assert got == row["expect"], result.rcd.detail
    if row.get("resolve"):
        # Refused before connect: the brand host's address was checked, nothing was sent to it.
        assert all(r.path.startswith(("/rcd/", "/crl")) for r in server.requests)


def _here(server: RepositoryServer, url: str) -> str:
    return server.url(url.split(BRAND, 1)[1], host=BRAND)


# ----------------------------------------------------------- the separate ppt=rcd PASSporT


def _signer(delegate: Any, x5u: str, logo_url: str, ppt: str) -> Any:
    from shaken.services.signing import Brand, Credential, SigningPolicy, SigningService

    brand = Brand(name="acme", rcd={"nam": "Acme Bank", "icn": logo_url}, ppt=ppt).with_content(
        {logo_url: LOGO}
    )
    policy = SigningPolicy(
        credential=Credential(key=delegate.leaf_key, x5u=x5u),
        attest="A",
        brand=brand,
        unknown_tn_attest="A",
    )
    return SigningService(policy, clock=ManualClock(NOW))


@pytest.mark.anyio
async def test_separate_rcd_passport_is_verified_with_its_own_signature(
    server: RepositoryServer, pki: StiPki
) -> None:
    delegate = pki.delegate((TnRange(start=ORIG, count=10),))
    server.route("/rcd/separate.pem", Route(body=delegate.chain_pem))
    server.route(
        "/crl", Route(body=pki.sti_pa_crl(), headers={"Content-Type": "application/pkix-crl"})
    )
    logo_url = server.url("/acme.png", host=BRAND)
    server.route("/acme.png", Route(body=LOGO, headers={"Content-Type": "image/png"}))
    signed = _signer(delegate, server.url("/rcd/separate.pem"), logo_url, "rcd").sign(
        orig=ORIG, dest=DEST
    )
    assert signed.rcd_identity is not None
    shaken_claims = decode_token(IdentityHeader.parse(signed.identity).token).payload
    assert "rcd" not in shaken_claims

    async def verify(*identities: str) -> Any:
        service = _lab(server, pki, {})
        context = SipContext(identity=identities, from_header=f"<tel:+{ORIG}>", to=f"<tel:+{DEST}>")
        async with service.cache._fetcher:  # type: ignore[attr-defined]
            return await service.verify(context)

    result = await verify(signed.identity, signed.rcd_identity)
    assert result.verified and result.rcd is not None
    assert (result.rcd.status, result.rcd.nam) == (RcdStatus.VERIFIED, "Acme Bank")
    # Its signature broken: the brand is invalid, SHAKEN still verified.
    token, _, params = signed.rcd_identity.partition(";")
    broken = f"{token[:-6]}{'AAAAAA' if token[-6:] != 'AAAAAA' else 'BBBBBB'};{params}"
    result = await verify(signed.identity, broken)
    assert result.verified and result.rcd is not None
    assert (result.rcd.status, result.rcd.reason) == (RcdStatus.INVALID, Reason.RCD_INVALID)
    # An rcd PASSporT of another call (another orig) does not lend this one its brand.
    other = _signer(delegate, server.url("/rcd/separate.pem"), logo_url, "rcd").sign(
        orig="12025550105", dest=DEST
    )
    result = await verify(signed.identity, other.rcd_identity or "")
    assert result.rcd is not None and result.rcd.reason is Reason.RCD_INVALID
    assert "not for this call" in result.rcd.detail
    # Without any: not present.
    result = await verify(signed.identity)
    assert result.rcd is not None and result.rcd.status is RcdStatus.NOT_PRESENT
