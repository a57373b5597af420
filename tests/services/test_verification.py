"""The verification service end to end: signed calls, a real HTTPS repository and CRL point on
loopback, the HTTPS fetcher, the certificate cache and the core pipeline.

The lab names resolve to 127.0.0.1 through an injected resolver, and only they are allowed to
be special-purpose; every other name keeps the strict default, which the SSRF cases check.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from shaken.adapters.fetch import FetchLimits, HttpsFetcher
from shaken.adapters.store import DirectoryCertificateStore
from shaken.core.certs import TnRange
from shaken.core.chain import TrustAnchors
from shaken.core.context import SipContext
from shaken.core.jws import PrivateKey
from shaken.core.reasons import Reason, Verstat
from shaken.core.result import VerificationResult
from shaken.core.sign import sign_shaken
from shaken.core.verify import SHAKEN, VerificationProfile, verify
from shaken.core.x5u import X5uPolicy
from shaken.services.cert_cache import CacheSettings, CertificateCache, RevocationMode
from shaken.services.trust import TrustStore
from shaken.services.verification import VerificationService
from shaken.testing import StiPki, make_sti_pki
from tests.support.fakes import ManualClock
from tests.support.https import RepositoryServer, Route, mapping_resolver

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
ORIG, DEST = "12025550100", "12025550101"
CR, PA = "cr.example.test", "sti-pa.example.test"
LAB = {CR: "127.0.0.1", PA: "127.0.0.1"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server() -> Iterator[RepositoryServer]:
    with RepositoryServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def pki(server: RepositoryServer) -> StiPki:
    # The CRL Distribution Point of every certificate is the STI-PA name on the lab server.
    return make_sti_pki(NOW, crl_url=server.url("/crl", host=PA))


@pytest.fixture(autouse=True)
def clean_crl(server: RepositoryServer, pki: StiPki) -> None:
    server.route(
        "/crl", Route(body=pki.sti_pa_crl(), headers={"Content-Type": "application/pkix-crl"})
    )


def policy(server: RepositoryServer) -> X5uPolicy:
    return X5uPolicy(allowed_hosts=(CR, PA), allowed_ports=(443, 8443, server.port))


def profile(server: RepositoryServer) -> VerificationProfile:
    return replace(SHAKEN, x5u_policy=policy(server))


def call(url: str, key: PrivateKey, *, orig: str = ORIG) -> SipContext:
    value = sign_shaken(
        key=key, x5u=url, orig=orig, dest=DEST, attest="A", iat=int(NOW.timestamp())
    )
    return SipContext(identity=(value,), from_header=f"<tel:+{orig}>", to=f"<tel:+{DEST}>")


@dataclass
class Lab:
    service: VerificationService
    cache: CertificateCache
    fetcher: HttpsFetcher
    trust: TrustStore


@pytest.fixture
async def lab(server: RepositoryServer, pki: StiPki) -> AsyncIterator[Lab]:
    lab = make_lab(server, pki)
    async with lab.fetcher:
        yield lab


def make_lab(
    server: RepositoryServer,
    pki: StiPki,
    *,
    settings: CacheSettings | None = None,
    trust: TrustStore | None = None,
    table: dict[str, str | list[str]] | None = None,
    limits: FetchLimits | None = None,
    store: DirectoryCertificateStore | None = None,
) -> Lab:
    resolver, _ = mapping_resolver(table if table is not None else LAB)
    fetcher = HttpsFetcher(
        policy=policy(server),
        resolver=resolver,
        tls_ca_file=server.ca_file,
        limits=limits or FetchLimits(),
    )
    trust = trust or TrustStore(pki.trust_anchors, (pki.sti_pa,))
    cache = CertificateCache(
        fetcher,
        trust,
        store=store,
        settings=settings or CacheSettings(),
        profile=profile(server),
        clock=ManualClock(NOW),
    )
    service = VerificationService(cache, clock=ManualClock(NOW))
    return Lab(service=service, cache=cache, fetcher=fetcher, trust=trust)


def serve_chain(server: RepositoryServer, path: str, body: bytes, **headers: str) -> str:
    all_headers = {"Content-Type": "application/pem-certificate-chain", **headers}
    server.route(path, Route(body=body, headers=all_headers))
    return server.url(path)


# --------------------------------------------------------------------------- the big ones


@pytest.mark.anyio
async def test_1000_concurrent_verifications_of_one_cold_url_make_one_request(
    server: RepositoryServer, pki: StiPki, lab: Lab
) -> None:
    path = "/crowd/sp.pem"
    server.route(path, Route(body=pki.chain_pem, delay=0.2))
    crl_before = server.count("/crl")
    context = call(server.url(path), pki.leaf_key)
    results = await asyncio.gather(*(lab.service.verify(context, now=NOW) for _ in range(1000)))
    assert server.count(path) == 1
    assert server.count("/crl") == crl_before + 1
    assert all(r.verified for r in results), {r.reason for r in results}
    assert {r.spc for r in results} == {"1234"}


@pytest.mark.anyio
async def test_a_warm_verification_takes_the_fast_path(
    server: RepositoryServer, pki: StiPki, lab: Lab
) -> None:
    url = serve_chain(server, "/warm/sp.pem", pki.chain_pem)
    context = call(url, pki.leaf_key)
    first = await lab.service.verify(context, now=NOW)
    assert first.verified
    validated = lab.cache.lookup(url, NOW)
    assert validated is not None

    async def forbidden(url: str, *, now: datetime | None = None) -> object:
        raise AssertionError("a warm verification must not reach CertificateCache.get")

    lab.cache.get = forbidden  # type: ignore[method-assign]
    warm = await lab.service.verify(context, now=NOW + timedelta(seconds=5))
    assert warm.verified and server.count("/warm/sp.pem") == 1
    # ... and it says exactly what the core says with the same validated certificate.
    core = verify(
        context, {url: validated}, None, now=NOW + timedelta(seconds=5), profile=lab.service.profile
    )
    assert warm == core


# -------------------------------------------------------------------------- what can fail


@pytest.mark.anyio
@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1"]
)
async def test_a_name_resolving_to_a_special_address_is_refused_with_its_reason(
    server: RepositoryServer, pki: StiPki, address: str
) -> None:
    name = "sneaky.example.net"  # not one of the lab's allowed hosts
    path = "/ssrf/sp.pem"
    server.route(path, Route(body=pki.chain_pem))
    before = server.connections
    lab = make_lab(server, pki, table={name: address}, limits=FetchLimits(timeout=0.5))
    async with lab.fetcher:
        result = await lab.service.verify(call(server.url(path, host=name), pki.leaf_key), now=NOW)
    assert result.reason is Reason.X5U_REJECTED
    assert (result.sip_code, result.verstat) == (436, Verstat.NO_VALIDATION)
    assert address in (result.detail or "")
    assert server.connections == before and lab.fetcher.requests == 0


@dataclass(frozen=True)
class Misbehaviour:
    route: Route
    reason: Reason


MISBEHAVIOURS = {
    "404": Misbehaviour(Route(status=404, body=b"gone"), Reason.CERT_FETCH_FAILED),
    "redirect": Misbehaviour(
        Route(status=302, headers={"Location": "https://cr.example.test/elsewhere.pem"}),
        Reason.CERT_FETCH_FAILED,
    ),
    "oversized": Misbehaviour(Route(body=b"A" * 100_000), Reason.CERT_FETCH_FAILED),
    "slow-drip": Misbehaviour(
        Route(body=b"B" * 4096, drip=0.05, chunk=32), Reason.CERT_FETCH_FAILED
    ),
    "html": Misbehaviour(
        Route(body=b"<html>Service Unavailable</html>", headers={"Content-Type": "text/html"}),
        Reason.CERT_UNPARSEABLE,
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(MISBEHAVIOURS))
async def test_repository_misbehaviour_names_its_reason(
    server: RepositoryServer, pki: StiPki, name: str
) -> None:
    case = MISBEHAVIOURS[name]
    path = f"/bad/{name}.pem"
    server.route(path, case.route)
    lab = make_lab(server, pki, limits=FetchLimits(timeout=0.3))
    async with lab.fetcher:
        result = await lab.service.verify(call(server.url(path), pki.leaf_key), now=NOW)
        again = await lab.service.verify(call(server.url(path), pki.leaf_key), now=NOW)
    assert result.reason is case.reason and again.reason is case.reason
    assert server.count(path) == 1  # the failure is cached (negative TTL)
    assert server.count("/bad/elsewhere.pem") == 0


@pytest.mark.anyio
async def test_wrong_content_type_with_a_good_body_verifies_with_a_finding(
    server: RepositoryServer, pki: StiPki, lab: Lab
) -> None:
    server.route("/ctype/sp.pem", Route(body=pki.chain_pem, headers={"Content-Type": "text/html"}))
    result = await lab.service.verify(call(server.url("/ctype/sp.pem"), pki.leaf_key), now=NOW)
    assert result.verified
    assert any(f.startswith("warning:content_type:") for f in result.findings)


@pytest.mark.anyio
async def test_der_body(server: RepositoryServer, pki: StiPki) -> None:
    # A DER body carries the leaf alone, so the verifier must already trust its issuer.
    der = pki.leaf.public_bytes(Encoding.DER)
    server.route(
        "/der/leaf.cer", Route(body=der, headers={"Content-Type": "application/pkix-cert"})
    )
    trust = TrustStore(TrustAnchors(certificates=(pki.root, pki.intermediate)), (pki.sti_pa,))
    lab = make_lab(server, pki, trust=trust)
    async with lab.fetcher:
        result = await lab.service.verify(call(server.url("/der/leaf.cer"), pki.leaf_key), now=NOW)
    assert result.verified and result.spc == "1234"


@pytest.mark.anyio
async def test_delegate_chain_with_two_intermediates(
    server: RepositoryServer, pki: StiPki, lab: Lab
) -> None:
    delegation = pki.delegate((TnRange(start="12025550100", count=100),))
    url = serve_chain(server, "/delegate/sp.pem", delegation.chain_pem)
    ok = await lab.service.verify(call(url, delegation.leaf_key), now=NOW)
    assert ok.verified, ok.detail
    outside = await lab.service.verify(call(url, delegation.leaf_key, orig="13035550100"), now=NOW)
    assert outside.reason is Reason.TN_OUT_OF_SCOPE


# -------------------------------------------------------------------------------- CRLs


@pytest.mark.anyio
@pytest.mark.parametrize("which", ["leaf", "intermediate"])
async def test_a_revoked_certificate(
    server: RepositoryServer, pki: StiPki, lab: Lab, which: str
) -> None:
    serial = pki.leaf.serial_number if which == "leaf" else pki.intermediate.serial_number
    server.route("/crl", Route(body=pki.sti_pa_crl(revoked=[serial])))
    url = serve_chain(server, f"/revoked-{which}/sp.pem", pki.chain_pem)
    result = await lab.service.verify(call(url, pki.leaf_key), now=NOW)
    assert result.reason is Reason.CERT_REVOKED
    assert (result.sip_code, result.verstat) == (437, Verstat.FAILED)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", [RevocationMode.SOFT, RevocationMode.HARD])
async def test_an_unreachable_crl(
    server: RepositoryServer, pki: StiPki, mode: RevocationMode
) -> None:
    server.route("/crl", Route(status=503, body=b"down"))
    url = serve_chain(server, f"/nocrl-{mode.value}/sp.pem", pki.chain_pem)
    lab = make_lab(server, pki, settings=CacheSettings(revocation=mode))
    async with lab.fetcher:
        result = await lab.service.verify(call(url, pki.leaf_key), now=NOW)
    if mode is RevocationMode.SOFT:
        assert result.verified
        assert any(f.startswith("warning:crl_unavailable:") for f in result.findings)
    else:
        assert result.reason is Reason.CERT_UNTRUSTED
        assert "revocation status cannot be checked" in (result.detail or "")


# -------------------------------------------------------------- lifetimes over real HTTP


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "lifetime"),
    [
        ({}, timedelta(hours=24)),
        ({"Cache-Control": "max-age=600"}, timedelta(hours=24)),
        ({"Cache-Control": "max-age=172800"}, timedelta(hours=48)),
        ({"Cache-Control": "no-store"}, timedelta(hours=24)),
        (
            {"Date": "Sun, 22 Nov 2026 12:00:00 GMT", "Expires": "Wed, 25 Nov 2026 12:00:00 GMT"},
            timedelta(hours=72),
        ),
        ({"Cache-Control": "max-age=31536000"}, timedelta(days=7)),
    ],
    ids=["none", "short-max-age", "long-max-age", "no-store", "expires", "ceiling"],
)
async def test_cache_lifetime_from_real_responses(
    server: RepositoryServer, pki: StiPki, lab: Lab, headers: dict[str, str], lifetime: timedelta
) -> None:
    path = f"/ttl/{len(headers)}-{lifetime.total_seconds():.0f}.pem"
    url = serve_chain(server, path, pki.chain_pem, **headers)
    assert (await lab.service.verify(call(url, pki.leaf_key), now=NOW)).verified
    (entry,) = [s for s in lab.cache.snapshot() if s.url == url]
    assert entry.expires_at == NOW + lifetime


# ---------------------------------------------------------------------- trust and restarts


@pytest.mark.anyio
async def test_trust_reload_does_not_drop_calls(
    server: RepositoryServer, pki: StiPki, lab: Lab
) -> None:
    url = serve_chain(server, "/reload/sp.pem", pki.chain_pem)
    other = make_sti_pki(NOW, spc="9999")
    both = TrustAnchors(certificates=(pki.root, other.root))
    context = call(url, pki.leaf_key)
    assert (await lab.service.verify(context, now=NOW)).verified

    async def reloader() -> None:
        for n in range(20):
            lab.trust.replace(both if n % 2 else pki.trust_anchors, (pki.sti_pa,))
            await asyncio.sleep(0)

    async def caller(n: int) -> VerificationResult:
        await asyncio.sleep(0)
        return await lab.service.verify(context, now=NOW + timedelta(milliseconds=n))

    outcome = await asyncio.gather(reloader(), *(caller(n) for n in range(200)))
    results = outcome[1:]
    assert all(isinstance(r, VerificationResult) and r.verified for r in results)
    assert server.count("/reload/sp.pem") == 1  # revalidated from memory, never refetched
    lab.trust.replace(other.trust_anchors)
    after = await lab.service.verify(context, now=NOW + timedelta(seconds=1))
    assert after.reason is Reason.CERT_UNTRUSTED


@pytest.mark.anyio
async def test_a_restart_starts_warm_from_the_directory_store(
    server: RepositoryServer, pki: StiPki, tmp_path: Path
) -> None:
    url = serve_chain(server, "/restart/sp.pem", pki.chain_pem)
    context = call(url, pki.leaf_key)
    store = DirectoryCertificateStore(tmp_path / "certs")
    first = make_lab(server, pki, store=store)
    async with first.fetcher:
        assert (await first.service.verify(context, now=NOW)).verified
    requests = server.count()
    # A new process: the same directory, the repository (and the CRL point) now unreachable.
    server.route("/restart/sp.pem", Route(status=503))
    server.route("/crl", Route(status=503))
    second = make_lab(server, pki, store=DirectoryCertificateStore(tmp_path / "certs"))
    async with second.fetcher:
        assert await second.cache.warm() == 1
        result = await second.service.verify(context, now=NOW + timedelta(seconds=30))
    assert result.verified, result.detail
    assert not any("crl_unavailable" in f for f in result.findings)
    assert server.count() == requests
