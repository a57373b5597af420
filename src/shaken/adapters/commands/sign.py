"""``shaken sign``: the Identity header value for one call, from a key and an x5u."""

from __future__ import annotations

import argparse
from typing import Any

from shaken.adapters.cli import EXIT_OK, UsageError, now_of, read_file
from shaken.core.jws import load_private_key
from shaken.core.sign import sign_shaken

__all__ = ["cmd_sign", "register"]


def cmd_sign(args: argparse.Namespace) -> int:
    key = load_private_key(read_file(args.key))
    iat = None
    if args.iat is not None:
        try:
            iat = int(args.iat)
        except ValueError:
            raise UsageError(f"--iat wants an integer, not {args.iat!r}") from None
    value = sign_shaken(
        key=key,
        x5u=args.x5u,
        orig=args.orig,
        dest=args.dest,
        attest=args.attest,
        now=now_of(args) if iat is None else None,
        iat=iat,
        origid=args.origid,
    )
    print(value)
    return EXIT_OK


def register(commands: Any, cert_commands: Any) -> None:
    """Add ``shaken sign``."""
    p = commands.add_parser("sign", help="print the Identity header value for a call")
    p.add_argument("--key", required=True, help="P-256 private key (PEM or DER)")
    p.add_argument("--x5u", required=True, help="URL of the signing certificate chain")
    p.add_argument("--orig", required=True, help="calling TN")
    p.add_argument("--dest", required=True, action="append", help="called TN (repeatable)")
    p.add_argument("--attest", default="A", choices=["A", "B", "C"])
    p.add_argument("--origid", help="origination identifier (UUID); random when omitted")
    p.add_argument("--iat", help="issued-at, seconds since the epoch; now when omitted")
    p.set_defaults(func=cmd_sign)
