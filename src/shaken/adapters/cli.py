"""The ``shaken`` command line.

Exit codes: 0 success (for ``verify``: the call verified), 1 the call did not verify,
2 usage errors (bad flags, unreadable files, unusable keys).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from shaken import __version__
from shaken.core.errors import (
    ConfigurationError,
    ShakenError,
    SigningError,
)
from shaken.services.ports import Clock, SystemClock

EXIT_OK = 0
EXIT_NOT_VERIFIED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with the command line or its files: exit 2."""


def read_file(path: str) -> bytes:
    """The bytes of a file a command was given; a usage error when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def now_of(args: argparse.Namespace) -> datetime:
    """The command's one clock read: the clock :func:`main` was given (the system clock)."""
    clock: Clock = args.clock
    return clock.now()


def parse_time(value: str, *, flag: str = "--at") -> datetime:
    """``value`` as seconds since the epoch or an ISO 8601 time (UTC when it names no zone).

    :raises UsageError: neither.
    """
    text = value.strip()
    try:
        return datetime.fromtimestamp(int(text), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{flag} wants seconds since the epoch or an ISO 8601 time, not {value!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------- main


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shaken", description="STIR/SHAKEN signing and verification")
    parser.add_argument("--version", action="version", version=f"shaken {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    modules = _command_modules()
    first = [m for m in modules if _name(m) in _FIRST]
    for module in first:
        module.register(sub, None)
    cert = sub.add_parser("cert", help="certificate tools").add_subparsers(
        dest="cert_command", required=True, parser_class=_Parser
    )
    for module in modules:
        if module not in first:
            module.register(sub, cert)
    return parser


#: The first commands ``shaken --help`` lists, in this order (they take no ``shaken cert``).
_FIRST = ("demo", "sign", "verify", "decode")


def _name(module: Any) -> str:
    return str(module.__name__).rpartition(".")[2]


def _command_modules() -> list[Any]:
    """The modules of :mod:`shaken.adapters.commands`: :data:`_FIRST`, then in name order."""
    import shaken.adapters.commands as package  # noqa: PLC0415

    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__))
    names.sort(key=lambda n: _FIRST.index(n) if n in _FIRST else len(_FIRST))
    return [importlib.import_module(f"{package.__name__}.{name}") for name in names]


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """Run one command; ``clock`` is where every command reads the time (default: the system's)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.clock = clock or SystemClock()
    try:
        code: int = args.func(args)
    except UsageError as exc:
        print(f"shaken: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigurationError, SigningError) as exc:
        print(f"shaken: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ShakenError as exc:
        print(f"shaken: {exc}", file=sys.stderr)
        return EXIT_NOT_VERIFIED
    except BrokenPipeError:
        return EXIT_OK
    return code


if __name__ == "__main__":
    sys.exit(main())
