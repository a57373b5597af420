"""What a running server holds: the services of each profile, built by the composition root.

:func:`shaken.adapters.wiring.build_runtime` makes a :class:`Runtime`; the SIP handler and the
REST application only read one. They import these types from here, never the composition root
(which knows every concrete class, and through them httpx and Redis): the import-linter
contracts in ``pyproject.toml`` keep ``shaken.adapters.sip`` and ``shaken.adapters.http`` off
``shaken.adapters.wiring``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shaken.adapters.trust_loader import TrustSources
from shaken.config import Behavior, EffectiveProfile, Settings
from shaken.core.policy import ActionPolicy
from shaken.services.cert_cache import CertificateCache
from shaken.services.ports import Clock
from shaken.services.signing import SigningService
from shaken.services.trust import TrustStore
from shaken.services.verification import VerificationService

if TYPE_CHECKING:  # the concrete adapters; the runtime only holds and closes them
    from shaken.adapters.fetch import HttpsFetcher
    from shaken.adapters.shared_state import RedisSharedState

__all__ = ["Network", "ProfileRuntime", "Runtime"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileRuntime:
    """One effective profile, ready to serve: ``name`` None is the global one."""

    name: str | None
    behavior: Behavior
    effective: EffectiveProfile
    verifier: VerificationService | None
    signer: SigningService | None
    actions: ActionPolicy
    #: The fetcher of this profile's certificate cache (its x5u policy, limits and TLS CA).
    fetcher: HttpsFetcher | None = None
    sources: tuple[Network, ...] = ()
    header_value: str | None = None

    @property
    def signs(self) -> bool:
        return self.signer is not None and self.behavior.signs

    @property
    def verifies(self) -> bool:
        return self.verifier is not None and self.behavior.verifies


@dataclass(slots=True, kw_only=True)
class Runtime:
    """Everything a server needs; close it with :meth:`aclose`."""

    settings: Settings
    trust: TrustStore
    fetcher: HttpsFetcher
    cache: CertificateCache
    profiles: dict[str | None, ProfileRuntime]
    clock: Clock
    trust_sources: TrustSources
    #: Every certificate cache and fetcher, the global ones first: a profile whose fetch or
    #: validation settings differ from the global ones has its own (:class:`_Backends`).
    caches: tuple[CertificateCache, ...] = ()
    #: This server's name in the call log: ``[server] instance``, else the host name.
    instance: str = ""
    fetchers: tuple[HttpsFetcher, ...] = ()
    notes: list[str] = field(default_factory=list)
    #: The state instances share (``[server] shared_state``), or None: one machine.
    shared: RedisSharedState | None = None

    async def aclose(self) -> None:
        for cache in self.caches or (self.cache,):
            await cache.aclose()  # the CRL refresh uses the fetcher: it stops first
        for fetcher in self.fetchers or (self.fetcher,):
            await fetcher.aclose()
        if self.shared is not None:
            await self.shared.aclose()

    def profile_for_source(self, address: str) -> ProfileRuntime | None:
        """The first profile whose ``sources`` contain ``address``.

        See docs/architecture.md section 6.1.
        """
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        for profile in self.profiles.values():
            if any(ip in network for network in profile.sources):
                return profile
        return None

    def profile_for_header(self, value: str) -> ProfileRuntime | None:
        """The profile whose ``header_value`` is the profile-selecting header's ``value``.

        Only the configured value selects (never a profile's name: ``header_value`` may be a
        secret shared with one PBX), compared in constant time over every candidate, and a
        profile bound to ``sources`` is never selected this way: the header is the last resort
        for addresses no profile lists.
        """
        offered = hashlib.sha256(value.strip().encode("utf-8", "surrogateescape")).digest()
        found: ProfileRuntime | None = None
        for profile in self.profiles.values():
            if profile.header_value is None or profile.sources:
                continue
            wanted = hashlib.sha256(profile.header_value.encode("utf-8")).digest()
            if hmac.compare_digest(offered, wanted) and found is None:
                found = profile
        return found
