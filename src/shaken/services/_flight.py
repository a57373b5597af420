"""One task per key however many callers wait for it (the caches' single flight).

The work runs in its own task, and callers wait on it through :func:`asyncio.shield`: a caller
that gives up (its own timeout, a cancelled SIP transaction) does not cancel the fetch the other
thousand callers are waiting for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["SingleFlight"]


class SingleFlight(Generic[T]):
    """At most one running task per key; later callers for the same key share its result."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[T]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, key: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._tasks[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(task)

    def _forget(self, key: str, done: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is done:
            del self._tasks[key]
        if not done.cancelled():
            done.exception()  # retrieved, so an unawaited failure is not logged as lost
