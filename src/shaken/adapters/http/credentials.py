"""The certificates behind our own signing keys: their SPC and when they expire.

An API key may be bound to SPCs rather than TNs; then a signing request is allowed when the
certificate its call would be signed with carries one of those SPCs. And an operator wants to
know, before verifiers start failing our calls, how many days each signing certificate has left.

Both come from the chain published at each configured ``x5u``, read through the verifier's own
certificate cache (``Runtime.cache``): the same bytes every verifier fetches, validated against
our trust anchors, cached and persisted like any other chain, so a warm process asks the
repository nothing. Each URL is looked at again at most once per
:attr:`SigningCertificates.recheck` (a minute). When the chain does not validate (expired,
untrusted, unreachable) no SPC is trusted from it, and the expiry is still read from the raw
chain, fetched directly, so an expired certificate shows a negative day count rather than
vanishing from the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shaken.adapters.wiring import Runtime
from shaken.core.certs import load_certificates
from shaken.core.errors import CertificateError, VerificationFailure
from shaken.core.verify import ValidatedCertificate
from shaken.services.signing import Credential, SigningPolicy

__all__ = ["CertificateStatus", "SigningCertificates", "signing_credentials"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateStatus:
    """What is known about the chain at one of our x5u URLs at ``checked_at``.

    ``spc`` is set only when the chain validated; ``not_after`` is the signer's (the first
    certificate's) notAfter, known whenever the chain could be read at all.
    """

    x5u: str
    valid: bool
    spc: str | None
    not_after: datetime | None
    detail: str
    checked_at: datetime

    def days_left(self, now: datetime) -> float | None:
        if self.not_after is None:
            return None
        return (self.not_after - now).total_seconds() / 86400.0


def _policy_credentials(policy: SigningPolicy) -> list[Credential]:
    found = [policy.credential] if policy.credential is not None else []
    found += [rule.credential for rule in policy.tns.values() if rule.credential is not None]
    found += [r[3].credential for r in policy.ranges if r[3].credential is not None]
    return found


def signing_credentials(runtime: Runtime) -> list[Credential]:
    """Every credential a signing profile of ``runtime`` may use, one per x5u."""
    by_url: dict[str, Credential] = {}
    for profile in runtime.profiles.values():
        if profile.signer is not None:
            for credential in _policy_credentials(profile.signer.policy):
                by_url.setdefault(credential.x5u, credential)
    return [by_url[url] for url in sorted(by_url)]


class SigningCertificates:
    """The status of each signing certificate, refreshed through the certificate cache."""

    def __init__(self, runtime: Runtime, *, recheck: timedelta = timedelta(minutes=1)) -> None:
        self._runtime = runtime
        self.recheck = recheck
        self.urls = tuple(c.x5u for c in signing_credentials(runtime))
        self._status: dict[str, CertificateStatus] = {}

    async def status(self, x5u: str, now: datetime) -> CertificateStatus:
        """The chain at ``x5u``, looked at again once :attr:`recheck` has passed.

        Between looks the last status stands: signing requests and metric scrapes then cost a
        dict lookup, and they do not inflate the cache's hit count, which is there to describe
        the verification traffic.
        """
        known = self._status.get(x5u)
        if known is not None and timedelta(0) <= now - known.checked_at < self.recheck:
            return known
        material = await self._runtime.cache.get(x5u, now=now)
        if isinstance(material, ValidatedCertificate):
            status = CertificateStatus(
                x5u=x5u,
                valid=True,
                spc=material.spc,
                not_after=material.leaf.not_valid_after_utc,
                detail=material.subject,
                checked_at=now,
            )
        else:
            status = await self._unvalidated(x5u, material, now)
        self._status[x5u] = status
        return status

    async def _unvalidated(
        self, x5u: str, failure: VerificationFailure, now: datetime
    ) -> CertificateStatus:
        not_after: datetime | None = None
        detail = failure.detail
        try:
            document = await self._runtime.fetcher.fetch(x5u)
            not_after = load_certificates(document.body)[0].not_valid_after_utc
        except (VerificationFailure, CertificateError) as exc:
            detail = f"{detail}; reading the chain: {exc}"
        return CertificateStatus(
            x5u=x5u, valid=False, spc=None, not_after=not_after, detail=detail, checked_at=now
        )

    async def refresh(self, now: datetime) -> list[CertificateStatus]:
        """Every signing certificate's status (the cache makes this cheap when warm)."""
        return [await self.status(url, now) for url in self.urls]

    def snapshot(self) -> list[CertificateStatus]:
        """The statuses last seen, without any I/O (what the metrics collector reads)."""
        return [self._status[url] for url in self.urls if url in self._status]
