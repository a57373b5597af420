"""Writing files safely: private keys are 0600 from their first byte, updates are atomic.

Why not ``Path.write_bytes`` then ``chmod``: between the two calls a private key would be
readable under the process umask. Why temp file + ``os.replace``: a CA index or a CRL that a
repository is serving must never be seen half-written, and a crash must leave the old file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from shaken.core.errors import ConfigurationError

__all__ = ["PRIVATE", "PUBLIC", "create_private", "fsync_directory", "write_atomic"]

PRIVATE = 0o600
PUBLIC = 0o644


def write_atomic(path: Path, data: bytes, *, mode: int = PUBLIC) -> None:
    """Replace ``path`` with ``data`` in one step; the file has ``mode`` before it appears."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def fsync_directory(directory: Path) -> None:
    """Make renames in ``directory`` durable too (POSIX); best effort where not possible."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def create_private(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write a private key with mode 0600; refuse to replace an existing file unless asked.

    A key silently overwritten is a certificate silently orphaned, so the default is to stop.
    """
    if overwrite:
        write_atomic(path, data, mode=PRIVATE)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    except FileExistsError:
        raise ConfigurationError(f"{path} exists; not overwriting a key") from None
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), PRIVATE)  # the umask may have cleared bits; never added any
        out.write(data)
