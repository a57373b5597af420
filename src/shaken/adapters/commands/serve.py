"""``shaken serve`` (the SIP and REST servers) and ``shaken calls`` (the call log).

``shaken calls`` reads the call log the servers write (``[server] call_log``, a SQLite file or
a PostgreSQL database): one line
per decision, oldest first, a rejected call shown as NOT ALLOWED (the VoipNow guide's word for a
stopped call). ``--since`` takes an ISO 8601 time (UTC when it names no
zone) or a relative one such as ``1h``, ``30m``, ``2d`` (or ``--since=-1h``: argparse takes
``--since -1h`` for an option).

Values in the log came from the network (Call-IDs, TNs, x5u URLs) and may hold anything,
including bytes that were not UTF-8 and terminal control sequences: a line shows each of them
escaped (:func:`shown`), a backslash doubled, so what is printed is unambiguous and inert.
``--json`` relies on ``json.dumps``, which escapes every non-ASCII character.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from shaken.adapters.cli import EXIT_OK, UsageError, now_of
from shaken.adapters.store.calllog import OUTCOMES, backup
from shaken.adapters.store.calllogs import describe, migrate_call_log, read_call_log
from shaken.adapters.store.callschema import RECORD_FIELDS
from shaken.adapters.store.pgcalllog import is_postgres_url
from shaken.config import ConfigError, load_config
from shaken.core.tn import canonicalize_tn
from shaken.services.calllog import CallQuery

__all__ = ["parse_since", "register", "shown"]

_RELATIVE = re.compile(r"-?([0-9]+(?:\.[0-9]+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, *, now: datetime) -> float:
    """A Unix time from ``-1h``-style relative text or an ISO 8601 time.

    :raises UsageError: neither.
    """
    text = value.strip()
    relative = _RELATIVE.fullmatch(text)
    if relative is not None:
        amount, unit = relative.groups()
        moment = now - timedelta(seconds=float(amount) * _UNITS[unit])
        return moment.timestamp()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {value!r}: use an ISO 8601 time or 30s, 5m, 1h, 2d") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def cmd_serve(args: argparse.Namespace) -> int:
    # Imported here: the servers pull in asyncio transports, uvloop and uvicorn, which the
    # other commands never need.
    from shaken.adapters.logs import configure_logging  # noqa: PLC0415
    from shaken.adapters.serve import serve  # noqa: PLC0415

    if args.workers is not None and not 1 <= args.workers <= 64:
        raise UsageError("--workers must be from 1 to 64")
    configure_logging()
    try:
        return serve(args.config, workers=args.workers, clock=args.clock)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2


def _database(args: argparse.Namespace) -> str | Path:
    """The call log the command reads: a SQLite file, or a ``postgresql://`` URL."""
    if args.db:
        return args.db if is_postgres_url(args.db) else Path(args.db)
    if not args.config:
        raise UsageError("say which call log: --db FILE, or --config FILE with server.call_log")
    try:
        settings = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    path = settings.server_settings.call_log
    if not path:
        raise UsageError(f"{args.config} sets no server.call_log")
    return str(path) if is_postgres_url(path) else Path(path)


def _store_errors() -> tuple[type[BaseException], ...]:
    """What reading or migrating a call log raises when the store is not usable."""
    errors: list[type[BaseException]] = [sqlite3.Error, RuntimeError]
    try:
        import psycopg  # noqa: PLC0415  (optional)
    except ImportError:  # pragma: no cover
        return tuple(errors)
    return (*errors, psycopg.Error)


def _time(value: float) -> str:
    return (
        datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def shown(value: object) -> str:
    """``value`` printable and unambiguous: ``\\`` for a backslash, ``\\xNN`` for a byte that
    was not UTF-8 on the wire (a ``surrogateescape`` surrogate) or a control character, and
    ``\\uNNNN`` for any other character that is not printable."""
    text = str(value)
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for char in text:
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char.isprintable():
            out.append(char)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def _quoted(name: str, value: str) -> str:
    return f'{name}="{value.replace(chr(34), chr(92) + chr(34))}"'


def _line(raw: dict[str, Any]) -> str:
    row: dict[str, Any] = {k: shown(v) if isinstance(v, str) else v for k, v in raw.items()}
    verdict = "allowed" if row["allowed"] else f"NOT ALLOWED ({row['sip_code']})"
    parties = f"{row['orig'] or '-'} -> {row['dest'] or '-'}"
    extra = [
        f"attest={row['attest']}" if row["attest"] else "",
        f"verstat={row['verstat']}" if row["verstat"] else "",
        f"reason={row['reason']}" if row["reason"] else "",
        f"action={row['action']}" if row["action"] else "",
        # The brand is signer-chosen text with spaces: quoted, its quotes escaped (and, like
        # every value here, control characters and non-UTF-8 bytes shown as \xNN).
        _quoted("brand", row["brand"]) if row.get("brand") else "",
        f"rcd={row['rcd_status']}" if row.get("rcd_status") else "",
        f"rcd_reason={row['rcd_reason']}" if row.get("rcd_reason") else "",
        f"profile={row['profile']}" if row["profile"] else "",
        f"{row['latency_ms']:.2f}ms" if row["latency_ms"] is not None else "",
        f"call-id={row['call_id']}" if row["call_id"] else "",
    ]
    return "  ".join(
        [
            _time(row["time"]),
            f"{row['interface']}/{row['direction']:6}",
            f"{row['outcome']:11}",
            f"{verdict:17}",
            parties,
            *[e for e in extra if e],
        ]
    )


_CSV_FIELDS = ("id", "outcome", *RECORD_FIELDS)


def _query(args: argparse.Namespace) -> CallQuery:
    now = now_of(args)
    since = until = None
    if args.export:
        try:
            day = datetime.strptime(args.export, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise UsageError(f"--export {args.export!r}: give a UTC day as YYYY-MM-DD") from None
        since, until = day.timestamp(), (day + timedelta(days=1)).timestamp()
    if args.since:
        since = parse_since(args.since, now=now)
    if args.until:
        until = parse_since(args.until, now=now)
    tn = None
    if args.tn:
        tn = canonicalize_tn(args.tn)
        if not tn:
            raise UsageError(f"--tn {args.tn!r} is not a telephone number")
    return CallQuery(
        since=since,
        until=until,
        outcome=args.outcome,
        tn=tn,
        call_id=args.call_id,
        origid=args.origid,
        spc=args.spc,
        reason=args.reason,
        source=args.source,
        profile=args.profile,
        limit=None if args.export else args.limit,
    )


def _filtered(args: argparse.Namespace) -> bool:
    names = ("since", "until", "outcome", "tn", "call_id", "origid", "spc", "reason", "source")
    return any(getattr(args, name) for name in (*names, "profile", "export"))


def _write_csv(rows: list[dict[str, Any]], stream: TextIO) -> None:
    writer = csv.DictWriter(stream, fieldnames=_CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        # Values from the wire may hold bytes that were not UTF-8 or control characters:
        # escaped (see shown()), so a spreadsheet never receives raw control bytes.
        writer.writerow({k: shown(v) if isinstance(v, str) else v for k, v in row.items()})


def cmd_calls(args: argparse.Namespace) -> int:
    path = _database(args)
    query = _query(args)
    try:
        rows = read_call_log(path, query)
    except FileNotFoundError:
        raise UsageError(f"no call log at {path} (the servers create it on start)") from None
    except _store_errors() as exc:
        shown_path = describe(str(path))
        raise UsageError(f"{shown_path} is not a readable call log: {exc}") from None
    output = "csv" if args.export and args.format is None else (args.format or "text")
    if args.json:
        output = "json"
    if args.out:
        try:
            stream: TextIO = open(args.out, "x", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    else:
        stream = sys.stdout
    try:
        if output == "json":
            for row in rows:
                print(json.dumps(row, sort_keys=True), file=stream)
        elif output == "csv":
            _write_csv(rows, stream)
        else:
            for row in rows:
                print(_line(row), file=stream)
            if not rows:
                matching = " matching the filters" if _filtered(args) else ""
                print(f"no calls in {describe(str(path))}{matching}", file=stream)
    finally:
        if stream is not sys.stdout:
            stream.close()
    if args.out:
        print(f"wrote {len(rows)} call(s) to {args.out}", file=sys.stderr)
    return EXIT_OK


def cmd_calls_backup(args: argparse.Namespace) -> int:
    path = _database(args)
    if not isinstance(path, Path):
        raise UsageError(
            f"{describe(path)} is a PostgreSQL database: back it up with pg_dump (-t calls)"
        )
    try:
        rows = backup(path, args.file)
    except (FileNotFoundError, FileExistsError) as exc:
        raise UsageError(str(exc)) from None
    except sqlite3.Error as exc:
        raise UsageError(f"{path} is not a readable call log: {exc}") from None
    print(f"backed up {path} to {args.file} ({rows} call(s))")
    return EXIT_OK


def cmd_calls_migrate(args: argparse.Namespace) -> int:
    path = _database(args)
    name = describe(str(path))
    try:
        before, after = migrate_call_log(path)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    except _store_errors() as exc:
        raise UsageError(f"{name}: {exc}") from None
    if before == after:
        print(f"{name}: schema version {after}, nothing to do")
    else:
        print(f"{name}: schema version {before} -> {after}")
    return EXIT_OK


def _database_flags(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE", help="read server.call_log from this file")
    source.add_argument(
        "--db", metavar="FILE|URL", help="the call log: a SQLite file or a postgresql:// URL"
    )


def register(commands: Any, cert_commands: Any) -> None:
    p = commands.add_parser("serve", help="run the SIP redirect server and the REST API")
    p.add_argument("--config", required=True, metavar="FILE", help="the configuration file")
    p.add_argument(
        "--workers", type=int, metavar="N", help="worker processes (default: server.workers, 1)"
    )
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("calls", help="the call log: every signing and verification decision")
    _database_flags(p)
    p.add_argument(
        "--since", metavar="TIME", help="ISO 8601 time, or 30s, 5m, 1h, 2d ago (also --since=-1h)"
    )
    p.add_argument("--until", metavar="TIME", help="before this time (same forms as --since)")
    p.add_argument("--outcome", choices=OUTCOMES, help="only calls with this outcome")
    p.add_argument("--tn", metavar="TN", help="calls from or to this number")
    p.add_argument(
        "--call-id", metavar="ID", help="the call with this Call-ID (or REST request id)"
    )
    p.add_argument("--origid", metavar="UUID", help="the PASSporT origid (traceback)")
    p.add_argument("--spc", metavar="SPC", help="calls signed by this SPC (OCN)")
    p.add_argument("--reason", metavar="REASON", help="calls with this Reason (e.g. stale_iat)")
    p.add_argument("--source", metavar="IP", help="calls from this SIP peer or REST client")
    p.add_argument("--profile", metavar="NAME", help="calls under this profile")
    p.add_argument("--limit", type=int, metavar="N", help="only the N most recent")
    p.add_argument("--format", choices=("text", "json", "csv"), help="output (default text)")
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.add_argument(
        "--export",
        metavar="DAY",
        help="every call of one UTC day (YYYY-MM-DD), as CSV unless --format says otherwise",
    )
    p.add_argument("--out", metavar="FILE", help="write to FILE (which must not exist)")
    p.set_defaults(func=cmd_calls)
    sub = p.add_subparsers(dest="calls_command", parser_class=type(p))
    q = sub.add_parser("backup", help="a consistent copy of the call log (SQLite online backup)")
    q.add_argument("file", metavar="FILE", help="where the copy goes (must not exist)")
    _database_flags(q)
    q.set_defaults(func=cmd_calls_backup)
    q = sub.add_parser("migrate", help="bring the call log to this release's schema")
    _database_flags(q)
    q.set_defaults(func=cmd_calls_migrate)
