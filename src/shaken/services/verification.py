"""The STI-VS as a service: the core's two pure steps with the certificate cache between them.

docs/architecture.md section 2, principle 2: :func:`~shaken.core.verify.prepare` runs every
check that needs
no certificate and names the x5u URLs; the cache obtains them (memory, store, or one fetch per
URL); :func:`~shaken.core.verify.complete` finishes. The clock is read once per request, here,
and that ``now`` decides freshness, certificate validity and cache expiry alike.

Before any of that, the common case (one full-form SHAKEN PASSporT whose certificate the cache
already validated) goes through :func:`~shaken.core.verify.try_verify_common`, which looks the
certificate up with :meth:`CertificateCache.lookup` (a dict lookup); anything else, or any
failure there, takes the general path, which names the Reason.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from shaken.core.context import SipContext
from shaken.core.result import VerificationResult
from shaken.core.verify import (
    CertificateMaterial,
    Plan,
    ReplayWindow,
    VerificationProfile,
    complete,
    prepare,
    try_verify_common,
)
from shaken.services.cert_cache import CertificateCache
from shaken.services.ports import Clock, SystemClock
from shaken.services.rcd import BrandingService
from shaken.services.shared import ReplayGuard

__all__ = ["VerificationService"]


class VerificationService:
    """Verify SIP requests with certificates from a :class:`CertificateCache`.

    :param profile: the verification profile; its validation knobs should match the cache's
        (``cache.profile`` is the default).
    :param replay: an optional replay window (RFC 8224 section 12.1); with one, every request
        takes the general path so the window sees every signature.
    :param branding: the Rich Call Data step (RFC 9795), run on verified results only; it adds
        :attr:`VerificationResult.rcd` and never changes the SHAKEN verdict.
    :param replay_guard: a replay window that is not in this process (several instances
        share one, :mod:`shaken.services.shared`), in place of ``replay``. The core checks
        replay synchronously, after the signature: the service lets it name the signatures
        that passed, asks the guard about them, and for one already seen completes the
        plan again with the core's window saying so, so the verdict, the Reason and the
        trace are the core's own.
    """

    def __init__(
        self,
        cache: CertificateCache,
        *,
        clock: Clock | None = None,
        profile: VerificationProfile | None = None,
        replay: ReplayWindow | None = None,
        branding: BrandingService | None = None,
        replay_guard: ReplayGuard | None = None,
    ) -> None:
        self._cache = cache
        self._clock = clock or SystemClock()
        self.profile = profile if profile is not None else cache.profile
        self._replay = replay
        self._guard = replay_guard
        self._checks_replay = replay is not None or replay_guard is not None
        self.branding = branding

    @property
    def replay(self) -> ReplayWindow | None:
        """The replay window this service checks (RFC 8224 section 12.1), if any."""
        return self._replay

    @property
    def cache(self) -> CertificateCache:
        return self._cache

    async def verify(
        self, context: SipContext, *, now: datetime | None = None, source: str | None = None
    ) -> VerificationResult:
        """Verify one request. A bad token is a result; only caller mistakes raise.

        :param now: the request's time; the clock is read when it is omitted.
        :param source: who sent the request (a SIP peer's address, a REST client): the
            certificate cache bounds the cold fetches one source may have in progress.
        :raises ConfigurationError: ``now`` is naive.
        """
        when = now if now is not None else self._clock.now()
        result = await self._verify(context, when, source)
        if self.branding is not None:
            result = await self.branding.apply(context, result, when)
        return result

    async def _verify(
        self, context: SipContext, when: datetime, source: str | None
    ) -> VerificationResult:
        if not self._checks_replay:
            lookup = self._cache.lookup
            common = try_verify_common(
                context, lambda url: lookup(url, when), now=when, profile=self.profile
            )
            if common is not None:
                return common
        step = prepare(context, now=when, profile=self.profile)
        if isinstance(step, VerificationResult):
            return step
        return await self.complete(step, source=source)

    def verify_warm(
        self, context: SipContext, *, now: datetime, source: str | None = None
    ) -> VerificationResult | None:
        """The result :meth:`verify` would give, when it needs nothing but memory; else None.

        A server calls this inline and creates a task only for the requests that return None
        (a certificate to fetch or revalidate): on a warm cache that is almost none, and a
        task per request would cost a sixth of a whole verification. Nothing is recorded
        (cache statistics aside) unless a result is returned, so falling back to
        :meth:`verify` after None is safe. A branded call whose referenced content is not
        cached yet also gives None. ``source`` is accepted for symmetry with :meth:`verify`:
        nothing is fetched here.
        """
        result = self._verify_warm(context, now=now)
        if result is None or self.branding is None:
            return result
        return self.branding.apply_warm(context, result, now)

    def _verify_warm(self, context: SipContext, *, now: datetime) -> VerificationResult | None:
        if self._guard is not None:
            return None  # the shared replay window is not in memory
        if self._replay is None:
            lookup = self._cache.lookup
            common = try_verify_common(
                context, lambda url: lookup(url, now), now=now, profile=self.profile
            )
            if common is not None:
                return common
        step = prepare(context, now=now, profile=self.profile)
        if isinstance(step, VerificationResult):
            return step
        certificates: dict[str, CertificateMaterial] = {}
        for url in step.urls:
            hit = self._cache.lookup(url, step.now)
            if hit is None:
                return None
            certificates[url] = hit
        return complete(step, certificates, None, now=step.now, replay=self._replay)

    async def complete(self, plan: Plan, *, source: str | None = None) -> VerificationResult:
        """Obtain the plan's certificates (concurrently) and finish at the plan's ``now``."""
        urls = plan.urls
        cache = self._cache
        when = plan.now
        if len(urls) == 1:
            materials: list[CertificateMaterial] = [
                await cache.get(urls[0], now=when, source=source)
            ]
        else:
            materials = list(
                await asyncio.gather(*(cache.get(u, now=when, source=source) for u in urls))
            )
        certificates = dict(zip(urls, materials, strict=True))
        # Every material is validated or a failure, so no anchors are needed here: the cache
        # validated against the trust anchors (and CRLs) current when it did.
        guard = self._guard
        if guard is None:
            return complete(plan, certificates, None, now=plan.now, replay=self._replay)
        passed = _Signatures()
        result = complete(plan, certificates, None, now=plan.now, replay=passed)
        replayed = {sig for sig in passed.signatures if await guard.seen(sig, plan.now)}
        if not replayed:
            return result
        again = prepare(plan.context, now=plan.now, profile=plan.profile)
        assert isinstance(again, Plan)  # the same request prepared at the same time
        return complete(again, certificates, None, now=plan.now, replay=_Seen(replayed))


class _Signatures(ReplayWindow):
    """The core's replay window as a recorder: every signature that passed, none refused."""

    def __init__(self) -> None:
        super().__init__()
        self.signatures: list[bytes] = []

    def seen(self, signature: bytes, now: datetime) -> bool:
        self.signatures.append(signature)
        return False


class _Seen(ReplayWindow):
    """The core's replay window answering what the shared guard said."""

    def __init__(self, replayed: set[bytes]) -> None:
        super().__init__()
        self.replayed = replayed

    def seen(self, signature: bytes, now: datetime) -> bool:
        return signature in self.replayed
