"""The branding step of the STI-VS: fetch what a verified PASSporT's ``rcd`` references, judge.

After SHAKEN verification passed, :class:`BrandingService` takes the verified PASSporT (the
Identity header the result names), the validated signing certificate (from the certificate
cache, where verification just left it) and the content each ``rcd`` URL references, and asks
the pure :func:`shaken.core.branding.judge` for the verdict. The SHAKEN result is never
changed, only given its :attr:`~shaken.core.result.VerificationResult.rcd`.

Referenced content is fetched through the same :class:`~shaken.services.ports.CertificateFetcher`
as x5u certificates, so the x5u URL policy holds for logos and jCards too: https only, the
allowed ports, no userinfo or query, no redirects, every resolved address checked against the
special-purpose list before anything is sent, the body cap and the deadline. What was fetched
(or why it could not be) is cached by URL in :class:`ContentCache`, one fetch per URL however
many calls ask at once; a failure is remembered for ``negative_ttl`` so a dead logo server does
not cost every call a timeout.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shaken.core.branding import RcdStatus, RcdVerdict, judge
from shaken.core.context import SipContext
from shaken.core.errors import IdentityHeaderError, PassportError, VerificationFailure
from shaken.core.identity import IdentityHeader
from shaken.core.passport import decode_token
from shaken.core.rcd import DEFAULT_MAX_CRN_LENGTH, RcdError, parse_rich_call_data
from shaken.core.reasons import Reason
from shaken.core.result import VerificationResult
from shaken.core.verify import ValidatedCertificate
from shaken.services._flight import SingleFlight
from shaken.services.cert_cache import CertificateCache
from shaken.services.ports import CertificateFetcher

__all__ = ["BrandingService", "BrandingSettings", "ContentCache"]

Content = bytes | VerificationFailure


@dataclass(frozen=True, slots=True, kw_only=True)
class BrandingSettings:
    """The knobs of the branding step (``[verification]`` ``rcd_*`` keys)."""

    max_crn_length: int = DEFAULT_MAX_CRN_LENGTH
    require_integrity: bool = True
    ttl: timedelta = timedelta(hours=1)
    negative_ttl: timedelta = timedelta(seconds=30)
    max_entries: int = 1000


@dataclass(slots=True)
class _Entry:
    content: Content
    expires_at: datetime


class ContentCache:
    """Referenced RCD content by URL: bytes, or the failure to obtain them, until it expires."""

    def __init__(
        self, fetcher: CertificateFetcher, settings: BrandingSettings = BrandingSettings()
    ) -> None:
        self._fetcher = fetcher
        self.settings = settings
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._flight: SingleFlight[Content] = SingleFlight()
        #: Fetches started (after the cache missed), for metrics and tests.
        self.fetches = 0

    def forget(self) -> None:
        """Drop every cached entry (an operator's reload; the next call fetches again)."""
        self._entries.clear()

    def peek(self, url: str, now: datetime) -> Content | None:
        """What is cached for ``url`` and still good at ``now``; no I/O."""
        entry = self._entries.get(url)
        if entry is None or now >= entry.expires_at:
            return None
        self._entries.move_to_end(url)
        return entry.content

    async def get(self, url: str, now: datetime) -> Content:
        """The content of ``url``: cached, or fetched once however many callers ask."""
        found = self.peek(url, now)
        if found is not None:
            return found
        return await self._flight.run(url, lambda: self._fetch(url, now))

    async def _fetch(self, url: str, now: datetime) -> Content:
        self.fetches += 1
        content: Content
        try:
            document = await self._fetcher.fetch(url)
        except VerificationFailure as exc:
            content = exc
        else:
            content = document.body
        ttl = self.settings.negative_ttl if isinstance(content, Exception) else self.settings.ttl
        self._entries[url] = _Entry(content, now + ttl)
        self._entries.move_to_end(url)
        while len(self._entries) > self.settings.max_entries:
            self._entries.popitem(last=False)
        return content


def _payload(context: SipContext, result: VerificationResult) -> dict[str, object] | None:
    index = result.identity_index
    if index is None or not 0 <= index < len(context.identity):
        return None
    try:
        header = IdentityHeader.parse(context.identity[index])
        if header.token is None:
            return None
        return dict(decode_token(header.token).payload)
    except (IdentityHeaderError, PassportError):
        return None


class BrandingService:
    """Give verified results their Rich Call Data verdict.

    :param cache: the certificate cache verification used (the signing certificate is there).
    :param content: where referenced content comes from.
    """

    def __init__(self, cache: CertificateCache, content: ContentCache) -> None:
        self._cache = cache
        self.content = content

    @property
    def settings(self) -> BrandingSettings:
        return self.content.settings

    def _urls(self, payload: dict[str, object]) -> tuple[str, ...]:
        """What to fetch: the references, when there are digests to compare them with."""
        try:
            data = parse_rich_call_data(payload, max_crn_length=self.settings.max_crn_length)
        except RcdError:
            return ()  # judge() names the problem
        if data is None or data.rcdi is None:
            return ()  # judge() decides without content (require_integrity)
        return tuple(dict.fromkeys(r.uri for r in data.references))

    def _judge(
        self,
        payload: dict[str, object],
        certificate: ValidatedCertificate | None,
        contents: dict[str, Content],
    ) -> RcdVerdict:
        return judge(
            payload,
            None if certificate is None else certificate.leaf,
            contents,
            max_crn_length=self.settings.max_crn_length,
            require_integrity=self.settings.require_integrity,
        )

    def apply_warm(
        self, context: SipContext, result: VerificationResult, now: datetime
    ) -> VerificationResult | None:
        """:meth:`apply` from memory alone, or None when something must be fetched."""
        if not result.verified:
            return result
        payload = _payload(context, result)
        if payload is None:
            return result
        certificate = None
        if result.x5u is not None:
            certificate = self._cache.lookup(result.x5u, now)
            if certificate is None:
                return None
        contents: dict[str, Content] = {}
        for url in self._urls(payload):
            found = self.content.peek(url, now)
            if found is None:
                return None
            contents[url] = found
        return replace(result, rcd=self._judge(payload, certificate, contents))

    async def apply(
        self, context: SipContext, result: VerificationResult, now: datetime
    ) -> VerificationResult:
        """``result`` with its branding verdict; unchanged when it did not verify."""
        if not result.verified:
            return result
        payload = _payload(context, result)
        if payload is None:
            return result
        urls = self._urls(payload)
        certificate: ValidatedCertificate | None = None
        if result.x5u is not None:
            certificate = self._cache.lookup(result.x5u, now)
            if certificate is None:
                material = await self._cache.get(result.x5u, now=now)
                if not isinstance(material, ValidatedCertificate):
                    # Verification just validated this chain; if it is gone, fail closed: the
                    # constraints it may carry cannot be checked.
                    verdict = RcdVerdict(
                        status=RcdStatus.CONSTRAINT_VIOLATED,
                        reason=Reason.RCD_CONSTRAINT_VIOLATED,
                        detail="the signing certificate is no longer at hand to check constraints",
                    )
                    return replace(result, rcd=verdict)
                certificate = material
        fetched = await asyncio.gather(*(self.content.get(u, now) for u in urls))
        contents = dict(zip(urls, fetched, strict=True))
        return replace(result, rcd=self._judge(payload, certificate, contents))
