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
import json
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shaken.core.branding import RcdStatus, RcdVerdict, judge, not_present
from shaken.core.claimconstraints import ClaimConstraintError, constraints_of
from shaken.core.context import SipContext
from shaken.core.errors import IdentityHeaderError, PassportError, VerificationFailure
from shaken.core.identity import IdentityHeader
from shaken.core.jws import b64url_decode, verify_es256
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
    """The claims of the PASSporT that verified.

    Verification has just accepted this header's token (strict base64url, JSON objects with
    no duplicate member), so in full form its payload segment is read directly: the whole
    header parse and token decode cost a quarter of a warm SIP verification. Anything else
    (a compact form rebuilt from SIP, say) takes the full parse.
    """
    index = result.identity_index
    if index is None or not 0 <= index < len(context.identity):
        return None
    token = context.identity[index].partition(";")[0].strip()
    parts = token.split(".")
    if len(parts) == 3 and parts[0] and parts[1]:
        try:
            claims = json.loads(b64url_decode(parts[1]))
        except ValueError:
            claims = None
        if isinstance(claims, dict):
            return claims
    try:
        header = IdentityHeader.parse(context.identity[index])
        if header.token is None:
            return None
        return dict(decode_token(header.token).payload)
    except (IdentityHeaderError, PassportError):
        return None


#: How far the ``iat`` of a separate rcd PASSporT may be from the SHAKEN one's: both are
#: signed for the same call at the same moment (RFC 9795 section 4).
RCD_IAT_SKEW = 60


@dataclass(frozen=True, slots=True)
class _RcdPassport:
    """A separate ``ppt: "rcd"`` PASSporT of the request, decoded (not yet trusted)."""

    x5u: str
    payload: dict[str, object]
    signing_input: bytes
    signature: bytes


def _rcd_passport(
    context: SipContext, result: VerificationResult, shaken: dict[str, object]
) -> _RcdPassport | RcdVerdict | None:
    """The request's ``ppt=rcd`` PASSporT for the verified call, or why it cannot count.

    Used only when the SHAKEN PASSporT itself carries no Rich Call Data. It must be full form,
    bound to the same call (``orig``, ``dest`` and ``iat`` of the verified SHAKEN PASSporT);
    its signature is checked by the caller with its own validated certificate.
    """
    for index, value in enumerate(context.identity):
        if index == result.identity_index:
            continue
        try:
            header = IdentityHeader.parse(value)
            if header.ppt != "rcd" or header.token is None:
                continue
            token = decode_token(header.token)
        except (IdentityHeaderError, PassportError):
            continue
        payload = dict(token.payload)
        x5u = token.header.get("x5u")
        same_call = (
            payload.get("orig") == shaken.get("orig")
            and payload.get("dest") == shaken.get("dest")
            and isinstance(payload.get("iat"), int)
            and isinstance(shaken.get("iat"), int)
            and abs(int(payload["iat"]) - int(shaken["iat"])) <= RCD_IAT_SKEW  # type: ignore[call-overload]
        )
        if token.header.get("ppt") != "rcd" or not isinstance(x5u, str) or not same_call:
            return RcdVerdict(
                status=RcdStatus.INVALID,
                reason=Reason.RCD_INVALID,
                detail="the rcd PASSporT is not for this call (orig, dest or iat differ)",
            )
        return _RcdPassport(x5u, payload, token.signing_input, token.signature)
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
        if not _carries_rcd(payload):
            return ()
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
        if not _carries_rcd(payload) and _unconstrained(certificate):
            return _NOT_PRESENT  # what judge() finds for no rcd claims and no constraints
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
        """:meth:`apply` from memory alone, or None when something must be fetched (or a
        separate rcd PASSporT checked, which the async path does)."""
        if not result.verified:
            return result
        payload = _payload(context, result)
        if payload is None:
            return result
        if not _carries_rcd(payload) and _rcd_passport(context, result, payload) is not None:
            return None
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
        """``result`` with its branding verdict; unchanged when it did not verify.

        The Rich Call Data is the verified SHAKEN PASSporT's, or, when it has none, that of a
        separate ``ppt=rcd`` PASSporT for the same call (RFC 9795 section 4), whose signature
        is checked here with its own validated certificate (whose constraints then apply).
        """
        if not result.verified:
            return result
        payload = _payload(context, result)
        if payload is None:
            return result
        x5u = result.x5u
        separate: _RcdPassport | None = None
        if not _carries_rcd(payload):
            found = _rcd_passport(context, result, payload)
            if isinstance(found, RcdVerdict):
                return replace(result, rcd=found)
            if found is not None:
                separate, x5u, payload = found, found.x5u, found.payload
        certificate: ValidatedCertificate | None = None
        if x5u is not None:
            material = self._cache.lookup(x5u, now) or await self._cache.get(x5u, now=now)
            if not isinstance(material, ValidatedCertificate):
                # Fail closed: the constraints the certificate may carry cannot be checked.
                detail = "the certificate of the rcd claims could not be validated"
                if isinstance(material, VerificationFailure):
                    detail += f": {material.detail}"
                verdict = RcdVerdict(
                    status=RcdStatus.CONSTRAINT_VIOLATED,
                    reason=Reason.RCD_CONSTRAINT_VIOLATED,
                    detail=detail,
                )
                return replace(result, rcd=verdict)
            certificate = material
        if separate is not None and (
            certificate is None
            or not verify_es256(certificate.public_key, separate.signing_input, separate.signature)
        ):
            verdict = RcdVerdict(
                status=RcdStatus.INVALID,
                reason=Reason.RCD_INVALID,
                detail="the rcd PASSporT's signature does not verify",
            )
            return replace(result, rcd=verdict)
        urls = self._urls(payload)
        fetched = await asyncio.gather(*(self.content.get(u, now) for u in urls))
        contents = dict(zip(urls, fetched, strict=True))
        return replace(result, rcd=self._judge(payload, certificate, contents))


#: The verdict of nearly every call: a PASSporT without Rich Call Data under a certificate
#: without claim constraints (frozen, so one value serves every result).
_NOT_PRESENT = not_present()


def _unconstrained(certificate: ValidatedCertificate | None) -> bool:
    """True when ``certificate`` carries no claim constraints (a malformed extension is not
    "none": :func:`judge` names it)."""
    if certificate is None:
        return True
    try:
        return constraints_of(certificate.leaf) is None
    except ClaimConstraintError:
        return False


def _carries_rcd(payload: dict[str, object]) -> bool:
    return any(name in payload for name in ("rcd", "rcdi", "crn"))
