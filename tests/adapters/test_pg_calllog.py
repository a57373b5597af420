"""The PostgreSQL call log against a real PostgreSQL: schema, queries, idempotency, spool.

Each test works in a schema of its own (``tests.support.servers``); the tests that stop
PostgreSQL run a private server. Skipped with the reason when PostgreSQL is not reachable.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shaken.adapters.cli import main
from shaken.adapters.store.calllog import SqliteCallLog, _row, read_calls
from shaken.adapters.store.callschema import COLUMNS, LATEST, POSTGRES, VERSIONS
from shaken.adapters.store.pgcalllog import (
    PostgresCallLog,
    _Spool,
    connect,
    migrate_postgres,
    read_postgres_calls,
    redacted,
)
from shaken.services.calllog import CallQuery, CallRecord
from tests.adapters.test_calllog_schema import NOW, record
from tests.support.fakes import ManualClock
from tests.support.servers import PrivatePostgres, postgres_schema

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")


@pytest.fixture
def pg() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def open_log(url: str, tmp_path: Path, **options: Any) -> PostgresCallLog:
    options.setdefault("flush_interval", 0.02)
    return PostgresCallLog(url, spool=tmp_path / "spool.sqlite", **options)


def columns(url: str) -> dict[str, str]:
    with connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'calls' AND table_schema = current_schema()"
        )
        return dict(cursor.fetchall())


def test_the_table_is_the_one_schema_rendered_for_postgresql(pg: str, tmp_path: Path) -> None:
    with connect(pg) as connection:
        assert migrate_postgres(connection) == (0, LATEST)
        assert migrate_postgres(connection) == (LATEST, LATEST)  # again: nothing to do
    found = columns(pg)
    assert set(found) == {"id", *(c.name for c in COLUMNS)}
    assert found["latency_ms"] == "double precision" and found["allowed"] == "boolean"
    assert found["sip_code"] == "bigint"


def test_an_older_log_is_brought_forward_and_keeps_its_rows(pg: str) -> None:
    v1 = ", ".join(POSTGRES.column(c) for c in VERSIONS[0].columns)
    with connect(pg) as connection:
        with connection.transaction():
            connection.execute(f"CREATE TABLE calls ({POSTGRES.row_id}, {v1})")
            connection.execute(
                "INSERT INTO calls (time, direction, interface, outcome, call_id, allowed)"
                " VALUES (1.0, 'verify', 'sip', 'verified', 'old-call', true)"
            )
        assert migrate_postgres(connection) == (1, LATEST)
    assert "record_id" in columns(pg)
    assert [r["call_id"] for r in read_postgres_calls(pg, CallQuery())] == ["old-call"]


def test_a_log_from_a_newer_release_is_refused(pg: str, capsys: pytest.CaptureFixture[str]) -> None:
    with connect(pg) as connection:
        migrate_postgres(connection)
        with connection.transaction():
            connection.execute("UPDATE calls_schema SET version = %s", (LATEST + 1,))
        with pytest.raises(RuntimeError, match="upgrade"):
            migrate_postgres(connection)
    assert main(["calls", "migrate", "--db", pg]) == 2
    assert "upgrade" in capsys.readouterr().err


def test_migrate_command_and_calls_command_on_postgresql(
    pg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["calls", "migrate", "--db", pg]) == 0
    assert f"schema version 0 -> {LATEST}" in capsys.readouterr().out
    log = open_log(pg, tmp_path)
    log.record(record(NOW.timestamp(), call_id="by-cli", orig="12025550100"))
    log.close()
    assert main(["calls", "--db", pg, "--tn", "12025550100", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"call_id": "by-cli"' in out


def _records() -> list[CallRecord]:
    return [
        record(
            10.0,
            call_id="a",
            orig="12025550100",
            dest="13035550100",
            spc="1234",
            source_ip="192.0.2.1",
            origid="o-a",
            verstat="TN-Validation-Passed",
        ),
        record(
            20.0,
            call_id="b",
            orig="14155550100",
            dest="12025550100,13035550101",
            spc="5678",
            source_ip="192.0.2.2",
            reason="stale_iat",
            allowed=False,
            sip_code=403,
            profile="carrier",
        ),
        record(
            30.0,
            call_id="c",
            direction="sign",
            interface="rest",
            action="signed",
            orig="12025550199",
            dest="13035550100",
            spc="1234",
            source_ip="192.0.2.1",
        ),
        record(40.0, call_id="d", action="not_processed", source_ip="198.51.100.9"),
        # What arrives from the wire: bytes that were not UTF-8, NUL, the marker itself.
        record(50.0, call_id="e\udcff\x00x", presented_from="\ufffeliteral", orig="1\udc80"),
    ]


QUERIES = [
    CallQuery(tn="12025550100"),
    CallQuery(tn="13035550100"),
    CallQuery(call_id="b"),
    CallQuery(origid="o-a"),
    CallQuery(spc="1234"),
    CallQuery(reason="stale_iat"),
    CallQuery(source="192.0.2.1"),
    CallQuery(profile="carrier"),
    CallQuery(interface="rest"),
    CallQuery(outcome="rejected"),
    CallQuery(outcome="not_processed"),
    CallQuery(outcome="signed"),
    CallQuery(since=20.0, until=40.0),
    CallQuery(spc="1234", source="192.0.2.1", since=15.0),
    CallQuery(limit=2),
    CallQuery(),
]


def test_both_backends_store_the_same_records_and_answer_every_query_alike(
    pg: str, tmp_path: Path
) -> None:
    records = _records()
    sqlite_log = SqliteCallLog(tmp_path / "calls.sqlite", flush_interval=0.02)
    pg_log = open_log(pg, tmp_path)
    for item in records:
        sqlite_log.record(item)
        pg_log.record(item)
    sqlite_log.close()
    pg_log.close()
    assert pg_log.written == len(records) and pg_log.dropped == 0
    for query in QUERIES:
        here = [
            {k: v for k, v in r.items() if k != "id"} for r in read_calls(sqlite_log.path, query)
        ]
        there = [{k: v for k, v in r.items() if k != "id"} for r in read_postgres_calls(pg, query)]
        assert here == there, query
    stored = read_postgres_calls(pg, CallQuery(since=50.0))[0]
    assert stored["call_id"] == "e\udcff\x00x" and stored["orig"] == "1\udc80"
    assert stored["presented_from"] == "\ufffeliteral"


def test_a_backlog_is_written_in_transactions_of_at_most_max_batch(
    pg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(pg, tmp_path, flush_interval=3600.0, batch_size=10**9, max_pending=10**6)
    sizes: list[int] = []
    insert = log._insert

    def counted(rows: list[list[Any]]) -> None:
        sizes.append(len(rows))
        insert(rows)

    monkeypatch.setattr(log, "_insert", counted)
    total = 2 * PostgresCallLog.MAX_BATCH + 7
    for i in range(total):
        log.record(record(NOW.timestamp() + i / 1000, call_id=f"backlog-{i}"))
    log.close()  # the writer drains the whole queue
    assert sizes == [PostgresCallLog.MAX_BATCH, PostgresCallLog.MAX_BATCH, 7]
    assert log.written == total and log.dropped == 0
    with connect(pg) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM calls WHERE call_id LIKE 'backlog-%'")
        assert cursor.fetchone() == (total,)


def test_a_record_written_twice_is_one_row(pg: str, tmp_path: Path) -> None:
    once = record(5.0, call_id="twice")
    log = open_log(pg, tmp_path)
    log.record(once)
    log.flush()
    wait_for(lambda: log.written >= 1)
    log.record(once)
    log.record(record(6.0, call_id="other"))
    log.close()
    assert [r["call_id"] for r in read_postgres_calls(pg, CallQuery())] == ["twice", "other"]


def test_retention_prunes_old_rows(pg: str, tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    log = open_log(pg, tmp_path, retention_days=30, clock=clock)
    old = (NOW - timedelta(days=31)).timestamp()
    for i in range(120):
        log.record(record(old + i, call_id=f"old-{i}"))
    log.record(record(NOW.timestamp() - 86400, call_id="yesterday"))
    log.PRUNE_CHUNK = 50  # type: ignore[misc]
    deadline = time.monotonic() + 30
    while log.pruned < 120 and time.monotonic() < deadline:
        log._next_prune = 0.0  # the test does not wait a minute between prunes
        log.flush()
        time.sleep(0.05)
    log.close()
    assert log.pruned == 120
    assert [r["call_id"] for r in read_postgres_calls(pg, CallQuery())] == ["yesterday"]


def test_postgresql_unreachable_at_start_spools_and_says_degraded(tmp_path: Path) -> None:
    from tests.support.servers import free_port

    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/nothing"
    log = open_log(url, tmp_path, timeout=1.0)
    for i in range(10):
        log.record(record(float(i), call_id=f"s-{i}"))
    log.flush()
    wait_for(lambda: log.spool_pending == 10)
    ok, detail = log.healthy()
    assert ok and detail.startswith("degraded:") and "10 record(s) spooled" in detail
    assert "secret" not in detail and "***" in detail
    log.close()
    spooled = read_calls(tmp_path / "spool.sqlite")
    assert [r["call_id"] for r in spooled] == [f"s-{i}" for i in range(10)]
    assert redacted(url) == url.replace("secret", "***")


def test_spooled_records_are_replayed_in_order_once_postgresql_returns(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    log = open_log(private_pg.url, tmp_path, timeout=1.0, retry_interval=0.2)
    log.record(record(1.0, call_id="before"))
    log.flush()
    wait_for(lambda: log.written == 1)
    private_pg.stop()
    for i in range(200):
        log.record(record(10.0 + i, call_id=f"during-{i}"))
    log.flush()
    wait_for(lambda: log.spool_pending == 200)
    assert log.healthy()[1].startswith("degraded:")
    private_pg.start()
    log.record(record(1000.0, call_id="after"))
    wait_for(lambda: log.spool_pending == 0 and log.written == 202)
    assert log.healthy()[1].startswith("writing to PostgreSQL")
    log.close()
    assert log.replayed >= 200 and log.dropped == 0  # "after" may have waited too
    with connect(private_pg.url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT call_id FROM calls ORDER BY id")
        ids = [row[0] for row in cursor.fetchall()]
    assert ids == ["before", *(f"during-{i}" for i in range(200)), "after"]


def test_a_spool_replayed_again_after_a_crash_writes_nothing_twice(pg: str, tmp_path: Path) -> None:
    """The process died after PostgreSQL committed a chunk and before the spool forgot it."""
    records = [record(float(i), call_id=f"r-{i}") for i in range(50)]
    log = open_log(pg, tmp_path)
    for item in records[:30]:
        log.record(item)
    log.close()
    spool = _Spool(tmp_path / "spool.sqlite", 1000)
    spool.append([_row(item) for item in records])  # 30 already in PostgreSQL, 20 not
    spool.close()
    log = open_log(pg, tmp_path)
    wait_for(lambda: log.spool_pending == 0)
    log.close()
    rows = read_postgres_calls(pg, CallQuery())
    assert [r["call_id"] for r in rows] == [f"r-{i}" for i in range(50)]


def test_a_full_spool_drops_and_counts(tmp_path: Path) -> None:
    from tests.support.servers import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    log = open_log(url, tmp_path, spool_max_records=1000, timeout=1.0)
    for i in range(1200):
        log.record(record(float(i)))
    log.flush()
    wait_for(lambda: log.spooled + log.dropped == 1200)
    log.close()
    assert log.spooled == 1000 and log.dropped == 200
    connection = sqlite3.connect(tmp_path / "spool.sqlite")
    assert connection.execute("SELECT count(*) FROM calls").fetchone()[0] == 1000
    connection.close()


def test_config_check_refuses_a_call_log_url_that_is_not_postgresql(tmp_path: Path) -> None:
    from shaken.config import ConfigError, load_config

    config = tmp_path / "shaken.toml"
    config.write_text('[server]\ncall_log = "mysql://db.example/calls"\n')
    with pytest.raises(ConfigError, match="postgresql"):
        load_config(config)
    config.write_text('[server]\ncall_log = "postgresql://db.example/calls"\n')
    assert load_config(config).server["call_log"].startswith("postgresql://")


def test_an_idle_writer_notices_postgresql_going_away(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    """/readyz must not say "writing" for a worker that had nothing to write since the stop."""
    log = open_log(private_pg.url, tmp_path, timeout=1.0, retry_interval=0.2)
    try:
        log.record(record(1.0, call_id="one"))
        wait_for(lambda: log.written == 1)
        assert log.healthy()[1].startswith("writing")
        private_pg.stop()
        wait_for(lambda: log.healthy()[1].startswith("degraded:"))
        assert log.spool_pending == 0  # found out without a record to lose
    finally:
        log.close()


def test_each_record_names_the_instance_that_decided(pg: str, tmp_path: Path) -> None:
    """``[server] instance`` (default: the host name) in every record, on both backends."""
    import socket

    from shaken.adapters.store.calllogs import open_writer, read_call_log
    from shaken.config import ServerSettings

    for target, server in (
        (pg, {"instance": "east", "call_log_spool": str(tmp_path / "s.sqlite")}),
        (str(tmp_path / "calls.sqlite"), {}),
    ):
        log = open_writer(target, ServerSettings.of(server))
        log.record(record(1.0, call_id="who"))
        log.close()
        [row] = read_call_log(target, CallQuery())
        assert row["instance"] == (server.get("instance") or socket.gethostname())


def test_closing_drains_the_spool_when_postgresql_is_back(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    """A worker stopped right after PostgreSQL returned, before its next retry, still empties
    its spool into PostgreSQL instead of leaving the records on local disk."""
    log = open_log(private_pg.url, tmp_path, timeout=1.0, retry_interval=3600.0)
    private_pg.stop()
    log.record(record(1.0, call_id="spooled"))
    log.flush()
    wait_for(lambda: log.spool_pending == 1)
    private_pg.start()
    log.close()  # the next retry would be an hour away
    assert [r["call_id"] for r in read_postgres_calls(private_pg.url, CallQuery())] == ["spooled"]
