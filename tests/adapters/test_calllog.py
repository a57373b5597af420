"""The SQLite call log: what is stored, how it is queried, and what survives ``kill -9``."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shaken.adapters.cli import main
from shaken.adapters.commands.serve import parse_since
from shaken.adapters.store.calllog import SqliteCallLog, outcome_of, read_calls, records_of
from shaken.services.calllog import CallRecord

Capture = pytest.CaptureFixture[str]


def verify_record(
    t: float, reason: str | None, *, allowed: bool = True, **more: object
) -> CallRecord:
    return CallRecord(
        time=t,
        direction="verify",
        interface="sip",
        call_id=f"c-{t}",
        profile="lab",
        orig="12025550123",
        dest="13035550000",
        attest="A",
        verstat="TN-Validation-Passed" if reason is None else "TN-Validation-Failed",
        reason=reason,
        sip_code=302 if allowed else 438,
        action="continue" if allowed else "reject",
        allowed=allowed,
        x5u="https://cr.example.org/sp.pem",
        latency_ms=0.25,
        **more,  # type: ignore[arg-type]
    )


def test_outcomes() -> None:
    assert outcome_of(verify_record(1, None)) == "verified"
    assert outcome_of(verify_record(1, "missing_identity")) == "missing"
    assert outcome_of(verify_record(1, "bad_signature")) == "failed"
    signed = CallRecord(time=1, direction="sign", interface="rest", action="signed")
    assert outcome_of(signed) == "signed"
    assert (
        outcome_of(CallRecord(time=1, direction="sign", interface="sip", action="not_signed"))
        == "not_signed"
    )
    assert outcome_of(CallRecord(time=1, direction="verify", interface="sip")) == "not_checked"


def test_records_are_written_in_batches_and_read_back(tmp_path: Path) -> None:
    log = SqliteCallLog(tmp_path / "sub" / "calls.sqlite", flush_interval=0.05)
    records = [
        verify_record(100.0, None),
        verify_record(200.0, "bad_signature", allowed=False),
        verify_record(300.0, "missing_identity"),
    ]
    for record in records:
        log.record(record)
    log.close()
    assert log.written == 3 and log.dropped == 0
    rows = read_calls(log.path)
    assert records_of(rows) == records
    assert [r["outcome"] for r in rows] == ["verified", "failed", "missing"]
    assert [r["time"] for r in read_calls(log.path, since=150.0)] == [200.0, 300.0]
    assert [r["call_id"] for r in read_calls(log.path, outcome="rejected")] == ["c-200.0"]
    assert [r["time"] for r in read_calls(log.path, limit=2)] == [200.0, 300.0]
    with pytest.raises(ValueError, match="outcome"):
        read_calls(log.path, outcome="nope")
    with pytest.raises(FileNotFoundError):
        read_calls(tmp_path / "absent.sqlite")
    connection = sqlite3.connect(log.path)
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    connection.close()


def test_a_full_queue_drops_instead_of_blocking(tmp_path: Path) -> None:
    log = SqliteCallLog(
        tmp_path / "calls.sqlite", flush_interval=10.0, max_pending=5, batch_size=1000
    )
    for i in range(8):
        log.record(verify_record(float(i), None))
    assert log.dropped == 3
    assert log.healthy()
    log.close()
    assert log.written == 5
    log.record(verify_record(9.0, None))  # after close: dropped, never raised
    assert log.dropped == 4


def test_several_writers_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    logs = [SqliteCallLog(path, flush_interval=0.01) for _ in range(3)]

    def write(log: SqliteCallLog, base: int) -> None:
        for i in range(300):
            log.record(verify_record(float(base + i), None))

    threads = [threading.Thread(target=write, args=(log, n * 1000)) for n, log in enumerate(logs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in logs:
        log.close()
    assert len(read_calls(path)) == 900


def test_since_parsing() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert parse_since("-1h", now=now) == now.timestamp() - 3600
    assert parse_since("-90s", now=now) == now.timestamp() - 90
    assert parse_since("2d", now=now) == now.timestamp() - 2 * 86400
    assert parse_since("2026-11-22T11:00:00Z", now=now) == now.timestamp() - 3600
    assert parse_since("2026-11-22T11:00:00", now=now) == now.timestamp() - 3600  # UTC when unzoned
    assert parse_since("2026-11-22T12:00:00+01:00", now=now) == now.timestamp() - 3600


def test_calls_command(tmp_path: Path, capsys: Capture) -> None:
    path = tmp_path / "calls.sqlite"
    log = SqliteCallLog(path)
    now = time.time()
    log.record(verify_record(now - 7200, None))
    log.record(verify_record(now - 60, "bad_signature", allowed=False))
    log.record(
        CallRecord(
            time=now - 30,
            direction="sign",
            interface="sip",
            action="signed",
            attest="A",
            orig="12025550123",
            dest="13035550000",
            sip_code=302,
        )
    )
    log.close()
    assert main(["calls", "--db", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert "verified" in lines[0] and "allowed" in lines[0]
    assert (
        "failed" in lines[1]
        and "NOT ALLOWED (438)" in lines[1]
        and "reason=bad_signature" in lines[1]
    )
    assert "sip/sign" in lines[2] and "signed" in lines[2]
    assert main(["calls", "--db", str(path), "--since=-1h", "--outcome", "rejected", "--json"]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["allowed"] is False and row["reason"] == "bad_signature"
    assert main(["calls", "--db", str(path), "--since", "3h", "--limit", "1"]) == 0
    assert "sip/sign" in capsys.readouterr().out
    assert main(["calls", "--db", str(path), "--outcome", "missing"]) == 0
    assert "no calls" in capsys.readouterr().out
    config = tmp_path / "shaken.toml"
    config.write_text(f'[server]\ncall_log = "{path.name}"\n')
    assert main(["calls", "--config", str(config), "--outcome", "signed"]) == 0
    assert "sip/sign" in capsys.readouterr().out
    assert main(["calls", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert "no call log" in capsys.readouterr().err
    assert main(["calls", "--db", str(path), "--since", "yesterday"]) == 2
    assert main(["calls"]) == 2


# -------------------------------------------------------------------------------- kill -9

WRITER = textwrap.dedent(
    """
    import os, sys, time
    from shaken.adapters.store.calllog import SqliteCallLog
    from shaken.services.calllog import CallRecord

    log = SqliteCallLog(sys.argv[1], flush_interval=float(sys.argv[2]))
    os.write(1, b"window %f\\n" % log.window)
    i = 0
    while True:
        # A decision is answered, then recorded: 20 of them every millisecond or so.
        for _ in range(20):
            log.record(CallRecord(time=time.time(), direction="verify", interface="sip",
                                  call_id=str(i), verstat="TN-Validation-Passed"))
            i += 1
        os.write(1, b"%d %f\\n" % (i - 1, time.time()))
        time.sleep(0.001)
    """
)


def test_kill_9_loses_nothing_older_than_the_window(tmp_path: Path) -> None:
    """Every decision answered more than one window before a SIGKILL is in the database.

    The writer process records decisions under load (about 10,000 a second) and reports, after
    each group, the last call it answered and when. We kill it with SIGKILL at a moment of our
    choosing; every decision it reported more than ``window`` (200 ms at the default 100 ms
    flush interval) before that moment must be in the file, and the file must be intact.
    """
    path = tmp_path / "calls.sqlite"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "0.1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    window = float(process.stdout.readline().split()[1])
    assert window == pytest.approx(0.2)
    reports: list[tuple[int, float]] = []
    started = time.time()
    while time.time() - started < 1.5:
        line = process.stdout.readline()
        number, moment = line.split()
        reports.append((int(number), float(moment)))
    killed_at = time.time()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    for line in process.stdout:
        number, moment = line.split()
        reports.append((int(number), float(moment)))
    assert process.returncode == -signal.SIGKILL
    answered_before = [number for number, moment in reports if moment < killed_at - window]
    assert answered_before, "the writer reported nothing in time"
    must_have = max(answered_before)
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {int(row[0]) for row in connection.execute("SELECT call_id FROM calls")}
    finally:
        connection.close()
    missing = set(range(must_have + 1)) - stored
    assert not missing, f"{len(missing)} decisions answered before the window were lost"
    assert max(stored) <= reports[-1][0]


def test_brand_and_its_verdict_are_recorded_and_old_logs_gain_the_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "calls.sqlite"
    # A call log written before branded calling: the columns it lacks are added on open.
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE calls (id INTEGER PRIMARY KEY, time REAL NOT NULL, direction TEXT NOT NULL,"
        " interface TEXT NOT NULL, outcome TEXT NOT NULL, call_id TEXT, profile TEXT, orig TEXT,"
        " dest TEXT, attest TEXT, verstat TEXT, reason TEXT, sip_code INTEGER, action TEXT,"
        " allowed INTEGER NOT NULL, x5u TEXT, latency_ms REAL);"
        "INSERT INTO calls (time, direction, interface, outcome, allowed)"
        " VALUES (1.0, 'verify', 'sip', 'verified', 1);"
    )
    old.commit()
    old.close()
    log = SqliteCallLog(path, flush_interval=0.01)
    branded = CallRecord(
        time=2.0,
        direction="verify",
        interface="sip",
        verstat="TN-Validation-Passed",
        brand='Acme "Bank"\x1b[2J',
        rcd_status="integrity_failed",
        rcd_reason="rcd_integrity_failed",
    )
    log.record(branded)
    log.close()
    rows = read_calls(path)
    assert rows[0]["brand"] is None and records_of(rows)[1] == branded
    assert main(["calls", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert 'brand="Acme \\"Bank\\"\\x1b[2J"' in out and "\x1b" not in out
    assert "rcd=integrity_failed" in out and "rcd_reason=rcd_integrity_failed" in out


# --------------------------------------------------------------- issue 17 item 2: any record


def test_17_2_non_utf8_call_id_keeps_the_writer_alive(tmp_path: Path, capsys: Capture) -> None:
    """A Call-ID with byte 0xFF (a lone surrogate after ``surrogateescape``) and a TN with a
    lone surrogate from JSON are stored and read back unchanged; the writer keeps writing."""
    path = tmp_path / "calls.sqlite"
    log = SqliteCallLog(path, flush_interval=0.02)
    wire = b"abc\xff\x1b[2J@host".decode("utf-8", "surrogateescape")
    odd = CallRecord(time=1.0, direction="verify", interface="sip", call_id=wire, orig="\ud800")
    log.record(odd)
    log.flush()
    deadline = time.monotonic() + 10
    while log.written + log.dropped < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    later = verify_record(2.0, None)
    log.record(later)
    log.close()
    assert log.written == 2 and log.dropped == 0
    assert records_of(read_calls(path)) == [odd, later]
    connection = sqlite3.connect(path)
    try:
        kinds = connection.execute("SELECT typeof(call_id) FROM calls ORDER BY id").fetchall()
    finally:
        connection.close()
    assert kinds == [("blob",), ("text",)]  # told apart by type: nothing is ambiguous
    assert main(["calls", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert "call-id=abc\\xff\\x1b[2J@host" in out
    assert "\x1b" not in out
    assert main(["calls", "--db", str(path), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["call_id"] == wire and rows[0]["orig"] == "\ud800"


def test_17_2_one_odd_record_in_a_batch_is_stored_with_the_rest_in_order(tmp_path: Path) -> None:
    # The writer binds a chunk's text as it is and only a chunk that SQLite cannot bind again
    # with the odd strings as bytes: the same rows, in the same order, each told by its type.
    path = tmp_path / "calls.sqlite"
    log = SqliteCallLog(path, flush_interval=3600.0)
    odd = CallRecord(time=2.0, direction="verify", interface="sip", call_id="odd\udcff")
    batch = [verify_record(1.0, None), odd, verify_record(3.0, None)]
    for record in batch:
        log.record(record)
    log.close()
    assert log.written == 3 and log.dropped == 0
    assert records_of(read_calls(path)) == batch
    connection = sqlite3.connect(path)
    try:
        kinds = connection.execute("SELECT typeof(call_id) FROM calls ORDER BY id").fetchall()
    finally:
        connection.close()
    assert [k for (k,) in kinds] == ["text", "blob", "text"]


def test_17_2_a_writer_that_dies_is_restarted_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    log = SqliteCallLog(path, flush_interval=0.02)
    real_flush = log._flush
    failed = threading.Event()

    def failing_once() -> None:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("the writer thread dies here")
        real_flush()

    log._flush = failing_once  # type: ignore[method-assign]
    log.record(verify_record(1.0, None))
    assert failed.wait(10)
    log._thread.join(10)
    assert not log._thread.is_alive()
    assert log.healthy()[0] is True  # asking restarts it
    log.record(verify_record(2.0, None))
    log.close()
    assert log.restarts == 1
    assert [r["time"] for r in read_calls(path)] == [1.0, 2.0]


# ------------------------------------------------------- issue 17 item 12: a deleted file


def _wait(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("also", [(), ("-wal", "-shm")], ids=["file", "file-wal-shm"])
def test_17_12_a_deleted_call_log_is_noticed_and_opened_again(
    tmp_path: Path, also: tuple[str, ...]
) -> None:
    """Two writers (two workers) on one file; the file is deleted: both notice by its inode,
    say so in ``healthy()``, and write later rows to a new file at the same path."""
    path = tmp_path / "calls.sqlite"
    logs = [SqliteCallLog(path, flush_interval=0.02) for _ in range(2)]
    try:
        for n, log in enumerate(logs):
            log.record(verify_record(float(n), None))
        _wait(lambda: all(log.written == 1 for log in logs))
        assert all(log.healthy() == (True, "writable") for log in logs)
        path.unlink()
        for suffix in also:
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        for log in logs:
            ok, detail = log.healthy()
            assert ok is False and "deleted" in detail
        for n, log in enumerate(logs):
            log.record(verify_record(10.0 + n, None))
        _wait(lambda: all(log.written == 2 for log in logs))
        assert sorted(r["time"] for r in read_calls(path)) == [10.0, 11.0]
        assert all(log.reopened == 1 and log.healthy()[0] for log in logs)
    finally:
        for log in logs:
            log.close()


def test_17_12_a_log_moved_aside_keeps_its_rows_and_a_new_one_starts(tmp_path: Path) -> None:
    """A rotation (``mv calls.sqlite old.sqlite``): the moved file holds every row written
    before it, with no WAL beside it; later rows go to a new file at the configured path."""
    path, archive = tmp_path / "calls.sqlite", tmp_path / "old.sqlite"
    log = SqliteCallLog(path, flush_interval=0.02)
    try:
        for n in range(3):
            log.record(verify_record(float(n), None))
        _wait(lambda: log.written == 3)
        path.rename(archive)
        log.record(verify_record(10.0, None))
        _wait(lambda: log.written == 4)
    finally:
        log.close()
    assert [r["time"] for r in read_calls(archive)] == [0.0, 1.0, 2.0]
    assert [r["time"] for r in read_calls(path)] == [10.0]
    assert log.reopened == 1
