"""The composition root: from a validated configuration to running services.

This is the one module that knows every concrete class (DESIGN.md section 2): it loads the
signing keys and trust anchors the configuration names, builds the HTTPS fetcher, the
certificate store and cache, and one verification and one signing service per profile. The
SIP and REST adapters take a :class:`Runtime` and never construct services themselves.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shaken.adapters.fetch import FetchLimits, HttpsFetcher, Resolver
from shaken.adapters.store.certstore import DirectoryCertificateStore, default_cache_dir
from shaken.adapters.trust_loader import TrustSources, load_trust
from shaken.config import EffectiveProfile, Settings, effective_profile
from shaken.core.chain import TrustAnchors
from shaken.core.errors import ConfigurationError
from shaken.core.jws import load_private_key
from shaken.core.policy import ActionPolicy
from shaken.core.verify import ReplayWindow
from shaken.services.cert_cache import CacheSettings, CertificateCache, RevocationMode
from shaken.services.ports import Clock, SystemClock
from shaken.services.signing import Credential, SigningPolicy, SigningService, TnRule
from shaken.services.trust import TrustStore
from shaken.services.verification import VerificationService

__all__ = ["ProfileRuntime", "Runtime", "build_runtime"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileRuntime:
    """One effective profile, ready to serve: ``name`` None is the global one."""

    name: str | None
    behavior: str
    effective: EffectiveProfile
    verifier: VerificationService | None
    signer: SigningService | None
    actions: ActionPolicy
    sources: tuple[Network, ...] = ()
    header_value: str | None = None

    @property
    def signs(self) -> bool:
        return self.signer is not None and self.behavior in ("sign", "both")

    @property
    def verifies(self) -> bool:
        return self.verifier is not None and self.behavior in ("verify", "both")


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
    notes: list[str] = field(default_factory=list)

    async def aclose(self) -> None:
        await self.fetcher.aclose()

    def profile_for_source(self, address: str) -> ProfileRuntime | None:
        """The first profile whose ``sources`` contain ``address`` (DESIGN.md section 6)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        for profile in self.profiles.values():
            if any(ip in network for network in profile.sources):
                return profile
        return None

    def profile_for_header(self, value: str) -> ProfileRuntime | None:
        """The profile named by the configured profile-selecting header's value."""
        for profile in self.profiles.values():
            if profile.header_value is not None and profile.header_value == value.strip():
                return profile
        return self.profiles.get(value.strip())


def _trust_sources(verification: dict[str, Any]) -> TrustSources:
    files: list[Path] = []
    directories: list[Path] = []
    for entry in verification.get("trust_anchors", []):
        path = Path(entry)
        (directories if path.is_dir() else files).append(path)
    sti_pa = verification.get("sti_pa_certificate")
    return TrustSources(
        pem_files=tuple(files),
        directories=tuple(directories),
        trust_list=Path(verification["trust_list"]) if "trust_list" in verification else None,
        sti_pa_cert=Path(sti_pa) if sti_pa else None,
        crl_signer_files=(Path(sti_pa),) if sti_pa else (),
    )


def _credential(
    values: Mapping[str, Any], cache: dict[tuple[str, str], Credential]
) -> Credential | None:
    key_file, x5u = values.get("private_key"), values.get("x5u")
    if key_file is None and x5u is None:
        return None
    if key_file is None or x5u is None:
        raise ConfigurationError("private_key and x5u must be set together")
    found = cache.get((key_file, x5u))
    if found is None:
        try:
            key = load_private_key(Path(key_file).read_bytes())
        except OSError as exc:
            raise ConfigurationError(f"cannot read {key_file}: {exc.strerror}") from None
        found = Credential(key=key, x5u=x5u, name=Path(key_file).name)
        cache[(key_file, x5u)] = found
    return found


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    resolver: Resolver | None = None,
    now: datetime | None = None,
) -> Runtime:
    """Load what ``settings`` names and build the services.

    :raises ConfigurationError: a key or trust file cannot be used (naming it).
    """
    clock = clock or SystemClock()
    when = now if now is not None else datetime.now(UTC)
    glob = effective_profile(settings, None)
    verification = dict(glob.verification)
    sources = _trust_sources(verification)
    notes: list[str] = []
    trust = TrustStore(source="none")
    if sources.empty:
        notes.append("no trust anchors configured: every verification fails as cert_untrusted")
    else:
        loaded = load_trust(sources, now=when)
        trust.replace(
            TrustAnchors(certificates=loaded.anchors),
            crl_signers=loaded.crl_signers,
            source=loaded.source,
        )
    fetcher = HttpsFetcher(
        policy=glob.verification_profile.x5u_policy,
        limits=FetchLimits(
            timeout=float(verification["fetch_timeout"]),
            max_bytes=int(verification["max_fetch_bytes"]),
        ),
        resolver=resolver,
        tls_ca_file=verification.get("tls_ca_file"),
    )
    cache_dir = Path(verification["cache_dir"]) if "cache_dir" in verification else None
    store = DirectoryCertificateStore(cache_dir or default_cache_dir())
    hard = verification["require_crl"] or verification["crl_unavailable"] == "fail"
    cache = CertificateCache(
        fetcher,
        trust,
        store=store,
        clock=clock,
        settings=CacheSettings(
            min_ttl=timedelta(seconds=verification["min_cache_ttl"]),
            max_ttl=timedelta(seconds=verification["max_cache_ttl"]),
            negative_ttl=timedelta(seconds=verification["negative_cache_ttl"]),
            max_entries=verification["max_cache_entries"],
            revocation=RevocationMode.HARD if hard else RevocationMode.SOFT,
        ),
        profile=glob.verification_profile,
    )
    credentials: dict[tuple[str, str], Credential] = {}
    tns = {
        tn: TnRule(attest=v.get("attest"), credential=_credential(v, credentials))
        for tn, v in settings.tns.items()
    }
    ranges = tuple(
        SigningPolicy.range_of(
            v["start"],
            v["count"],
            TnRule(attest=v.get("attest"), credential=_credential(v, credentials)),
        )
        for v in settings.tn_ranges.values()
    )
    profiles: dict[str | None, ProfileRuntime] = {}
    for name in [None, *settings.profiles]:
        effective = glob if name is None else effective_profile(settings, name)
        raw = {} if name is None else settings.profiles[name]
        attestation = dict(effective.attestation)
        signer = None
        if attestation.get("enabled", True):
            policy = SigningPolicy(
                credential=_credential(attestation, credentials),
                attest=attestation.get("attest"),
                unknown_tn_attest=attestation.get("unknown_tn_attest"),
                tns=tns,
                ranges=ranges,
                caller_sources=effective.verification_profile.caller_sources,
                numbering_plan=effective.verification_profile.numbering_plan,
            )
            if policy.credential is not None or tns or ranges:
                signer = SigningService(policy, clock=clock)
        verifier = None
        if effective.verification.get("enabled", True):
            replay = (
                ReplayWindow(effective.verification_profile.max_iat_age)
                if effective.verification["replay_check"]
                else None
            )
            verifier = VerificationService(
                cache, clock=clock, profile=effective.verification_profile, replay=replay
            )
        profiles[name] = ProfileRuntime(
            name=name,
            behavior=effective.behavior,
            effective=effective,
            verifier=verifier,
            signer=signer,
            actions=effective.actions,
            sources=tuple(ipaddress.ip_network(s, strict=False) for s in raw.get("sources", [])),
            header_value=raw.get("header_value"),
        )
    return Runtime(
        settings=settings,
        trust=trust,
        fetcher=fetcher,
        cache=cache,
        profiles=profiles,
        clock=clock,
        trust_sources=sources,
        notes=notes,
    )
