"""What several instances of one service share, as ports the services consult.

The embedded forms stay the default (one machine: the in-process certificate cache, the
in-process replay window). With shared state configured, an adapter (Redis) implements these
ports, and each has one rule for when the shared layer cannot answer: **it answers as if it
were not there**, at once or within its bounded timeout, and the service falls back to its local
form. A shared layer that is down or slow therefore never fails a call and never delays one
beyond that timeout; it only loses the sharing until it is back.

* :class:`SharedCertificateStore`: the certificate cache's second level, between memory and
  the fetch. Memory stays first (a warm lookup never leaves the process); the shared level holds
  fetched chains and recent failures with their lifetimes, and :meth:`~SharedCertificateStore.
  claim` lets one instance fetch a cold x5u while the others wait for what it publishes.
  What comes from it is a body to validate, never a verdict: every instance validates a chain
  against its own anchors, so the shared level cannot make an untrusted chain trusted.
* :class:`ReplayGuard`: the replay window of RFC 8224 section 12.1 across instances.
  :class:`LocalReplay` is the one-process form, over the core's
  :class:`~shaken.core.verify.ReplayWindow`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shaken.core.verify import ReplayWindow

__all__ = [
    "LocalReplay",
    "ReplayGuard",
    "SharedCertificateStore",
    "SharedChain",
    "SharedEntry",
    "SharedFailure",
    "SharedHealth",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedChain:
    """A fetched x5u body as another instance obtained it, with its lifetime."""

    body: bytes
    fetched_at: datetime
    expires_at: datetime
    etag: str | None = None
    content_type: str | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedFailure:
    """A recent failure to obtain an x5u (the negative cache), until ``until``.

    ``kind`` is ``fetch`` (the repository failed) or ``chain`` (what it served did not
    validate); ``reason`` a :class:`~shaken.core.reasons.Reason` value.
    """

    kind: str
    reason: str
    detail: str
    until: datetime


SharedEntry = SharedChain | SharedFailure


class SharedCertificateStore(Protocol):
    """The certificate cache's second level (see the module docs). No method raises."""

    async def load(self, url: str, now: datetime) -> SharedEntry | None:
        """What the shared level holds for ``url``; None when nothing (or it cannot say)."""

    async def save(self, url: str, entry: SharedEntry, now: datetime) -> None:
        """Publish ``entry`` for the other instances, for its remaining lifetime."""

    async def claim(self, url: str, seconds: float) -> bool:
        """Take the right to fetch ``url`` for at most ``seconds``.

        True: fetch it (this instance holds the claim, or the shared level cannot say);
        False: another instance is fetching it: :meth:`wait` for its result.
        """

    async def release(self, url: str) -> None:
        """Give up a claim taken by :meth:`claim` (after :meth:`save`)."""

    async def wait(self, url: str, seconds: float, now: datetime) -> SharedEntry | None:
        """What the instance holding the claim publishes, within ``seconds``; None when it
        published nothing (it died, or the shared level went away): then fetch."""


class ReplayGuard(Protocol):
    """Records PASSporT signatures; says whether one was seen within the window."""

    async def seen(self, signature: bytes, now: datetime) -> bool:
        """Record ``signature``; True when it was already recorded within the window."""


class SharedHealth(Protocol):
    """What ``/readyz`` and the metrics report about a shared layer."""

    @property
    def degraded(self) -> bool:
        """True while the shared layer is unreachable and the local forms stand in."""

    def status(self) -> str:
        """One line: what the shared layer is doing, or why it is degraded."""


class LocalReplay:
    """The one-process replay window as a :class:`ReplayGuard`."""

    def __init__(self, window: ReplayWindow) -> None:
        self.window = window

    async def seen(self, signature: bytes, now: datetime) -> bool:
        return self.window.seen(signature, now)
