"""The call log in SQLite: one row per decision, written in batches by a background thread.

DESIGN.md section 8. A call must never wait for the disk, so :meth:`SqliteCallLog.record` only
appends to an in-memory queue; a writer thread commits what is queued every
``flush_interval`` (100 ms by default) or as soon as ``batch_size`` records are waiting,
whichever comes first, in one transaction.

Durability, stated exactly: the database is in WAL mode with ``synchronous=NORMAL``, so a
committed batch survives the death of the process (``kill -9``); it is in the operating
system's hands from the commit on (a power cut may still lose the last batches, which only
``synchronous=FULL`` with an fsync per batch would prevent). A decision answered on the wire
is therefore on disk at most one flush interval plus the time of one commit after it was
queued: :attr:`SqliteCallLog.window` (twice the flush interval, 200 ms by default) is the bound
the tests hold the writer to under load. Records queued beyond ``max_pending`` (the disk
cannot keep up) are dropped and counted in :attr:`SqliteCallLog.dropped`, never blocking a
call.

Several worker processes may write to one file: each has its own writer, SQLite serializes
their short transactions (``busy_timeout``), and readers never block writers in WAL mode.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

from shaken.core.reasons import Reason, Verstat
from shaken.services.calllog import CallRecord

__all__ = ["OUTCOMES", "SqliteCallLog", "outcome_of", "read_calls"]

log = logging.getLogger("shaken.calllog")

#: What ``shaken calls --outcome`` filters on.
OUTCOMES = ("verified", "failed", "missing", "not_checked", "rejected", "signed", "not_signed")

_COLUMNS = tuple(f.name for f in fields(CallRecord))
_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    direction TEXT NOT NULL,
    interface TEXT NOT NULL,
    outcome TEXT NOT NULL,
    call_id TEXT,
    profile TEXT,
    orig TEXT,
    dest TEXT,
    attest TEXT,
    verstat TEXT,
    reason TEXT,
    sip_code INTEGER,
    action TEXT,
    allowed INTEGER NOT NULL,
    x5u TEXT,
    latency_ms REAL,
    brand TEXT,
    rcd_status TEXT,
    rcd_reason TEXT
);
CREATE INDEX IF NOT EXISTS calls_time ON calls (time);
"""
#: Columns added after the first release of the table, added to older call logs on open.
_ADDED_COLUMNS = (("brand", "TEXT"), ("rcd_status", "TEXT"), ("rcd_reason", "TEXT"))
_INSERT = (
    f"INSERT INTO calls (outcome, {', '.join(_COLUMNS)}) "
    f"VALUES (?, {', '.join('?' for _ in _COLUMNS)})"
)
_ROW = f"({', '.join('?' for _ in range(len(_COLUMNS) + 1))})"
#: Rows per INSERT statement. One multi-row statement is one sqlite3_step, so the writer
#: thread gives the GIL up once per chunk instead of once per row (which, with the event loop
#: thread waiting for it, cost more than the insert itself). 500 rows x 19 values stays well
#: under SQLite's 32766 host parameters.
_CHUNK = 500


def _insert_sql(rows: int) -> str:
    return f"INSERT INTO calls (outcome, {', '.join(_COLUMNS)}) VALUES " + ", ".join([_ROW] * rows)


def outcome_of(record: CallRecord) -> str:
    """The outcome a record stands for (DESIGN.md section 5), as stored and filtered on.

    Signing records are ``signed`` or ``not_signed``; verification records are ``verified``,
    ``missing`` (no Identity), ``failed`` (any other Reason) or ``not_checked``. Whether the
    call was let through is :attr:`CallRecord.allowed` (``--outcome rejected``).
    """
    if record.direction == "sign":
        return "signed" if record.action == "signed" else "not_signed"
    if record.reason == Reason.MISSING_IDENTITY.value:
        return "missing"
    if record.reason is not None:
        return "failed"
    if record.verstat == Verstat.PASSED.value:
        return "verified"
    return "not_checked"


def _row(r: CallRecord) -> tuple[Any, ...]:
    """The INSERT parameters of one record: outcome, then :data:`_COLUMNS` in order."""
    return (
        outcome_of(r),
        r.time,
        r.direction,
        r.interface,
        r.call_id,
        r.profile,
        r.orig,
        r.dest,
        r.attest,
        r.verstat,
        r.reason,
        r.sip_code,
        r.action,
        r.allowed,
        r.x5u,
        r.latency_ms,
        r.brand,
        r.rcd_status,
        r.rcd_reason,
    )


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 5000")
    return connection


def _open_for_writing(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = _connect(path)
    connection.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode: a commit survives a process crash; fsync only at checkpoints.
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.executescript(_SCHEMA)
    present = {row[1] for row in connection.execute("PRAGMA table_info(calls)")}
    for name, kind in _ADDED_COLUMNS:
        if name not in present:
            connection.execute(f"ALTER TABLE calls ADD COLUMN {name} {kind}")
    connection.commit()
    return connection


class SqliteCallLog:
    """A :class:`~shaken.services.calllog.CallLog` on a SQLite file (created if missing).

    :param flush_interval: the longest a queued record waits for its commit, in seconds.
    :param batch_size: commit early once this many records wait.
    :param max_pending: records held in memory at most; more are dropped and counted.
    :raises sqlite3.Error: the file cannot be opened or is not a call log.
    :raises OSError: its directory cannot be created.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        flush_interval: float = 0.1,
        batch_size: int = 500,
        max_pending: int = 100_000,
    ) -> None:
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.last_error: str | None = None
        self._queue: deque[CallRecord] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._connection = _open_for_writing(self.path)
        self._thread = threading.Thread(target=self._run, name="shaken-calllog", daemon=True)
        self._thread.start()

    @property
    def window(self) -> float:
        """The bound on how long an answered decision may stay off disk (see module docs)."""
        return 2.0 * self.flush_interval

    # --------------------------------------------------------------------------- hot path

    def record(self, record: CallRecord) -> None:
        """Queue one record; never blocks, never raises."""
        queue = self._queue
        if len(queue) >= self.max_pending or self._closing:
            self.dropped += 1
            return
        queue.append(record)
        if len(queue) >= self.batch_size:
            self._wake.set()

    def healthy(self) -> bool:
        """The writer is running and its last commit worked (REST ``/readyz`` asks this)."""
        return self._thread.is_alive() and self.last_error is None

    # ------------------------------------------------------------------------------ writer

    def _run(self) -> None:
        interval = self.flush_interval
        while True:
            self._wake.wait(interval)
            self._wake.clear()
            closing = self._closing
            self._flush()
            if closing:
                break

    def _flush(self) -> None:
        queue = self._queue
        while queue:
            batch: list[CallRecord] = []
            try:
                while len(batch) < 5000:
                    batch.append(queue.popleft())
            except IndexError:
                pass
            self._write(batch)

    def _write(self, batch: list[CallRecord]) -> None:
        rows = [_row(r) for r in batch]
        for attempt in range(3):
            try:
                with self._connection:
                    for start in range(0, len(rows), _CHUNK):
                        chunk = rows[start : start + _CHUNK]
                        values = [value for row in chunk for value in row]
                        self._connection.execute(_insert_sql(len(chunk)), values)
            except sqlite3.Error as exc:
                self.failures += 1
                self.last_error = str(exc)
                log.warning("call log %s: commit failed (%s), attempt %d", self.path, exc, attempt)
                time.sleep(0.05 * (attempt + 1))
                continue
            self.written += len(rows)
            self.last_error = None
            return
        self.dropped += len(rows)
        log.error("call log %s: %d records dropped after 3 failed commits", self.path, len(rows))

    def flush(self) -> None:
        """Ask the writer to commit now (it does, within one interval either way)."""
        self._wake.set()

    def close(self) -> None:
        """Commit everything queued and stop the writer."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._thread.join()
        self._connection.close()

    # ---------------------------------------------------------------------------- reading

    def query(
        self,
        *,
        since: float | None = None,
        outcome: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Committed records, oldest first (what :func:`read_calls` returns)."""
        return read_calls(self.path, since=since, outcome=outcome, limit=limit)


def read_calls(
    path: str | Path,
    *,
    since: float | None = None,
    outcome: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The records of a call log, oldest first, as dicts (``outcome`` and ``id`` included).

    ``since`` is a Unix time; ``outcome`` one of :data:`OUTCOMES` (``rejected`` selects calls
    that were not allowed); ``limit`` keeps the most recent ones.

    :raises FileNotFoundError: no call log at ``path``.
    :raises ValueError: an unknown ``outcome``.
    :raises sqlite3.Error: not a call log.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no call log at {file}")
    where: list[str] = []
    args: list[Any] = []
    if since is not None:
        where.append("time >= ?")
        args.append(since)
    if outcome is not None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
        if outcome == "rejected":
            where.append("allowed = 0")
        else:
            where.append("outcome = ?")
            args.append(outcome)
    sql = "SELECT * FROM calls"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY time DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    connection = _connect(file)
    try:
        connection.row_factory = sqlite3.Row
        rows = connection.execute(sql, args).fetchall()
    finally:
        connection.close()
    out = [dict(row) for row in reversed(rows)]
    for row in out:
        row["allowed"] = bool(row["allowed"])
    return out


def records_of(rows: Iterable[dict[str, Any]]) -> list[CallRecord]:
    """Rows of :func:`read_calls` back as :class:`CallRecord` values."""
    return [CallRecord(**{c: row[c] for c in _COLUMNS}) for row in rows]
