"""The call log's table, once for every backend: its columns, its versions and its indexes.

The columns are the fields of :class:`~shaken.services.calllog.CallRecord` plus the stored
``outcome`` and the row ``id``; each has a logical type that a backend renders in its own SQL
(SQLite's ``REAL`` is PostgreSQL's ``DOUBLE PRECISION``). The table is versioned: each
:class:`Version` adds columns and indexes to the one before, so a call log written by an older
release is brought forward when it is opened (or by ``shaken calls migrate``), never rewritten,
and a log from a newer release is refused rather than misread. Adding a column is adding a
field to ``CallRecord`` and one more :class:`Version` here; a test checks the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from shaken.services.calllog import CallQuery, CallRecord, outcome_of

__all__ = [
    "COLUMNS",
    "INDEXES",
    "LATEST",
    "OUTCOMES",
    "POSTGRES",
    "SQLITE",
    "SUMMARY_VERSIONS",
    "TN_TABLE",
    "VERSIONS",
    "Column",
    "Dialect",
    "Version",
    "columns_at",
    "outcome_of",
    "plain_tn",
    "where_clause",
]


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its name and logical type (``text``, ``real``, ``integer``, ``boolean``)."""

    name: str
    kind: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Version:
    """What one schema version adds: columns, and indexes as (name, columns, unique)."""

    number: int
    columns: tuple[Column, ...]
    indexes: tuple[tuple[str, tuple[str, ...], bool], ...] = ()
    why: str = ""
    #: It brings summary tables of :mod:`.rollups` (made, and filled from the rows
    #: already there, when a log is brought to this version): each table names its version.
    rollups: bool = False


VERSIONS: tuple[Version, ...] = (
    Version(
        1,
        (
            Column("time", "real", required=True),
            Column("direction", "text", required=True),
            Column("interface", "text", required=True),
            Column("outcome", "text", required=True),
            Column("call_id", "text"),
            Column("profile", "text"),
            Column("orig", "text"),
            Column("dest", "text"),
            Column("attest", "text"),
            Column("verstat", "text"),
            Column("reason", "text"),
            Column("sip_code", "integer"),
            Column("action", "text"),
            Column("allowed", "boolean", required=True),
            Column("x5u", "text"),
            Column("latency_ms", "real"),
        ),
        (("calls_time", ("time",), False),),
        why="the first call log",
    ),
    Version(
        2,
        (Column("brand", "text"), Column("rcd_status", "text"), Column("rcd_reason", "text")),
        why="Rich Call Data: the brand and its verdict",
    ),
    Version(
        3,
        (
            Column("record_id", "text"),
            Column("instance", "text"),
            Column("source_ip", "text"),
            Column("source_port", "integer"),
            Column("presented_from", "text"),
            Column("presented_pai", "text"),
            Column("presented_to", "text"),
            Column("request_uri", "text"),
            Column("origid", "text"),
            Column("spc", "text"),
            Column("cert_serial", "text"),
        ),
        (
            ("calls_record_id", ("record_id",), True),
            ("calls_outcome_time", ("outcome", "time"), False),
            ("calls_call_id", ("call_id",), False),
            ("calls_origid", ("origid",), False),
            ("calls_source_time", ("source_ip", "time"), False),
            ("calls_spc_time", ("spc", "time"), False),
            ("calls_orig_time", ("orig", "time"), False),
        ),
        why="the complete call record: source, presented identities, origid, signer, instance;"
        " an idempotency key per record",
    ),
    Version(
        4,
        (),
        why="the operator's dashboard: per-minute and per-five-minute counts kept by the"
        " database (rollups.py), triggers keeping them",
        rollups=True,
    ),
    Version(
        5,
        (),
        why="the dashboard on a day of a busy site: hourly counts by source and by signer"
        " (the five-minute ones only for a window's edges), and a table of (TN, record) that"
        " the search by TN reads instead of matching inside dest (rollups.py)",
        rollups=True,
    ),
)

LATEST = VERSIONS[-1].number
#: The table of (TN, record) the search by TN reads (schema version 5; made by rollups.py).
TN_TABLE = "calls_by_tn"
#: The versions that brought summary tables (a log from before one is counted when migrated).
SUMMARY_VERSIONS = tuple(v.number for v in VERSIONS if v.rollups)
#: Every column, in table order.
COLUMNS: tuple[Column, ...] = tuple(c for v in VERSIONS for c in v.columns)
INDEXES = tuple(i for v in VERSIONS for i in v.indexes)
#: The CallRecord fields, in the order the writers bind them (``outcome`` is derived).
RECORD_FIELDS = tuple(f.name for f in fields(CallRecord))


def columns_at(version: int) -> tuple[Column, ...]:
    """The columns a call log of ``version`` has."""
    return tuple(c for v in VERSIONS if v.number <= version for c in v.columns)


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one SQL engine spells the table: its types, its row id, its placeholder."""

    name: str
    types: dict[str, str]
    row_id: str
    placeholder: str

    def column(self, column: Column) -> str:
        """``name TYPE [NOT NULL]``: one column as ``CREATE``/``ALTER TABLE`` take it."""
        required = " NOT NULL" if column.required else ""
        return f"{column.name} {self.types[column.kind]}{required}"

    def create_table(self) -> str:
        """The first version's table; later versions are added column by column."""
        columns = ", ".join(self.column(c) for c in VERSIONS[0].columns)
        return f"CREATE TABLE calls ({self.row_id}, {columns})"

    def create_index(self, name: str, on: tuple[str, ...], unique: bool) -> str:
        kind = "UNIQUE INDEX" if unique else "INDEX"
        return f"CREATE {kind} IF NOT EXISTS {name} ON calls ({', '.join(on)})"


SQLITE = Dialect(
    "sqlite",
    {"text": "TEXT", "real": "REAL", "integer": "INTEGER", "boolean": "INTEGER"},
    "id INTEGER PRIMARY KEY",
    "?",
)
POSTGRES = Dialect(
    "postgresql",
    {"text": "TEXT", "real": "DOUBLE PRECISION", "integer": "BIGINT", "boolean": "BOOLEAN"},
    "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "%s",
)

#: What ``shaken calls --outcome`` filters on.
OUTCOMES = (
    "verified",
    "failed",
    "missing",
    "not_checked",
    "not_processed",
    "rejected",
    "signed",
    "not_signed",
)


def where_clause(query: CallQuery, dialect: Dialect) -> tuple[str, list[Any]]:
    """The WHERE clause (with its arguments) of ``query``, the same for every backend.

    :raises ValueError: an unknown ``outcome``.
    """
    mark = dialect.placeholder
    where: list[str] = []
    args: list[Any] = []

    def equal(column: str, value: object) -> None:
        if value is not None:
            where.append(f"{column} = {mark}")
            args.append(value)

    if query.since is not None:
        where.append(f"time >= {mark}")
        args.append(query.since)
    if query.until is not None:
        where.append(f"time < {mark}")
        args.append(query.until)
    if query.outcome is not None:
        if query.outcome not in OUTCOMES:
            choices = ", ".join(OUTCOMES)
            raise ValueError(f"outcome must be one of {choices}, not {query.outcome!r}")
        if query.outcome == "rejected":
            where.append("NOT allowed")
        else:
            equal("outcome", query.outcome)
    if query.tn is not None:
        # dest holds the called numbers joined with commas.
        where.append(f"(orig = {mark} OR dest = {mark} OR ',' || dest || ',' LIKE {mark})")
        args += [query.tn, query.tn, f"%,{query.tn},%"]
    if query.reason is not None:
        where.append(f"(reason = {mark} OR rcd_reason = {mark})")
        args += [query.reason, query.reason]
    equal("call_id", query.call_id)
    equal("origid", query.origid)
    equal("spc", query.spc)
    equal("source_ip", query.source)
    equal("profile", query.profile)
    equal("interface", query.interface)
    return (" WHERE " + " AND ".join(where)) if where else "", args


def plain_tn(tn: str) -> bool:
    """Whether ``LIKE '%,tn,%'`` means "``tn`` is one of the comma-separated pieces": no
    wildcard, escape or comma in it, and no letter (SQLite's ``LIKE`` ignores their case)."""
    return (
        bool(tn)
        and tn.isascii()
        and tn.isprintable()
        and not any(c.isalpha() or c in "%_\\," for c in tn)
    )


def select_sql(query: CallQuery, dialect: Dialect, *, by_tn: bool = False) -> tuple[str, list[Any]]:
    """The SELECT of ``query``: the most recent first (callers reverse it), ``limit`` applied.

    ``by_tn``: the log has the table of (TN, record) of schema version 5
    (:data:`.rollups.TN_TABLE`). A query by a :func:`plain_tn` then reads its rows for the TN,
    most recent first, and each call-log row they name, checked against the whole ``WHERE``
    clause still: the same rows as the scan, in the same order, without the scan.

    :raises ValueError: an unknown ``outcome``.
    """
    clause, args = where_clause(query, dialect)
    mark = dialect.placeholder
    if by_tn and query.tn is not None and plain_tn(query.tn):
        keys = [f"t.tn = {mark}", "calls.id = t.tn_row", "calls.time = t.tn_time"]
        first: list[Any] = [query.tn]
        if query.since is not None:
            keys.append(f"t.tn_time >= {mark}")
            first.append(query.since)
        if query.until is not None:
            keys.append(f"t.tn_time < {mark}")
            first.append(query.until)
        sql = (
            f"SELECT calls.* FROM {TN_TABLE} AS t CROSS JOIN calls"
            f" WHERE {' AND '.join(keys)} AND {clause.removeprefix(' WHERE ')}"
            " ORDER BY t.tn_time DESC, t.tn_row DESC"
        )
        args = [*first, *args]
    else:
        sql = f"SELECT * FROM calls{clause} ORDER BY time DESC, id DESC"
    if query.limit is not None:
        sql += f" LIMIT {mark}"
        args.append(query.limit)
    return sql, args
