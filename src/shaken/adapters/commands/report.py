"""``shaken report``: the dashboard's numbers for a time range, for a daily report or records.

The same aggregates as ``GET /dashboard`` (:class:`shaken.services.dashboard.Dashboard` over
:mod:`shaken.adapters.store.dashboard_sql`), read from the call log ``--db`` or ``--config``
names: the signed share and attestation mix of inbound calls, the failure reasons ranked with
their SIP code and explanation, the upstreams by source and by signer, our own signing.

``--format text`` (default) is for a person; every value from the network is shown escaped
(:func:`~shaken.adapters.commands.serve.shown`). ``--format csv`` is one measure per row
(``section,item,measure,value``) for a spreadsheet or an archive; ``--format json`` the
documents of the JSON endpoints.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any, TextIO

from shaken.adapters.cli import EXIT_OK, UsageError, now_of
from shaken.adapters.commands.serve import (
    _database,
    _database_flags,
    _store_errors,
    _time,
    parse_since,
    shown,
)
from shaken.adapters.store.calllogs import describe
from shaken.adapters.store.dashboard_sql import OutdatedCallLog, open_store
from shaken.services.dashboard import Dashboard, window_of

__all__ = ["register", "rows_of"]


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.1f}%"


def _signer(row: dict[str, Any]) -> str:
    if row.get("spc") is None and row.get("x5u_host") is None:
        return "(unsigned)"
    return f"{row.get('spc') or '?'} @ {row.get('x5u_host') or '?'}"


def rows_of(report: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
    """The report as (section, item, measure, value) rows: what ``--format csv`` writes."""
    rows: list[tuple[str, str, str, Any]] = []
    window = report["window"]
    rows += [("window", "", k, window[k]) for k in ("since", "until", "profile")]
    mix = report["attestation"]
    for measure in ("calls", "signed", "signed_share", "rejected"):
        rows.append(("inbound", "", measure, mix[measure]))
    for outcome, count in sorted(mix["outcomes"].items()):
        rows.append(("inbound", outcome, "calls", count))
    for attest, count in mix["attestation"].items():
        rows.append(("attestation", attest, "calls", count))
        rows.append(("attestation", attest, "verified", mix["verified"].get(attest, 0)))
    for row in report["failures"]:
        for measure in ("calls", "rejected", "sip_code", "explanation"):
            rows.append(("failures", row["reason"], measure, row[measure]))
    for section, name in (("upstreams_by_source", "source"), ("upstreams_by_signer", "signer")):
        for row in report[section]:
            item = row["source"] if name == "source" else _signer(row)
            for measure in ("calls", "signed_share", "failure_rate", "rejected"):
                rows.append((section, item or "", measure, row[measure]))
            for attest, count in row["attestation"].items():
                rows.append((section, item or "", f"attest_{attest}", count))
    signing = report["signing"]
    rows.append(("signing", "", "signed", signing["signed"]))
    for row in signing["not_signed"]:
        rows.append(
            ("not_signed", f"{row['action']}: {row['reason'] or ''}", "calls", row["calls"])
        )
    return rows


def _write_text(report: dict[str, Any], out: TextIO) -> None:
    w = report["window"]
    profile = w["profile"] or "all profiles"
    out.write(f"shaken report {_time(w['since'])} to {_time(w['until'])}, {shown(profile)}\n\n")
    mix = report["attestation"]
    out.write(
        f"Inbound: {mix['calls']} calls, {mix['signed']} signed ({_share(mix['signed_share'])}),"
        f" {mix['rejected']} NOT ALLOWED\n"
    )
    for outcome, count in sorted(mix["outcomes"].items()):
        out.write(f"  {outcome:<12} {count:>10}\n")
    out.write("Attestation (claimed / verified):\n")
    for attest, count in mix["attestation"].items():
        out.write(f"  {shown(attest):<12} {count:>10} / {mix['verified'].get(attest, 0)}\n")
    out.write("\nFailure reasons:\n")
    for row in report["failures"]:
        code = row["sip_code"] if row["sip_code"] is not None else "-"
        reason, text = shown(row["reason"]), shown(row["explanation"])
        out.write(
            f"  {row['calls']:>10}  {code!s:>3}  {reason}: {text} ({row['rejected']} NOT ALLOWED)\n"
        )
    for title, section in (
        ("Upstreams by source", "upstreams_by_source"),
        ("Upstreams by signer (SPC @ x5u host)", "upstreams_by_signer"),
    ):
        out.write(f"\n{title}: calls, signed, failed, A/B/C\n")
        for row in report[section]:
            name = row["source"] if "source" in row else _signer(row)
            a = row["attestation"]
            signed, failed = _share(row["signed_share"]), _share(row["failure_rate"])
            out.write(
                f"  {shown(name or '(none)'):<40} {row['calls']:>8} {signed:>7} {failed:>7}"
                f"  {a['A']}/{a['B']}/{a['C']}\n"
            )
    signing = report["signing"]
    out.write(f"\nOutbound: {signing['signed']} signed\n")
    for row in signing["not_signed"]:
        out.write(f"  {row['calls']:>10}  {shown(row['action'])}: {shown(row['reason'] or '')}\n")


def cmd_report(args: argparse.Namespace) -> int:
    database = _database(args)
    now = now_of(args)
    since = parse_since(args.since, now=now)
    until = parse_since(args.until, now=now) if args.until else None
    try:
        window = window_of(now.timestamp(), since=since, until=until, profile=args.profile)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        report = Dashboard(open_store(database)).report(window)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    except OutdatedCallLog as exc:
        raise UsageError(f"{describe(str(database))}: {exc}") from None
    except _store_errors() as exc:
        raise UsageError(f"cannot read the call log: {exc}") from None
    out = sys.stdout
    if args.format == "json":
        json.dump(report, out, indent=2)
        out.write("\n")
    elif args.format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("section", "item", "measure", "value"))
        writer.writerows(rows_of(report))
    else:
        _write_text(report, out)
    return EXIT_OK


def register(commands: Any, cert_commands: Any) -> None:
    p = commands.add_parser(
        "report", help="the dashboard's numbers for a time range (a daily report, records)"
    )
    _database_flags(p)
    p.add_argument(
        "--since",
        default="1d",
        metavar="TIME",
        help="ISO 8601 time, or 30s, 5m, 1h, 2d ago (default 1d)",
    )
    p.add_argument("--until", metavar="TIME", help="before this time (default now)")
    p.add_argument("--profile", metavar="NAME", help="only calls under this profile")
    p.add_argument("--format", choices=("text", "csv", "json"), default="text")
    p.set_defaults(func=cmd_report)
