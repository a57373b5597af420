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

from shaken.services.calllog import CallRecord

__all__ = ["COLUMNS", "INDEXES", "LATEST", "VERSIONS", "Column", "Version", "columns_at"]


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
)

LATEST = VERSIONS[-1].number
#: Every column, in table order.
COLUMNS: tuple[Column, ...] = tuple(c for v in VERSIONS for c in v.columns)
INDEXES = tuple(i for v in VERSIONS for i in v.indexes)
#: The CallRecord fields, in the order the writers bind them (``outcome`` is derived).
RECORD_FIELDS = tuple(f.name for f in fields(CallRecord))


def columns_at(version: int) -> tuple[Column, ...]:
    """The columns a call log of ``version`` has."""
    return tuple(c for v in VERSIONS if v.number <= version for c in v.columns)
