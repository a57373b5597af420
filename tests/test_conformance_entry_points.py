"""The conformance manifest through the entry points users call, with the same expectations.

``tests/core/test_conformance.py`` runs each case of ``tests/data/conformance.json`` through
the core's two steps. Here the same requests go through :func:`shaken.core.verify.verify`,
:func:`shaken.verify_identity`, :meth:`VerificationService.verify` and
:meth:`VerificationService.verify_warm` (then :meth:`~VerificationService.finish` for the plan
it leaves, and once more warm), and each must give the Reason, SIP code and verstat that the
manifest names. The service runs over a real certificate cache whose fake repository serves
the case's certificate (and the STI-PA CRL when the case has one).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest

import shaken
from shaken.core.errors import VerificationFailure
from shaken.core.result import VerificationResult
from shaken.core.verify import Plan, ReplayWindow, VerificationProfile, verify
from shaken.services.cert_cache import CacheSettings, CertificateCache, RevocationMode
from shaken.services.trust import TrustStore
from shaken.services.verification import VerificationService
from tests.core.test_conformance import CASES, NOW, Lab, Request, outcome, request_of
from tests.support.fakes import FakeFetcher, ManualClock, Reply

IDS = [c["id"] for c in CASES]


@pytest.fixture(scope="module")
def lab() -> Lab:
    return Lab()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _check(case: dict[str, Any], result: VerificationResult) -> None:
    assert outcome(result) == case["expect"], "\n".join(c.describe() for c in result.checks)
    assert result.verified is (case["expect"]["reason"] is None)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_core_verify(case: dict[str, Any], lab: Lab) -> None:
    request = request_of(case, lab)
    replay = ReplayWindow() if request.replay else None
    certificates = {request.x5u: request.material}
    for _ in range(2 if replay is not None else 1):
        result = verify(
            request.context,
            certificates,
            request.anchors,
            now=NOW,
            profile=request.profile,
            crls=request.crls,
            crl_signers=request.crl_signers,
            replay=replay,
        )
    _check(case, result)


def _expressible(request: Request) -> str | None:
    """Why ``shaken.verify_identity`` cannot make this request, or None."""
    if request.replay:
        return "verify_identity keeps no replay window"
    if request.context.pai or request.context.request_uri is not None:
        return "verify_identity takes From and To only"
    return None


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_verify_identity(case: dict[str, Any], lab: Lab) -> None:
    request = request_of(case, lab)
    why = _expressible(request)
    if why is not None:
        pytest.skip(why)
    context = request.context
    result = shaken.verify_identity(
        context.identity,
        orig=context.from_header or "",
        dest=context.to or "",
        certificate={request.x5u: request.material},
        trust_anchors=request.anchors,
        now=NOW,
        date=context.date,
        profile=request.profile,
        crls=request.crls,
        crl_signers=request.crl_signers,
    )
    _check(case, result)


def test_most_cases_reach_verify_identity(lab: Lab) -> None:
    """The skips above are the few requests the recipe cannot express."""
    skipped = [c["id"] for c in CASES if _expressible(request_of(c, lab)) is not None]
    assert len(skipped) <= len(CASES) // 5, skipped


def _service(request: Request, lab: Lab) -> VerificationService:
    material = request.material
    if isinstance(material, VerificationFailure):
        reply = Reply(failure=material)
    else:
        assert isinstance(material, bytes)
        reply = Reply(body=material)
    replies = {request.x5u: reply}
    if request.crls:  # as in the core run: the CRL is there only when the case gives one
        replies[lab.pki.crl_url] = Reply(body=request.crls[0])
    fetcher = FakeFetcher(replies)
    hard = request.profile.require_crl
    cache = CertificateCache(
        fetcher,
        TrustStore(request.anchors, request.crl_signers),
        settings=CacheSettings(revocation=RevocationMode.HARD if hard else RevocationMode.SOFT),
        profile=request.profile,
        clock=ManualClock(NOW),
    )
    return VerificationService(
        cache, profile=request.profile, replay=ReplayWindow() if request.replay else None
    )


@pytest.mark.anyio
@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_service_verify(case: dict[str, Any], lab: Lab) -> None:
    request = request_of(case, lab)
    service = _service(request, lab)
    try:
        result = await service.verify(request.context, now=NOW)
        if request.replay:
            result = await service.verify(request.context, now=NOW)
    finally:
        await service.cache.aclose()
    _check(case, result)


@pytest.mark.anyio
@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_service_verify_warm(case: dict[str, Any], lab: Lab) -> None:
    """Cold: the plan verify_warm leaves, finished; then warm: the answer from memory."""
    request = request_of(case, lab)
    service = _service(request, lab)
    try:
        step = service.verify_warm(request.context, now=NOW)
        cold = await service.finish(step) if isinstance(step, Plan) else step
        again = service.verify_warm(request.context, now=NOW)
        warm = await service.finish(again) if isinstance(again, Plan) else again
    finally:
        await service.cache.aclose()
    if request.replay:
        _check(case, warm)  # the second sighting is the replay
        return
    _check(case, cold)
    _check(case, warm)
    if cold.verified:
        assert isinstance(again, VerificationResult)  # a verified chain is in memory now


def test_every_verification_profile_field_is_known() -> None:
    """A new knob must be taken into account by every path (prepare, complete, the fast
    path's recognizer and checks, the cache's validation): this list is where it is noticed."""
    assert [f.name for f in fields(VerificationProfile)] == [
        "max_iat_age",
        "max_future_skew",
        "date_policy",
        "max_date_age",
        "full_form_only",
        "accepted_ppt",
        "caller_sources",
        "called_sources",
        "numbering_plan",
        "numeric_user_is_tn",
        "check_dest",
        "x5u_policy",
        "require_tnauthlist",
        "enforce_certificate_profile",
        "require_crl",
        "max_div_iat_age",
        "max_identity_headers",
        "max_certificate_urls",
    ]
