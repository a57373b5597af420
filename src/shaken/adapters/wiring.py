"""The composition root: from a validated configuration to running services.

This is the one module that knows every concrete class (docs/architecture.md section 2): it
loads the
signing keys and trust anchors the configuration names, builds the HTTPS fetcher, the
certificate store and cache, and one verification and one signing service per profile. The
SIP and REST adapters take a :class:`Runtime` and never construct services themselves.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shaken.adapters.fetch import FetchLimits, HttpsFetcher, Resolver
from shaken.adapters.lifecycle import check_x5u, with_lifecycle_credential
from shaken.adapters.runtime import ProfileRuntime, Runtime
from shaken.adapters.shared_state import (
    RedisCertificateStore,
    RedisReplay,
    RedisSharedState,
)
from shaken.adapters.store.certstore import DirectoryCertificateStore, default_cache_dir
from shaken.adapters.trust_loader import load_crl_files, load_trust, trust_sources
from shaken.config import GLOBAL_PROFILE, EffectiveProfile, Settings, effective_profile
from shaken.config.typed import TnEntry, VerificationSettings
from shaken.core.chain import TrustAnchors
from shaken.core.errors import ConfigurationError, VerificationFailure
from shaken.core.jws import load_private_key
from shaken.core.verify import ReplayWindow
from shaken.core.x5u import X5uPolicy
from shaken.services.cert_cache import CacheSettings, CertificateCache, RevocationMode
from shaken.services.crl import LocalCrls
from shaken.services.ports import Clock, SystemClock
from shaken.services.rcd import BrandingService, BrandingSettings, ContentCache
from shaken.services.signing import Brand, Credential, SigningPolicy, SigningService, TnRule
from shaken.services.trust import TrustStore
from shaken.services.verification import VerificationService

__all__ = [
    "build_runtime",
    "check_signing_certificates",
    "load_brands",
    "prepare_brands",
]


def _crl_files(verification: VerificationSettings) -> LocalCrls | None:
    """What reads the configured CRL files again on each refresh (None: there are none)."""
    paths = tuple(Path(p) for p in verification.crl_files)
    return functools.partial(load_crl_files, paths) if paths else None


@dataclass(frozen=True, slots=True)
class _BackendKey:
    """What makes two profiles need different fetchers or caches (everything else is shared)."""

    policy: X5uPolicy
    limits: FetchLimits
    tls_ca_file: str | None
    min_ttl: int
    max_ttl: int
    negative_ttl: int
    require_tnauthlist: bool
    enforce_certificate_profile: bool

    @staticmethod
    def of(effective: EffectiveProfile) -> _BackendKey:
        v = effective.verification_settings
        vp = effective.verification_profile
        return _BackendKey(
            policy=vp.x5u_policy,
            limits=v.fetch_limits,
            tls_ca_file=v.tls_ca_file,
            min_ttl=v.min_cache_ttl,
            max_ttl=v.max_cache_ttl,
            negative_ttl=v.negative_cache_ttl,
            require_tnauthlist=vp.require_tnauthlist,
            enforce_certificate_profile=vp.enforce_certificate_profile,
        )


@dataclass(slots=True, kw_only=True)
class _Backends:
    """One fetcher and certificate cache per distinct :class:`_BackendKey`.

    Each profile's fetch limits, x5u policy, TLS CA, cache lifetimes and certificate checks
    must take effect for that profile's calls: the fetcher enforces the URL policy and limits,
    and the cache validates chains with the knobs it was built with. Profiles that agree share
    one (the usual case: one cache, each x5u fetched once). A profile's own cache persists in a
    subdirectory of the certificate store, so the lifetimes it computed are its own.
    """

    trust: TrustStore
    store_dir: Path
    clock: Clock
    resolver: Resolver | None
    max_entries: int
    revocation: RevocationMode
    #: Revocation is global (``GLOBAL_ONLY``): every cache refreshes and reads the same CRLs.
    crl_refresh: timedelta
    crl_files: LocalCrls | None
    now: datetime
    shared: RedisSharedState | None = None
    built: dict[_BackendKey, tuple[HttpsFetcher, CertificateCache]] = field(default_factory=dict)
    contents: dict[tuple[int, BrandingSettings], ContentCache] = field(default_factory=dict)

    def for_profile(self, effective: EffectiveProfile) -> tuple[HttpsFetcher, CertificateCache]:
        key = _BackendKey.of(effective)
        found = self.built.get(key)
        if found is not None:
            return found
        fetcher = HttpsFetcher(
            policy=key.policy,
            limits=key.limits,
            resolver=self.resolver,
            tls_ca_file=key.tls_ca_file,
            clock=self.clock,
        )
        directory = self.store_dir
        namespace = ""
        if self.built:  # not the global backend
            namespace = effective.name or GLOBAL_PROFILE
            directory = directory / "profiles" / namespace
        shared = None
        if self.shared is not None:
            shared = RedisCertificateStore(self.shared, namespace=namespace)
        cache = CertificateCache(
            fetcher,
            self.trust,
            store=DirectoryCertificateStore(directory),
            clock=self.clock,
            settings=CacheSettings(
                min_ttl=timedelta(seconds=key.min_ttl),
                max_ttl=timedelta(seconds=key.max_ttl),
                negative_ttl=timedelta(seconds=key.negative_ttl),
                max_entries=self.max_entries,
                revocation=self.revocation,
                crl_refresh=self.crl_refresh,
            ),
            profile=effective.verification_profile,
            crl_files=self.crl_files,
            shared=shared,
            # A cold fetch holds its claim for the fetch timeout and a validation, with room.
            claim_seconds=key.limits.timeout + 5.0,
        )
        if self.crl_files is not None:
            cache.crl_cache.set_local(self.crl_files(), now=self.now)
        self.built[key] = (fetcher, cache)
        return fetcher, cache

    def branding(
        self, effective: EffectiveProfile, fetcher: HttpsFetcher, cache: CertificateCache
    ) -> BrandingService:
        """The branding step of a profile: referenced content through the profile's fetcher
        (its x5u URL policy and caps), one content cache per fetcher and settings."""
        v = effective.verification_settings
        settings = BrandingSettings(
            max_crn_length=v.rcd_max_crn_length,
            require_integrity=v.rcd_require_integrity,
            ttl=timedelta(seconds=v.rcd_cache_ttl),
            negative_ttl=timedelta(seconds=v.negative_cache_ttl),
        )
        key = (id(fetcher), settings)
        content = self.contents.get(key)
        if content is None:
            content = self.contents[key] = ContentCache(fetcher, settings)
        return BrandingService(cache, content)

    def caches(self) -> tuple[CertificateCache, ...]:
        return tuple(cache for _, cache in self.built.values())

    def fetchers(self) -> tuple[HttpsFetcher, ...]:
        return tuple(fetcher for fetcher, _ in self.built.values())


def _credential(
    key_file: str | None, x5u: str | None, cache: dict[tuple[str, str], Credential]
) -> Credential | None:
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


def _brand(brands: Mapping[str, Brand], name: str | None) -> Brand | None:
    return None if name is None else brands.get(name)


def load_brands(settings: Settings) -> dict[str, Brand]:
    """Every ``[brand.NAME]``, with ``rcdi`` computed from the local copies it names.

    A brand whose referenced content has no local copy is returned without ``rcdi``;
    :func:`prepare_brands` fetches it (under the x5u URL policy) before serving.

    :raises ConfigurationError: a file cannot be read, or the brand is not valid RCD.
    """
    out: dict[str, Brand] = {}
    for name, values in settings.brands.items():
        label = f"[brand.{name}]"
        line = settings.line_of("brand", name, "nam")
        where = f"{settings.source}: {label}" + (f" (line {line})" if line else "")
        rcd: dict[str, Any] = {"nam": values["nam"]}
        for member in ("apn", "icn", "jcl"):
            if member in values:
                rcd[member] = values[member]
        contents: dict[str, bytes] = {}
        try:
            if "jcd_file" in values:
                rcd["jcd"] = json.loads(Path(values["jcd_file"]).read_text(encoding="utf-8"))
            for url, copy in (("icn", "icn_file"), ("jcl", "jcl_file")):
                if copy in values:
                    contents[values[url]] = Path(values[copy]).read_bytes()
        except OSError as exc:
            raise ConfigurationError(
                f"{where}: cannot read {exc.filename}: {exc.strerror}"
            ) from None
        except ValueError as exc:
            raise ConfigurationError(f"{where}: jcd_file is not JSON: {exc}") from None
        try:
            # Unset crn, call_reasons, ppt and digest are Brand's defaults.
            given = {k: values[k] for k in ("crn", "ppt", "digest") if k in values}
            if "call_reasons" in values:
                given["call_reasons"] = tuple(values["call_reasons"])
            brand = Brand(name=name, rcd=rcd, label=label, **given)
            if brand.references and all(url in contents for url in brand.references):
                brand = brand.with_content(contents)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{settings.source}: {exc}") from None
        out[name] = brand
    return out


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
    # The certificate lifecycle's current generation, when there is one, signs.
    settings = with_lifecycle_credential(settings)
    clock = clock or SystemClock()
    when = now if now is not None else clock.now()
    glob = effective_profile(settings, None)
    verification = glob.verification_settings
    sources = trust_sources(verification)
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
    store_dir = Path(verification.cache_dir) if verification.cache_dir else default_cache_dir()
    shared = shared_state(settings)
    backends = _Backends(
        trust=trust,
        store_dir=store_dir,
        clock=clock,
        resolver=resolver,
        max_entries=verification.max_cache_entries,
        revocation=verification.revocation,
        crl_refresh=timedelta(seconds=verification.crl_refresh),
        crl_files=_crl_files(verification),
        now=when,
        shared=shared,
    )
    fetcher, cache = backends.for_profile(glob)
    credentials: dict[tuple[str, str], Credential] = {}
    brands = load_brands(settings)

    def rule(entry: TnEntry, label: str) -> TnRule:
        return TnRule(
            attest=entry.attest,
            credential=_credential(entry.private_key, entry.x5u, credentials),
            label=label,
            brand=_brand(brands, entry.brand),
        )

    tns = {tn: rule(entry, f'[tn."{tn}"]') for tn, entry in settings.tn_entries.items()}
    ranges = tuple(
        SigningPolicy.range_of(entry.start, entry.count, rule(entry, f"[tn_range.{name}]"))
        for name, entry in settings.tn_range_entries.items()
    )
    profiles: dict[str | None, ProfileRuntime] = {}
    for name in [None, *settings.profiles]:
        effective = glob if name is None else effective_profile(settings, name)
        attestation = effective.attestation_settings
        signer = None
        if attestation.enabled:
            policy = SigningPolicy(
                credential=_credential(attestation.private_key, attestation.x5u, credentials),
                attest=attestation.attest,
                unknown_tn_attest=attestation.unknown_tn_attest,
                tns=tns,
                ranges=ranges,
                caller_sources=effective.verification_profile.caller_sources,
                numbering_plan=effective.verification_profile.numbering_plan,
                # A profile's own attest caps every TN entry for the calls it applies to.
                ceiling=effective.attest_ceiling,
                ceiling_label=f"[profile.{name}]",
                brand=_brand(brands, effective.brand),
            )
            if policy.credential is not None or tns or ranges:
                signer = SigningService(policy, clock=clock)
        verifier = None
        profile_fetcher = None
        if effective.verification_settings.enabled:
            replay = (
                ReplayWindow(effective.verification_profile.max_iat_age)
                if effective.verification_settings.replay_check
                else None
            )
            guard = None
            if replay is not None and shared is not None:
                # One window across instances; this process's own while Redis cannot answer.
                guard = RedisReplay(shared, replay, effective.verification_profile.max_iat_age)
                replay = None
            profile_fetcher, profile_cache = backends.for_profile(effective)
            branding = None
            if effective.verification_settings.rcd_verify:
                branding = backends.branding(effective, profile_fetcher, profile_cache)
            verifier = VerificationService(
                profile_cache,
                clock=clock,
                profile=effective.verification_profile,
                replay=replay,
                branding=branding,
                replay_guard=guard,
            )
        profiles[name] = ProfileRuntime(
            name=name,
            behavior=effective.behavior,
            effective=effective,
            verifier=verifier,
            signer=signer,
            actions=effective.actions,
            fetcher=profile_fetcher if verifier is not None else None,
            sources=tuple(ipaddress.ip_network(s, strict=False) for s in effective.sources),
            header_value=effective.header_value,
        )
    return Runtime(
        settings=settings,
        trust=trust,
        fetcher=fetcher,
        cache=cache,
        caches=backends.caches(),
        instance=settings.server_settings.instance or socket.gethostname(),
        fetchers=backends.fetchers(),
        profiles=profiles,
        clock=clock,
        trust_sources=sources,
        notes=notes,
        shared=shared,
    )


def shared_state(settings: Settings) -> RedisSharedState | None:
    """The shared layer ``[server] shared_state`` names, or None (one machine)."""
    server = settings.server_settings
    if not server.shared_state:
        return None
    return RedisSharedState(
        server.shared_state,
        prefix=server.shared_state_prefix,
        timeout=server.shared_state_timeout_ms / 1000.0,
    )


def _signing_credentials(profile: ProfileRuntime) -> list[Credential]:
    """Every credential a profile's signer may use: its own, and its TN entries'."""
    if profile.signer is None:
        return []
    policy = profile.signer.policy
    found = [policy.credential] if policy.credential is not None else []
    found += [rule.credential for rule in policy.tns.values() if rule.credential is not None]
    found += [rule.credential for *_, rule in policy.ranges if rule.credential is not None]
    return found


async def check_signing_certificates(runtime: Runtime, *, now: datetime | None = None) -> int:
    """Fetch the x5u of every signing credential whose profile sets ``check_x5u_at_load``.

    Asterisk's ``check_tn_cert_public_url``, made
    stricter: the URL must answer with a certificate chain that is valid now, holds no private
    key, and whose leaf is the public half of the key that signs with it (Asterisk feature
    request #907). The flag on ``[attestation]`` or a profile covers the ``[tn]`` and
    ``[tn_range]`` credentials that profile signs with too. Returns how many URLs were checked.

    :raises ConfigurationError: every problem found, one per line.
    """
    when = now if now is not None else runtime.clock.now()
    checked: dict[tuple[str, bytes], str | None] = {}
    for profile in runtime.profiles.values():
        if not profile.effective.attestation_settings.check_x5u_at_load:
            continue
        for credential in _signing_credentials(profile):
            spki = credential.key.public_key().public_bytes(
                Encoding.DER, PublicFormat.SubjectPublicKeyInfo
            )
            key = (credential.x5u, spki)
            if key not in checked:
                checked[key] = await check_x5u(runtime.fetcher, credential, now=when)
    problems = sorted({p for p in checked.values() if p is not None})
    if problems:
        raise ConfigurationError("check_x5u_at_load: " + "; ".join(problems))
    return len(checked)


async def prepare_brands(runtime: Runtime) -> list[str]:
    """Fetch the published content of every brand that has no local copy, and compute its rcdi.

    The content is fetched once, through the global fetcher: the x5u URL policy and caps hold
    for it as for certificates. Each signer's brands are replaced by the ready ones.

    :raises ConfigurationError: a brand's content cannot be fetched (naming the brand and URL).
    :returns: the names of the brands that were fetched.
    """
    ready: dict[str, Brand] = {}
    pending: dict[str, Brand] = {}
    for profile in runtime.profiles.values():
        if profile.signer is None:
            continue
        for brand in _brands_of(profile.signer.policy):
            if not brand.ready:
                pending[brand.name] = brand
    for name, brand in pending.items():
        contents: dict[str, bytes] = {}
        for url in brand.references:
            try:
                contents[url] = (await runtime.fetcher.fetch(url)).body
            except VerificationFailure as exc:
                raise ConfigurationError(f"{brand.label}: {url}: {exc.detail}") from None
        ready[name] = brand.with_content(contents)
    if ready:
        for profile in runtime.profiles.values():
            if profile.signer is not None:
                profile.signer.policy = _with_brands(profile.signer.policy, ready)
    return sorted(ready)


def _brands_of(policy: SigningPolicy) -> list[Brand]:
    found = [policy.brand] if policy.brand is not None else []
    found += [rule.brand for rule in policy.tns.values() if rule.brand is not None]
    found += [rule.brand for *_, rule in policy.ranges if rule.brand is not None]
    return found


def _with_brands(policy: SigningPolicy, ready: Mapping[str, Brand]) -> SigningPolicy:
    def swap(brand: Brand | None) -> Brand | None:
        return None if brand is None else ready.get(brand.name, brand)

    return replace(
        policy,
        brand=swap(policy.brand),
        tns={tn: replace(rule, brand=swap(rule.brand)) for tn, rule in policy.tns.items()},
        ranges=tuple(
            (first, last, digits, replace(rule, brand=swap(rule.brand)))
            for first, last, digits, rule in policy.ranges
        ),
    )
