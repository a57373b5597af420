"""``shaken report``: the dashboard's numbers from the CLI, as text, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from shaken.adapters.cli import main
from shaken.core.reasons import REASONS, Reason
from shaken.services.calllog import CallRecord
from tests.adapters.test_calllog_schema import NOW
from tests.adapters.test_dashboard_day import as_version_4
from tests.adapters.test_dashboard_sql import T0, write_sqlite
from tests.support.fakes import ManualClock

# The sample's calls are in the hour after T0; the report is asked an hour later.
CLOCK_AT = NOW + timedelta(hours=1)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "calls.sqlite"
    write_sqlite(path)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv), clock=ManualClock(CLOCK_AT))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_holds_every_section_with_the_call_logs_numbers(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "report", "--db", str(db), "--since", "2h", "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["window"]["since"] == pytest.approx(CLOCK_AT.timestamp() - 7200)
    assert report["attestation"]["calls"] == 10
    assert report["attestation"]["signed_share"] == pytest.approx(0.8)
    assert [r["reason"] for r in report["failures"]] == [
        "missing_identity",
        "bad_signature",
        "cert_fetch_failed",
    ]
    assert report["upstreams_by_source"][0]["source"] == "192.0.2.1"
    assert report["signing"]["signed"] == 3


def test_the_range_and_the_profile_change_the_numbers(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --since 1d would also take the call ten seconds before T0.
    _, out, _ = run(capsys, "report", "--db", str(db), "--since", "1d", "--format", "json")
    assert json.loads(out)["attestation"]["calls"] == 11
    _, out, _ = run(
        capsys, "report", "--db", str(db), "--since", "2h", "--profile", "east", "--format", "json"
    )
    assert json.loads(out)["attestation"]["calls"] == 1
    until = (NOW - timedelta(minutes=59)).isoformat()  # T0 + 60 s: the first minute only
    _, out, _ = run(
        capsys,
        "report",
        "--db",
        str(db),
        "--since",
        "2h",
        "--until",
        until,
        "--format",
        "json",
    )
    assert json.loads(out)["attestation"]["calls"] == 6


def test_csv_is_one_measure_per_row(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "report", "--db", str(db), "--since", "2h", "--format", "csv")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["section", "item", "measure", "value"]
    assert ["inbound", "", "calls", "10"] in rows
    assert ["attestation", "A", "verified", "4"] in rows
    explanation = REASONS[Reason.BAD_SIGNATURE].description
    assert ["failures", "bad_signature", "explanation", explanation] in rows
    assert ["upstreams_by_source", "198.51.100.7", "signed_share", "0.0"] in rows


def test_text_is_for_a_person_and_shows_network_values_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shaken.adapters.store.calllog import SqliteCallLog

    path = tmp_path / "calls.sqlite"
    log = SqliteCallLog(path, flush_interval=0.02)
    log.record(
        CallRecord(
            time=T0 + 5,
            direction="verify",
            interface="sip",
            reason="missing_identity",
            verstat="No-TN-Validation",
            source_ip="\x1b[31mred\udcff",
            allowed=False,
        )
    )
    log.close()
    code, out, _ = run(capsys, "report", "--db", str(path), "--since", "2h")
    assert code == 0
    assert "Inbound: 1 calls, 0 signed (0.0%), 1 NOT ALLOWED" in out
    assert "428  missing_identity: No Identity header in the request." in out
    assert "\x1b" not in out
    assert "\\x1b[31mred\\xff" in out


def test_no_call_log_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "report", "--db", str(tmp_path / "none.sqlite"))
    assert code == 2
    assert "no call log" in err
    code, _, err = run(capsys, "report", "--db", str(tmp_path / "none.sqlite"), "--since", "x")
    assert code == 2
    assert "--since 'x'" in err


def test_a_log_of_an_older_schema_names_the_migration_which_then_makes_it_readable(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, before, _ = run(capsys, "report", "--db", str(db), "--since", "2h", "--format", "json")
    connection = sqlite3.connect(db)
    as_version_4(connection)
    connection.close()
    code, out, err = run(capsys, "report", "--db", str(db), "--since", "2h")
    assert code != 0 and out == ""
    assert str(db) in err and "schema version 4" in err and "shaken calls migrate" in err
    assert "Traceback" not in err
    code, out, _ = run(capsys, "calls", "migrate", "--db", str(db))
    assert code == 0 and "schema version 4 -> " in out
    code, after, _ = run(capsys, "report", "--db", str(db), "--since", "2h", "--format", "json")
    assert code == 0
    assert json.loads(after) == json.loads(before)  # the migration counted every old row
