"""What the caches remember about URLs beyond their entries, bounded in bytes.

The certificate and CRL caches remember more than the chains and CRLs they hold: the URLs
whose fetch failed (negative entries, with the failure) and the URLs already looked up in the
store. Those URLs are the caller's choosing, up to 2048 characters each, so an unbounded set
grows with every distinct URL (issue 17 item 7: +42 MB per 30,000 URLs) and a bound by count
alone still lets 10,000 of them hold tens of megabytes. :class:`ByteBoundedLru` charges each
entry what it holds, conservatively (the key, the size the caller gives for the value, and the
mapping's own slot), and drops the least recently used entries to stay under its ceiling.

Hand-written: ``functools.lru_cache`` and the LRU packages on PyPI bound entries by count, not
by bytes; this is an ``OrderedDict`` and a running total.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Generic, TypeVar

from shaken.core.errors import VerificationFailure

__all__ = ["ByteBoundedLru", "failure_size"]

V = TypeVar("V")

#: What an ``OrderedDict`` entry costs beside its key and value: the hash-table slot, the
#: linked-list node and the stored (value, size) pair, rounded up from tracemalloc figures.
SLOT_BYTES = 256


def failure_size(failure: VerificationFailure) -> int:
    """Bytes a remembered failure holds: its texts and fields, and the objects around them."""
    size = sys.getsizeof(failure.detail) + 512
    for value in failure.fields.values():
        size += sys.getsizeof(value) + 64
    return size


class ByteBoundedLru(Generic[V]):
    """``str -> V``, least recently used first, within ``max_bytes`` (and ``max_entries``).

    One entry is never refused for its size alone: an entry larger than the ceiling replaces
    everything else and is then the only one kept.
    """

    def __init__(self, max_bytes: int, *, max_entries: int | None = None) -> None:
        if max_bytes < 1 or (max_entries is not None and max_entries < 1):
            raise ValueError("bounds must be positive")
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self._bytes = 0

    @property
    def bytes(self) -> int:
        """What the entries are charged, in bytes (never above ``max_bytes`` but for one)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> V | None:
        item = self._items.get(key)
        return None if item is None else item[0]

    def put(self, key: str, value: V, size: int = 0) -> None:
        """Remember ``key``; ``size`` is what ``value`` holds beyond a reference."""
        self.discard(key)
        charge = sys.getsizeof(key) + max(size, 0) + SLOT_BYTES
        self._items[key] = (value, charge)
        self._bytes += charge
        while len(self._items) > 1 and (
            self._bytes > self.max_bytes
            or (self.max_entries is not None and len(self._items) > self.max_entries)
        ):
            _, (_, dropped) = self._items.popitem(last=False)
            self._bytes -= dropped

    def discard(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= item[1]

    def pop(self, key: str) -> V | None:
        item = self._items.pop(key, None)
        if item is None:
            return None
        self._bytes -= item[1]
        return item[0]

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0
