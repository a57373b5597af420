"""Redis as the state several instances share (``[server] shared_state = "redis://..."``).

One :class:`RedisSharedState` per worker holds the connection pool and the health of the shared
layer; three adapters implement the services' ports over it:

* :class:`RedisCertificateStore` (:class:`~shaken.services.shared.SharedCertificateStore`):
  fetched x5u bodies and recent failures under ``PREFIX x5u:<sha256>``, expiring with their
  lifetimes (``PX``); the right to fetch a cold URL is ``SET NX PX`` on ``PREFIX x5u-lock:...``
  with a random token, released only by its holder (a compare-and-delete script), and expiring
  by itself if the holder dies. Waiters read the entry every few milliseconds until it appears
  or the claim is gone.
* :class:`RedisReplay` (:class:`~shaken.services.shared.ReplayGuard`): RFC 8224 section 12.1
  across instances: ``SET PREFIX replay:<sha256(signature)> NX PX window``; a signature whose
  key exists was seen.
* :class:`RedisRateLimit`: the API-key token bucket (``shaken.adapters.http.auth``) kept in
  Redis and updated by one script, so that N instances admit one key's rate, not N times it.

Every operation is bounded by ``shared_state_timeout_ms``. One that fails or times out marks the
layer **degraded**: the operation answers with its local form (a miss, "fetch it yourself", the
local replay window, the local bucket) and, for ``retry_interval``, later operations do not even
try Redis, so a dead Redis costs at most one timeout per interval, not one per call. The first
operation after the interval tries again; when it succeeds the layer is healthy again by
itself. ``/readyz`` reports ``degraded`` (the service still answers: a 200) and the metrics
carry ``shaken_shared_state_degraded``.

The client is redis-py (``redis.asyncio``), the Redis project's own Python client.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from shaken.core.verify import ReplayWindow
from shaken.services.shared import SharedChain, SharedEntry, SharedFailure

__all__ = [
    "RedisCertificateStore",
    "RedisRateLimit",
    "RedisReplay",
    "RedisSharedState",
    "redacted_url",
]

log = logging.getLogger("shaken.shared")

T = TypeVar("T")

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(held[1]) or burst
local updated = tonumber(held[2]) or now
if now > updated then
  tokens = math.min(burst, tokens + (now - updated) * rate)
  updated = now
end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(updated))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


def redacted_url(url: str) -> str:
    """``url`` without its password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user + ':' if user else ''}***@{host}"


def _digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


class RedisSharedState:
    """The connection to Redis and whether it works (see the module docs).

    :param timeout: seconds one operation may take before its local form answers.
    :param retry_interval: seconds Redis is left alone after a failure.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "shaken:",
        timeout: float = 0.1,
        retry_interval: float = 1.0,
    ) -> None:
        import redis.asyncio  # noqa: PLC0415  (optional: only with shared_state)

        self.url = url
        self.name = redacted_url(url)
        self.prefix = prefix
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.client: Any = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=0,
            retry_on_timeout=False,
        )
        #: Operations that failed or timed out, and those answered locally instead.
        self.errors = 0
        self.fallbacks = 0
        self.recoveries = 0
        self.last_error: str | None = None
        self._retry_at = 0.0
        self._degraded = False
        self._scripts: dict[str, Any] = {}

    @property
    def degraded(self) -> bool:
        return self._degraded

    def status(self) -> str:
        if self._degraded:
            return f"degraded: Redis {self.name} unavailable ({self.last_error}); local forms"
        return f"sharing through Redis {self.name}"

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def script(self, source: str) -> Any:
        found = self._scripts.get(source)
        if found is None:
            found = self._scripts[source] = self.client.register_script(source)
        return found

    async def run(self, operation: Callable[[], Awaitable[T]], fallback: T) -> T:
        """``operation`` within the timeout, or ``fallback`` (and the layer degraded)."""
        if self._degraded and time.monotonic() < self._retry_at:
            self.fallbacks += 1
            return fallback
        try:
            answer = await asyncio.wait_for(operation(), self.timeout)
        except Exception as exc:  # down, slow, refused, a script error: all mean "local"
            self._failed(exc)
            self.fallbacks += 1
            return fallback
        if self._degraded:
            self._degraded = False
            self.recoveries += 1
            log.warning("shared state %s: reachable again; sharing resumed", self.name)
        return answer

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        self.last_error = detail if not isinstance(exc, TimeoutError) else "timed out"
        self._retry_at = time.monotonic() + self.retry_interval
        if not self._degraded:
            self._degraded = True
            log.error(
                "shared state %s: %s; degraded to the local forms, retrying every %.1f s",
                self.name,
                self.last_error,
                self.retry_interval,
            )

    async def probe(self) -> bool:
        """Ping Redis now (``/readyz``), so that recovery shows without traffic."""
        if self._degraded:
            self._retry_at = 0.0
        return bool(await self.run(self._ping, False))

    async def _ping(self) -> bool:
        return bool(await self.client.ping())

    async def aclose(self) -> None:
        try:
            await self.client.aclose()
        except Exception:  # closing a pool whose loop is gone: nothing left to do
            log.debug("shared state %s: close failed", self.name, exc_info=True)


class RedisCertificateStore:
    """The certificate cache's second level in Redis (see the module docs).

    :param namespace: keeps caches with different validation settings (profiles) apart.
    :param poll: seconds between reads while waiting for another instance's fetch.
    """

    def __init__(self, state: RedisSharedState, *, namespace: str = "", poll: float = 0.01) -> None:
        self.state = state
        self.namespace = namespace
        self.poll = poll
        self._tokens: dict[str, str] = {}

    def _keys(self, url: str) -> tuple[str, str]:
        digest = _digest(f"{self.namespace}\n{url}".encode("utf-8", "surrogatepass"))
        return self.state.key("x5u", digest), self.state.key("x5u-lock", digest)

    async def load(self, url: str, now: datetime) -> SharedEntry | None:
        key, _ = self._keys(url)
        raw = await self.state.run(lambda: self.state.client.get(key), None)
        return _decode(raw, now)

    async def save(self, url: str, entry: SharedEntry, now: datetime) -> None:
        until = entry.until if isinstance(entry, SharedFailure) else entry.expires_at
        milliseconds = int((until - now) / timedelta(milliseconds=1))
        if milliseconds <= 0:
            return
        key, _ = self._keys(url)
        value = _encode(entry)
        await self.state.run(lambda: self.state.client.set(key, value, px=milliseconds), None)

    async def claim(self, url: str, seconds: float) -> bool:
        _, lock = self._keys(url)
        token = secrets.token_hex(16)

        async def take() -> bool:
            return bool(await self.state.client.set(lock, token, nx=True, px=int(seconds * 1000)))

        taken = await self.state.run(take, None)
        if taken is None:
            return True  # Redis cannot say: fetch it ourselves
        if taken:
            self._tokens[url] = token
        return bool(taken)

    async def release(self, url: str) -> None:
        token = self._tokens.pop(url, None)
        if token is None:
            return
        _, lock = self._keys(url)
        release = self.state.script(_RELEASE)
        await self.state.run(lambda: release(keys=[lock], args=[token]), None)

    async def wait(self, url: str, seconds: float, now: datetime) -> SharedEntry | None:
        key, lock = self._keys(url)
        deadline = time.monotonic() + seconds
        client = self.state.client

        async def read() -> tuple[Any, Any]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.exists(lock)
                found, locked = await pipe.execute()
            return found, locked

        while time.monotonic() < deadline:
            found, locked = await self.state.run(read, (None, 0))
            entry = _decode(found, now)
            if entry is not None:
                return entry
            if not locked or self.state.degraded:
                return None  # the holder finished without publishing, or Redis went away
            await asyncio.sleep(self.poll)
        return None


def _encode(entry: SharedEntry) -> str:
    if isinstance(entry, SharedFailure):
        return json.dumps(
            {
                "failure": entry.kind,
                "reason": entry.reason,
                "detail": entry.detail,
                "until": entry.until.isoformat(),
            }
        )
    return json.dumps(
        {
            "body": base64.b64encode(entry.body).decode("ascii"),
            "fetched_at": entry.fetched_at.isoformat(),
            "expires_at": entry.expires_at.isoformat(),
            "etag": entry.etag,
            "content_type": entry.content_type,
            "warnings": list(entry.warnings),
        }
    )


def _decode(raw: Any, now: datetime) -> SharedEntry | None:
    """An entry read from Redis; None for nothing, something unreadable, or the expired."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        if "failure" in data:
            failure = SharedFailure(
                kind=str(data["failure"]),
                reason=str(data["reason"]),
                detail=str(data["detail"]),
                until=datetime.fromisoformat(data["until"]),
            )
            return failure if now < failure.until else None
        chain = SharedChain(
            body=base64.b64decode(data["body"], validate=True),
            fetched_at=datetime.fromisoformat(data["fetched_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            etag=data.get("etag"),
            content_type=data.get("content_type"),
            warnings=tuple(str(w) for w in data.get("warnings", ())),
        )
    except (ValueError, KeyError, TypeError):
        log.warning("shared state: an unreadable certificate entry was ignored")
        return None
    return chain if now < chain.expires_at else None


class RedisReplay:
    """The replay window across instances; ``local`` answers while Redis cannot."""

    def __init__(self, state: RedisSharedState, local: ReplayWindow, window_seconds: int) -> None:
        self.state = state
        self.local = local
        self.window_ms = int(window_seconds * 1000)

    async def seen(self, signature: bytes, now: datetime) -> bool:
        key = self.state.key("replay", _digest(signature))

        async def first() -> bool:
            return bool(await self.state.client.set(key, b"1", nx=True, px=self.window_ms))

        recorded = await self.state.run(first, None)
        if recorded is None:
            return self.local.seen(signature, now)
        return not recorded


class RedisRateLimit:
    """One token bucket per API key across instances (``rate_per_second``)."""

    def __init__(self, state: RedisSharedState) -> None:
        self.state = state

    async def take(self, name: str, rate: float, burst: float, now: float) -> float | None:
        """Seconds until a token (0.0: take it now); None when Redis cannot say."""
        key = self.state.key("rate", _digest(name.encode("utf-8", "surrogatepass")))
        bucket = self.state.script(_BUCKET)
        answer = await self.state.run(
            lambda: bucket(keys=[key], args=[repr(rate), repr(burst), repr(now)]), None
        )
        if answer is None:
            return None
        try:
            return float(answer.decode() if isinstance(answer, bytes) else answer)
        except ValueError:
            return None
