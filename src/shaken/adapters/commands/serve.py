"""``shaken serve`` (the SIP and REST servers) and ``shaken calls`` (the call log).

``shaken calls`` reads the SQLite call log the servers write (``[server] call_log``): one line
per decision, oldest first, a rejected call shown as NOT ALLOWED (the VoipNow guide's word for a
stopped call, ``reference/seeds``). ``--since`` takes an ISO 8601 time (UTC when it names no
zone) or a relative one such as ``1h``, ``30m``, ``2d`` (or ``--since=-1h``: argparse takes
``--since -1h`` for an option).

Values in the log came from the network (Call-IDs, TNs, x5u URLs) and may hold anything,
including bytes that were not UTF-8 and terminal control sequences: a line shows each of them
escaped (:func:`shown`), a backslash doubled, so what is printed is unambiguous and inert.
``--json`` relies on ``json.dumps``, which escapes every non-ASCII character.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shaken.adapters.cli import EXIT_OK, UsageError, now_of
from shaken.adapters.store.calllog import OUTCOMES, read_calls
from shaken.config import ConfigError, load_config

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
    from shaken.adapters.serve import configure_logging, serve  # noqa: PLC0415

    if args.workers is not None and not 1 <= args.workers <= 64:
        raise UsageError("--workers must be from 1 to 64")
    configure_logging()
    try:
        return serve(args.config, workers=args.workers, clock=args.clock)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2


def _database(args: argparse.Namespace) -> Path:
    if args.db:
        return Path(args.db)
    if not args.config:
        raise UsageError("say which call log: --db FILE, or --config FILE with server.call_log")
    try:
        settings = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    path = settings.server.get("call_log")
    if not path:
        raise UsageError(f"{args.config} sets no server.call_log")
    return Path(path)


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


def cmd_calls(args: argparse.Namespace) -> int:
    path = _database(args)
    since = parse_since(args.since, now=now_of(args)) if args.since else None
    try:
        rows = read_calls(path, since=since, outcome=args.outcome, limit=args.limit)
    except FileNotFoundError:
        raise UsageError(f"no call log at {path} (the servers create it on start)") from None
    except sqlite3.Error as exc:
        raise UsageError(f"{path} is not a readable call log: {exc}") from None
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return EXIT_OK
    for row in rows:
        print(_line(row))
    if not rows:
        print(f"no calls in {path}" + (" matching the filters" if since or args.outcome else ""))
    return EXIT_OK


def register(commands: Any, cert_commands: Any) -> None:
    p = commands.add_parser("serve", help="run the SIP redirect server and the REST API")
    p.add_argument("--config", required=True, metavar="FILE", help="the configuration file")
    p.add_argument(
        "--workers", type=int, metavar="N", help="worker processes (default: server.workers, 1)"
    )
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("calls", help="the call log: every signing and verification decision")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE", help="read server.call_log from this file")
    source.add_argument("--db", metavar="FILE", help="the call log's SQLite file")
    p.add_argument(
        "--since", metavar="TIME", help="ISO 8601 time, or 30s, 5m, 1h, 2d ago (also --since=-1h)"
    )
    p.add_argument("--outcome", choices=OUTCOMES, help="only calls with this outcome")
    p.add_argument("--limit", type=int, metavar="N", help="only the N most recent")
    p.add_argument("--json", action="store_true", help="one JSON object per call per line")
    p.set_defaults(func=cmd_calls)
