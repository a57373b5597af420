"""Schema version 5 on a real SQLite log and a real PostgreSQL one: the hourly upstream
tables and the table of (TN, record) give exactly the answers of the scans they replace.

Several hours of varied records are written through each backend's own writer. The
upstream panels are compared with the same ``GROUP BY`` run over the call log itself, for
windows on hour boundaries and off them, for every profile and one; the search by TN with
the statement that matched inside ``dest`` (``select_sql(..., by_tn=False)``), for numbers
that are a caller, a called number among several, both, a prefix of another, and for
numbers the table cannot answer (a ``LIKE`` wildcard, a letter). Then: a version 4 log is
migrated and its rows counted, a migration that fails leaves version 4 whole, a commit that
fails leaves neither the rows nor their numbers, and retention takes the rows' counts and
numbers with them.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shaken.adapters.store.calllog import (
    SqliteCallLog,
    migrate,
    read_calls,
    schema_version,
)
from shaken.adapters.store.callschema import LATEST, POSTGRES, SQLITE, Dialect, select_sql
from shaken.adapters.store.dashboard_sql import OutdatedCallLog, SqlDashboard
from shaken.adapters.store.rollups import ROLLUPS, TN_TABLE, host_sql, rollup_ddl
from shaken.services.calllog import CallQuery, CallRecord
from shaken.services.dashboard import Window
from tests.adapters.test_calllog_schema import NOW
from tests.support.fakes import ManualClock
from tests.support.servers import postgres_schema

H0 = NOW.timestamp() - 6 * 3600  # on the hour
TNS = ["12025550100", "12025550101", "120255501", "13035550000", "13035550001", "+4420"]
SOURCES = ["192.0.2.1", "192.0.2.2", "198.51.100.7", "203.0.113.9", None]
SIGNERS = [
    ("1234", "https://certs.alpha.example/sp.pem"),
    ("5678", "https://certs.beta.example:8443/b/sp.pem"),
    ("9999", "http://plain.example"),
    (None, None),
]


def records(count: int = 1500, seed: int = 5) -> list[CallRecord]:
    """``count`` records over five hours and a half from ``H0``, every kind the panels tell
    apart, with a few sent twice (the same ``record_id``: stored once)."""
    rng = random.Random(seed)
    out: list[CallRecord] = []
    for n in range(count):
        t = H0 + rng.uniform(0, 5.5 * 3600)
        profile = rng.choice(["global", "east", None])
        orig = rng.choice([*TNS, None])
        dest = rng.choice(
            [None, rng.choice(TNS), ",".join(rng.sample(TNS, 2)), ",".join(rng.sample(TNS, 3))]
        )
        common: dict[str, Any] = {
            "time": t,
            "interface": rng.choice(["sip", "rest"]),
            "profile": profile,
            "orig": orig,
            "dest": dest,
            "call_id": f"c{n}",
        }
        kind = rng.random()
        if kind < 0.15:
            out.append(
                CallRecord(direction="sign", action="signed", attest="A", **common)
                if kind < 0.1
                else CallRecord(
                    direction="sign", action="not_signed", reason="no profile", **common
                )
            )
            continue
        if kind < 0.18:
            out.append(CallRecord(direction="verify", action="not_processed", **common))
            continue
        spc, x5u = rng.choice(SIGNERS)
        inbound: dict[str, Any] = {"source_ip": rng.choice(SOURCES), "spc": spc, "x5u": x5u}
        draw = rng.random()
        if draw < 0.2:
            allowed = rng.random() < 0.5
            out.append(
                CallRecord(
                    direction="verify",
                    reason="missing_identity",
                    allowed=allowed,
                    action="accept" if allowed else "reject",
                    **common,
                    **{**inbound, "spc": None, "x5u": None},
                )
            )
        elif draw < 0.4:
            allowed = rng.random() < 0.5
            out.append(
                CallRecord(
                    direction="verify",
                    attest=rng.choice(["A", "B", "C"]),
                    reason=rng.choice(["bad_signature", "cert_fetch_failed", "stale_iat"]),
                    verstat="TN-Validation-Failed",
                    allowed=allowed,
                    action="accept" if allowed else "reject",
                    **common,
                    **inbound,
                )
            )
        else:
            out.append(
                CallRecord(
                    direction="verify",
                    attest=rng.choice(["A", "B", "C"]),
                    verstat="TN-Validation-Passed",
                    action="accept",
                    **common,
                    **inbound,
                )
            )
    return out + out[:: count // 7]  # the repeats: same record_id, one row each


def write_sqlite(path: Path, batch: list[CallRecord]) -> None:
    log = SqliteCallLog(path, flush_interval=0.02)
    for r in batch:
        log.record(r)
    log.close()


@pytest.fixture(scope="module")
def sqlite_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("day") / "calls.sqlite"
    write_sqlite(path, records())
    return path


@pytest.fixture(scope="module")
def postgres_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from shaken.adapters.store.pgcalllog import PostgresCallLog

    with postgres_schema() as url:
        spool = tmp_path_factory.mktemp("pgday") / "spool.sqlite"
        log = PostgresCallLog(url, spool=spool, flush_interval=0.02)
        for r in records():
            log.record(r)
        log.close()
        assert log.spool_pending == 0
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest) -> str | Path:
    fixture = "sqlite_log" if request.param == "sqlite" else "postgres_log"
    value: str | Path = request.getfixturevalue(fixture)
    return value


def fetch(target: str | Path, sql: str, args: list[Any] | tuple[Any, ...] = ()) -> list[Any]:
    """Rows of ``sql`` on the log (``?`` placeholders, turned into PostgreSQL's)."""
    if isinstance(target, Path):
        connection = sqlite3.connect(target)
        try:
            return [tuple(row) for row in connection.execute(sql, args).fetchall()]
        finally:
            connection.close()
    from shaken.adapters.store.pgcalllog import connect

    with connect(target) as pg, pg.cursor() as cursor:
        cursor.execute(sql.replace("?", "%s"), list(args))
        return [tuple(row) for row in cursor.fetchall()]


def dialect_of(target: str | Path) -> Dialect:
    return SQLITE if isinstance(target, Path) else POSTGRES


def scanned_upstreams(target: str | Path, window: Window, by: str) -> list[dict[str, Any]]:
    """The upstream table as a ``GROUP BY`` over the call log itself would give it."""
    keys = ["source_ip"] if by == "source" else ["spc", host_sql(dialect_of(target))]
    profile, args = "", [window.since, window.until]
    if window.profile is not None:
        profile = " AND profile = ?"
        args.append(window.profile)

    def count(condition: str) -> str:
        return f"sum(CASE WHEN {condition} THEN 1 ELSE 0 END)"

    counts = [
        "count(*)",
        *(count(f"outcome = '{o}'") for o in ("missing", "failed", "verified")),
        count("NOT allowed" if isinstance(target, str) else "allowed = 0"),
        *(count(f"attest = '{a}'") for a in "ABC"),
    ]
    rows = fetch(
        target,
        f"SELECT {', '.join(keys)}, {', '.join(counts)}"
        " FROM calls WHERE time >= ? AND time < ? AND direction = 'verify'"
        f" AND outcome <> 'not_processed'{profile} GROUP BY {', '.join(keys)}",
        args,
    )
    names = ("source",) if by == "source" else ("spc", "x5u_host")
    fields = ("calls", "missing", "failed", "verified", "rejected", "A", "B", "C")
    out = []
    for row in rows:
        key = dict(zip(names, row[: len(names)], strict=True))
        out.append({"key": key, **dict(zip(fields, map(int, row[len(names) :]), strict=True))})
    return sorted(out, key=lambda r: (-r["calls"], [str(v) for v in r["key"].values()]))


WINDOWS = [
    (H0, H0 + 3 * 3600),  # whole hours only
    (H0 + 3600, H0 + 3600 + 1500),  # whole five minutes, no whole hour
    (H0 + 123.4, H0 + 4 * 3600 + 17.9),  # partial hours and minutes at both ends
    (H0 + 3599.5, H0 + 3600.5),  # across an hour, no whole five minutes
    (H0 + 1800, H0 + 5400),  # half an hour each side of one boundary: no whole hour
    (H0 + 600, H0 + 5 * 3600 + 300),  # five-minute edges around four whole hours
    (H0 - 7200, H0 + 86400),  # wider than the data
]


@pytest.mark.parametrize(("since", "until"), WINDOWS)
def test_upstreams_read_from_hours_are_those_of_a_scan(
    target: str | Path, since: float, until: float
) -> None:
    store = SqlDashboard(target)
    for profile in (None, "east", "global"):
        window = Window(since, until, profile, 60)
        for by in ("source", "signer"):
            got = store.upstreams(window, by, 1000)
            got.sort(key=lambda r: (-r["calls"], [str(v) for v in r["key"].values()]))
            assert got == scanned_upstreams(target, window, by), (by, profile)


def test_the_hourly_tables_are_read_for_whole_hours(sqlite_log: Path) -> None:
    """Whole hours come from the hourly tables: emptied, the answer loses them (and only them:
    a window of no whole hour is unchanged)."""
    copy = sqlite_log.with_name("emptied.sqlite")
    source = sqlite3.connect(sqlite_log)
    target = sqlite3.connect(copy)
    source.backup(target)
    source.close()
    with target:
        target.execute("DELETE FROM calls_by_source_hour")
    target.close()
    store, emptied = SqlDashboard(sqlite_log), SqlDashboard(copy)
    no_whole_hour = Window(H0 + 1800, H0 + 5400, None, 60)
    assert emptied.upstreams(no_whole_hour, "source", 100) == store.upstreams(
        no_whole_hour, "source", 100
    )
    hours = Window(H0, H0 + 3 * 3600, None, 60)
    assert store.upstreams(hours, "source", 100)
    assert emptied.upstreams(hours, "source", 100) == []


def old_search(target: str | Path, query: CallQuery) -> list[Any]:
    """The ids the search found before the TN table: the scan matching inside ``dest``."""
    sql, args = select_sql(query, dialect_of(target), by_tn=False)
    sql = sql.replace("SELECT *", "SELECT id")
    if isinstance(target, str):
        sql = sql.replace("%s", "?")
    return [row[0] for row in fetch(target, sql, args)]


def new_search(target: str | Path, query: CallQuery) -> list[Any]:
    return [row["id"] for row in SqlDashboard(target).search(query)]  # most recent first


QUERIES = [
    CallQuery(tn="12025550100"),
    CallQuery(tn="120255501"),  # a prefix of other numbers: not them
    CallQuery(tn="13035550001", limit=25),
    CallQuery(tn="+4420", limit=200),
    CallQuery(tn="12025550101", since=H0 + 3600, until=H0 + 7200),
    CallQuery(tn="13035550000", outcome="failed", profile="east", limit=10),
    CallQuery(tn="12025550100", outcome="rejected", interface="sip"),
    CallQuery(tn="19995550000"),  # nobody's
    CallQuery(tn="1202555010_"),  # a LIKE wildcard: the scan answers
    CallQuery(tn="1202555010%", limit=5),
    CallQuery(tn="12025550100,13035550000"),  # two numbers: the scan answers
]


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.tn}-{q.limit}-{q.outcome}")
def test_search_by_tn_finds_what_the_scan_found_in_the_same_order(
    target: str | Path, query: CallQuery
) -> None:
    assert new_search(target, query) == old_search(target, query)


def test_the_search_by_a_plain_tn_reads_the_table(sqlite_log: Path) -> None:
    connection = sqlite3.connect(sqlite_log)
    for tn, table in (("12025550100", True), ("1202555010_", False)):
        sql, args = select_sql(CallQuery(tn=tn, limit=200), SQLITE, by_tn=True)
        plan = " ".join(str(r[-1]) for r in connection.execute(f"EXPLAIN QUERY PLAN {sql}", args))
        assert ("SEARCH t USING PRIMARY KEY (tn=?)" in plan) is table, plan
        if table:
            assert "TEMP B-TREE" not in plan, plan  # the table's own order: no sort
    connection.close()
    found = new_search(sqlite_log, CallQuery(tn="12025550100"))
    assert len(found) > 50


def tn_rows_expected(target: str | Path) -> set[tuple[str, float, int]]:
    """(TN, time, id) of every number of every row, split in Python."""
    out = set()
    for row_id, t, orig, dest in fetch(target, "SELECT id, time, orig, dest FROM calls"):
        for tn in [orig, *(dest.split(",") if dest is not None else [])]:
            if tn:
                out.add((tn, t, row_id))
    return out


def assert_in_step(target: str | Path) -> None:
    """Each summary table holds what counting the call log now gives, the TN table every
    number of every row, nothing else."""
    dialect = dialect_of(target)
    for rollup in ROLLUPS:
        names = rollup.key_names()
        keys = ", ".join(rollup.expressions(dialect))
        positions = ", ".join(str(i + 1) for i in range(len(names)))
        rejected = "NOT allowed" if dialect.name == "postgresql" else "allowed = 0"
        counted = fetch(
            target,
            f"SELECT {keys}, count(*), sum(CASE WHEN {rejected} THEN 1 ELSE 0 END) FROM calls"
            f" WHERE {rollup.where()} GROUP BY {positions}",
        )
        kept = fetch(
            target, f"SELECT {', '.join(names)}, n, rejected FROM {rollup.table} WHERE n <> 0"
        )
        assert sorted(map(str, kept)) == sorted(map(str, counted)), rollup.table
    assert set(fetch(target, f"SELECT tn, tn_time, tn_row FROM {TN_TABLE}")) == (
        tn_rows_expected(target)
    )


def test_the_writers_keep_every_table_in_step(target: str | Path) -> None:
    assert_in_step(target)
    assert fetch(target, f"SELECT count(*) FROM {TN_TABLE}")[0][0] > len(records())


def version_4_statements(dialect: Dialect) -> list[str]:
    """What makes a log what version 4 left: no hourly tables, no TN table, the delete
    trigger of the three summary tables, and the version."""
    out = [f"DROP TABLE {rollup.table}" for rollup in ROLLUPS if rollup.since == 5]
    out.append(f"DROP TABLE {TN_TABLE}")
    out.extend(rollup_ddl(dialect, 4))
    if dialect is SQLITE:
        out.append("PRAGMA user_version = 4")
    else:
        out.append("UPDATE calls_schema SET version = 4")
    return out


def as_version_4(connection: sqlite3.Connection) -> None:
    """Make ``connection``'s SQLite log what version 4 left (:func:`version_4_statements`)."""
    with connection:
        for statement in version_4_statements(SQLITE):
            connection.execute(statement)


def test_a_version_4_log_is_migrated_and_its_rows_counted(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    batch = records(600, seed=7)
    write_sqlite(path, batch[:400])
    connection = sqlite3.connect(path)
    as_version_4(connection)
    assert {t for (t,) in connection.execute("SELECT name FROM sqlite_master")}.isdisjoint(
        {TN_TABLE, "calls_by_source_hour"}
    )
    # Rows version 4's writer committed but had not counted yet (it died in between):
    from shaken.adapters.store.calllog import _insert_sql, _row

    rows = [_row(r) for r in batch[400:450]]
    with connection:
        connection.execute(_insert_sql(len(rows)), [v for row in rows for v in row])
    assert migrate(connection) == (4, LATEST)
    assert schema_version(connection) == LATEST
    connection.close()
    write_sqlite(path, batch[450:])  # the next writer counts what was left
    assert_in_step(path)
    for query in QUERIES:
        assert new_search(path, query) == old_search(path, query)
    window = Window(H0 + 123.4, H0 + 4 * 3600 + 17.9, None, 60)
    got = SqlDashboard(path).upstreams(window, "signer", 1000)
    got.sort(key=lambda r: (-r["calls"], [str(v) for v in r["key"].values()]))
    assert got == scanned_upstreams(path, window, "signer")


def test_a_migration_that_fails_leaves_version_4_whole(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    write_sqlite(path, records(200, seed=3))
    connection = sqlite3.connect(path)
    as_version_4(connection)
    before = connection.execute("SELECT sum(n) FROM calls_by_source").fetchone()
    with connection:  # in the way: the TN table's index cannot be made on a view
        connection.execute(f"CREATE VIEW {TN_TABLE} AS SELECT 1 AS tn_row")
    with pytest.raises(sqlite3.OperationalError):
        migrate(connection)
    assert schema_version(connection) == 4
    names = {t for (t,) in connection.execute("SELECT name FROM sqlite_master")}
    assert "calls_by_source_hour" not in names  # made in the transaction, undone with it
    assert connection.execute("SELECT sum(n) FROM calls_by_source").fetchone() == before
    with connection:
        connection.execute(f"DROP VIEW {TN_TABLE}")
    assert migrate(connection) == (4, LATEST)
    connection.close()
    assert_in_step(path)


def test_a_failed_commit_leaves_neither_the_rows_nor_their_numbers(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    write_sqlite(path, records(50, seed=11))
    connection = sqlite3.connect(path)
    with connection:  # the TN table refuses one number: the writer's transaction fails
        connection.execute(
            f"CREATE TRIGGER poison BEFORE INSERT ON {TN_TABLE} WHEN NEW.tn = '19990000000'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    connection.close()
    log = SqliteCallLog(path, flush_interval=0.02)
    log.record(CallRecord(time=H0 + 5, direction="verify", interface="sip", orig="19990000000"))
    log.flush()
    deadline = time.monotonic() + 10
    while log.dropped == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    log.record(CallRecord(time=H0 + 6, direction="verify", interface="sip", orig="19990000001"))
    log.close()
    assert log.dropped == 1
    assert fetch(path, "SELECT count(*) FROM calls WHERE orig = '19990000000'") == [(0,)]
    assert [r["orig"] for r in read_calls(path, CallQuery(tn="19990000001"))] == ["19990000001"]
    assert_in_step(path)


def test_retention_takes_the_counts_and_numbers_of_what_it_deletes(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    path = tmp_path / "calls.sqlite"
    log = SqliteCallLog(path, flush_interval=0.02, retention_days=0.2, clock=clock)
    batch = records(400, seed=13)  # H0 is six hours back; 0.2 days is 4.8 hours
    for r in batch:
        log.record(r)
    log.flush()
    deadline = time.monotonic() + 30
    while log.pruned == 0 and time.monotonic() < deadline:
        log._next_prune = 0.0  # the test does not wait a minute between prunes
        log.record(CallRecord(time=NOW.timestamp(), direction="sign", interface="sip"))
        time.sleep(0.05)
    log.close()
    assert log.pruned > 0
    assert fetch(path, "SELECT min(time) FROM calls")[0][0] >= NOW.timestamp() - 0.2 * 86400
    assert_in_step(path)


def test_postgresql_version_4_is_migrated_and_deletes_keep_the_tables_in_step(
    tmp_path: Path,
) -> None:
    from shaken.adapters.store.pgcalllog import PostgresCallLog, connect, migrate_postgres

    batch = records(500, seed=17)
    with postgres_schema() as url:
        log = PostgresCallLog(url, spool=tmp_path / "spool.sqlite", flush_interval=0.02)
        for r in batch[:300]:
            log.record(r)
        log.close()
        with connect(url) as pg, pg.transaction(), pg.cursor() as cursor:  # back to version 4
            for statement in version_4_statements(POSTGRES):
                cursor.execute(statement)
        with connect(url) as pg:
            assert migrate_postgres(pg) == (4, LATEST)
        log = PostgresCallLog(url, spool=tmp_path / "spool.sqlite", flush_interval=0.02)
        for r in batch[300:]:
            log.record(r)
        log.close()
        assert_in_step(url)
        with connect(url) as pg:
            pg.execute("DELETE FROM calls WHERE time < %s", (H0 + 2 * 3600 + 0.5,))
            pg.commit()
        assert_in_step(url)
        for query in QUERIES:
            assert new_search(url, query) == old_search(url, query)


def test_a_postgresql_log_of_an_older_schema_is_refused_with_its_version(tmp_path: Path) -> None:
    from shaken.adapters.store.pgcalllog import PostgresCallLog, connect

    with postgres_schema() as url:
        log = PostgresCallLog(url, spool=tmp_path / "spool.sqlite", flush_interval=0.02)
        for r in records(50):
            log.record(r)
        log.close()
        store = SqlDashboard(url)
        window = Window(H0, H0 + 7200, None, 60)
        answer = store.upstreams(window, "source", 100)
        assert answer

        def set_version(version: int) -> None:
            with connect(url) as pg:
                pg.execute("UPDATE calls_schema SET version = %s", (version,))

        set_version(4)
        with pytest.raises(OutdatedCallLog, match=r"schema version 4.*shaken calls migrate"):
            store.upstreams(window, "source", 100)
        set_version(LATEST)
        assert store.upstreams(window, "source", 100) == answer
