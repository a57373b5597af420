"""``shaken cache``: list, show, import and purge the persisted x5u certificate cache.

Asterisk users asked for exactly this (Asterisk feature request #860): a
way to see what the verifier holds, to pre-load a chain for a URL that is not reachable yet, and
to flush one entry without editing a database by hand. The cache directory is ``--cache-dir``,
else ``$SHAKEN_CACHE_DIR``, else ``~/.cache/shaken/certs`` (the one ``shaken verify`` uses).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from shaken.adapters.cli import EXIT_NOT_VERIFIED, EXIT_OK, UsageError, now_of
from shaken.adapters.fetch import LAB_POLICY
from shaken.adapters.store import DirectoryCertificateStore, default_cache_dir
from shaken.core.certs import StirCertificate, load_certificates
from shaken.core.errors import CertificateError, X5uRejected
from shaken.core.x5u import STRICT, check_x5u
from shaken.services.cert_cache import CacheSettings, entry_expiry
from shaken.services.crl import parse_crl
from shaken.services.ports import DocumentKind, StoredEntry

__all__ = ["register"]


def _store(args: argparse.Namespace) -> DirectoryCertificateStore:
    return DirectoryCertificateStore(args.cache_dir or default_cache_dir())


def _describe(entry: StoredEntry, now: datetime) -> dict[str, Any]:
    """The JSON record of one entry: metadata plus what the body holds."""
    record: dict[str, Any] = {
        "url": entry.url,
        "kind": entry.kind.value,
        "size": len(entry.body),
        "fetched_at": entry.fetched_at.isoformat(),
        "expires_at": entry.expires_at.isoformat(),
        "fresh": now < entry.expires_at,
        "etag": entry.etag,
        "content_type": entry.content_type,
    }
    if entry.kind is DocumentKind.CRL:
        try:
            crl = parse_crl(entry.body)
        except ValueError as exc:
            record["error"] = str(exc)
            return record
        record["crl"] = {
            "issuer": crl.issuer.rfc4514_string(),
            "this_update": crl.last_update_utc.isoformat(),
            "next_update": None if crl.next_update_utc is None else crl.next_update_utc.isoformat(),
            "revoked": len(crl),
        }
        return record
    try:
        certificates = load_certificates(entry.body)
    except CertificateError as exc:
        record["error"] = str(exc)
        return record
    record["certificates"] = [_certificate_record(c) for c in certificates]
    record["not_after"] = min(c.not_valid_after_utc for c in certificates).isoformat()
    return record


def _certificate_record(cert: x509.Certificate) -> dict[str, Any]:
    stir = StirCertificate.from_x509(cert)
    return {
        "subject": stir.subject,
        "issuer": stir.issuer,
        "serial": format(stir.serial, "x"),
        "not_before": stir.not_before.isoformat(),
        "not_after": stir.not_after.isoformat(),
        "spc": stir.spc,
    }


def cmd_cache_list(args: argparse.Namespace) -> int:
    now = now_of(args)
    store = _store(args)
    records = sorted((_describe(e, now) for e in store.entries()), key=lambda r: r["url"])
    if args.json:
        for record in records:
            print(json.dumps(record, sort_keys=True))
        return EXIT_OK
    if not records:
        print(f"the cache at {store.directory} is empty")
        return EXIT_OK
    for record in records:
        state = "fresh" if record["fresh"] else "expired"
        what = ""
        if "certificates" in record:
            leaf = record["certificates"][0]
            what = f"{leaf['subject']} (SPC {leaf['spc']}, {len(record['certificates'])} cert(s))"
        elif "crl" in record:
            what = f"CRL of {record['crl']['issuer']}, {record['crl']['revoked']} revoked"
        else:
            what = f"unreadable: {record.get('error')}"
        print(f"{record['url']}")
        print(f"  {record['kind']:<11} {state:<7} until {record['expires_at']}  {what}")
    return EXIT_OK


def cmd_cache_show(args: argparse.Namespace) -> int:
    store = _store(args)
    entry = store.load(args.url)
    if entry is None:
        print(f"shaken: {args.url} is not in the cache at {store.directory}", file=sys.stderr)
        return EXIT_NOT_VERIFIED
    if args.pem:
        if entry.kind is DocumentKind.CRL:
            crl = parse_crl(entry.body)
            sys.stdout.write(crl.public_bytes(Encoding.PEM).decode("ascii"))
        else:
            for cert in load_certificates(entry.body):
                sys.stdout.write(cert.public_bytes(Encoding.PEM).decode("ascii"))
        return EXIT_OK
    record = _describe(entry, now_of(args))
    if args.json:
        print(json.dumps(record, sort_keys=True))
        return EXIT_OK
    print(record["url"])
    for key in ("kind", "size", "fetched_at", "expires_at", "fresh", "etag", "content_type"):
        print(f"  {key + ':':<14} {record[key]}")
    for index, cert in enumerate(record.get("certificates", ())):
        print(f"  [{index}] {cert['subject']}")
        print(f"      issuer   {cert['issuer']}")
        print(f"      serial   {cert['serial']}")
        print(f"      validity {cert['not_before']} .. {cert['not_after']}")
        if cert["spc"]:
            print(f"      SPC      {cert['spc']}")
    if "crl" in record:
        for key, value in record["crl"].items():
            print(f"  {key + ':':<14} {value}")
    if "error" in record:
        print(f"  error: {record['error']}")
    return EXIT_OK


def cmd_cache_import(args: argparse.Namespace) -> int:
    try:
        body = Path(args.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    try:
        check_x5u(args.url, LAB_POLICY if args.lab else STRICT)
    except X5uRejected as exc:
        raise UsageError(f"--url: {exc.detail} (--lab relaxes the lab rules)") from None
    now = now_of(args)
    kind = DocumentKind.CRL if args.crl else DocumentKind.CERTIFICATE
    if kind is DocumentKind.CRL:
        try:
            crl = parse_crl(body)
        except ValueError as exc:
            raise UsageError(f"{args.file} is not a CRL: {exc}") from None
        not_after = crl.next_update_utc
    else:
        try:
            certificates = load_certificates(body)
        except CertificateError as exc:
            raise UsageError(f"{args.file}: {exc}") from None
        not_after = min(c.not_valid_after_utc for c in certificates)
    if not_after is not None and not_after <= now:
        raise UsageError(f"{args.file} expired at {not_after.isoformat()}; nothing imported")
    settings = CacheSettings()
    if args.ttl is not None:
        if args.ttl <= 0:
            raise UsageError("--ttl wants a positive number of seconds")
        settings = CacheSettings(
            min_ttl=timedelta(seconds=args.ttl), max_ttl=timedelta(seconds=args.ttl)
        )
    expires_at = entry_expiry(now=now, http_lifetime=None, not_after=not_after, settings=settings)
    store = _store(args)
    try:
        store.save(
            StoredEntry(url=args.url, body=body, kind=kind, fetched_at=now, expires_at=expires_at)
        )
    except OSError as exc:
        raise UsageError(f"cannot write to {store.directory}: {exc.strerror or exc}") from None
    print(f"imported {args.file} as {args.url} (until {expires_at.isoformat()})")
    return EXIT_OK


def cmd_cache_purge(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.url is None:
        count = store.purge()
        print(f"purged {count} entr{'y' if count == 1 else 'ies'} from {store.directory}")
        return EXIT_OK
    if not store.delete(args.url):
        print(f"shaken: {args.url} is not in the cache at {store.directory}", file=sys.stderr)
        return EXIT_NOT_VERIFIED
    print(f"purged {args.url}")
    return EXIT_OK


def _cache_dir_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache-dir",
        help="the cache directory ($SHAKEN_CACHE_DIR, else ~/.cache/shaken/certs)",
    )


def register(commands: Any, cert_commands: Any) -> None:
    """Add ``shaken cache`` and its sub-commands."""
    group = commands.add_parser("cache", help="the x5u certificate cache")
    sub = group.add_subparsers(dest="cache_command", required=True, parser_class=type(group))

    p = sub.add_parser("list", help="every cached URL with its lifetime and what it holds")
    _cache_dir_flag(p)
    p.add_argument("--json", action="store_true", help="one JSON object per entry per line")
    p.set_defaults(func=cmd_cache_list)

    p = sub.add_parser("show", help="one entry: metadata and certificates (or the PEM)")
    p.add_argument("url", metavar="URL")
    _cache_dir_flag(p)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--pem", action="store_true", help="print the certificates (or CRL) as PEM")
    p.set_defaults(func=cmd_cache_show)

    p = sub.add_parser("import", help="store a chain (or CRL) as if fetched from URL")
    p.add_argument("file", metavar="FILE", help="PEM chain or DER certificate (or CRL)")
    p.add_argument("--url", required=True, help="the x5u (or CRL Distribution Point) URL")
    p.add_argument("--crl", action="store_true", help="FILE is a CRL for a distribution point")
    p.add_argument("--ttl", type=int, help="lifetime in seconds (default 24 h, ATIS-1000074)")
    p.add_argument("--lab", action="store_true", help="accept lab URLs (http, loopback, any port)")
    _cache_dir_flag(p)
    p.set_defaults(func=cmd_cache_import)

    p = sub.add_parser("purge", help="remove one URL, or everything")
    p.add_argument("url", metavar="URL", nargs="?")
    _cache_dir_flag(p)
    p.set_defaults(func=cmd_cache_purge)
