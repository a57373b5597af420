"""In-memory stand-ins for the service ports: a scripted fetcher, a dict store, a clock."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shaken.core.errors import CertificateFetchError, VerificationFailure
from shaken.core.reasons import Reason
from shaken.services.ports import FetchedDocument, StoredEntry

__all__ = ["FakeFetcher", "ManualClock", "MemoryStore", "Reply"]

FETCHED_AT = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


@dataclass(slots=True)
class Reply:
    """What the fake repository answers for one URL."""

    body: bytes = b""
    cache_control: str | None = None
    expires: str | None = None
    date: str | None = None
    etag: str | None = None
    content_type: str | None = "application/pem-certificate-chain"
    warnings: tuple[str, ...] = ()
    failure: VerificationFailure | None = None


@dataclass(slots=True)
class FakeFetcher:
    """A :class:`~shaken.services.ports.CertificateFetcher` answering from a dict.

    ``gate``, when set, holds every fetch until it is set, so a test can pile callers up on
    one flight. ``calls`` records (url, etag) of every fetch.
    """

    replies: dict[str, Reply] = field(default_factory=dict)
    calls: list[tuple[str, str | None]] = field(default_factory=list)
    gate: asyncio.Event | None = None

    def urls(self) -> list[str]:
        return [url for url, _ in self.calls]

    async def fetch(self, url: str, *, etag: str | None = None) -> FetchedDocument:
        self.calls.append((url, etag))
        if self.gate is not None:
            await self.gate.wait()
        reply = self.replies.get(url)
        if reply is None:
            raise CertificateFetchError(
                Reason.CERT_FETCH_FAILED, f"{url} answered HTTP 404", url=url, status=404
            )
        if reply.failure is not None:
            raise reply.failure
        if etag is not None and etag == reply.etag:
            return FetchedDocument(
                url=url,
                body=b"",
                cache_control=reply.cache_control,
                expires=reply.expires,
                date=reply.date,
                etag=reply.etag,
                fetched_at=FETCHED_AT,
                not_modified=True,
            )
        return FetchedDocument(
            url=url,
            body=reply.body,
            content_type=reply.content_type,
            cache_control=reply.cache_control,
            expires=reply.expires,
            date=reply.date,
            etag=reply.etag,
            fetched_at=FETCHED_AT,
            warnings=reply.warnings,
        )


class MemoryStore:
    """A :class:`~shaken.services.ports.CertificateStore` in a dict; counts its calls."""

    def __init__(self) -> None:
        self.data: dict[str, StoredEntry] = {}
        self.saves = 0
        self.deletes: list[str] = []

    def load(self, url: str) -> StoredEntry | None:
        return self.data.get(url)

    def save(self, entry: StoredEntry) -> None:
        self.saves += 1
        self.data[entry.url] = entry

    def delete(self, url: str) -> bool:
        self.deletes.append(url)
        return self.data.pop(url, None) is not None

    def entries(self) -> Sequence[StoredEntry]:
        return list(self.data.values())


class ManualClock:
    """A :class:`~shaken.services.ports.Clock` that moves only when told."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current
