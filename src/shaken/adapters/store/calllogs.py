"""The call log a ``[server] call_log`` value names: a SQLite file or a PostgreSQL database.

One place decides which backend a value means, so the servers, ``shaken calls`` and
``shaken calls migrate`` never disagree about it.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from shaken.adapters.store.calllog import SqliteCallLog, migrate_file, read_calls
from shaken.adapters.store.certstore import default_cache_dir
from shaken.adapters.store.pgcalllog import (
    PostgresCallLog,
    connect,
    is_postgres_url,
    migrate_postgres,
    read_postgres_calls,
    redacted,
)
from shaken.config.typed import ServerSettings
from shaken.services.calllog import CallQuery
from shaken.services.ports import Clock

__all__ = ["default_spool", "describe", "migrate_call_log", "open_writer", "read_call_log"]


def default_spool() -> Path:
    """Where a PostgreSQL call log spools unless ``call_log_spool`` says: beside the cache."""
    return default_cache_dir().parent / "call-log-spool.sqlite"


def describe(target: str) -> str:
    """``target`` as it may be shown (a URL without its password)."""
    return redacted(target) if is_postgres_url(target) else target


def open_writer(
    target: str, server: ServerSettings, *, clock: Clock | None = None
) -> SqliteCallLog | PostgresCallLog:
    """The writer for ``target`` with the ``[server]`` settings that tune it.

    :raises Exception: whatever the backend raises when it cannot open (the caller names it).
    """
    flush = server.call_log_flush_ms / 1000.0
    retention = server.call_log_retention_days
    instance = server.instance or socket.gethostname()
    if is_postgres_url(target):
        return PostgresCallLog(
            target,
            spool=server.call_log_spool or default_spool(),
            spool_max_records=server.call_log_spool_max_records,
            flush_interval=flush,
            retention_days=retention,
            timeout=float(server.call_log_timeout),
            clock=clock,
            instance=instance,
        )
    return SqliteCallLog(
        target, flush_interval=flush, retention_days=retention, clock=clock, instance=instance
    )


def read_call_log(target: str | Path, query: CallQuery) -> list[dict[str, Any]]:
    """The records of the call log at ``target`` matching ``query``, oldest first.

    :raises FileNotFoundError: no SQLite call log at that path.
    :raises ValueError: an unknown outcome.
    """
    if is_postgres_url(target):
        return read_postgres_calls(str(target), query)
    return read_calls(target, query)


def migrate_call_log(target: str | Path) -> tuple[int, int]:
    """Bring the call log at ``target`` to this release's schema; returns (from, to)."""
    if is_postgres_url(target):
        with connect(str(target), timeout=30.0) as connection:
            return migrate_postgres(connection)
    return migrate_file(target)
