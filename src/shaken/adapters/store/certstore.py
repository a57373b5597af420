"""The certificate store as a directory: one body and one JSON sidecar per URL, written atomically.

Layout: ``<sha256(url)>.body`` holds the bytes exactly as fetched (the whole PEM chain, or DER,
or a CRL) and ``<sha256(url)>.json`` records ``url``, ``kind``, ``fetched_at``, ``expires_at``,
``etag``, ``content_type`` and the body's SHA-256. Hashing the URL keeps attacker-chosen URLs
out of file names; the sidecar's ``url`` is compared on load, so a collision or a renamed file
cannot serve one URL's chain for another.

Writes are atomic: a temporary file in the same directory, ``fsync``, ``os.replace``. The body is
written before the sidecar, so the sidecar is the commit record; a crash between the two leaves
a sidecar that names the old body's digest, which is then skipped. Anything damaged (truncated
JSON, a digest mismatch, a missing body) is skipped with a warning, never raised: a cache that
cannot start is worse than a cold one (Asterisk deleted and refetched such entries too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from shaken.files import PRIVATE, fsync_directory, write_atomic
from shaken.services.ports import DocumentKind, StoredEntry

__all__ = ["DirectoryCertificateStore", "default_cache_dir"]

log = logging.getLogger("shaken.store")

_FORMAT = 1


def default_cache_dir() -> Path:
    """``$SHAKEN_CACHE_DIR``, else ``~/.cache/shaken/certs``."""
    configured = os.environ.get("SHAKEN_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "shaken" / "certs"


def _key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


class DirectoryCertificateStore:
    """A :class:`~shaken.services.ports.CertificateStore` in one directory.

    The directory is created (mode 0700) on the first write, so merely reading an absent store
    leaves no trace on disk.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _paths(self, url: str) -> tuple[Path, Path]:
        key = _key(url)
        return self.directory / f"{key}.body", self.directory / f"{key}.json"

    def save(self, entry: StoredEntry) -> None:
        """Write ``entry`` atomically. :raises OSError: the disk refused."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        body_path, meta_path = self._paths(entry.url)
        meta = {
            "format": _FORMAT,
            "url": entry.url,
            "kind": entry.kind.value,
            "fetched_at": entry.fetched_at.isoformat(),
            "expires_at": entry.expires_at.isoformat(),
            "etag": entry.etag,
            "content_type": entry.content_type,
            "sha256": hashlib.sha256(entry.body).hexdigest(),
            "size": len(entry.body),
        }
        write_atomic(body_path, entry.body, mode=PRIVATE)
        write_atomic(
            meta_path, json.dumps(meta, indent=1, sort_keys=True).encode("utf-8"), mode=PRIVATE
        )
        fsync_directory(self.directory)

    def load(self, url: str) -> StoredEntry | None:
        """The entry for ``url``, or None when absent or damaged (damage is logged)."""
        _body_path, meta_path = self._paths(url)
        if not meta_path.exists():
            return None
        entry = self._read(meta_path)
        if entry is not None and entry.url != url:
            log.warning(
                "certificate store: %s names %r, not %r; skipped", meta_path, entry.url, url
            )
            return None
        return entry

    def _read(self, meta_path: Path) -> StoredEntry | None:
        try:
            meta: Any = json.loads(meta_path.read_bytes())
            if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
                raise ValueError("not a store sidecar of a known format")
            url = meta["url"]
            if not isinstance(url, str) or _key(url) != meta_path.stem:
                raise ValueError("the sidecar's url does not match its file name")
            body = meta_path.with_suffix(".body").read_bytes()
            if hashlib.sha256(body).hexdigest() != meta["sha256"]:
                raise ValueError("the body does not match its recorded SHA-256")
            fetched_at = datetime.fromisoformat(meta["fetched_at"])
            expires_at = datetime.fromisoformat(meta["expires_at"])
            if fetched_at.tzinfo is None or expires_at.tzinfo is None:
                raise ValueError("naive timestamps")
            etag, content_type = meta.get("etag"), meta.get("content_type")
            return StoredEntry(
                url=url,
                body=body,
                kind=DocumentKind(meta["kind"]),
                fetched_at=fetched_at,
                expires_at=expires_at,
                etag=etag if isinstance(etag, str) else None,
                content_type=content_type if isinstance(content_type, str) else None,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("certificate store: skipping damaged entry %s: %s", meta_path.name, exc)
            return None

    def delete(self, url: str) -> bool:
        """Remove ``url``'s entry; True when there was one."""
        body_path, meta_path = self._paths(url)
        found = False
        for path in (meta_path, body_path):  # the sidecar first: it is the commit record
            try:
                path.unlink()
                found = True
            except FileNotFoundError:
                continue
        return found

    def entries(self) -> list[StoredEntry]:
        """Every readable entry (damaged ones are skipped with a warning)."""
        if not self.directory.is_dir():
            return []
        out: list[StoredEntry] = []
        for meta_path in sorted(self.directory.glob("*.json")):
            if meta_path.name.startswith(".tmp-"):
                continue
            entry = self._read(meta_path)
            if entry is not None:
                out.append(entry)
        return out

    def purge(self) -> int:
        """Delete every entry (and stray temporary files); returns how many entries went."""
        if not self.directory.is_dir():
            return 0
        count = 0
        for path in self.directory.iterdir():
            if path.suffix == ".json" and not path.name.startswith(".tmp-"):
                count += 1
            if path.suffix in (".json", ".body") and path.is_file():
                path.unlink(missing_ok=True)
        return count
