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

Revoked: the verifier's own validation applies the CRLs (``cert_revoked``); a chain that does
not validate here (a signing-only server has no anchors for it) is looked up in the CRLs its
CRL Distribution Points name, through the CRL cache, and in the local CRL files, verified with
its own issuer or the configured CRL signers (:func:`shaken.core.chain.find_revocation`).
``/readyz`` is not ready while one of our certificates is revoked or expired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from shaken.adapters.runtime import Runtime
from shaken.core.certs import crl_distribution_points, load_certificates
from shaken.core.chain import find_revocation
from shaken.core.errors import CertificateError, VerificationFailure
from shaken.core.reasons import Reason
from shaken.core.verify import ValidatedCertificate
from shaken.services.crl import CrlRecord
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
    revoked: bool = False

    def days_left(self, now: datetime) -> float | None:
        if self.not_after is None:
            return None
        return (self.not_after - now).total_seconds() / 86400.0

    def expired(self, now: datetime) -> bool:
        """The signer's certificate is past its notAfter (as far as its chain can be read)."""
        return self.not_after is not None and now > self.not_after


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
        revoked = failure.reason is Reason.CERT_REVOKED
        try:
            document = await self._runtime.fetcher.fetch(x5u)
            chain = load_certificates(document.body)
            not_after = chain[0].not_valid_after_utc
        except (VerificationFailure, CertificateError) as exc:
            detail = f"{detail}; reading the chain: {exc}"
            known = self._status.get(x5u)
            if known is not None:  # the repository is down: the chain seen last still expires
                not_after, revoked = known.not_after, revoked or known.revoked
        else:
            if not revoked:
                found = await self._revocation(chain, now)
                if found is not None:
                    revoked, detail = True, found
        return CertificateStatus(
            x5u=x5u,
            valid=False,
            spc=None,
            not_after=not_after,
            detail=detail,
            checked_at=now,
            revoked=revoked,
        )

    async def _revocation(self, chain: tuple[x509.Certificate, ...], now: datetime) -> str | None:
        """Whether the CRLs the cache knows (or can fetch for our own chain) revoke it."""
        crls = self._runtime.cache.crl_cache
        urls: dict[str, None] = {}
        for cert in chain:
            try:
                urls.update(dict.fromkeys(crl_distribution_points(cert)))
            except CertificateError:
                continue
        # Our own chain, named by our configuration: its CRL URLs are safe to fetch.
        fetched = [await crls.get(url, now=now) for url in urls]
        bodies = [r.body for r in (*fetched, *crls.records()) if isinstance(r, CrlRecord)]
        material = self._runtime.trust.current
        anchors = () if material.anchors is None else material.anchors.certificates
        found = find_revocation(
            chain, crls=bodies, crl_signers=(*material.crl_signers, *anchors), at=now
        )
        return None if found is None else found.detail

    async def refresh(self, now: datetime) -> list[CertificateStatus]:
        """Every signing certificate's status (the cache makes this cheap when warm)."""
        return [await self.status(url, now) for url in self.urls]

    def snapshot(self) -> list[CertificateStatus]:
        """The statuses last seen, without any I/O (what the metrics collector reads)."""
        return [self._status[url] for url in self.urls if url in self._status]
