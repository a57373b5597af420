"""The small interfaces the services need from the outside world (docs/architecture.md section 2).

Services never open a socket or a file themselves: they are handed a :class:`CertificateFetcher`
(the HTTPS adapter, or a fake in tests), a :class:`CertificateStore` (a directory, or nothing)
and a :class:`Clock`. Keeping these as :class:`typing.Protocol` classes means an adapter only has
to have the right shape; it never imports this module's names to subclass them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

__all__ = [
    "CertificateFetcher",
    "CertificateStore",
    "Clock",
    "DocumentKind",
    "FetchLimits",
    "FetchedDocument",
    "StoredEntry",
    "SystemClock",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchedDocument:
    """What one GET of an x5u or CRL URL returned, headers kept raw for the cache to judge.

    ``not_modified`` is true for a ``304`` answer to a conditional request (``etag`` given to
    :meth:`CertificateFetcher.fetch`); then ``body`` is empty and the cached body still holds.
    ``warnings`` are things worth reporting that did not stop the fetch (an unexpected
    Content-Type on a body that may still parse).
    """

    url: str
    body: bytes
    content_type: str | None = None
    cache_control: str | None = None
    expires: str | None = None
    date: str | None = None
    age: str | None = None
    etag: str | None = None
    fetched_at: datetime
    not_modified: bool = False
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchLimits:
    """The time and size limits of one fetch (docs/architecture.md section 3, defaults;
    ``[verification] fetch_timeout`` and ``max_fetch_bytes``)."""

    timeout: float = 2.0
    max_bytes: int = 64 * 1024


@runtime_checkable
class CertificateFetcher(Protocol):
    """Gets the bytes behind an x5u (or CRL Distribution Point) URL.

    Implementations enforce the URL policy themselves before any byte leaves.

    :raises shaken.core.errors.X5uRejected: the URL, or an address its host resolves to,
        breaks the policy; nothing was sent.
    :raises shaken.core.errors.CertificateFetchError: anything else that prevented a 200 (or,
        with ``etag``, a 304) within the size and time limits.
    """

    async def fetch(self, url: str, *, etag: str | None = None) -> FetchedDocument: ...


class DocumentKind(enum.StrEnum):
    """What a stored body is: an x5u certificate chain or a CRL."""

    CERTIFICATE = "certificate"
    CRL = "crl"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEntry:
    """One persisted cache entry: the raw bytes as fetched and when they stop being fresh.

    The whole x5u response is kept (leaf and intermediates), never just the leaf, so a restart
    can validate the same path again (Asterisk issue #1272 is what keeping only the leaf does).
    """

    url: str
    body: bytes
    kind: DocumentKind = DocumentKind.CERTIFICATE
    fetched_at: datetime
    expires_at: datetime
    etag: str | None = None
    content_type: str | None = None


class CertificateStore(Protocol):
    """Persistence for cache entries, keyed by URL. Blocking: services call it off the loop.

    A store that finds a damaged entry skips it (and says so its own way); it never raises for
    bad data on disk, because a cache that cannot start is worse than a cold one.
    """

    def load(self, url: str) -> StoredEntry | None: ...

    def save(self, entry: StoredEntry) -> None: ...

    def delete(self, url: str) -> bool: ...

    def entries(self) -> Sequence[StoredEntry]: ...


class Clock(Protocol):
    """The one place time comes from; read once per request at the edge.

    See docs/architecture.md section 2, principle 1.
    """

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock, timezone-aware UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)
