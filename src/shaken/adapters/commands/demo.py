"""``shaken demo``: sign, verify, tamper and verify again with a throwaway PKI."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["cmd_demo", "register"]


def cmd_demo(args: argparse.Namespace) -> int:
    # Imported here: the demo pulls in the test PKI kit, which other commands never need.
    from shaken.adapters.demo import run_demo  # noqa: PLC0415

    return run_demo(sys.stdout, args.clock)


def register(commands: Any, cert_commands: Any) -> None:
    """Add ``shaken demo``."""
    p = commands.add_parser(
        "demo", help="sign, verify, tamper and verify again with a throwaway PKI"
    )
    p.set_defaults(func=cmd_demo)
