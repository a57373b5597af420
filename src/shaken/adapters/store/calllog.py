"""The call log in SQLite: one row per decision, written in batches by a background thread.

docs/architecture.md section 8. A call must never wait for the disk, so
:meth:`SqliteCallLog.record` only
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

Any record is stored. Header values that were not UTF-8 on the wire reach a record as lone
surrogates (the SIP codec decodes with ``surrogateescape``; JSON allows ``"\\ud800"``), which
SQLite cannot take as TEXT: such a value is stored as a BLOB of its ``surrogatepass`` UTF-8 bytes,
which :func:`read_calls` decodes back to the identical string (TEXT and BLOB never mix, so the
two are told apart by the column's type, losslessly). A batch that fails for any other reason
is dropped and counted; a writer thread that dies anyway is started again on the next record
and counted in :attr:`SqliteCallLog.restarts`.

The file can go away under a running writer (deleted, or moved aside by a rotation): SQLite
would go on writing into the unlinked inode and every later row would be lost. At every flush
interval, and so before each commit, the writer compares the path's inode with the one it
opened; when they differ it closes
its connection (the last one to close folds the WAL into the old file) and opens the path again,
creating a new call log, counted in :attr:`SqliteCallLog.reopened`. Until that has happened,
:meth:`SqliteCallLog.healthy` says why the log is not healthy (REST ``/readyz`` reports it).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import operator
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shaken.adapters.logs import fields
from shaken.adapters.store.callschema import (
    LATEST,
    OUTCOMES,
    RECORD_FIELDS,
    SQLITE,
    SUMMARY_VERSIONS,
    VERSIONS,
    outcome_of,
    select_sql,
)
from shaken.adapters.store.rollups import (
    TN_SINCE,
    backfill_sql,
    count_new_rows,
    index_new_rows,
    rollup_ddl,
    top_id,
)
from shaken.adapters.store.writer import QueuedWriter
from shaken.services.calllog import CallQuery, CallRecord
from shaken.services.ports import Clock, SystemClock

__all__ = [
    "OUTCOMES",
    "SqliteCallLog",
    "backup",
    "migrate",
    "migrate_file",
    "outcome_of",
    "read_calls",
    "schema_version",
]

log = logging.getLogger("shaken.calllog")

_COLUMNS = RECORD_FIELDS
_ROW = f"({', '.join('?' for _ in range(len(_COLUMNS) + 1))})"
#: Rows per INSERT statement. One multi-row statement is one sqlite3_step, so the writer
#: thread gives the GIL up once per chunk instead of once per row (which, with the event loop
#: thread waiting for it, cost more than the insert itself). Rows x columns stays well under
#: SQLite's 32766 host parameters.
_CHUNK = 32766 // (len(_COLUMNS) + 1) // 2


def _insert_sql(rows: int) -> str:
    """A multi-row insert; a record already stored (same ``record_id``) is not stored again."""
    return f"INSERT OR IGNORE INTO calls (outcome, {', '.join(_COLUMNS)}) VALUES " + ", ".join(
        [_ROW] * rows
    )


def schema_version(connection: sqlite3.Connection) -> int:
    """The version of the call log on ``connection`` (0: no call log there yet)."""
    tables = connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'calls'"
    ).fetchall()
    if not tables:
        return 0
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    return max(version, 1)  # a log from before versions existed is version 1 (or more)


def migrate(connection: sqlite3.Connection) -> tuple[int, int]:
    """Bring the call log forward to :data:`LATEST`; returns (from, to).

    Each version only adds columns and indexes, so a step is safe to repeat: a column that is
    already there (a log written between two releases) is left as it is.

    :raises sqlite3.DatabaseError: the log is from a newer release than this one.
    """
    before = schema_version(connection)
    if before > LATEST:
        raise sqlite3.DatabaseError(
            f"the call log has schema version {before}; this release knows {LATEST}: upgrade"
        )
    if before < LATEST and not connection.in_transaction:
        # One transaction, the write lock taken first: a step that fails (or a crash) leaves
        # the log at its version, whole; several workers opening it migrate once.
        connection.execute("BEGIN IMMEDIATE")
        before = schema_version(connection)
    with connection:
        if before == 0:
            connection.execute(SQLITE.create_table())
        present = {row[1] for row in connection.execute("PRAGMA table_info(calls)")}
        for version in VERSIONS:
            for column in version.columns:
                if column.name not in present:
                    connection.execute(f"ALTER TABLE calls ADD COLUMN {SQLITE.column(column)}")
                    present.add(column.name)
            for name, on, unique in version.indexes:
                connection.execute(SQLITE.create_index(name, on, unique))
        if any(before < v for v in SUMMARY_VERSIONS):
            for statement in rollup_ddl(SQLITE):
                connection.execute(statement)
            if before > 0:  # count what is there, in the transaction that sets the version
                for statement in backfill_sql(SQLITE, before):
                    connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {LATEST}")
    return before, LATEST


def _text(value: str | None) -> str | bytes | None:
    """``value`` as SQLite can bind it: itself, or, when it holds lone surrogates, its bytes.

    ``surrogatepass`` maps every Python string to one byte string and back, so nothing is
    lost; :func:`_from_storage` undoes it.
    """
    if not isinstance(value, str) or value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")
    return value


def _from_storage(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogatepass")
    return value


def _row(r: CallRecord, instance: str | None = None) -> list[Any]:
    """The INSERT parameters of one record: outcome, then :data:`_COLUMNS` in order, every
    string bindable (:func:`_text`).

    ``instance`` names the server whose writer stores the record, for a record that does
    not say (``[server] instance``: which of several instances decided).
    """
    return _bindable(_plain_row(r, instance))


def _plain_row(r: CallRecord, instance: str | None = None) -> list[Any]:
    """:func:`_row` with the strings as they are: what the SQLite writer binds first.

    The writer's thread builds one per record while the event loop waits for the GIL, so the
    fields are read in C (one ``attrgetter``); a string SQLite cannot bind (lone surrogates)
    makes the writer bind that chunk again through :func:`_bindable`.
    """
    row: list[Any] = [outcome_of(r), *_FIELDS(r)]
    if row[_INSTANCE] is None:
        row[_INSTANCE] = instance
    return row


def _bindable(values: list[Any]) -> list[Any]:
    return [_text(value) if isinstance(value, str) else value for value in values]


_FIELDS = operator.attrgetter(*_COLUMNS)
#: Where ``instance`` is in a row (after the outcome).
_INSTANCE = 1 + _COLUMNS.index("instance")


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 5000")
    return connection


def _identity(path: Path) -> tuple[int, int]:
    """The (device, inode) of ``path``: what tells the file this writer opened from another.

    :raises OSError: no such file.
    """
    status = os.stat(path)
    return status.st_dev, status.st_ino


def _let_go(connection: sqlite3.Connection) -> None:
    """Close a connection whose file was deleted or moved, its committed rows in that file.

    SQLite does not checkpoint on close once the file has moved (its rows would stay in a WAL
    named after the old path): an explicit checkpoint first writes them into the file the
    connection has open, so a log moved aside by a rotation is complete.
    """
    with contextlib.suppress(sqlite3.Error):
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with contextlib.suppress(sqlite3.Error):
        connection.close()


def _reopen(path: Path) -> sqlite3.Connection:
    """Open ``path`` for writing after the file this writer had was deleted or replaced.

    When no file is at ``path``, a ``-wal`` or ``-shm`` file left there belongs to the old one
    (other processes may still have it open): a new database beside them would read the old
    one's pages as its own. They are removed first, under a lock on the directory, so that of
    several writers noticing at once the first creates the new file and the others open it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        if not path.exists():
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return _open_for_writing(path)
    finally:
        os.close(directory)  # and with it the lock


def _open_for_writing(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = _connect(path)
    connection.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode: a commit survives a process crash; fsync only at checkpoints.
    connection.execute("PRAGMA synchronous = NORMAL")
    migrate(connection)
    return connection


class SqliteCallLog(QueuedWriter):
    """A :class:`~shaken.services.calllog.CallLog` on a SQLite file (created if missing).

    :param flush_interval: the longest a queued record waits for its commit, in seconds.
    :param batch_size: commit early once this many records wait.
    :param max_pending: records held in memory at most; more are dropped and counted.
    :param retention_days: rows older than this are deleted by the writer, a few thousand at
        a time between batches, so pruning never holds the file for long; None keeps all.
    :param clock: what "older than" is measured from (the system clock by default).
    :param instance: this server's name, stored with records that carry none.
    :raises sqlite3.Error: the file cannot be opened or is not a call log.
    :raises OSError: its directory cannot be created.

    Counters (read them for metrics): :attr:`written`, :attr:`dropped`, :attr:`failures`
    (commits that failed), :attr:`restarts` (writer threads started again after one died),
    :attr:`reopened` (the file was deleted or replaced and opened again).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        flush_interval: float = 0.1,
        batch_size: int = 500,
        max_pending: int = 100_000,
        retention_days: float | None = None,
        clock: Clock | None = None,
        instance: str | None = None,
    ) -> None:
        self._init_writer(
            flush_interval=flush_interval, batch_size=batch_size, max_pending=max_pending
        )
        self.path = Path(path)
        self.instance = instance
        self.retention_days = retention_days
        self._clock = clock or SystemClock()
        self._next_prune = 0.0
        #: Rows removed by retention (``call_log_retention_days``).
        self.pruned = 0
        self.reopened = 0
        self._connection: sqlite3.Connection | None = _open_for_writing(self.path)
        self._identity: tuple[int, int] | None = _identity(self.path)
        self._thread = self._start_writer()

    @property
    def label(self) -> str:
        return str(self.path)

    def healthy(self) -> tuple[bool, str]:
        """Whether decisions reach the file, and why not (REST ``/readyz`` reports both)."""
        if not self._writer_running():
            return False, "the call log writer is not running"
        if self.last_error is not None:
            return False, f"the last commit failed: {self.last_error}"
        try:
            current = _identity(self.path)
        except OSError:
            current = None
        if current != self._identity:
            state = "deleted" if current is None else "replaced"
            return False, f"{self.path} was {state}; the writer opens it again"
        return True, "writable"

    # ------------------------------------------------------------------------------ writer

    def _flush(self) -> None:
        queue = self._queue
        if not queue:
            self._same_file()  # noticed at every interval, idle or not (/readyz reads it)
            return
        while queue:
            batch: list[CallRecord] = []
            try:
                while len(batch) < 5000:
                    batch.append(queue.popleft())
            except IndexError:
                pass
            # The file is checked after the batch is taken and before it is committed: a
            # record queued after the file was moved is never written into the moved file.
            if not self._same_file():
                queue.extendleft(reversed(batch))
                return  # the records wait for a file to write to
            self._write(batch)

    #: Rows deleted per pruning statement, and how often the writer prunes.
    PRUNE_CHUNK = 5000
    PRUNE_EVERY = 60.0

    def _prune(self) -> None:
        """Delete rows past the retention, in chunks, between batches (the writer's thread)."""
        if self.retention_days is None or self._connection is None:
            return
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + self.PRUNE_EVERY
        cutoff = self._clock.now().timestamp() - self.retention_days * 86400.0
        try:
            while not self._closing:
                with self._connection:
                    deleted = self._connection.execute(
                        "DELETE FROM calls WHERE id IN "
                        "(SELECT id FROM calls WHERE time < ? ORDER BY time LIMIT ?)",
                        (cutoff, self.PRUNE_CHUNK),
                    ).rowcount
                self.pruned += deleted
                if deleted < self.PRUNE_CHUNK or self._queue:
                    break  # done, or records wait: they come first
        except sqlite3.Error as exc:
            log.warning("call log %s: pruning failed (%s); tried again later", self.path, exc)

    def _same_file(self) -> bool:
        """True when the path is still the file this writer opened; else open it again."""
        try:
            current = _identity(self.path)
        except OSError:
            current = None
        if current == self._identity:
            return True
        state = "deleted" if current is None else "replaced"
        if self._connection is not None:
            log.error(
                "call log %s was %s; opening it again",
                self.path,
                state,
                extra=fields(path=self.path, state=state),
            )
            _let_go(self._connection)
            self._connection = None
        try:
            self._connection = _reopen(self.path)
            self._identity = _identity(self.path)
        except (OSError, sqlite3.Error) as exc:
            self.last_error = f"cannot open {self.path} again: {exc}"
            log.error("call log %s", self.last_error)
            return False
        self.reopened += 1
        self.last_error = None
        log.warning("call log %s: opened again; rows go to the new file", self.path)
        return True

    def _write(self, batch: list[CallRecord]) -> None:
        connection = self._connection
        assert connection is not None  # _same_file() has just opened it
        try:
            rows = [_plain_row(r, self.instance) for r in batch]
        except Exception as exc:  # a record the writer cannot even read: drop, never die
            self._lose(batch, exc)
            return
        for attempt in range(3):
            try:
                with connection:
                    after = top_id(connection)
                    for start in range(0, len(rows), _CHUNK):
                        chunk = rows[start : start + _CHUNK]
                        values = list(itertools.chain.from_iterable(chunk))
                        try:
                            connection.execute(_insert_sql(len(chunk)), values)
                        except UnicodeEncodeError:  # text not UTF-8 on the wire: as bytes
                            connection.execute(_insert_sql(len(chunk)), _bindable(values))
                    index_new_rows(connection, after)  # the search by TN, in the same commit
            except sqlite3.Error as exc:
                self.failures += 1
                self.last_error = str(exc)
                log.warning(
                    "call log %s: commit failed (%s), attempt %d",
                    self.path,
                    exc,
                    attempt,
                    extra=fields(path=self.path, error=exc, attempt=attempt),
                )
                time.sleep(0.05 * (attempt + 1))
                continue
            except Exception as exc:  # not the disk's fault: retrying gives the same answer
                self._lose(batch, exc)
                return
            self.written += len(rows)
            self.last_error = None
            self._count(connection)
            return
        self.dropped += len(rows)
        log.error(
            "call log %s: %d records dropped after 3 failed commits",
            self.path,
            len(rows),
            extra=fields(path=self.path, dropped=len(rows)),
        )

    def _count(self, connection: sqlite3.Connection) -> None:
        """The new rows into the dashboard's summary tables, after their own commit (a
        failure leaves them for the next flush to count)."""
        try:
            count_new_rows(connection)
        except sqlite3.Error as exc:
            log.warning("call log %s: counting for the dashboard failed (%s)", self.path, exc)

    def _lose(self, batch: list[CallRecord], exc: Exception) -> None:
        self.failures += 1
        self.dropped += len(batch)
        log.error(
            "call log %s: %d records dropped, they cannot be stored (%s)",
            self.path,
            len(batch),
            type(exc).__name__,
        )

    def _close_store(self) -> None:
        if self._connection is not None:
            self._connection.close()

    # ---------------------------------------------------------------------------- reading

    def query(
        self,
        query: CallQuery | None = None,
        *,
        since: float | None = None,
        outcome: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Committed records, oldest first (what :func:`read_calls` returns)."""
        return read_calls(self.path, query, since=since, outcome=outcome, limit=limit)


def read_calls(
    path: str | Path,
    query: CallQuery | None = None,
    *,
    since: float | None = None,
    outcome: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The records of a call log matching ``query``, oldest first, as dicts (``outcome`` and
    ``id`` included). ``since``/``outcome``/``limit`` are a short form of the query.

    :raises FileNotFoundError: no call log at ``path``.
    :raises ValueError: an unknown ``outcome``.
    :raises sqlite3.Error: not a call log.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no call log at {file}")
    query = query or CallQuery(since=since, outcome=outcome, limit=limit)
    connection = _connect(file)
    try:
        sql, args = select_sql(query, SQLITE, by_tn=schema_version(connection) >= TN_SINCE)
        connection.row_factory = sqlite3.Row
        rows = connection.execute(sql, args).fetchall()
    finally:
        connection.close()
    out = [{k: _from_storage(v) for k, v in dict(row).items()} for row in reversed(rows)]
    for row in out:
        row["allowed"] = bool(row["allowed"])
    return out


def migrate_file(path: str | Path) -> tuple[int, int]:
    """Bring the call log at ``path`` to the latest schema (``shaken calls migrate``).

    :raises FileNotFoundError: no call log at ``path``.
    :raises sqlite3.Error: not a call log, or one from a newer release.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no call log at {file}")
    connection = _connect(file)
    try:
        return migrate(connection)
    finally:
        connection.close()


def backup(path: str | Path, target: str | Path) -> int:
    """Copy the call log at ``path`` to ``target`` with SQLite's online backup; returns rows.

    A copy of the file itself is not a backup: in WAL mode the latest commits live in the
    ``-wal`` file, and a copy taken while a writer works can be torn. The backup API copies a
    consistent snapshot page by page while the servers keep writing. The copy is written to a
    temporary file beside ``target`` and renamed into place, so a crash leaves no half file.

    :raises FileNotFoundError: no call log at ``path``.
    :raises FileExistsError: ``target`` exists.
    """
    source_file, target_file = Path(path), Path(target)
    if not source_file.is_file():
        raise FileNotFoundError(f"no call log at {source_file}")
    if target_file.exists():
        raise FileExistsError(f"{target_file} exists; choose another name")
    partial = target_file.with_name(f".{target_file.name}.partial")
    partial.unlink(missing_ok=True)
    source = _connect(source_file)
    try:
        copy = sqlite3.connect(str(partial))
        try:
            source.backup(copy, pages=1024, sleep=0.001)
            rows = int(copy.execute("SELECT count(*) FROM calls").fetchone()[0])
            copy.execute("PRAGMA journal_mode = DELETE")
        finally:
            copy.close()
    finally:
        source.close()
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, target_file)
    return rows


def records_of(rows: Iterable[dict[str, Any]]) -> list[CallRecord]:
    """Rows of :func:`read_calls` back as :class:`CallRecord` values."""
    return [CallRecord(**{c: row[c] for c in _COLUMNS}) for row in rows]
