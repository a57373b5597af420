"""The call log's versioned schema, its queries, retention, backups and exports (SQLite).

Real SQLite files throughout: logs written by earlier releases are made with the exact SQL
those releases used, then opened by this one.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shaken.adapters.cli import main
from shaken.adapters.store.calllog import (
    SqliteCallLog,
    backup,
    migrate_file,
    read_calls,
    records_of,
    schema_version,
)
from shaken.adapters.store.callschema import COLUMNS, LATEST, RECORD_FIELDS, VERSIONS
from shaken.services.calllog import CallQuery, CallRecord
from tests.support.fakes import ManualClock

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)

# What the first release created, verbatim.
V1 = (
    "CREATE TABLE calls (id INTEGER PRIMARY KEY, time REAL NOT NULL, direction TEXT NOT NULL,"
    " interface TEXT NOT NULL, outcome TEXT NOT NULL, call_id TEXT, profile TEXT, orig TEXT,"
    " dest TEXT, attest TEXT, verstat TEXT, reason TEXT, sip_code INTEGER, action TEXT,"
    " allowed INTEGER NOT NULL, x5u TEXT, latency_ms REAL);"
    "CREATE INDEX calls_time ON calls (time);"
    "INSERT INTO calls (time, direction, interface, outcome, call_id, allowed)"
    " VALUES (1.0, 'verify', 'sip', 'verified', 'old-call', 1);"
)


def record(t: float, **values: object) -> CallRecord:
    base: dict[str, object] = {"time": t, "direction": "verify", "interface": "sip"}
    base.update(values)
    return CallRecord(**base)  # type: ignore[arg-type]


def test_every_record_field_has_exactly_one_column() -> None:
    names = [c.name for c in COLUMNS]
    assert len(names) == len(set(names))
    assert set(names) == {*RECORD_FIELDS, "outcome"}
    assert {f.name for f in dataclasses.fields(CallRecord)} == set(RECORD_FIELDS)
    assert [v.number for v in VERSIONS] == list(range(1, LATEST + 1))


@pytest.mark.parametrize("extra", ["", "ALTER TABLE calls ADD COLUMN brand TEXT;"])
def test_an_older_log_is_brought_forward_and_keeps_its_rows(tmp_path: Path, extra: str) -> None:
    path = tmp_path / "calls.sqlite"
    old = sqlite3.connect(path)
    old.executescript(V1 + extra)
    old.close()
    log = SqliteCallLog(path, flush_interval=0.05)
    log.record(record(2.0, call_id="new-call", origid="0b5c-...", source_ip="192.0.2.7"))
    log.close()
    connection = sqlite3.connect(path)
    assert schema_version(connection) == LATEST
    indexes = {row[1] for row in connection.execute("PRAGMA index_list(calls)")}
    connection.close()
    assert {"calls_time", "calls_record_id", "calls_source_time", "calls_spc_time"} <= indexes
    rows = read_calls(path)
    assert [r["call_id"] for r in rows] == ["old-call", "new-call"]
    assert rows[0]["origid"] is None and rows[1]["source_ip"] == "192.0.2.7"


def test_migrate_command_reports_the_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "calls.sqlite"
    old = sqlite3.connect(path)
    old.executescript(V1)
    old.close()
    assert main(["calls", "migrate", "--db", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: schema version 1 -> {LATEST}"
    assert main(["calls", "migrate", "--db", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: schema version {LATEST}, nothing to do"
    assert migrate_file(path) == (LATEST, LATEST)


def test_a_log_from_a_newer_release_is_refused_not_misread(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    SqliteCallLog(path).close()
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {LATEST + 1}")
    connection.commit()
    connection.close()
    with pytest.raises(sqlite3.DatabaseError, match="upgrade"):
        SqliteCallLog(path)


def test_a_record_stored_twice_is_one_row(tmp_path: Path) -> None:
    """The idempotency key: a record written again (a spool replayed) is not doubled."""
    log = SqliteCallLog(tmp_path / "calls.sqlite", flush_interval=0.05)
    once = record(5.0, call_id="twice")
    log.record(once)
    log.flush()
    deadline = time.monotonic() + 10
    while log.written < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    log.record(once)
    log.record(record(6.0, call_id="other"))
    log.close()
    assert [r["call_id"] for r in read_calls(log.path)] == ["twice", "other"]
    assert records_of(read_calls(log.path))[0] == once
    assert once.record_id != record(5.0).record_id


def _filled(tmp_path: Path) -> Path:
    log = SqliteCallLog(tmp_path / "calls.sqlite", flush_interval=0.05)
    log.record(
        record(
            10.0,
            call_id="a",
            orig="12025550100",
            dest="13035550100",
            spc="1234",
            source_ip="192.0.2.1",
            origid="o-a",
            verstat="TN-Validation-Passed",
        )
    )
    log.record(
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
        )
    )
    log.record(
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
        )
    )
    log.record(record(40.0, call_id="d", action="not_processed", source_ip="198.51.100.9"))
    log.close()
    return log.path


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (CallQuery(tn="12025550100"), ["a", "b"]),  # as caller, and among several called
        (CallQuery(tn="13035550100"), ["a", "c"]),
        (CallQuery(call_id="b"), ["b"]),
        (CallQuery(origid="o-a"), ["a"]),
        (CallQuery(spc="1234"), ["a", "c"]),
        (CallQuery(reason="stale_iat"), ["b"]),
        (CallQuery(source="192.0.2.1"), ["a", "c"]),
        (CallQuery(profile="carrier"), ["b"]),
        (CallQuery(interface="rest"), ["c"]),
        (CallQuery(outcome="rejected"), ["b"]),
        (CallQuery(outcome="not_processed"), ["d"]),
        (CallQuery(outcome="signed"), ["c"]),
        (CallQuery(since=20.0, until=40.0), ["b", "c"]),
        (CallQuery(spc="1234", source="192.0.2.1", since=15.0), ["c"]),
        (CallQuery(limit=2), ["c", "d"]),
    ],
    ids=repr,
)
def test_queries(tmp_path: Path, query: CallQuery, expected: list[str]) -> None:
    assert [r["call_id"] for r in read_calls(_filled(tmp_path), query)] == expected


def test_calls_command_filters_and_prints_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _filled(tmp_path)
    assert main(["calls", "--db", str(path), "--spc", "1234", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["call_id"] for r in rows] == ["a", "c"]
    assert rows[0]["source_ip"] == "192.0.2.1" and rows[0]["outcome"] == "verified"
    assert main(["calls", "--db", str(path), "--tn", "+1 (202) 555-0100"]) == 0
    out = capsys.readouterr().out
    assert "call-id=a" in out and "call-id=b" in out and "NOT ALLOWED (403)" in out
    assert main(["calls", "--db", str(path), "--reason", "bad_signature"]) == 0
    assert "matching the filters" in capsys.readouterr().out


def test_export_writes_one_utc_day(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    day = datetime(2026, 11, 21, tzinfo=UTC)
    log = SqliteCallLog(tmp_path / "calls.sqlite", flush_interval=0.05)
    for offset, name in ((-1, "before"), (0, "first"), (86399, "last"), (86400, "after")):
        log.record(record(day.timestamp() + offset, call_id=name))
    log.close()
    out = tmp_path / "2026-11-21.csv"
    assert main(["calls", "--db", str(log.path), "--export", "2026-11-21", "--out", str(out)]) == 0
    assert "wrote 2 call(s)" in capsys.readouterr().err
    with out.open(newline="") as handle:
        assert [r["call_id"] for r in csv.DictReader(handle)] == ["first", "last"]
    # The export never overwrites a file.
    assert main(["calls", "--db", str(log.path), "--export", "2026-11-21", "--out", str(out)]) == 2


def test_retention_prunes_old_rows_while_records_keep_coming(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    log = SqliteCallLog(
        tmp_path / "calls.sqlite", flush_interval=0.02, retention_days=30, clock=clock
    )
    log.PRUNE_CHUNK = 100  # type: ignore[misc]  (several chunks, to show it yields)
    old = (NOW - timedelta(days=31)).timestamp()
    for i in range(450):
        log.record(record(old + i, call_id=f"old-{i}"))
    log.record(record(NOW.timestamp() - 86400, call_id="yesterday"))
    deadline = time.monotonic() + 30
    while log.pruned < 450 and time.monotonic() < deadline:
        log.record(record(NOW.timestamp(), call_id="now"))
        log._next_prune = 0.0  # the test does not wait a minute between prunes
        time.sleep(0.02)
    log.close()
    assert log.pruned == 450
    remaining = {r["call_id"] for r in read_calls(log.path)}
    assert "yesterday" in remaining and "now" in remaining
    assert not [name for name in remaining if name.startswith("old-")]


def test_backup_is_consistent_while_the_writer_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = SqliteCallLog(tmp_path / "calls.sqlite", flush_interval=0.01)
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            log.record(record(float(n), call_id=f"c{n}"))
            n += 1
            if n % 200 == 0:
                time.sleep(0.001)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        deadline = time.monotonic() + 60
        while log.written < 1000 and time.monotonic() < deadline:  # commits are under way
            time.sleep(0.01)
        copy = tmp_path / "backup.sqlite"
        assert main(["calls", "backup", str(copy), "--db", str(log.path)]) == 0
        assert "backed up" in capsys.readouterr().out
    finally:
        stop.set()
        writer.join()
        log.close()
    check = sqlite3.connect(copy)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    count = check.execute("SELECT count(*) FROM calls").fetchone()[0]
    check.close()
    assert 0 < count <= log.written
    assert not (tmp_path / "backup.sqlite-wal").exists()  # a self-contained file
    with pytest.raises(FileExistsError):
        backup(log.path, copy)
