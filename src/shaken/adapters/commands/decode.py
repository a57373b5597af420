"""``shaken decode``: an Identity value's parameters, JOSE header and claims, unverified."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import UTC, datetime
from typing import Any

from shaken.adapters.cli import EXIT_NOT_VERIFIED, EXIT_OK
from shaken.core.errors import VerificationFailure
from shaken.core.identity import IdentityHeader
from shaken.core.passport import decode_token

__all__ = ["cmd_decode", "register"]


def cmd_decode(args: argparse.Namespace) -> int:
    try:
        header = IdentityHeader.parse(args.value)
    except VerificationFailure as failure:
        print(f"cannot parse: {failure.detail}", file=sys.stderr)
        return EXIT_NOT_VERIFIED
    params = {"info": header.info, "alg": header.alg, "ppt": header.ppt}
    params.update({name: value for name, value in header.extra})
    out: dict[str, Any] = {
        "parameters": params,
        "form": "compact" if header.is_compact_form else "full",
    }
    if not header.is_compact_form:
        try:
            token = decode_token(header.token)
        except VerificationFailure as failure:
            out["error"] = failure.detail
        else:
            out["header"] = dict(token.header)
            out["claims"] = dict(token.payload)
            out["signature_bytes"] = len(token.signature)
            iat = token.payload.get("iat")
            if isinstance(iat, int) and not isinstance(iat, bool):
                with contextlib.suppress(OverflowError, OSError, ValueError):
                    out["iat_utc"] = datetime.fromtimestamp(iat, UTC).isoformat()
    print(json.dumps(out, indent=2, sort_keys=True, ensure_ascii=False))
    return EXIT_OK if "error" not in out else EXIT_NOT_VERIFIED


def register(commands: Any, cert_commands: Any) -> None:
    """Add ``shaken decode``."""
    p = commands.add_parser("decode", help="show an Identity value's header, claims and parameters")
    p.add_argument("value", help="the Identity header value")
    p.set_defaults(func=cmd_decode)
