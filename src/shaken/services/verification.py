"""The STI-VS as a service: the core's two pure steps with the certificate cache between them.

docs/architecture.md section 2, principle 2: :func:`~shaken.core.verify.prepare` runs every
check that needs
no certificate and names the x5u URLs; the cache obtains them (memory, store, or one fetch per
URL); :func:`~shaken.core.verify.complete` finishes. The clock is read once per request, here,
and that ``now`` decides freshness, certificate validity and cache expiry alike.

Every request goes through :meth:`VerificationService.verify_warm`, which calls
:func:`~shaken.core.verify.begin` with :meth:`CertificateCache.lookup` (a dict lookup): the
common case finishes there; anything else leaves a plan that :meth:`VerificationService.finish`
completes with the certificates the cache obtains.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from shaken.core.context import SipContext
from shaken.core.result import VerificationResult
from shaken.core.verify import (
    CertificateMaterial,
    Plan,
    ReplayWindow,
    VerificationProfile,
    begin,
    complete,
    prepare,
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

        :meth:`verify_warm`, then :meth:`finish` for the plan it leaves.

        :param now: the request's time; the clock is read when it is omitted.
        :param source: who sent the request (a SIP peer's address, a REST client): the
            certificate cache bounds the cold fetches one source may have in progress.
        :raises ConfigurationError: ``now`` is naive.
        """
        when = now if now is not None else self._clock.now()
        step = self.verify_warm(context, now=when, source=source)
        if isinstance(step, VerificationResult):
            return step
        return await self.finish(step, source=source)

    def verify_warm(
        self, context: SipContext, *, now: datetime, source: str | None = None
    ) -> Plan | VerificationResult:
        """The result :meth:`verify` would give when it needs nothing but memory; else the
        :class:`Plan` that :meth:`finish` completes.

        A server calls this inline and creates a task (``finish``) only for the requests that
        return a plan (a certificate to fetch or revalidate, a shared replay window to ask,
        branding content to fetch): on a warm cache that is almost none, and a task per
        request would cost a sixth of a whole verification. A plan is finished once, so the
        request is prepared once, and nothing is recorded (cache statistics aside) for a
        request that returns a plan, except a branded verification whose content is not
        cached yet: its SHAKEN verdict is in the plan. ``source`` is accepted for symmetry
        with :meth:`verify`: nothing is fetched here.
        """
        if self._guard is not None:
            # The shared replay window is not in memory: every signature goes to finish().
            return prepare(context, now=now, profile=self.profile)
        lookup = self._cache.lookup
        step = begin(
            context,
            lambda url: lookup(url, now),
            now=now,
            profile=self.profile,
            replay=self._replay,
            branding=self.branding is not None,
        )
        if isinstance(step, Plan):
            certificates: dict[str, CertificateMaterial] = {}
            for url in step.urls:
                hit = lookup(url, now)
                if hit is None:
                    return step
                certificates[url] = hit
            result = complete(step, certificates, None, now=now, replay=self._replay)
        else:
            result = step
        if self.branding is None:
            return result
        branded = self.branding.apply_warm(context, result, now)
        if branded is not None:
            return branded
        return _Branding.of(context, self.profile, now, result)

    async def finish(self, plan: Plan, *, source: str | None = None) -> VerificationResult:
        """Finish what :meth:`verify_warm` left: the plan completed with the certificates
        the cache obtains (:meth:`complete`), then the branding step."""
        result = await self.complete(plan, source=source)
        if self.branding is not None:
            result = await self.branding.apply(plan.context, result, plan.now)
        return result

    async def complete(self, plan: Plan, *, source: str | None = None) -> VerificationResult:
        """Obtain the plan's certificates (concurrently) and finish at the plan's ``now``."""
        if isinstance(plan, _Branding):
            return plan.result  # verified already; only the branding step is pending
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
        # A plan is never written by complete(), so it completes again, with the core's
        # window saying which signatures the guard had seen.
        return complete(plan, certificates, None, now=plan.now, replay=_Seen(replayed))


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


@dataclass(frozen=True, slots=True, kw_only=True)
class _Branding(Plan):
    """A verification done but for its branding, whose referenced content must be fetched."""

    result: VerificationResult

    @classmethod
    def of(
        cls,
        context: SipContext,
        profile: VerificationProfile,
        now: datetime,
        result: VerificationResult,
    ) -> _Branding:
        return cls(
            context=context,
            profile=profile,
            now=now,
            request_checks=result.trace.request,
            candidates=(),
            result=result,
        )
