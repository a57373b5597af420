"""Trust anchors from a PEM file, a directory of PEM files and an STI-PA trust list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from shaken.adapters.trust_loader import (
    TrustSources,
    fingerprint,
    import_into_directory,
    load_directory,
    load_pem_file,
    load_trust,
    reload_trust,
)
from shaken.core.errors import ConfigurationError
from shaken.core.trustlist import make_trust_list
from shaken.services.trust import TrustStore
from shaken.testing import StiPki, make_sti_pki

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pkis() -> tuple[StiPki, StiPki]:
    return make_sti_pki(NOW), make_sti_pki(NOW, spc="5678")


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_pem_bundle_and_der(tmp_path: Path, pkis: tuple[StiPki, StiPki]) -> None:
    a, b = pkis
    bundle = _write(tmp_path / "roots.pem", a.root_pem + b.root_pem)
    assert load_pem_file(bundle) == (a.root, b.root)
    der = _write(tmp_path / "root.der", a.root.public_bytes(Encoding.DER))
    assert load_pem_file(der) == (a.root,)
    with pytest.raises(ConfigurationError, match=r"junk\.pem"):
        load_pem_file(_write(tmp_path / "junk.pem", b"nope"))
    with pytest.raises(ConfigurationError, match="absent"):
        load_pem_file(tmp_path / "absent.pem")


def test_directory_of_plain_pem_files(tmp_path: Path, pkis: tuple[StiPki, StiPki]) -> None:
    a, b = pkis
    d = tmp_path / "trust"
    _write(d / "a.pem", a.root_pem)
    _write(d / "b.crt", b.root_pem)
    _write(d / "README.txt", b"not a certificate, not read")
    _write(d / ".hidden.pem", b"ignored")
    (d / "1a2b3c4d.0").symlink_to(d / "a.pem")  # an OpenSSL hash link: neither needed nor counted
    (d / "also-a.pem").symlink_to(d / "a.pem")
    _write(d / "crl-signers" / "sti-pa.pem", a.sti_pa_pem)
    anchors, signers = load_directory(d)
    assert sorted(fingerprint(c) for c in anchors) == sorted(
        [fingerprint(a.root), fingerprint(b.root)]
    )
    assert signers == (a.sti_pa,)
    assert load_directory(tmp_path / "absent") == ((), ())
    _write(d / "broken.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigurationError, match=r"broken\.pem"):
        load_directory(d)


def test_trust_list_verified_with_the_sti_pa(tmp_path: Path, pkis: tuple[StiPki, StiPki]) -> None:
    a, b = pkis
    listing = make_trust_list([a.root, b.root], a.sti_pa_key, iat=int(NOW.timestamp()))
    trust_list = _write(tmp_path / "ca-list.jwt", listing.encode())
    sti_pa = _write(tmp_path / "sti-pa.pem", a.sti_pa_pem)
    loaded = load_trust(TrustSources(trust_list=trust_list, sti_pa_cert=sti_pa), now=NOW)
    assert set(loaded.anchors) == {a.root, b.root}
    assert loaded.crl_signers == (a.sti_pa,)  # the STI-PA signs the SHAKEN CRL too
    assert "signature checked" in loaded.source


def test_trust_list_signed_by_someone_else(tmp_path: Path, pkis: tuple[StiPki, StiPki]) -> None:
    a, b = pkis
    forged = make_trust_list([b.root], b.sti_pa_key, iat=int(NOW.timestamp()))
    sources = TrustSources(
        trust_list=_write(tmp_path / "ca-list.jwt", forged.encode()),
        sti_pa_cert=_write(tmp_path / "sti-pa.pem", a.sti_pa_pem),
    )
    with pytest.raises(ConfigurationError, match="signature"):
        load_trust(sources, now=NOW)


def test_unsigned_trust_list_only_when_allowed(tmp_path: Path, pkis: tuple[StiPki, StiPki]) -> None:
    a, _ = pkis
    listing = make_trust_list([a.root], a.sti_pa_key, iat=int(NOW.timestamp()))
    path = _write(tmp_path / "ca-list.json", f'{{"caList": "{listing}"}}'.encode())
    with pytest.raises(ConfigurationError, match="STI-PA certificate"):
        load_trust(TrustSources(trust_list=path), now=NOW)
    loaded = load_trust(TrustSources(trust_list=path, allow_unsigned_list=True), now=NOW)
    assert loaded.anchors == (a.root,) and "UNSIGNED" in loaded.source


def test_expired_trust_list(tmp_path: Path, pkis: tuple[StiPki, StiPki]) -> None:
    a, _ = pkis
    listing = make_trust_list(
        [a.root], a.sti_pa_key, iat=int(NOW.timestamp()) - 7200, exp=int(NOW.timestamp()) - 60
    )
    sources = TrustSources(
        trust_list=_write(tmp_path / "old.jwt", listing.encode()),
        sti_pa_cert=_write(tmp_path / "sti-pa.pem", a.sti_pa_pem),
    )
    with pytest.raises(ConfigurationError, match="expired"):
        load_trust(sources, now=NOW)
    assert load_trust(sources, now=NOW - timedelta(hours=1)).anchors == (a.root,)


def test_sources_combine_and_deduplicate(tmp_path: Path, pkis: tuple[StiPki, StiPki]) -> None:
    a, b = pkis
    d = tmp_path / "dir"
    _write(d / "a.pem", a.root_pem)
    sources = TrustSources(
        pem_files=(_write(tmp_path / "both.pem", a.root_pem + b.root_pem),),
        directories=(d,),
        crl_signer_files=(_write(tmp_path / "pa.pem", b.sti_pa_pem),),
    )
    loaded = load_trust(sources, now=NOW)
    assert loaded.anchors == (a.root, b.root) and loaded.crl_signers == (b.sti_pa,)


def test_nothing_found_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no trust anchors"):
        load_trust(TrustSources(directories=(tmp_path,)), now=NOW)


def test_reload_swaps_only_when_everything_loads(
    tmp_path: Path, pkis: tuple[StiPki, StiPki]
) -> None:
    a, b = pkis
    path = _write(tmp_path / "roots.pem", a.root_pem)
    store = TrustStore()
    first = reload_trust(store, TrustSources(pem_files=(path,)), now=NOW)
    assert store.current is first and first.anchors is not None
    assert first.anchors.certificates == (a.root,)
    path.write_bytes(b"half-written garbage")
    with pytest.raises(ConfigurationError):
        reload_trust(store, TrustSources(pem_files=(path,)), now=NOW)
    assert store.current is first  # the old anchors keep running
    path.write_bytes(b.root_pem)
    second = reload_trust(store, TrustSources(pem_files=(path,)), now=NOW)
    assert store.current is second and second.version > first.version


def test_import_into_directory(tmp_path: Path, pkis: tuple[StiPki, StiPki]) -> None:
    a, b = pkis
    d = tmp_path / "trust"
    written = import_into_directory(d, [a.root, b.root])
    assert sorted(p.name for p in written) == sorted(
        f"{fingerprint(c)}.pem" for c in (a.root, b.root)
    )
    assert import_into_directory(d, [a.root]) == []  # already there
    import_into_directory(d, [a.sti_pa], crl_signer=True)
    anchors, signers = load_directory(d)
    assert set(anchors) == {a.root, b.root} and signers == (a.sti_pa,)
