"""The dashboard's aggregates, in SQL, on a real SQLite call log and a real PostgreSQL one.

The same records are written through each backend's own writer, then every panel is asked
for and must give the same numbers on both (and the numbers the records imply).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from shaken.adapters.store.calllog import SqliteCallLog, migrate
from shaken.adapters.store.callschema import LATEST
from shaken.adapters.store.dashboard_sql import SqlDashboard
from shaken.adapters.store.rollups import ROLLUPS
from shaken.core.reasons import REASONS, Reason
from shaken.services.calllog import CallQuery, CallRecord
from shaken.services.dashboard import Dashboard, Window, window_of
from tests.adapters.test_calllog_schema import NOW
from tests.support.servers import postgres_schema

T0 = NOW.timestamp() - 3600.0  # a whole minute
X5U_A = "https://certs.alpha.example/sp.pem"
X5U_B = "https://certs.beta.example:8443/b/sp.pem"


def verified(
    t: float, attest: str, *, source: str, spc: str, x5u: str, **more: object
) -> CallRecord:
    values: dict[str, object] = {
        "time": t,
        "direction": "verify",
        "interface": "sip",
        "profile": "global",
        "attest": attest,
        "verstat": "TN-Validation-Passed",
        "source_ip": source,
        "spc": spc,
        "x5u": x5u,
        "call_id": f"call-{t}",
    }
    values.update(more)
    return CallRecord(**values)  # type: ignore[arg-type]


def failed(t: float, reason: Reason, *, source: str, allowed: bool, **more: object) -> CallRecord:
    values: dict[str, object] = {
        "time": t,
        "direction": "verify",
        "interface": "sip",
        "profile": "global",
        "verstat": REASONS[reason].verstat.value,
        "reason": reason.value,
        "source_ip": source,
        "allowed": allowed,
        "action": "accept" if allowed else "reject",
        "sip_code": None if allowed else REASONS[reason].sip_code,
        "call_id": f"call-{t}",
    }
    values.update(more)
    return CallRecord(**values)  # type: ignore[arg-type]


def sample() -> list[CallRecord]:
    """Minute 0: 3 A from alpha, 1 B from beta, 2 missing from a gateway (one rejected).
    Minute 1: 1 C from beta, 1 bad signature from beta (rejected), 1 fetch failure.
    Minute 2: another profile's verified A, and our own signing: 2 A, 1 B, 1 not signed."""
    alpha = {"source": "192.0.2.1", "spc": "1234", "x5u": X5U_A}
    beta = {"source": "192.0.2.2", "spc": "5678", "x5u": X5U_B}
    gateway = "198.51.100.7"
    records = [
        verified(T0 + 1, "A", **alpha),  # type: ignore[arg-type]
        verified(T0 + 2, "A", **alpha),  # type: ignore[arg-type]
        verified(T0 + 3, "A", **alpha),  # type: ignore[arg-type]
        verified(T0 + 4, "B", **beta),  # type: ignore[arg-type]
        failed(T0 + 5, Reason.MISSING_IDENTITY, source=gateway, allowed=True),
        failed(T0 + 6, Reason.MISSING_IDENTITY, source=gateway, allowed=False),
        verified(T0 + 61, "C", **beta),  # type: ignore[arg-type]
        failed(
            T0 + 62,
            Reason.BAD_SIGNATURE,
            source="192.0.2.2",
            allowed=False,
            spc="5678",
            x5u=X5U_B,
            attest="A",
        ),
        failed(
            T0 + 63,
            Reason.CERT_FETCH_FAILED,
            source="192.0.2.9",
            allowed=True,
            x5u="https://gone.example/x.pem",
            attest="A",
        ),
        verified(T0 + 121, "A", profile="east", **alpha),  # type: ignore[arg-type]
    ]
    for i, attest in enumerate(("A", "A", "B")):
        records.append(
            CallRecord(
                time=T0 + 122 + i,
                direction="sign",
                interface="sip",
                profile="global",
                attest=attest,
                action="signed",
                sip_code=302,
            )
        )
    records.append(
        CallRecord(
            time=T0 + 126,
            direction="sign",
            interface="rest",
            profile="global",
            action="not_signed",
            reason="no credential for 12025550199",
        )
    )
    # Outside the window, and a call no profile handled: neither counts.
    records.append(verified(T0 - 10, "A", **alpha))  # type: ignore[arg-type]
    records.append(
        CallRecord(time=T0 + 7, direction="verify", interface="sip", action="not_processed")
    )
    return records


def write_sqlite(path: Path) -> None:
    log = SqliteCallLog(path, flush_interval=0.02)
    for r in sample():
        log.record(r)
    log.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlDashboard]:
    if request.param == "sqlite":
        path = tmp_path / "calls.sqlite"
        write_sqlite(path)
        yield SqlDashboard(path)
        return
    from shaken.adapters.store.pgcalllog import PostgresCallLog

    with postgres_schema() as url:
        log = PostgresCallLog(url, spool=tmp_path / "spool.sqlite", flush_interval=0.02)
        for r in sample():
            log.record(r)
        log.close()
        assert log.written == len(sample())
        yield SqlDashboard(url)


WINDOW = Window(T0, T0 + 3600, None, 60)


def test_inbound_calls_per_minute_by_outcome(store: SqlDashboard) -> None:
    traffic = Dashboard(store).traffic(WINDOW)
    assert traffic["times"] == [T0, T0 + 60, T0 + 120]
    assert traffic["series"] == {
        "verified_A": [3, 0, 1],
        "verified_B": [1, 0, 0],
        "verified_C": [0, 1, 0],
        "failed": [0, 2, 0],
        "missing": [2, 0, 0],
    }


def test_the_profile_filter_keeps_one_profile(store: SqlDashboard) -> None:
    east = Dashboard(store).traffic(Window(T0, T0 + 3600, "east", 60))
    assert east["series"] == {"verified_A": [1]}
    assert east["times"] == [T0 + 120]


def test_wider_buckets_sum_the_minutes(store: SqlDashboard) -> None:
    traffic = Dashboard(store).traffic(Window(T0, T0 + 3600, None, 3600))
    assert traffic["times"] == [T0]
    assert traffic["series"]["verified_A"] == [4]


def test_attestation_mix_and_signed_share(store: SqlDashboard) -> None:
    mix = Dashboard(store).attestation(WINDOW)
    assert mix["calls"] == 10
    assert mix["signed"] == 8
    assert mix["signed_share"] == pytest.approx(0.8)
    assert mix["rejected"] == 2
    assert mix["attestation"] == {"A": 6, "B": 1, "C": 1}
    assert mix["verified"] == {"A": 4, "B": 1, "C": 1}
    assert mix["outcomes"] == {"verified": 6, "failed": 2, "missing": 2}


def test_failure_reasons_ranked_with_code_and_the_reason_tables_explanation(
    store: SqlDashboard,
) -> None:
    reasons = Dashboard(store).failures(WINDOW)["reasons"]
    assert [r["reason"] for r in reasons] == [
        "missing_identity",
        "bad_signature",
        "cert_fetch_failed",
    ]
    first = reasons[0]
    assert first["calls"] == 2
    assert first["rejected"] == 1
    info = REASONS[Reason.MISSING_IDENTITY]
    assert (first["sip_code"], first["explanation"]) == (info.sip_code, info.description)
    assert reasons[1]["sip_code"] == REASONS[Reason.BAD_SIGNATURE].sip_code


def test_upstreams_by_source_and_by_signer(store: SqlDashboard) -> None:
    dashboard = Dashboard(store)
    by_source = {r["source"]: r for r in dashboard.upstreams(WINDOW, "source")["upstreams"]}
    assert list(by_source) == ["192.0.2.1", "192.0.2.2", "198.51.100.7", "192.0.2.9"]
    beta = by_source["192.0.2.2"]
    assert beta["calls"] == 3
    assert beta["failure_rate"] == pytest.approx(1 / 3)
    assert beta["signed_share"] == 1.0
    assert beta["attestation"] == {"A": 1, "B": 1, "C": 1}
    assert beta["rejected"] == 1
    gateway = by_source["198.51.100.7"]
    assert gateway["signed_share"] == 0.0
    assert gateway["missing"] == 2

    by_signer = dashboard.upstreams(WINDOW, "signer")["upstreams"]
    keyed = {(r["spc"], r["x5u_host"]): r for r in by_signer}
    assert keyed[("1234", "certs.alpha.example")]["calls"] == 4
    assert keyed[("5678", "certs.beta.example:8443")]["failed"] == 1
    assert keyed[(None, None)]["missing"] == 2
    assert keyed[(None, "gone.example")]["failed"] == 1


def test_outbound_signing_by_attestation_and_not_signed_reasons(store: SqlDashboard) -> None:
    signing = Dashboard(store).signing(WINDOW)
    assert signing["times"] == [T0 + 120]
    assert signing["series"] == {"A": [2], "B": [1]}
    assert signing["signed"] == 3
    assert signing["not_signed"] == [
        {"action": "not_signed", "reason": "no credential for 12025550199", "calls": 1}
    ]


def test_certificate_fetch_failures_by_x5u_host(store: SqlDashboard) -> None:
    assert Dashboard(store).fetch_failures(WINDOW) == [{"host": "gone.example", "calls": 1}]


def test_search_finds_a_call_and_shows_a_rejected_one(store: SqlDashboard) -> None:
    dashboard = Dashboard(store)
    found = dashboard.search(CallQuery(call_id=f"call-{T0 + 62}"))["calls"]
    assert len(found) == 1
    assert found[0]["allowed"] is False
    assert found[0]["sip_code"] == REASONS[Reason.BAD_SIGNATURE].sip_code
    assert found[0]["reason"] == "bad_signature"
    recent = dashboard.search(CallQuery(source="192.0.2.1", limit=2))["calls"]
    assert [r["time"] for r in recent] == [T0 + 121, T0 + 3]  # most recent first


def expected(window: Window) -> dict[str, object]:
    """What the panels must say about ``window``, counted from the sample in Python."""
    inbound = [
        r
        for r in sample()
        if window.since <= r.time < window.until
        and r.direction == "verify"
        and r.action != "not_processed"
        and (window.profile is None or r.profile == window.profile)
    ]
    return {
        "calls": len(inbound),
        "rejected": sum(not r.allowed for r in inbound),
        "sources": dict(Counter(r.source_ip for r in inbound)),
        "reasons": dict(Counter(r.reason for r in inbound if r.reason)),
    }


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (T0 + 2.5, T0 + 62.5),  # edges only: no whole minute
        (T0 + 30, T0 + 3000),  # whole minutes and five-minute buckets, and edges
        (T0 - 30, T0 + 61.5),
        (T0 + 4, T0 + 4.5),
        (T0 - 3600, T0 + 7200),
    ],
)
def test_any_window_is_exact_whole_buckets_or_not(
    store: SqlDashboard, since: float, until: float
) -> None:
    dashboard = Dashboard(store)
    for profile in (None, "global"):
        window = Window(since, until, profile, 60)
        want = expected(window)
        mix = dashboard.attestation(window)
        assert (mix["calls"], mix["rejected"]) == (want["calls"], want["rejected"])
        traffic = dashboard.traffic(window)
        assert sum(sum(v) for v in traffic["series"].values()) == want["calls"]
        sources = dashboard.upstreams(window, "source")["upstreams"]
        assert {r["source"]: r["calls"] for r in sources} == want["sources"]
        signers = dashboard.upstreams(window, "signer")["upstreams"]
        assert sum(r["calls"] for r in signers) == want["calls"]
        reasons = dashboard.failures(window)["reasons"]
        assert {r["reason"]: r["calls"] for r in reasons} == want["reasons"]


def test_the_summary_tables_count_each_record_once_and_forget_deleted_ones(
    tmp_path: Path,
) -> None:
    path = tmp_path / "calls.sqlite"
    log = SqliteCallLog(path, flush_interval=0.02)
    twice = verified(T0 + 1, "A", source="192.0.2.1", spc="1234", x5u=X5U_A)
    for r in [*sample(), twice, twice]:
        log.record(r)
    log.close()
    store = SqlDashboard(path)
    assert Dashboard(store).attestation(WINDOW)["calls"] == 11  # the repeated one once
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("DELETE FROM calls WHERE time < ?", (T0 + 60,))
    connection.close()
    assert Dashboard(store).attestation(WINDOW)["calls"] == 4  # minutes 1 and 2 are left
    assert Dashboard(store).traffic(WINDOW)["times"] == [T0 + 60, T0 + 120]


def test_a_log_from_before_the_summary_tables_is_counted_when_migrated(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    write_sqlite(path)
    connection = sqlite3.connect(path)
    with connection:  # as version 3 left it: no summary tables, no triggers
        connection.execute("DROP TRIGGER calls_rollup_delete")
        for rollup in ROLLUPS:
            connection.execute(f"DROP TABLE {rollup.table}")
        connection.execute("PRAGMA user_version = 3")
    assert migrate(connection) == (3, LATEST)
    connection.close()
    mix = Dashboard(SqlDashboard(path)).attestation(WINDOW)
    assert mix["calls"] == 10


def test_postgresql_counts_a_replayed_record_once_and_forgets_deleted_ones(
    tmp_path: Path,
) -> None:
    from shaken.adapters.store.pgcalllog import PostgresCallLog, connect

    with postgres_schema() as url:
        log = PostgresCallLog(url, spool=tmp_path / "spool.sqlite", flush_interval=0.02)
        twice = verified(T0 + 1, "A", source="192.0.2.1", spc="1234", x5u=X5U_A)
        for r in [*sample(), twice]:
            log.record(r)
        log.flush()
        log.record(twice)  # again, in a later batch: the insert skips it
        log.close()
        store = SqlDashboard(url)
        assert Dashboard(store).attestation(WINDOW)["calls"] == 11
        with connect(url) as connection:
            connection.execute("DELETE FROM calls WHERE time < %s", (T0 + 60,))
            connection.commit()
        assert Dashboard(store).attestation(WINDOW)["calls"] == 4
        sources = Dashboard(store).upstreams(WINDOW, "source")["upstreams"]
        assert sum(r["calls"] for r in sources) == 4


def test_a_window_names_a_range_or_a_custom_span() -> None:
    day = window_of(1_000_000.0, range_name="day")
    assert (day.since, day.until, day.step) == (1_000_000.0 - 86400, 1_000_000.0, 60)
    week = window_of(1_000_000.0, range_name="week")
    assert week.step == 420  # 10080 minutes in at most 1440 buckets
    custom = window_of(1_000_000.0, since=10.0, until=70.0, profile="east")
    assert (custom.since, custom.until, custom.profile) == (10.0, 70.0, "east")
    with pytest.raises(ValueError, match="range must be one of"):
        window_of(0.0, range_name="year")
    with pytest.raises(ValueError, match="empty"):
        window_of(0.0, since=10.0, until=5.0)
