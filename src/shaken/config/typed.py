"""The typed, frozen settings a validated configuration produces, each default written once.

:mod:`shaken.config.schema` says what each key may hold (its type, its check, its help); the
dataclasses here say what an unset key means. Adapters read these, never a section's table
with a fallback of their own: a default that lived in the loader, the schema help and
``serve.py`` at once could (and did) disagree.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from shaken.core.verify import SHAKEN, DatePolicy
from shaken.services.cert_cache import CacheSettings, RevocationMode
from shaken.services.lifecycle import RenewalPolicy
from shaken.services.ports import FetchLimits

__all__ = [
    "SIP_MAX_IN_FLIGHT",
    "AcmeConfig",
    "AttestationSettings",
    "LifecycleSettings",
    "ServerSettings",
    "StiPaConfig",
    "TnEntry",
    "TnRangeEntry",
    "VerificationSettings",
    "toml_defaults",
]

#: What an unset ``[server] max_in_flight`` means for SIP (the REST API has no such bound).
SIP_MAX_IN_FLIGHT = 1000


def _frozen(value: Any) -> Any:
    """A TOML value made immutable: arrays become tuples, tables read-only mappings."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    return value


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """``[server]``: listeners, limits, the call log and the shared state (schema.SERVER_KEYS)."""

    sip_sign: tuple[str, ...] = ()
    sip_verify: tuple[str, ...] = ()
    rest: tuple[str, ...] = ()
    profile_header: str | None = None
    workers: int = 1
    #: Unset: :data:`SIP_MAX_IN_FLIGHT` for SIP; the REST API has no bound but its connection
    #: limits.
    max_in_flight: int | None = None
    tls_certificate: str | None = None
    tls_key: str | None = None
    listener_profiles: Mapping[str, str] = field(default_factory=_empty)
    max_message_size: int = 65535
    retry_after: int = 1
    call_log: str | None = None
    #: Unset: beside the certificate cache (:func:`shaken.adapters.store.calllogs.default_spool`).
    call_log_spool: str | None = None
    call_log_spool_max_records: int = 1_000_000
    call_log_timeout: float = 5.0
    shared_state: str | None = None
    shared_state_timeout_ms: int = 100
    shared_state_prefix: str = "shaken:"
    call_log_flush_ms: int = 100
    call_log_retention_days: int | None = None
    #: Unset: the host name.
    instance: str | None = None
    log_format: str = "text"
    log_level: str = "info"
    log_levels: Mapping[str, str] = field(default_factory=_empty)
    verification_open: bool = False
    api_schema: str = "auto"
    transaction_memory: int = 64 * 1024 * 1024
    tcp_connections_per_source: int = 64
    tcp_message_timeout: float = 10.0
    udp_max_age_ms: int = 100
    overload_answer: str = "503"
    #: Unset: :data:`shaken.adapters.sip.server.UDP_BUFFER`, set on every UDP socket at bind.
    udp_receive_buffer: int | None = None
    rest_header_timeout: float = 10.0
    rest_body_timeout: float = 10.0
    rest_keep_alive_timeout: int = 5
    rest_keep_alive_requests: int = 1000
    rest_max_connections: int = 1000
    rest_max_connections_per_source: int = 100
    #: Unset: :data:`shaken.adapters.accept.DEFAULT_RESERVE`.
    descriptor_reserve: int | None = None

    @property
    def sip_max_in_flight(self) -> int:
        return SIP_MAX_IN_FLIGHT if self.max_in_flight is None else self.max_in_flight

    @classmethod
    def of(cls, table: Mapping[str, Any]) -> ServerSettings:
        """The settings of a validated ``[server]`` table (unset keys at their defaults)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: _frozen(v) for k, v in table.items() if k in known})


# Whose defaults these are: the cache's knobs are CacheSettings', a fetch's FetchLimits', the
# PASSporT checks the SHAKEN verification profile's. The settings below refer to them.
_CACHE = CacheSettings()
_FETCH = FetchLimits()
_X5U = SHAKEN.x5u_policy


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationSettings:
    """``[verification]`` merged for one profile (schema.VERIFICATION_KEYS).

    ``revocation`` is the one revocation setting: its old spellings ``require_crl`` and
    ``crl_unavailable`` are folded into it by the loader and exist nowhere downstream.
    """

    enabled: bool = True
    trust_anchors: tuple[str, ...] = ()
    trust_list: str | None = None
    sti_pa_certificate: str | None = None
    revocation: RevocationMode = _CACHE.revocation
    crl_files: tuple[str, ...] = ()
    crl_refresh: int = _seconds(_CACHE.crl_refresh)
    #: Unset: :func:`shaken.adapters.store.certstore.default_cache_dir`.
    cache_dir: str | None = None
    fetch_timeout: float = _FETCH.timeout
    max_fetch_bytes: int = _FETCH.max_bytes
    min_cache_ttl: int = _seconds(_CACHE.min_ttl)
    max_cache_ttl: int = _seconds(_CACHE.max_ttl)
    max_cache_entries: int = _CACHE.max_entries
    negative_cache_ttl: int = _seconds(_CACHE.negative_ttl)
    max_iat_age: int = SHAKEN.max_iat_age
    max_future_skew: int = SHAKEN.max_future_skew
    max_date_age: int = SHAKEN.max_date_age
    date_header: DatePolicy = SHAKEN.date_policy
    full_form_only: bool = SHAKEN.full_form_only
    accepted_ppt: tuple[str, ...] = SHAKEN.accepted_ppt
    caller_sources: tuple[str, ...] = SHAKEN.caller_sources
    called_sources: tuple[str, ...] = SHAKEN.called_sources
    numbering_plan: str = "none"
    numeric_user_is_tn: bool = SHAKEN.numeric_user_is_tn
    check_dest: bool = SHAKEN.check_dest
    x5u_allowed_ports: tuple[int, ...] = _X5U.allowed_ports
    x5u_allow_http: bool = _X5U.allow_http
    x5u_any_port: bool = _X5U.any_port
    x5u_allowed_hosts: tuple[str, ...] = ()
    tls_ca_file: str | None = None
    require_tnauthlist: bool = SHAKEN.require_tnauthlist
    enforce_certificate_profile: bool = SHAKEN.enforce_certificate_profile
    replay_check: bool = False
    max_div_iat_age: int = SHAKEN.max_div_iat_age
    tag_verstat: bool = True
    reason_protocol: str = "STIR"
    rcd_verify: bool = True
    rcd_display: str = "off"
    rcd_display_prefix: str = "(Verified) "
    rcd_call_info: bool = False
    rcd_require_integrity: bool = True
    rcd_max_crn_length: int = 64
    rcd_cache_ttl: int = 3600

    @property
    def fetch_limits(self) -> FetchLimits:
        return FetchLimits(timeout=float(self.fetch_timeout), max_bytes=self.max_fetch_bytes)

    @classmethod
    def of(cls, merged: Mapping[str, Any]) -> VerificationSettings:
        """The settings of a merged, validated ``[verification]`` (``revocation`` folded)."""
        values = {f.name: _frozen(merged[f.name]) for f in fields(cls) if f.name in merged}
        if "revocation" in values:
            values["revocation"] = RevocationMode(values["revocation"])
        if "date_header" in values:
            values["date_header"] = DatePolicy(values["date_header"])
        return cls(**values)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttestationSettings:
    """``[attestation]`` merged for one profile (schema.ATTESTATION_KEYS)."""

    enabled: bool = True
    private_key: str | None = None
    x5u: str | None = None
    attest: str | None = None
    unknown_tn_attest: str | None = None
    check_x5u_at_load: bool = False

    @classmethod
    def of(cls, merged: Mapping[str, Any]) -> AttestationSettings:
        return cls(**{f.name: merged[f.name] for f in fields(cls) if f.name in merged})


@dataclass(frozen=True, slots=True, kw_only=True)
class TnEntry:
    """``[tn."TN"]`` (schema.TN_KEYS): one number's signing data; unset: the profile's."""

    private_key: str | None = None
    x5u: str | None = None
    attest: str | None = None
    brand: str | None = None

    @classmethod
    def of(cls, table: Mapping[str, Any]) -> TnEntry:
        return cls(**{f.name: table[f.name] for f in fields(cls) if f.name in table})


@dataclass(frozen=True, slots=True, kw_only=True)
class TnRangeEntry(TnEntry):
    """``[tn_range.NAME]`` (schema.TN_RANGE_KEYS): ``count`` numbers from ``start``."""

    start: str
    count: int


# [lifecycle]'s timings are RenewalPolicy's: the numbers are written there, once.
_RENEWAL = RenewalPolicy()


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecycleSettings:
    """``[lifecycle]`` (schema.LIFECYCLE_KEYS): where generations live, how they are published
    and when they are renewed."""

    directory: str
    publish: str = "directory"
    publish_dir: str | None = None
    #: Unset with ``publish = "command"``: the last line the publish command prints.
    x5u_base: str | None = None
    publish_command: tuple[str, ...] | None = None
    #: Unset: a retired chain is left where the publish command put it.
    unpublish_command: tuple[str, ...] | None = None
    renew_fraction: float = _RENEWAL.fraction
    renew_before_days: int = _RENEWAL.before.days
    warning_days: int = _RENEWAL.warning.days
    #: At least the iat window, ``watch_interval`` and a reload, whatever is set
    #: (:func:`shaken.adapters.lifecycle.renewal_policy`).
    retire_after: int = _seconds(_RENEWAL.retire_after)
    retry_min: int = _seconds(_RENEWAL.retry_min)
    retry_max: int = _seconds(_RENEWAL.retry_max)
    x5u_wait: int = _seconds(_RENEWAL.x5u_wait)
    watch_interval: float = 1.0
    renew_in_serve: bool = True
    keep: int = _RENEWAL.keep

    @property
    def renewal_policy(self) -> RenewalPolicy:
        """The timings as the lifecycle service takes them (``retire_after`` not yet floored)."""
        return replace(
            _RENEWAL,
            fraction=float(self.renew_fraction),
            before=timedelta(days=self.renew_before_days),
            warning=timedelta(days=self.warning_days),
            retire_after=timedelta(seconds=self.retire_after),
            retry_min=timedelta(seconds=self.retry_min),
            retry_max=timedelta(seconds=self.retry_max),
            x5u_wait=timedelta(seconds=self.x5u_wait),
            keep=self.keep,
        )

    @classmethod
    def of(cls, table: Mapping[str, Any]) -> LifecycleSettings:
        """The settings of a validated ``[lifecycle]`` table (unset keys at their defaults)."""
        values = {f.name: _frozen(table[f.name]) for f in fields(cls) if f.name in table}
        for number in ("renew_fraction", "watch_interval"):
            if number in values:
                values[number] = float(values[number])
        return cls(**values)


@dataclass(frozen=True, slots=True, kw_only=True)
class AcmeConfig:
    """``[acme]`` (schema.ACME_KEYS): the STI-CA account and what the certificate asks for.

    An unset protocol variant, timeout or subject field is None: the default of what it feeds
    applies (:class:`shaken.adapters.acme.AcmeSettings` for the client's,
    :class:`shaken.adapters.lifecycle.AcmeIssuer` for the CSR's,
    :class:`shaken.services.lifecycle.CertificateLifecycle` for ``enforce_profile``), written
    there once.
    """

    directory: str
    account_key: str
    spc: str
    org: str
    account_url: str | None = None
    contact: tuple[str, ...] = ()
    country: str | None = None
    tnauthlist_encoding: str | None = None
    fingerprint: str | None = None
    fingerprint_case: str | None = None
    challenge_key: str | None = None
    post_as_get: str | None = None
    jwk_kid: str | None = None
    unique_cn: bool | None = None
    csr_crl_url: str | None = None
    #: Unset: the CA's validity.
    validity_days: int | None = None
    enforce_profile: bool | None = None
    tls_ca_file: str | None = None
    poll_timeout: float | None = None
    timeout: float | None = None

    @classmethod
    def of(cls, table: Mapping[str, Any]) -> AcmeConfig:
        """The settings of a validated ``[acme]`` table."""
        values = {f.name: _frozen(table[f.name]) for f in fields(cls) if f.name in table}
        for number in ("poll_timeout", "timeout"):
            if number in values:
                values[number] = float(values[number])
        return cls(**values)


@dataclass(frozen=True, slots=True, kw_only=True)
class StiPaConfig:
    """``[sti_pa]`` (schema.STI_PA_KEYS): the STI-PA account the SPC token comes from.

    ``url`` and ``account_id`` are unset only with a ``token_command`` (another host asks the
    STI-PA). An unset protocol variant or timeout is None: the default of
    :class:`shaken.adapters.stipa.StiPaSettings` applies.
    """

    url: str | None = None
    account_id: str | None = None
    #: Unset: the credentials come from the environment.
    credentials_file: str | None = None
    #: Unset: the SPC token's x5u chain is not checked locally.
    root_certificate: str | None = None
    tls_ca_file: str | None = None
    auth_header: str | None = None
    token_accept: str | None = None
    token_path: str | None = None
    min_token_lifetime: int | None = None
    token_command: tuple[str, ...] | None = None
    timeout: float | None = None

    @classmethod
    def of(cls, table: Mapping[str, Any]) -> StiPaConfig:
        """The settings of a validated ``[sti_pa]`` table."""
        values = {f.name: _frozen(table[f.name]) for f in fields(cls) if f.name in table}
        if "timeout" in values:
            values["timeout"] = float(values["timeout"])
        return cls(**values)


def toml_defaults(cls: type[Any]) -> dict[str, Any]:
    """The defaults of a settings dataclass as a TOML table would spell them (unset: absent)."""
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            value = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            continue
        if value is None:
            continue
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[f.name] = value
    return out
