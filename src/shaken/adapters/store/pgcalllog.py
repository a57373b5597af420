"""The call log in PostgreSQL, for several instances writing one call history.

``[server] call_log = "postgresql://..."`` selects it; a path keeps the SQLite log
(:mod:`.calllog`). The table is the one :mod:`.callschema` describes, rendered in PostgreSQL's
types, versioned the same way (``calls_schema`` holds the version) and brought forward under an
advisory lock, so instances starting together migrate once. Queries are the SQLite log's,
built by the same :func:`~shaken.adapters.store.callschema.select_sql`.

The driver is psycopg 3: maintained by PostgreSQL's own driver maintainers, binary wheels on
PyPI (``psycopg[binary]``), typed, and its ``COPY`` support (rows written from Python, encoded
in C) is what a batching writer wants. It is imported only when a PostgreSQL URL is
configured, so a one-machine install never needs it.

Writing is :class:`~shaken.adapters.store.calllog.SqliteCallLog`'s discipline:
:meth:`PostgresCallLog.record` only appends to a queue; a writer thread commits what waits
every ``flush_interval`` in one transaction: ``COPY`` into a temporary table, then
``INSERT ... SELECT ... ON CONFLICT (record_id) DO NOTHING`` from it (four times the rate of a
multi-row ``INSERT`` with its bound parameters, ``bench/scale.py``). The loss window is the
same: a decision answered on the wire is committed, in
PostgreSQL or in the spool, within :attr:`PostgresCallLog.window` (two flush intervals) plus
one commit; records beyond ``max_pending`` are dropped and counted, never blocking a call.

When PostgreSQL cannot be reached (refused, timed out, a failed commit), the batch goes to the
**spool**, a bounded local SQLite file holding the same table, committed with the same
durability as the SQLite log (WAL, ``synchronous=NORMAL``). The writer tries PostgreSQL again
every ``retry_interval``; once connected it replays the spool in the order it was written, a
chunk per transaction, deleting a chunk from the spool only after PostgreSQL committed it,
and only then writes newer batches. A record replayed twice (the process died between the two
commits) is written once: ``record_id`` is unique in the table and the insert skips what is
there. A spool full to ``spool_max_records`` drops further records, counted.

PostgreSQL's TEXT holds neither NUL nor lone surrogates (a header value that was not UTF-8 on
the wire reaches a record as surrogates). Such a value is stored as a marker character
(U+FFFE, a noncharacter) followed by the hex of its ``surrogatepass`` UTF-8 bytes, and read back
exactly; a value that itself starts with the marker is stored that way too, so the mapping is
one to one. Hand-written because no library maps arbitrary Python strings into PostgreSQL TEXT.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shaken.adapters.store.calllog import (
    _from_storage,
    _open_for_writing,
    _row,
)
from shaken.adapters.store.callschema import (
    COLUMNS,
    LATEST,
    POSTGRES,
    RECORD_FIELDS,
    SUMMARY_VERSIONS,
    VERSIONS,
    select_sql,
)
from shaken.adapters.store.rollups import TN_SINCE, backfill_sql, rollup_ddl
from shaken.adapters.store.writer import QueuedWriter
from shaken.services.calllog import CallQuery
from shaken.services.ports import Clock, SystemClock

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "PostgresCallLog",
    "connect",
    "is_postgres_url",
    "migrate_postgres",
    "read_postgres_calls",
    "redacted",
]

log = logging.getLogger("shaken.calllog")

_MARK = "\ufffe"
_COLUMNS = ("outcome", *RECORD_FIELDS)
#: Spooled rows replayed per transaction.
_REPLAY_CHUNK = 2000
#: An advisory lock key for migrations ("shaken" in ASCII): one instance migrates at a time.
_MIGRATION_LOCK = 0x7368616B656E


def is_postgres_url(target: object) -> bool:
    """Whether ``[server] call_log`` names a PostgreSQL database rather than a file."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def redacted(url: str) -> str:
    """``url`` without its password, for logs and messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def _driver() -> Any:
    try:
        import psycopg  # noqa: PLC0415  (optional: only for a PostgreSQL call log)
    except ImportError:  # pragma: no cover - the dev install has it
        raise RuntimeError(
            "a postgresql:// call log needs psycopg: pip install 'shaken[scale]'"
        ) from None
    return psycopg


def connect(url: str, *, timeout: float = 5.0) -> psycopg.Connection[Any]:
    """A connection to ``url`` whose statements give up after ``timeout`` seconds.

    :raises psycopg.Error: PostgreSQL cannot be reached or refuses us.
    """
    driver = _driver()
    connection: psycopg.Connection[Any] = driver.connect(
        url,
        connect_timeout=max(1, round(timeout)),
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SET statement_timeout = {int(timeout * 1000)}")
    connection.commit()
    return connection


def _text(value: str) -> str:
    """``value`` as PostgreSQL TEXT can hold it (see the module docs); :func:`_untext` undoes it."""
    if value.isascii() and "\0" not in value:
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        if "\0" not in value and not value.startswith(_MARK):
            return value
    return _MARK + value.encode("utf-8", "surrogatepass").hex()


def _untext(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_MARK):
        try:
            return bytes.fromhex(value[1:]).decode("utf-8", "surrogatepass")
        except ValueError:
            return value
    return value


def _pg_row(values: list[Any]) -> list[Any]:
    """A row of the SQLite writer (or of the spool) as PostgreSQL binds it."""
    out: list[Any] = []
    for raw in values:
        # bytes: the SQLite form of a text holding surrogates.
        value = raw.decode("utf-8", "surrogatepass") if isinstance(raw, bytes) else raw
        out.append(_text(value) if isinstance(value, str) else value)
    # allowed: an integer in SQLite, a boolean here.
    index = _COLUMNS.index("allowed")
    out[index] = None if out[index] is None else bool(out[index])
    return out


def _stage_sql() -> str:
    """A temporary table of the record columns (emptied at each commit), what COPY fills."""
    by_name = {c.name: c for c in COLUMNS}
    columns = ", ".join(f"{name} {POSTGRES.types[by_name[name].kind]}" for name in _COLUMNS)
    return f"CREATE TEMPORARY TABLE calls_stage ({columns}) ON COMMIT DELETE ROWS"


_STAGE = _stage_sql()
_COPY = f"COPY calls_stage ({', '.join(_COLUMNS)}) FROM STDIN"
# ORDER BY ctid: the rows keep the order they were copied in (their ids follow it).
_FROM_STAGE = (
    f"INSERT INTO calls ({', '.join(_COLUMNS)}) SELECT {', '.join(_COLUMNS)} FROM calls_stage"
    " ORDER BY ctid ON CONFLICT (record_id) DO NOTHING"
)


def schema_version(connection: psycopg.Connection[Any]) -> int:
    """The version of the call log on ``connection`` (0: none there yet)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('calls') IS NOT NULL, to_regclass('calls_schema')")
        row = cursor.fetchone()
        assert row is not None
        if not row[0]:
            return 0
        if row[1] is None:
            return 1
        cursor.execute("SELECT max(version) FROM calls_schema")
        found = cursor.fetchone()
    return int(found[0]) if found and found[0] is not None else 1


def migrate_postgres(connection: psycopg.Connection[Any]) -> tuple[int, int]:
    """Bring the call log forward to :data:`LATEST` in one transaction; returns (from, to).

    Steps only add (``ADD COLUMN IF NOT EXISTS``, ``CREATE INDEX IF NOT EXISTS``), and an
    advisory lock makes instances that start together take turns.

    :raises RuntimeError: the log is from a newer release than this one.
    """
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        before = schema_version(connection)
        if before > LATEST:
            raise RuntimeError(
                f"the call log has schema version {before}; this release knows {LATEST}: upgrade"
            )
        if before == 0:
            cursor.execute(POSTGRES.create_table())
        cursor.execute("CREATE TABLE IF NOT EXISTS calls_schema (version INTEGER NOT NULL)")
        for version in VERSIONS:
            for column in version.columns:
                add = POSTGRES.column(column)
                cursor.execute(f"ALTER TABLE calls ADD COLUMN IF NOT EXISTS {add}")
            for name, on, unique in version.indexes:
                cursor.execute(POSTGRES.create_index(name, on, unique))
        if any(before < v for v in SUMMARY_VERSIONS):
            # The trigger first: it locks out inserts until this transaction commits.
            for statement in rollup_ddl(POSTGRES):
                cursor.execute(statement)
            if before > 0:
                for statement in backfill_sql(POSTGRES, before):
                    cursor.execute(statement)
        cursor.execute("DELETE FROM calls_schema")
        cursor.execute("INSERT INTO calls_schema (version) VALUES (%s)", (LATEST,))
    return before, LATEST


def read_postgres_calls(url: str, query: CallQuery) -> list[dict[str, Any]]:
    """The records matching ``query``, oldest first, as :func:`~.calllog.read_calls` gives them.

    :raises ValueError: an unknown ``outcome``.
    :raises psycopg.Error: PostgreSQL cannot be reached, or holds no call log.
    """
    psycopg = _driver()
    with (
        connect(url, timeout=30.0) as connection,
        connection.cursor(row_factory=psycopg.rows.dict_row) as cursor,
    ):
        by_tn = query.tn is not None and schema_version(connection) >= TN_SINCE
        sql, args = select_sql(query, POSTGRES, by_tn=by_tn)
        cursor.execute(sql, args)
        rows = cursor.fetchall()
    return [{k: _untext(v) for k, v in row.items()} for row in reversed(rows)]


class _Spool:
    """The bounded local SQLite file that holds records while PostgreSQL is away."""

    def __init__(self, path: Path, max_records: int) -> None:
        self.path = path
        self.max_records = max_records
        self._connection: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = _open_for_writing(self.path)
        return self._connection

    def count(self) -> int:
        if self._connection is None and not self.path.exists():
            return 0
        row = self._open().execute("SELECT count(*) FROM calls").fetchone()
        return int(row[0])

    def append(self, rows: list[list[Any]]) -> int:
        """Store ``rows`` (in :data:`_COLUMNS` order); returns how many did not fit."""
        connection = self._open()
        room = max(0, self.max_records - self.count())
        kept = rows[:room]
        if kept:
            marks = ", ".join("?" for _ in _COLUMNS)
            with connection:
                connection.executemany(
                    f"INSERT OR IGNORE INTO calls ({', '.join(_COLUMNS)}) VALUES ({marks})", kept
                )
        return len(rows) - len(kept)

    def oldest(self, limit: int) -> tuple[list[int], list[list[Any]]]:
        cursor = self._open().execute(
            f"SELECT id, {', '.join(_COLUMNS)} FROM calls ORDER BY id LIMIT ?", (limit,)
        )
        ids: list[int] = []
        rows: list[list[Any]] = []
        for row in cursor:
            ids.append(int(row[0]))
            rows.append([_from_storage(v) for v in row[1:]])
        return ids, rows

    def remove(self, ids: list[int]) -> None:
        connection = self._open()
        with connection:
            connection.execute("DELETE FROM calls WHERE id >= ? AND id <= ?", (ids[0], ids[-1]))

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None


class PostgresCallLog(QueuedWriter):
    """A :class:`~shaken.services.calllog.CallLog` in PostgreSQL, spooling when it is away.

    :param url: a ``postgresql://`` URL (libpq's form; ``?options=-csearch_path%3DNAME``
        selects a schema).
    :param spool: the local SQLite spool file.
    :param spool_max_records: records the spool holds at most; more are dropped and counted.
    :param timeout: how long a connection attempt or a statement may take, in seconds.
    :param retry_interval: how often PostgreSQL is tried again while it is away.
    :param instance: this server's name, stored with records that carry none.
    :raises RuntimeError: psycopg is not installed, or the log is from a newer release.
    :raises sqlite3.Error: the spool cannot be opened.

    PostgreSQL being down at start is not an error: records spool until it is back.
    Counters: :attr:`written` (committed in PostgreSQL), :attr:`dropped`, :attr:`failures`,
    :attr:`spooled`, :attr:`replayed`, :attr:`pruned`.
    """

    PRUNE_CHUNK = 5000
    #: The most records one transaction carries, as the SQLite writer's batches: a backlog (a
    #: flood, PostgreSQL back after an outage) is written in statements that each finish well
    #: inside ``timeout``, instead of one that the statement timeout cancels.
    MAX_BATCH = 5000
    PRUNE_EVERY = 60.0

    def __init__(
        self,
        url: str,
        *,
        spool: str | Path,
        spool_max_records: int = 1_000_000,
        flush_interval: float = 0.1,
        batch_size: int = 500,
        max_pending: int = 100_000,
        retention_days: float | None = None,
        timeout: float = 5.0,
        retry_interval: float = 1.0,
        clock: Clock | None = None,
        instance: str | None = None,
    ) -> None:
        _driver()
        self._init_writer(
            flush_interval=flush_interval, batch_size=batch_size, max_pending=max_pending
        )
        self.url = url
        self.instance = instance
        self.name = redacted(url)
        self.retention_days = retention_days
        self.timeout = timeout
        self.retry_interval = retry_interval
        self._clock = clock or SystemClock()
        self._spool = _Spool(Path(spool), spool_max_records)
        self.spooled = 0
        self.replayed = 0
        self.pruned = 0
        self._connection: psycopg.Connection[Any] | None = None
        #: Whether this connection has its temporary staging table.
        self._staged = False
        self._next_attempt = 0.0
        self._next_ping = 0.0
        self._next_prune = 0.0
        self._spool_pending = self._spool.count()
        self._connect()
        self._thread = self._start_writer()

    THREAD_NAME = "shaken-calllog-pg"

    @property
    def label(self) -> str:
        return self.name

    @property
    def degraded(self) -> bool:
        """True while PostgreSQL is unreachable, or the spool is still being replayed."""
        return self._connection is None or self._spool_pending > 0

    @property
    def spool_pending(self) -> int:
        """Records in the spool, waiting for PostgreSQL."""
        return self._spool_pending

    # --------------------------------------------------------------------------- hot path

    def healthy(self) -> tuple[bool, str]:
        """Whether decisions are stored; while PostgreSQL is away they are (in the spool), and
        the detail says ``degraded``."""
        if not self._writer_running():
            return False, "the call log writer is not running"
        if self._connection is None:
            return True, (
                f"degraded: PostgreSQL {self.name} unreachable ({self.last_error}); "
                f"{self._spool_pending} record(s) spooled to {self._spool.path}"
            )
        if self._spool_pending:
            return True, f"degraded: replaying {self._spool_pending} spooled record(s)"
        return True, f"writing to PostgreSQL {self.name}"

    # ------------------------------------------------------------------------------ writer

    def _connect(self) -> None:
        """Connect (and migrate) unless connected or the last attempt was too recent."""
        if self._connection is not None:
            return
        now = time.monotonic()
        if now < self._next_attempt:
            return
        self._next_attempt = now + self.retry_interval
        psycopg = _driver()
        try:
            connection = connect(self.url, timeout=self.timeout)
            try:
                migrate_postgres(connection)
            except BaseException:
                connection.close()
                raise
        except psycopg.Error as exc:
            self._lost(exc)
            return
        if self.last_error is not None:
            log.warning("call log %s: PostgreSQL reached again", self.name)
        self.last_error = None
        self._connection = connection
        self._staged = False

    def _lost(self, exc: BaseException) -> None:
        first = self.last_error is None
        text = str(exc).strip()
        self.last_error = text.splitlines()[0] if text else type(exc).__name__
        self.failures += 1
        if first:
            log.error(
                "call log %s: PostgreSQL unreachable (%s); spooling to %s",
                self.name,
                self.last_error,
                self._spool.path,
            )
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None

    def _flush(self) -> None:
        """Write what is queued, :attr:`MAX_BATCH` records per transaction."""
        while self._flush_batch():
            pass

    def _flush_batch(self) -> bool:
        """One transaction's worth of the queue, written or spooled; True when more wait."""
        queue = self._queue
        rows: list[list[Any]] = []
        while queue and len(rows) < self.MAX_BATCH:
            record = queue.popleft()
            try:
                rows.append(_row(record, self.instance))
            except Exception as exc:  # a record the writer cannot even read: drop, never die
                self.dropped += 1
                log.error("call log %s: a record dropped (%s)", self.name, type(exc).__name__)
        self._connect()
        if self._connection is not None and self._spool_pending:
            self._replay()
        if not rows:
            self._keep_alive()
            return False
        if self._connection is not None and not self._spool_pending:
            try:
                self._insert(rows)
            except _driver().Error as exc:
                self._lost(exc)
            else:
                self.written += len(rows)
                self._next_ping = time.monotonic() + self.retry_interval
                return bool(queue)
        self._to_spool(rows)
        return bool(queue)

    def _keep_alive(self) -> None:
        """While idle, ask PostgreSQL every ``retry_interval`` whether it is still there, so
        that :meth:`healthy` (``/readyz``) says so before the next record finds out."""
        now = time.monotonic()
        if self._connection is None or now < self._next_ping:
            return
        self._next_ping = now + self.retry_interval
        try:
            self._connection.execute("SELECT 1")
            self._connection.rollback()
        except _driver().Error as exc:
            self._lost(exc)

    def _insert(self, rows: list[list[Any]]) -> None:
        """One transaction: the rows COPYed into a temporary table, then inserted from it,
        skipping the ``record_id`` already stored (COPY itself cannot skip a conflict)."""
        connection = self._connection
        assert connection is not None
        with connection.transaction(), connection.cursor() as cursor:
            if not self._staged:
                cursor.execute(_STAGE)
                self._staged = True
            with cursor.copy(_COPY) as copy:
                for row in rows:
                    copy.write_row(_pg_row(row))
            cursor.execute(_FROM_STAGE)

    def _to_spool(self, rows: list[list[Any]]) -> None:
        try:
            lost = self._spool.append(rows)
        except sqlite3.Error as exc:
            self.dropped += len(rows)
            log.error("call log %s: %d records dropped (spool: %s)", self.name, len(rows), exc)
            return
        self.spooled += len(rows) - lost
        self._spool_pending += len(rows) - lost
        if lost:
            self.dropped += lost
            log.error("call log %s: spool full, %d records dropped", self.name, lost)

    def _replay(self) -> None:
        """Spooled records into PostgreSQL, oldest first, a chunk per transaction."""
        psycopg = _driver()
        while self._connection is not None:
            try:
                ids, rows = self._spool.oldest(_REPLAY_CHUNK)
            except sqlite3.Error as exc:
                log.error("call log %s: cannot read the spool: %s", self.name, exc)
                return
            if not ids:
                self._spool_pending = 0
                log.warning("call log %s: spool replayed", self.name)
                return
            try:
                self._insert(rows)
            except psycopg.Error as exc:
                self._lost(exc)
                return
            self._spool.remove(ids)  # only after PostgreSQL committed them
            self.replayed += len(ids)
            self.written += len(ids)
            self._spool_pending = max(0, self._spool_pending - len(ids))

    def _prune(self) -> None:
        if self.retention_days is None or self._connection is None:
            return
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + self.PRUNE_EVERY
        cutoff = self._clock.now().timestamp() - self.retention_days * 86400.0
        psycopg = _driver()
        try:
            while not self._closing and self._connection is not None:
                with self._connection.transaction(), self._connection.cursor() as cursor:
                    cursor.execute(
                        "DELETE FROM calls WHERE id IN "
                        "(SELECT id FROM calls WHERE time < %s ORDER BY time LIMIT %s)",
                        (cutoff, self.PRUNE_CHUNK),
                    )
                    deleted = cursor.rowcount
                self.pruned += deleted
                if deleted < self.PRUNE_CHUNK or self._queue:
                    break
        except psycopg.Error as exc:
            log.warning("call log %s: pruning failed (%s); tried again later", self.name, exc)
            self._lost(exc)

    def close(self) -> None:
        """Commit everything queued (to PostgreSQL or the spool) and stop the writer."""
        if not self._closing:
            self._next_attempt = 0.0  # a last try at PostgreSQL, so that the spool drains
        super().close()

    def _close_store(self) -> None:
        """What was queued went to PostgreSQL or the spool; now let both go."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
        self._spool.close()

    def query(self, query: CallQuery | None = None) -> list[dict[str, Any]]:
        """Committed records, oldest first."""
        return read_postgres_calls(self.url, query or CallQuery())
