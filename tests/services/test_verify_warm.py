"""``VerificationService.verify_warm``: what ``verify`` says, without awaiting, when memory has it.

The SIP server answers nearly every INVITE inline with it, so it must agree with ``verify`` on
every outcome, including the Date header cases it treats itself (a fresh Date no longer keeps a
request off the common path), and must say None (not a wrong result) when a certificate still
has to be obtained.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shaken.core.branding import RcdStatus
from shaken.core.context import SipContext, format_sip_date
from shaken.core.reasons import Reason
from shaken.core.result import VerificationResult
from shaken.core.sign import sign_shaken
from shaken.core.verify import SHAKEN, Plan, ValidatedCertificate, complete, prepare
from shaken.services.cert_cache import CertificateCache
from shaken.services.rcd import BrandingService, ContentCache
from shaken.services.trust import TrustStore
from shaken.services.verification import VerificationService
from shaken.testing import StiPki, make_sti_pki
from tests.support.fakes import FakeFetcher, ManualClock, Reply

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
URL = "https://cr.example.test/sp.pem"
ORIG, DEST = "12025550100", "12025550101"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def pki() -> StiPki:
    return make_sti_pki(NOW)


def service(pki: StiPki) -> VerificationService:
    fetcher = FakeFetcher(replies={URL: Reply(body=pki.chain_pem)})
    trust = TrustStore(pki.trust_anchors, (pki.sti_pa,))
    cache = CertificateCache(fetcher, trust, clock=ManualClock(NOW), profile=SHAKEN)
    return VerificationService(cache, clock=ManualClock(NOW))


def context(pki: StiPki, *, date: str | None, age: int = 0, orig: str = ORIG) -> SipContext:
    value = sign_shaken(
        key=pki.leaf_key,
        x5u=URL,
        orig=orig,
        dest=DEST,
        attest="A",
        now=NOW - timedelta(seconds=age),
    )
    return SipContext(
        identity=(value,), from_header=f"<tel:+{ORIG}>", to=f"<tel:+{DEST}>", date=date
    )


def sip_date(offset: int) -> str:
    return format_sip_date(NOW + timedelta(seconds=offset))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("date", "age", "orig", "reason"),
    [
        (None, 0, ORIG, None),
        (sip_date(-5), 0, ORIG, None),  # fresh: now on the common path too
        (sip_date(5), 0, ORIG, None),  # a little ahead, within the skew
        (sip_date(-3600), 0, ORIG, Reason.STALE_DATE),
        (sip_date(600), 0, ORIG, Reason.STALE_DATE),
        ("yesterday", 0, ORIG, Reason.STALE_DATE),
        (sip_date(-5), 3600, ORIG, Reason.STALE_IAT),
        (sip_date(-5), 0, "12025550199", Reason.ORIG_MISMATCH),
    ],
)
async def test_warm_agrees_with_verify(
    pki: StiPki, date: str | None, age: int, orig: str, reason: Reason | None
) -> None:
    verifier = service(pki)
    cold = verifier.verify_warm(context(pki, date=None), now=NOW)
    assert isinstance(cold, Plan) and cold.urls  # cold: not now, the plan names the certificate
    assert (await verifier.finish(cold)).verified  # the plan finished: it warms the cache
    request = context(pki, date=date, age=age, orig=orig)
    warm = verifier.verify_warm(request, now=NOW)
    assert isinstance(warm, VerificationResult)
    assert warm.reason is reason
    full = await verifier.verify(request, now=NOW)
    assert (warm.reason, warm.verstat, warm.attest, warm.orig) == (
        full.reason,
        full.verstat,
        full.attest,
        full.orig,
    )


@pytest.mark.anyio
async def test_missing_identity_needs_no_certificate(pki: StiPki) -> None:
    result = service(pki).verify_warm(
        SipContext(from_header=f"<tel:+{ORIG}>", to="<tel:+1>"), now=NOW
    )
    assert isinstance(result, VerificationResult) and result.reason is Reason.MISSING_IDENTITY


@pytest.mark.anyio
async def test_the_common_shape_gets_the_branding_verdict_the_branding_step_would_give(
    pki: StiPki,
) -> None:
    """The fast path gives a PASSporT without Rich Call Data, under a certificate without
    claim constraints, its not-present verdict itself; the general pipeline's result, given
    to the branding step, ends the same, and so does the call record's serial."""
    fetcher = FakeFetcher(replies={URL: Reply(body=pki.chain_pem)})
    trust = TrustStore(pki.trust_anchors, (pki.sti_pa,))
    cache = CertificateCache(fetcher, trust, clock=ManualClock(NOW), profile=SHAKEN)
    branding = BrandingService(cache, ContentCache(fetcher))
    verifier = VerificationService(cache, clock=ManualClock(NOW), branding=branding)
    request = context(pki, date=None)
    assert (await verifier.verify(request, now=NOW)).verified  # warms the cache
    warm = verifier.verify_warm(request, now=NOW)
    assert isinstance(warm, VerificationResult) and warm.verified
    assert warm.rcd is not None and warm.rcd.status is RcdStatus.NOT_PRESENT
    plan = prepare(request, now=NOW, profile=SHAKEN)
    assert isinstance(plan, Plan)
    material = cache.lookup(URL, NOW)
    assert isinstance(material, ValidatedCertificate) and material.unconstrained
    general = complete(plan, {URL: material}, None, now=NOW)
    assert general.rcd is None  # the general pipeline leaves it to the branding step
    branded = await branding.apply(request, general, NOW)
    assert branded == warm
    assert warm.cert_serial == format(pki.leaf.serial_number, "x") == material.serial
