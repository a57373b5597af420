"""The certificate generations on disk: ``archive/<id>/``, ``current.json``, ``state.json``.

Layout of the ``[lifecycle] directory``::

    current.json            the manifest: which generation signs (key file, x5u, chain file),
                            the previous one, and those still published until a time
    current -> archive/<id> the same, for programs that read files (replaced by a rename)
    state.json              renewal state: failures, backoff, a generation waiting for its x5u
    lock                    held (flock) by whoever renews, so two processes never do
    archive/<id>/key.pem    the generation's private key (0600, written before the CA is asked)
    archive/<id>/chain.pem  its certificate chain as the CA issued it (leaf first)
    archive/<id>/meta.json  serial, SPC, validity, published name and x5u, state

Every file is replaced atomically (temp file, fsync, rename: :mod:`shaken.files`), and the
directory is fsynced after a switch, so a crash leaves either the old manifest or the new one,
never a manifest naming a key that is not on disk. Workers watch ``current.json`` (its inode
and mtime change on every switch) and reload when it changes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import asdict, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from shaken.core.errors import AcquisitionError, ConfigurationError
from shaken.core.jws import PrivateKey, load_private_key, private_key_pem
from shaken.files import PRIVATE, create_private, fsync_directory, write_atomic
from shaken.services.lifecycle import Generation, Manifest, RenewalState

__all__ = ["DirectoryGenerationStore", "manifest_signature", "read_manifest"]

FORMAT = "shaken-generations/1"


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(str(value))


_TIMES = {"created", "not_before", "not_after", "published_at", "activated_at"}
_STATE_TIMES = {"last_attempt", "next_attempt", "last_success", "revocation_checked"}


def _generation(data: dict[str, Any]) -> Generation:
    known = {f.name for f in fields(Generation)}
    values: dict[str, Any] = {
        k: (_time(v) if k in _TIMES else v) for k, v in data.items() if k in known
    }
    return Generation(**values)


def read_manifest(directory: Path) -> Manifest | None:
    """``current.json`` of a lifecycle directory, or None when there is none yet.

    :raises ConfigurationError: it exists but cannot be read.
    """
    path = directory / "current.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the generation manifest {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigurationError(f"{path} is not a {FORMAT} manifest")
    try:
        return Manifest(
            current=str(data["current"]),
            key_file=str(directory / data["key_file"]),
            x5u=str(data["x5u"]),
            chain_file=str(directory / data["chain_file"]),
            activated_at=datetime.fromisoformat(data["activated_at"]),
            previous=data.get("previous"),
            retiring=tuple(
                (str(gid), datetime.fromisoformat(at)) for gid, at in data.get("retiring", [])
            ),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"{path} is damaged: {exc}") from None


def manifest_signature(directory: Path) -> tuple[int, int] | None:
    """What changes whenever ``current.json`` is replaced: (inode, mtime in ns)."""
    try:
        stat = os.stat(directory / "current.json")
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns)


class DirectoryGenerationStore:
    """The :class:`~shaken.services.lifecycle.GenerationStore` of one lifecycle directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.archive = directory / "archive"

    # ------------------------------------------------------------------------------- lock

    @contextlib.contextmanager
    def lock(self, *, wait: bool = True) -> Iterator[bool]:
        """Hold ``lock`` (flock) while renewing; yields False when ``wait`` is off and another
        process holds it."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, PRIVATE)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------------ generations

    def _dir(self, generation_id: str) -> Path:
        return self.archive / generation_id

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.directory).as_posix()

    def _write_meta(self, generation: Generation) -> None:
        data = {"format": FORMAT, **_encode(asdict(generation))}
        write_atomic(
            self._dir(generation.id) / "meta.json", (json.dumps(data, indent=2) + "\n").encode()
        )

    def new_generation(self, key: PrivateKey, now: datetime) -> Generation:
        """A new ``archive/<id>`` holding ``key`` (0600). On failure nothing is left behind."""
        generation_id = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
        folder = self._dir(generation_id)
        try:
            folder.mkdir(parents=True, mode=0o700)
            create_private(folder / "key.pem", private_key_pem(key))
            generation = Generation(
                id=generation_id, created=now, key_file=self._rel(folder / "key.pem")
            )
            self._write_meta(generation)
            fsync_directory(folder)
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return generation

    def save_chain(self, generation: Generation, chain_pem: bytes) -> Generation:
        path = self._dir(generation.id) / "chain.pem"
        write_atomic(path, chain_pem)
        updated = replace(generation, chain_file=self._rel(path), state="issued")
        self._write_meta(updated)
        return updated

    def update(self, generation: Generation) -> None:
        if self._dir(generation.id).is_dir():
            self._write_meta(generation)

    def get(self, generation_id: str) -> Generation | None:
        path = self._dir(generation_id) / "meta.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return _generation(data) if isinstance(data, dict) else None

    def generations(self) -> list[Generation]:
        if not self.archive.is_dir():
            return []
        found = [self.get(p.name) for p in sorted(self.archive.iterdir()) if p.is_dir()]
        return sorted((g for g in found if g is not None), key=lambda g: g.created)

    def discard(self, generation: Generation) -> None:
        shutil.rmtree(self._dir(generation.id), ignore_errors=True)

    def load_key(self, generation: Generation) -> PrivateKey:
        path = self.directory / generation.key_file
        try:
            return load_private_key(path.read_bytes())
        except OSError as exc:
            raise AcquisitionError(f"cannot read the key {path}: {exc.strerror}") from None

    def load_chain(self, generation: Generation) -> bytes:
        if generation.chain_file is None:
            raise AcquisitionError(f"generation {generation.id} has no certificate")
        path = self.directory / generation.chain_file
        try:
            return path.read_bytes()
        except OSError as exc:
            raise AcquisitionError(f"cannot read {path}: {exc.strerror}") from None

    # ----------------------------------------------------------------------------- switch

    def manifest(self) -> Manifest | None:
        return read_manifest(self.directory)

    def activate(self, manifest: Manifest) -> None:
        """Write ``current.json`` in one step (the switch every worker sees)."""
        for name in (manifest.key_file, manifest.chain_file):
            if not (self.directory / name).is_file():
                raise AcquisitionError(f"refusing to switch to a missing file {name}")
        data = {
            "format": FORMAT,
            "current": manifest.current,
            "key_file": self._rel(self.directory / manifest.key_file),
            "x5u": manifest.x5u,
            "chain_file": self._rel(self.directory / manifest.chain_file),
            "activated_at": manifest.activated_at.isoformat(),
            "previous": manifest.previous,
            "retiring": [[gid, at.isoformat()] for gid, at in manifest.retiring],
        }
        try:
            write_atomic(
                self.directory / "current.json", (json.dumps(data, indent=2) + "\n").encode()
            )
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise AcquisitionError(
                    "cannot switch: the disk is full; the current certificate stays"
                ) from None
            raise
        self._link_current(manifest)
        fsync_directory(self.directory)

    def _link_current(self, manifest: Manifest) -> None:
        """``current`` -> ``archive/<id>``, replaced in one rename: a stable path to the
        current key and chain for programs that read files (an external signer, a backup)."""
        folder = (self.directory / manifest.key_file).parent
        target = os.path.relpath(folder, self.directory)
        temp = self.directory / f".current.{secrets.token_hex(4)}"
        try:
            os.symlink(target, temp)
            os.replace(temp, self.directory / "current")
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def state(self) -> RenewalState:
        try:
            data = json.loads((self.directory / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return RenewalState()
        known = {f.name for f in fields(RenewalState)}
        values: dict[str, Any] = {
            k: (_time(v) if k in _STATE_TIMES else v) for k, v in data.items() if k in known
        }
        return RenewalState(**values)

    def save_state(self, state: RenewalState) -> None:
        data = {"format": FORMAT, **_encode(asdict(state))}
        write_atomic(self.directory / "state.json", (json.dumps(data, indent=2) + "\n").encode())
