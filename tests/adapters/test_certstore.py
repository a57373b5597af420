"""The directory certificate store: atomic files, hashed names, damage skipped with a warning."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shaken.adapters.store import DirectoryCertificateStore, default_cache_dir
from shaken.services.ports import DocumentKind, StoredEntry

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
URL = "https://cr.example.test/sp.pem"


def entry(
    url: str = URL, body: bytes = b"-----BEGIN CERTIFICATE-----\n...", **kw: object
) -> StoredEntry:
    fields: dict[str, object] = {
        "url": url,
        "body": body,
        "fetched_at": NOW,
        "expires_at": NOW + timedelta(days=1),
        "etag": '"v1"',
        "content_type": "application/pem-certificate-chain",
    }
    fields.update(kw)
    return StoredEntry(**fields)  # type: ignore[arg-type]


def test_round_trip(tmp_path: Path) -> None:
    store = DirectoryCertificateStore(tmp_path / "certs")
    saved = entry()
    store.save(saved)
    assert store.load(URL) == saved
    assert store.entries() == [saved]
    key = hashlib.sha256(URL.encode()).hexdigest()
    assert sorted(p.name for p in (tmp_path / "certs").iterdir()) == [f"{key}.body", f"{key}.json"]
    meta = json.loads((tmp_path / "certs" / f"{key}.json").read_text())
    assert meta["url"] == URL and meta["sha256"] == hashlib.sha256(saved.body).hexdigest()


def test_crl_entries_keep_their_kind(tmp_path: Path) -> None:
    store = DirectoryCertificateStore(tmp_path)
    store.save(entry("https://sti-pa.example.test/crl", b"\x30\x82", kind=DocumentKind.CRL))
    (loaded,) = store.entries()
    assert loaded.kind is DocumentKind.CRL and loaded.body == b"\x30\x82"


def test_overwrite_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = DirectoryCertificateStore(tmp_path)
    store.save(entry(body=b"old"))
    store.save(entry(body=b"new", etag='"v2"'))
    loaded = store.load(URL)
    assert loaded is not None and loaded.body == b"new" and loaded.etag == '"v2"'
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_files_are_private(tmp_path: Path) -> None:
    store = DirectoryCertificateStore(tmp_path / "certs")
    store.save(entry())
    assert stat.S_IMODE((tmp_path / "certs").stat().st_mode) == 0o700
    for path in (tmp_path / "certs").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_reading_an_absent_store_creates_nothing(tmp_path: Path) -> None:
    store = DirectoryCertificateStore(tmp_path / "absent")
    assert store.load(URL) is None and store.entries() == [] and store.purge() == 0
    assert not (tmp_path / "absent").exists()


def test_delete_and_purge(tmp_path: Path) -> None:
    store = DirectoryCertificateStore(tmp_path)
    store.save(entry())
    store.save(entry("https://cr.example.test/b.pem"))
    assert store.delete(URL) and not store.delete(URL)
    assert [e.url for e in store.entries()] == ["https://cr.example.test/b.pem"]
    assert store.purge() == 1 and store.entries() == []


def _paths(directory: Path, url: str = URL) -> tuple[Path, Path]:
    key = hashlib.sha256(url.encode()).hexdigest()
    return directory / f"{key}.body", directory / f"{key}.json"


def _damage_json(d: Path) -> None:
    _paths(d)[1].write_text("{not json")


def _damage_body(d: Path) -> None:
    _paths(d)[0].write_bytes(b"tampered")


def _drop_body(d: Path) -> None:
    _paths(d)[0].unlink()


def _naive_time(d: Path) -> None:
    meta = json.loads(_paths(d)[1].read_text())
    meta["expires_at"] = "2026-11-23T12:00:00"
    _paths(d)[1].write_text(json.dumps(meta))


def _other_url(d: Path) -> None:
    meta = json.loads(_paths(d)[1].read_text())
    meta["url"] = "https://evil.example.test/sp.pem"
    _paths(d)[1].write_text(json.dumps(meta))


def _unknown_format(d: Path) -> None:
    meta = json.loads(_paths(d)[1].read_text())
    meta["format"] = 99
    _paths(d)[1].write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "damage",
    [_damage_json, _damage_body, _drop_body, _naive_time, _other_url, _unknown_format],
    ids=lambda f: f.__name__.strip("_"),
)
def test_damaged_entries_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    store = DirectoryCertificateStore(tmp_path)
    store.save(entry())
    store.save(entry("https://cr.example.test/fine.pem"))
    damage(tmp_path)  # type: ignore[operator]
    with caplog.at_level(logging.WARNING, logger="shaken.store"):
        assert store.load(URL) is None
        assert [e.url for e in store.entries()] == ["https://cr.example.test/fine.pem"]
    assert "skipping damaged entry" in caplog.text


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHAKEN_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("SHAKEN_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "shaken" / "certs"


def test_a_failed_write_raises_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DirectoryCertificateStore(tmp_path)
    store.save(entry(body=b"old"))

    def full_disk(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        store.save(entry(body=b"new"))
    monkeypatch.undo()
    loaded = store.load(URL)
    assert loaded is not None and loaded.body == b"old"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
