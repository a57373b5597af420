"""The typed, frozen settings a validated configuration produces, each default written once.

:mod:`shaken.config.schema` says what each key may hold (its type, its check, its help); the
dataclasses here say what an unset key means. Adapters read these, never a section's table
with a fallback of their own: a default that lived in the loader, the schema help and
``serve.py`` at once could (and did) disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

__all__ = ["SIP_MAX_IN_FLIGHT", "ServerSettings"]

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
