"""The dashboard's panel queries on a day of a busy site: seconds per panel, SQLite and PostgreSQL.

Run it with ``.venv/bin/python bench/dashboard.py`` (1,000,000 rows by default;
``--rows 10000000`` is the issue's "day of a busy site", 116 calls/s for 24 hours;
``--postgres`` also runs it on the PostgreSQL of ``tests/support/servers.py``
(``SHAKEN_TEST_POSTGRES``) in a schema of its own; ``--json`` prints one JSON object).

The rows are one UTC day of synthetic traffic: 80 % inbound (verified at A 60 %, B 25 %, C 15 %
of the signed; 20 % unsigned; 10 % failing for one of eight Reasons, a third of those
rejected) from 200 source addresses and 50 signers, 20 % outbound (signed, or not for one of
three reasons), over three profiles. They are written straight into a table made by the call
log's own migrations (schema version 5 and its indexes), then counted into the summary tables
and the TN table (:mod:`shaken.adapters.store.rollups`) as the migration counts an older log,
and ``ANALYZE``\\ d: the database the writers leave after a day. It also times the SQLite
writer's commits with and without the TN table and the counting for the summary tables.

Each panel is the query the JSON endpoint runs (:class:`shaken.services.dashboard.Dashboard`
over :class:`shaken.adapters.store.dashboard_sql.SqlDashboard`), over the whole day, all
profiles, then one profile; the figure is the median of ``--repeat`` runs (the first run
included: the file is in the page cache after writing it, as a live log is).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shaken.adapters.store.calllog import migrate
from shaken.adapters.store.callschema import COLUMNS, SQLITE
from shaken.adapters.store.dashboard_sql import SqlDashboard
from shaken.services.calllog import CallQuery
from shaken.services.dashboard import Dashboard, Window

DAY = 1_795_996_800.0  # 2026-12-01T00:00:00Z
NAMES = [c.name for c in COLUMNS]
REASONS = [
    ("orig_mismatch", 438),
    ("stale_iat", 403),
    ("cert_fetch_failed", 436),
    ("bad_signature", 438),
    ("cert_untrusted", 437),
    ("dest_mismatch", 438),
    ("invalid_header", 438),
    ("cert_expired", 437),
]
NOT_SIGNED = ["no credential for the calling TN", "the calling TN is not ours", "no profile"]


def rows(count: int, seed: int = 1) -> Iterator[tuple[Any, ...]]:
    """``count`` rows of one day, in time order, in :data:`NAMES` order."""
    rng = random.Random(seed)
    sources = [f"198.51.{i // 250}.{i % 250 + 1}" for i in range(200)]
    signers = [(f"{1000 + i}", f"https://cr{i}.carrier{i % 17}.example/sp.pem") for i in range(50)]
    profiles = ["global", "east", "west"]
    index = {name: i for i, name in enumerate(NAMES)}
    blank = [None] * len(NAMES)
    for n in range(count):
        row = list(blank)
        row[index["time"]] = DAY + 86400.0 * n / count
        row[index["interface"]] = "sip"
        row[index["profile"]] = profiles[n % 3]
        row[index["call_id"]] = f"{n:x}@bench"
        row[index["orig"]] = f"1202555{n % 10000:04d}"
        row[index["dest"]] = "13035550000"
        draw = rng.random()
        if draw < 0.8:
            row[index["direction"]] = "verify"
            row[index["source_ip"]] = sources[int(rng.random() ** 2 * 200)]
            signed = rng.random() >= 0.2
            allowed = True
            if not signed:
                outcome, reason, verstat = "missing", "missing_identity", "No-TN-Validation"
            else:
                spc, x5u = signers[int(rng.random() ** 2 * 50)]
                row[index["spc"]], row[index["x5u"]] = spc, x5u
                a = rng.random()
                row[index["attest"]] = "A" if a < 0.6 else "B" if a < 0.85 else "C"
                if rng.random() < 0.1:
                    reason, code = REASONS[int(rng.random() ** 2 * len(REASONS))]
                    outcome, verstat = "failed", "TN-Validation-Failed"
                    allowed = rng.random() >= 1 / 3
                    row[index["sip_code"]] = 302 if allowed else code
                else:
                    outcome, reason, verstat = "verified", None, "TN-Validation-Passed"
                    row[index["sip_code"]] = 302
            row[index["outcome"]], row[index["reason"]] = outcome, reason
            row[index["verstat"]] = verstat
            row[index["allowed"]] = allowed
            row[index["action"]] = "accept" if allowed else "reject"
        else:
            row[index["direction"]] = "sign"
            row[index["allowed"]] = True
            if rng.random() < 0.95:
                a = rng.random()
                row[index["attest"]] = "A" if a < 0.8 else "B" if a < 0.95 else "C"
                row[index["outcome"]], row[index["action"]] = "signed", "signed"
                row[index["x5u"]] = "https://cr.ours.example/sp.pem"
            else:
                row[index["outcome"]], row[index["action"]] = "not_signed", "not_signed"
                row[index["reason"]] = NOT_SIGNED[n % 3]
        yield tuple(row)


def sqlite_log(path: Path, count: int) -> float:
    """A SQLite call log of ``count`` rows; returns the seconds it took to make."""
    started = time.perf_counter()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode = OFF")
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute(SQLITE.create_table())
    present = {r[1] for r in connection.execute("PRAGMA table_info(calls)")}
    for column in COLUMNS:
        if column.name not in present:
            connection.execute(f"ALTER TABLE calls ADD COLUMN {SQLITE.column(column)}")
    marks = ", ".join("?" for _ in NAMES)
    with connection:
        connection.executemany(
            f"INSERT INTO calls ({', '.join(NAMES)}) VALUES ({marks})", rows(count)
        )
    migrate(connection)  # the indexes of every version, as a live log has them
    connection.execute("ANALYZE")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.close()
    return time.perf_counter() - started


def postgres_log(url: str, count: int) -> float:
    from shaken.adapters.store.pgcalllog import connect, migrate_postgres

    started = time.perf_counter()
    with connect(url, timeout=3600.0) as connection:
        migrate_postgres(connection)
        with connection.cursor() as cursor:
            indexes = [
                row[0]
                for row in cursor.execute(
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'calls'"
                    " AND schemaname = current_schema() AND indexname NOT LIKE '%pkey'"
                )
            ]
            definitions = [
                row[0]
                for row in cursor.execute(
                    "SELECT indexdef FROM pg_indexes WHERE tablename = 'calls'"
                    " AND schemaname = current_schema() AND indexname NOT LIKE '%pkey'"
                )
            ]
            for name in indexes:  # built after the load, as fast as a load goes
                cursor.execute(f"DROP INDEX {name}")
            with cursor.copy(f"COPY calls ({', '.join(NAMES)}) FROM STDIN") as copy:
                for row in rows(count):
                    copy.write_row(row)
            for definition in definitions:
                cursor.execute(definition)
        connection.commit()
        connection.autocommit = True
        connection.execute("VACUUM ANALYZE calls")
    return time.perf_counter() - started


def panels(dashboard: Dashboard, window: Window) -> dict[str, Callable[[], Any]]:
    return {
        "traffic": lambda: dashboard.traffic(window),
        "attestation": lambda: dashboard.attestation(window),
        "failures": lambda: dashboard.failures(window),
        "upstreams_by_source": lambda: dashboard.upstreams(window, "source"),
        "upstreams_by_signer": lambda: dashboard.upstreams(window, "signer"),
        "signing": lambda: dashboard.signing(window),
        "fetch_failures": lambda: dashboard.fetch_failures(window),
        "search_call_id": lambda: dashboard.search(CallQuery(call_id="4d2@bench")),
        "search_tn_recent": lambda: dashboard.search(CallQuery(tn="12025550042", limit=200)),
    }


def measure(target: str | Path, repeat: int) -> dict[str, dict[str, float]]:
    dashboard = Dashboard(SqlDashboard(target))
    out: dict[str, dict[str, float]] = {}
    for scope, window in (
        ("all", Window(DAY, DAY + 86400, None, 60)),
        ("one_profile", Window(DAY, DAY + 86400, "east", 60)),
    ):
        for name, run in panels(dashboard, window).items():
            if scope != "all" and name.startswith("search"):
                continue
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                run()
                times.append(time.perf_counter() - started)
            out.setdefault(name, {})[scope] = statistics.median(times)
    return out


def writer_cost(count: int = 100_000, batch: int = 500) -> dict[str, float]:
    """The SQLite writer's commits, records per second, the best of three runs each,
    alternating: the rows alone; with the TN table
    (:func:`~shaken.adapters.store.rollups.index_new_rows`, in the commit); with that and the
    counting for the summary tables (:func:`~shaken.adapters.store.rollups.count_new_rows`
    after each commit), which is what the writer does."""
    from shaken.adapters.store.calllog import _CHUNK, _insert_sql, _open_for_writing, _row
    from shaken.adapters.store.rollups import count_new_rows, index_new_rows, top_id
    from shaken.services.calllog import CallRecord

    records = [
        CallRecord(
            time=DAY + i / 100,
            direction="verify",
            interface="sip",
            profile="global",
            call_id=f"{i:x}",
            verstat="TN-Validation-Passed",
            attest="A",
            source_ip=f"198.51.100.{i % 200}",
            spc=str(1000 + i % 50),
            x5u=f"https://cr{i % 50}.example/sp.pem",
        )
        for i in range(count)
    ]
    kinds = ("without_counting", "with_tn_index", "with_counting")
    best = dict.fromkeys(kinds, 0.0)
    with tempfile.TemporaryDirectory(prefix="shaken-bench-writer-") as directory:
        for run in range(3 * len(kinds)):
            kind = kinds[run % len(kinds)]
            connection = _open_for_writing(Path(directory) / f"w{run}.sqlite")
            rows = [_row(r) for r in records]
            started = time.perf_counter()
            for start in range(0, len(rows), batch):
                chunk = rows[start : start + batch]
                with connection:
                    after = top_id(connection)
                    for at in range(0, len(chunk), _CHUNK):
                        part = chunk[at : at + _CHUNK]
                        connection.execute(_insert_sql(len(part)), [v for row in part for v in row])
                    if kind != "without_counting":
                        index_new_rows(connection, after)
                if kind == "with_counting":
                    count_new_rows(connection)
            rate = count / (time.perf_counter() - started)
            connection.close()
            best[kind] = max(best[kind], rate)
    return best


def table(title: str, built: float, figures: dict[str, dict[str, float]]) -> str:
    lines = [f"{title} (made in {built:.0f} s)", f"{'panel':<22} {'all':>9} {'1 profile':>10}"]
    for name, scopes in figures.items():
        one = scopes.get("one_profile")
        lines.append(
            f"{name:<22} {scopes['all']:>8.3f}s {'' if one is None else f'{one:>9.3f}s':>10}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    result: dict[str, Any] = {"rows": args.rows}
    with tempfile.TemporaryDirectory(prefix="shaken-bench-dashboard-") as directory:
        path = Path(directory) / "calls.sqlite"
        built = sqlite_log(path, args.rows)
        result["sqlite"] = {"built_s": built, "panels": measure(path, args.repeat)}
        print(
            table(f"SQLite, {args.rows:,} rows", built, result["sqlite"]["panels"]), file=sys.stderr
        )
    result["sqlite_writer_records_per_s"] = writer = writer_cost()
    print(
        "SQLite writer, records/s: {without_counting:,.0f} rows only,"
        " {with_tn_index:,.0f} with the TN table in the commit,"
        " {with_counting:,.0f} with that and the counting (the writer)".format(**writer),
        file=sys.stderr,
    )
    if args.postgres:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.support.servers import postgres_schema

        with postgres_schema() as url:
            built = postgres_log(url, args.rows)
            result["postgresql"] = {"built_s": built, "panels": measure(url, args.repeat)}
            print(
                table(f"PostgreSQL, {args.rows:,} rows", built, result["postgresql"]["panels"]),
                file=sys.stderr,
            )
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
