"""Per-minute and per-five-minute counts of the call log, kept by the database itself.

A day of a busy site is ten million rows; no index makes a ``GROUP BY`` over them take less
than a second, so the dashboard's panels read these tables instead (schema version 4):

* ``calls_by_minute``: every record, by minute, direction, profile, outcome, attestation,
  Reason and action: the time series, the mix, the failure reasons, our own signing;
* ``calls_by_source``: inbound records, by five minutes, profile, source address, outcome and
  attestation: "who sends me what" by address;
* ``calls_by_signer``: inbound records, by five minutes, profile, SPC, x5u host, outcome,
  attestation and Reason: by signer, and certificate fetch failures by host.

Each row holds ``n`` records and ``rejected`` of them not allowed. A key column that is NULL
in the call log is ``''`` here (a unique key never matches NULL). The database keeps them:
in PostgreSQL a trigger per statement reading its transition table (one
``INSERT ... ON CONFLICT`` per batch the writer commits, whichever writer: an instance, a
spool replayed); in SQLite, which has no statement triggers, the writer counts what it has
inserted right after each commit (:func:`count_new_rows`), and a trigger per deleted row takes
off what retention deletes. A record the insert skipped (its ``record_id`` already there) is
not counted. A log from before version 4 is counted once, when it is
migrated.

Schema version 5 adds, for a day of a busy site (ten million rows, where even the
five-minute tables are a million rows and more):

* ``calls_by_source_hour``, ``calls_by_signer_hour``: the same counts by hour, which the
  upstream panels read for the whole hours of a window (the five-minute tables only for the
  partial hours at its edges, the call log for the seconds at the very edges);
* ``calls_by_tn``: one row (``tn``, ``tn_time``, ``tn_row``) per distinct non-empty number of a
  record, its ``orig`` and each comma-separated piece of its ``dest``, keyed for "the most
  recent records of this TN" (:func:`.callschema.select_sql`). Unlike the counts it is
  written in the transaction of the rows themselves: SQLite's writer inserts it before its
  commit (:func:`index_new_rows`), PostgreSQL's insert trigger in the same statement; a row
  deleted takes its numbers with it (a trigger: SQLite's finds them by ``tn_row``, indexed,
  PostgreSQL's by the key, from the deleted rows' own numbers).

Hand-written SQL: no library keeps summary tables for both engines; PostgreSQL's
materialized views are refreshed whole, which is the scan this avoids.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from shaken.adapters.store.callschema import LATEST, POSTGRES, SQLITE, TN_TABLE, Dialect

__all__ = [
    "ROLLUPS",
    "TN_SINCE",
    "TN_TABLE",
    "Rollup",
    "backfill_sql",
    "count_new_rows",
    "host_sql",
    "index_new_rows",
    "rollup_ddl",
    "top_id",
]

_INBOUND = "{p}direction = 'verify' AND {p}outcome <> 'not_processed'"


def host_sql(dialect: Dialect, column: str = "x5u") -> str:
    """The host (and port) of an x5u URL, in ``dialect``'s SQL; NULL for a NULL URL."""
    if dialect.name == "postgresql":
        return f"NULLIF(split_part(split_part({column}, '://', 2), '/', 1), '')"
    rest = f"substr({column}, instr({column}, '://') + 3)"
    return (
        f"CASE WHEN {column} IS NULL THEN NULL WHEN instr({column}, '://') = 0 THEN {column}"
        f" WHEN instr({rest}, '/') = 0 THEN {rest}"
        f" ELSE substr({rest}, 1, instr({rest}, '/') - 1) END"
    )


def bucket_sql(dialect: Dialect, seconds: int, column: str = "time") -> str:
    """The start of the ``seconds``-long bucket of ``column`` (Unix seconds), an integer."""
    if dialect.name == "postgresql":
        return f"(floor({column} / {seconds}) * {seconds})::bigint"
    return f"CAST({column} / {seconds} AS INTEGER) * {seconds}"  # time > 0: truncation is floor


@dataclass(frozen=True, slots=True)
class Rollup:
    """One summary table: its bucket width, its key columns (besides ``bucket``) with the
    call-log expression of each, and which records it counts."""

    table: str
    seconds: int
    keys: tuple[tuple[str, str], ...]
    counts_only: str | None = None
    #: The schema version that brought it (:data:`.callschema.VERSIONS`).
    since: int = 4

    def key_names(self) -> tuple[str, ...]:
        return ("bucket", *(name for name, _ in self.keys))

    def expressions(self, dialect: Dialect, prefix: str = "") -> list[str]:
        """The key values of a call-log row (columns prefixed ``prefix``, e.g. ``NEW.``)."""
        out = [bucket_sql(dialect, self.seconds, f"{prefix}time")]
        for _, expression in self.keys:
            if expression == "host":
                out.append(f"coalesce({host_sql(dialect, f'{prefix}x5u')}, '')")
            else:
                out.append(f"coalesce({prefix}{expression}, '')")
        return out

    def where(self, prefix: str = "") -> str:
        return "1 = 1" if self.counts_only is None else self.counts_only.format(p=prefix)


_BY_SOURCE = tuple((c, c) for c in ("profile", "source_ip", "outcome", "attest"))
_BY_SIGNER = (
    ("profile", "profile"),
    ("spc", "spc"),
    ("x5u_host", "host"),
    ("outcome", "outcome"),
    ("attest", "attest"),
    ("reason", "reason"),
)

ROLLUPS: tuple[Rollup, ...] = (
    Rollup(
        "calls_by_minute",
        60,
        tuple((c, c) for c in ("direction", "profile", "outcome", "attest", "reason", "action")),
    ),
    Rollup("calls_by_source", 300, _BY_SOURCE, _INBOUND),
    Rollup("calls_by_signer", 300, _BY_SIGNER, _INBOUND),
    Rollup("calls_by_source_hour", 3600, _BY_SOURCE, _INBOUND, since=5),
    Rollup("calls_by_signer_hour", 3600, _BY_SIGNER, _INBOUND, since=5),
)

#: The schema version that brought :data:`TN_TABLE`.
TN_SINCE = 5


def _tn_create(dialect: Dialect) -> list[str]:
    real, integer = dialect.types["real"], dialect.types["integer"]
    table = (
        f"CREATE TABLE IF NOT EXISTS {TN_TABLE} (tn TEXT NOT NULL, tn_time {real} NOT NULL,"
        f" tn_row {integer} NOT NULL, PRIMARY KEY (tn, tn_time, tn_row))"
    )
    if dialect.name == "postgresql":
        return [table]  # its delete trigger finds a row's numbers by the key
    # SQLite's, a trigger per row, can only look them up by the row (no WITH in a trigger).
    return [
        f"{table} WITHOUT ROWID",
        f"CREATE INDEX IF NOT EXISTS {TN_TABLE}_row ON {TN_TABLE} (tn_row)",
    ]


def _pg_numbers(source: str, condition: str = "1 = 1") -> str:
    """``SELECT`` (tn, time, id) of the call-log rows in ``source`` (PostgreSQL)."""
    return (
        f"SELECT orig, time, id FROM {source} WHERE {condition} AND orig <> ''"
        f" UNION ALL SELECT p.tn, c.time, c.id FROM {source} AS c,"
        " unnest(string_to_array(c.dest, ',')) AS p (tn)"
        f" WHERE {condition} AND p.tn <> '' AND p.tn IS DISTINCT FROM c.orig"
    )


def _tn_fill(dialect: Dialect, source: str, condition: str = "1 = 1") -> str:
    """``INSERT`` the numbers of the call-log rows in ``source`` for which ``condition``
    holds: ``orig`` and each piece of ``dest`` split at its commas, the empty ones left out."""
    if dialect.name == "postgresql":
        return (
            f"INSERT INTO {TN_TABLE} (tn, tn_time, tn_row) {_pg_numbers(source, condition)}"
            " ON CONFLICT DO NOTHING"
        )
    return (
        "WITH RECURSIVE part (id, time, piece, rest) AS ("
        f"SELECT id, time, NULL, dest || ',' FROM {source}"
        f" WHERE {condition} AND dest IS NOT NULL"
        " UNION ALL SELECT id, time, substr(rest, 1, instr(rest, ',') - 1),"
        " substr(rest, instr(rest, ',') + 1) FROM part WHERE rest <> '')"
        f" INSERT OR IGNORE INTO {TN_TABLE} (tn, tn_time, tn_row)"
        " SELECT piece, time, id FROM part WHERE piece <> ''"
        f" UNION ALL SELECT orig, time, id FROM {source}"
        f" WHERE {condition} AND orig IS NOT NULL AND orig <> ''"
    )


def _rejected(prefix: str) -> str:
    return f"CASE WHEN {prefix}allowed THEN 0 ELSE 1 END"


def _upsert(rollup: Rollup, select: str) -> str:
    names = rollup.key_names()
    return (
        f"INSERT INTO {rollup.table} ({', '.join(names)}, n, rejected) {select}"
        f" ON CONFLICT ({', '.join(names)}) DO UPDATE SET n = {rollup.table}.n + excluded.n,"
        f" rejected = {rollup.table}.rejected + excluded.rejected"
    )


def _aggregate(rollup: Rollup, dialect: Dialect, source: str, condition: str = "1 = 1") -> str:
    """``SELECT`` the rollup rows of the call-log rows in ``source`` (a table name) for
    which ``condition`` holds."""
    keys = rollup.expressions(dialect)
    positions = ", ".join(str(i + 1) for i in range(len(keys)))
    return (
        f"SELECT {', '.join(keys)}, count(*), sum({_rejected('')}) FROM {source}"
        f" WHERE {rollup.where()} AND {condition} GROUP BY {positions} ORDER BY {positions}"
    )


def _create(rollup: Rollup, dialect: Dialect) -> str:
    integer = dialect.types["integer"]
    columns = [f"bucket {integer} NOT NULL"]
    columns += [f"{name} TEXT NOT NULL" for name, _ in rollup.keys]
    columns += [f"n {integer} NOT NULL", f"rejected {integer} NOT NULL"]
    key = ", ".join(rollup.key_names())
    tail = " WITHOUT ROWID" if dialect.name == "sqlite" else ""
    return (
        f"CREATE TABLE IF NOT EXISTS {rollup.table} ({', '.join(columns)},"
        f" PRIMARY KEY ({key})){tail}"
    )


def _sqlite_triggers(version: int) -> list[str]:
    deletes = []
    for rollup in _at(version):
        olds = rollup.expressions(SQLITE, "OLD.")
        match = " AND ".join(f"{n} = {v}" for n, v in zip(rollup.key_names(), olds, strict=True))
        deletes.append(
            f"UPDATE {rollup.table} SET n = n - 1, rejected = rejected - {_rejected('OLD.')}"
            f" WHERE {match} AND {rollup.where('OLD.')}"
            " AND OLD.id <= (SELECT upto FROM calls_counted)"  # only a row that was counted
        )
    if version >= TN_SINCE:
        deletes.append(f"DELETE FROM {TN_TABLE} WHERE tn_row = OLD.id")
    return [  # made again: a log from an older version has fewer tables to keep
        "DROP TRIGGER IF EXISTS calls_rollup_delete",
        "CREATE TRIGGER calls_rollup_delete AFTER DELETE ON calls BEGIN "
        + "; ".join(deletes)
        + "; END",
    ]


def _postgres_triggers(version: int) -> list[str]:
    inserts = [_upsert(r, _aggregate(r, POSTGRES, "new_rows")) for r in _at(version)]
    deletes = []
    for rollup in _at(version):
        names = rollup.key_names()
        match = " AND ".join(f"t.{n} = d.{n}" for n in names)
        deletes.append(
            f"UPDATE {rollup.table} AS t SET n = t.n - d.n, rejected = t.rejected - d.rejected"
            f" FROM ({_aggregate(rollup, POSTGRES, 'old_rows')}) AS d"
            f" ({', '.join(names)}, n, rejected) WHERE {match}"
        )
    if version >= TN_SINCE:
        inserts.append(_tn_fill(POSTGRES, "new_rows"))
        deletes.append(
            f"DELETE FROM {TN_TABLE} AS t USING ({_pg_numbers('old_rows')}) AS o (tn, time, id)"
            " WHERE t.tn = o.tn AND t.tn_time = o.time AND t.tn_row = o.id"
        )
    out = []
    for name, kind, table, statements in (
        ("calls_rollup_insert", "INSERT", "NEW TABLE AS new_rows", inserts),
        ("calls_rollup_delete", "DELETE", "OLD TABLE AS old_rows", deletes),
    ):
        body = "; ".join(statements)
        out.append(
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS"
            f" $rollup$ BEGIN {body}; RETURN NULL; END $rollup$"
        )
        out.append(f"DROP TRIGGER IF EXISTS {name} ON calls")
        out.append(
            f"CREATE TRIGGER {name} AFTER {kind} ON calls REFERENCING {table}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )
    return out


def _at(version: int) -> tuple[Rollup, ...]:
    return tuple(r for r in ROLLUPS if r.since <= version)


def rollup_ddl(dialect: Dialect, version: int = LATEST) -> list[str]:
    """The statements that make the summary tables and their triggers as of schema
    ``version`` (the latest unless said otherwise; safe to repeat)."""
    tables = [_create(r, dialect) for r in _at(version)]
    if version >= TN_SINCE:
        tables += _tn_create(dialect)
    if dialect.name == "postgresql":
        return [*tables, *_postgres_triggers(version)]
    counted = [
        "CREATE TABLE IF NOT EXISTS calls_counted (upto INTEGER NOT NULL)",
        "INSERT INTO calls_counted (upto) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM calls_counted)",
    ]
    return [*tables, *counted, *_sqlite_triggers(version)]


def backfill_sql(dialect: Dialect, before: int = 0) -> list[str]:
    """The statements that fill, from the rows already in a call log of version ``before``,
    the tables that came after it (once, when migrating; safe to repeat).

    In SQLite, the counts of a log that had them (version 4 on) stop where its writers had
    counted (``calls_counted.upto``): the rows above are counted into every table by the
    next :func:`count_new_rows`. The TN table holds every row.
    """
    counted = before >= ROLLUPS[0].since and dialect.name == "sqlite"
    condition = "id <= (SELECT upto FROM calls_counted)" if counted else "1 = 1"
    fresh = [r for r in ROLLUPS if r.since > before]
    out = [f"DELETE FROM {r.table}" for r in fresh]
    out += [_upsert(r, _aggregate(r, dialect, "calls", condition)) for r in fresh]
    if before < TN_SINCE:
        out += [f"DELETE FROM {TN_TABLE}", _tn_fill(dialect, "calls")]
    if dialect.name == "sqlite" and not counted:
        out.append("UPDATE calls_counted SET upto = (SELECT coalesce(max(id), 0) FROM calls)")
    return out


#: SQLite: count the rows with an ``id`` in ``(?, ?]``; see :func:`count_new_rows`.
_SQLITE_COUNT: tuple[str, ...] = tuple(
    _upsert(r, _aggregate(r, SQLITE, "calls", "id > ? AND id <= ?")) for r in ROLLUPS
)


def count_new_rows(connection: sqlite3.Connection) -> int:
    """Count, in the summary tables, the SQLite call log's rows not counted yet; returns how
    many there were.

    SQLite has no statement triggers, and a trigger per row costs the writer a third of its
    rate (three upserts a row), so the writer calls this after each commit: one
    ``INSERT ... SELECT ... GROUP BY`` per table over the rows above ``calls_counted.upto``
    (read back by their ids, just written), and the mark moved past them, in one
    transaction taken at once (``BEGIN IMMEDIATE``: several workers' writers take turns).
    The rows' own commit is not made longer by it, so the durability window of the call log
    is unchanged; a writer that dies between the two leaves the rows for the next one to
    count. A row the insert skipped (its ``record_id`` already there) has no id: not counted.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        upto = int(connection.execute("SELECT upto FROM calls_counted").fetchone()[0])
        top = int(connection.execute("SELECT coalesce(max(id), 0) FROM calls").fetchone()[0])
        if top > upto:
            for statement in _SQLITE_COUNT:
                connection.execute(statement, (upto, top))
            connection.execute("UPDATE calls_counted SET upto = ?", (top,))
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    return max(0, top - upto)


#: SQLite: the numbers of the rows with an ``id`` above ``?``; see :func:`index_new_rows`.
_SQLITE_TN = _tn_fill(SQLITE, "calls", "id > ?")


def index_new_rows(connection: sqlite3.Connection, after: int) -> None:
    """Put the numbers of the SQLite call log's rows above id ``after`` into the TN table,
    in the caller's transaction (the writer's, before it commits the rows).

    ``after`` is the highest id before the rows were inserted; a row of another writer above
    it is already there (``INSERT OR IGNORE``), and one committed after is that writer's.
    """
    connection.execute(_SQLITE_TN, (after, after))


def top_id(connection: sqlite3.Connection) -> int:
    """The highest row id of the call log (0 when empty): ``after`` for :func:`index_new_rows`."""
    return int(connection.execute("SELECT coalesce(max(id), 0) FROM calls").fetchone()[0])
