"""API keys: who may call the REST API, for which numbers, and how often.

A key is configured as ``[api_key.NAME]`` with the SHA-256 of the key (the key itself is never
stored, ``shaken lab init`` writes it to ``secrets/rest-api-key``). A client presents it as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The presented key is hashed and
compared with every configured hash by :func:`hmac.compare_digest`, without stopping at a
match, so neither the comparison nor the position of the key in the configuration shows in the
response time.

A key signs only for what it is bound to: a TN in its ``tns``, or any TN whose signing
certificate carries an SPC in its ``spcs``; and only under its ``profiles`` (none: the global
profile). ``may_verify`` (default true) lets it call verification, which
``[server] verification_open`` can also open to everyone. ``rate_per_second`` is a token bucket
per key holding one second of requests, so short bursts pass and sustained excess gets 429.
``admin`` (default false) lets it read the operator's dashboard; a browser presents it as the
password of HTTP Basic authentication (:func:`basic_password`).
With shared state (several instances), the bucket lives in Redis
(:class:`~shaken.adapters.shared_state.RedisRateLimit`), one for all instances; when Redis
cannot answer in time, this process's own bucket decides.

Nothing here logs, and no error text carries a presented key or a hash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["ApiKey", "Keyring", "TokenBucket", "basic_password", "presented_key"]


class SharedBuckets(Protocol):
    async def take(self, name: str, rate: float, burst: float, now: float) -> float | None:
        """Seconds until a token of ``name``'s bucket (0.0: now); None when it cannot say."""


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` held; times are seconds from any origin."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    updated: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs a positive rate and room for one token")
        self.tokens = self.burst

    def take(self, now: float) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one will be there."""
        if self.updated is not None and now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        if self.updated is None or now > self.updated:
            self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """One configured key; ``digest`` is the SHA-256 of the key's UTF-8 text.

    The defaults are those of an ``[api_key.NAME]`` that leaves a key unset.
    """

    name: str
    digest: bytes = field(repr=False)
    tns: frozenset[str] = frozenset()
    spcs: frozenset[str] = frozenset()
    profiles: tuple[str, ...] = ()
    may_verify: bool = True
    rate_per_second: float | None = None
    #: It may read the operator's dashboard (``GET /dashboard``, :mod:`.dashboard`).
    admin: bool = False

    def may_use(self, profile: str | None) -> bool:
        """A key without ``profiles`` uses the global profile only."""
        return profile in self.profiles if self.profiles else profile is None

    @property
    def default_profile(self) -> str | None:
        return self.profiles[0] if self.profiles else None


def _api_key(name: str, values: Mapping[str, Any]) -> ApiKey:
    """The key an ``[api_key.NAME]`` table describes; an unset key keeps ApiKey's default."""
    given: dict[str, Any] = {}
    for member, kind in (("tns", frozenset), ("spcs", frozenset), ("profiles", tuple)):
        if member in values:
            given[member] = kind(values[member])
    if "may_verify" in values:
        given["may_verify"] = bool(values["may_verify"])
    if "rate_per_second" in values:
        given["rate_per_second"] = float(values["rate_per_second"])
    if "admin" in values:
        given["admin"] = bool(values["admin"])
    return ApiKey(name=name, digest=bytes.fromhex(values["sha256"]), **given)


class Keyring:
    """The configured keys, their rate limits, and the checks on a presented key."""

    def __init__(self, keys: list[ApiKey], shared: SharedBuckets | None = None) -> None:
        self.keys = tuple(keys)
        self.shared = shared
        self._buckets = {
            key.name: TokenBucket(key.rate_per_second, max(1.0, key.rate_per_second))
            for key in keys
            if key.rate_per_second is not None
        }

    @classmethod
    def from_settings(cls, api_keys: Mapping[str, Mapping[str, Any]]) -> Keyring:
        """Keys from ``Settings.api_keys`` (already validated by the configuration loader)."""
        return cls([_api_key(name, values) for name, values in api_keys.items()])

    def authenticate(self, presented: str) -> ApiKey | None:
        """The key whose hash matches ``presented``, in time independent of which one."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: ApiKey | None = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found

    def admit(self, key: ApiKey, now: float) -> int:
        """0 when ``key`` may make a request now, else the whole seconds to wait (Retry-After)."""
        bucket = self._buckets.get(key.name)
        if bucket is None:
            return 0
        return _seconds(bucket.take(now))

    async def admit_shared(self, key: ApiKey, now: float) -> int:
        """:meth:`admit` with the bucket shared across instances, when there is one."""
        bucket = self._buckets.get(key.name)
        if bucket is None:
            return 0
        if self.shared is not None:
            wait = await self.shared.take(key.name, bucket.rate, bucket.burst, now)
            if wait is not None:
                return _seconds(wait)
        return _seconds(bucket.take(now))


def _seconds(wait: float) -> int:
    return 0 if wait <= 0 else max(1, math.ceil(wait))


def presented_key(authorization: bytes | None, api_key: bytes | None) -> str | None:
    """The key a request carries: ``Authorization: Bearer`` first, then ``X-API-Key``.

    Header bytes are read as UTF-8 (undecodable bytes kept as surrogates), so hashing the
    result gives back exactly the bytes that were sent.
    """
    if authorization is not None:
        text = authorization.decode("utf-8", "surrogateescape").strip()
        scheme, _, token = text.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if api_key is not None:
        value = api_key.decode("utf-8", "surrogateescape").strip()
        if value:
            return value
    return None


def basic_password(authorization: bytes | None) -> str | None:
    """The password of ``Authorization: Basic`` (RFC 7617), the user name ignored; None when
    the header is absent or not Basic. Decoded like :func:`presented_key`."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        pair = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    _, colon, password = pair.partition(b":")
    if not colon or not password:
        return None
    return password.decode("utf-8", "surrogateescape")
