"""``shaken cache``, ``shaken trust`` and ``shaken verify`` through the cache, in-process.

The verify cases fetch from a real HTTPS repository on loopback, reachable only with ``--lab``
(and its TLS CA with ``--tls-ca``); the strict default still refuses it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shaken.adapters.cli import main
from shaken.core.sign import sign_shaken
from shaken.core.trustlist import make_trust_list
from shaken.testing import StiPki, make_sti_pki
from tests.support.fakes import ManualClock
from tests.support.https import RepositoryServer, Route

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
EPOCH = str(int(NOW.timestamp()))
ORIG, DEST = "12025550100", "12025550101"
X5U = "https://cr.example.test/sp.pem"


@pytest.fixture(scope="module")
def server() -> Iterator[RepositoryServer]:
    with RepositoryServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def pki(server: RepositoryServer) -> StiPki:
    return make_sti_pki(NOW, crl_url=f"https://127.0.0.1:{server.port}/crl")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads or writes the real home directory."""
    monkeypatch.setenv("SHAKEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SHAKEN_TRUST_DIR", str(tmp_path / "trust"))


@pytest.fixture
def files(tmp_path: Path, pki: StiPki) -> dict[str, Path]:
    out = {
        "chain": tmp_path / "chain.pem",
        "root": tmp_path / "root.pem",
        "sti_pa": tmp_path / "sti-pa.pem",
        "crl": tmp_path / "sti-pa.crl",
        "junk": tmp_path / "junk.pem",
    }
    out["chain"].write_bytes(pki.chain_pem)
    out["root"].write_bytes(pki.root_pem)
    out["sti_pa"].write_bytes(pki.sti_pa_pem)
    out["crl"].write_bytes(pki.sti_pa_crl())
    out["junk"].write_bytes(b"junk")
    return out


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command at ``NOW``: the material is dated, so the command's clock is injected."""
    code = main(list(argv), clock=ManualClock(NOW))
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- shaken cache


def test_cache_import_list_show_purge(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path, pki: StiPki
) -> None:
    code, out, _ = run(capsys, "cache", "list")
    assert code == 0 and "is empty" in out
    code, out, _ = run(capsys, "cache", "import", str(files["chain"]), "--url", X5U)
    assert code == 0 and X5U in out
    crl_url = "https://sti-pa.example.test/crl"
    assert run(capsys, "cache", "import", str(files["crl"]), "--url", crl_url, "--crl")[0] == 0
    code, out, _ = run(capsys, "cache", "list", "--json")
    records = {r["url"]: r for r in json_lines(out)}
    assert set(records) == {X5U, crl_url}
    cert = records[X5U]
    assert cert["kind"] == "certificate" and cert["fresh"] is True
    assert [c["spc"] for c in cert["certificates"]] == ["1234", None]  # type: ignore[index]
    assert records[crl_url]["kind"] == "crl"
    code, out, _ = run(capsys, "cache", "list")
    assert "SHAKEN 1234" in out and "CRL of" in out
    code, out, _ = run(capsys, "cache", "show", X5U)
    assert code == 0 and "CN=SHAKEN 1234" in out and "SPC      1234" in out
    code, out, _ = run(capsys, "cache", "show", X5U, "--pem")
    assert out.encode() == pki.chain_pem
    code, out, _ = run(capsys, "cache", "show", X5U, "--json")
    assert json_lines(out)[0]["url"] == X5U
    assert run(capsys, "cache", "purge", X5U)[0] == 0
    code, _, err = run(capsys, "cache", "show", X5U)
    assert code == 1 and "not in the cache" in err
    assert run(capsys, "cache", "purge", X5U)[0] == 1
    code, out, _ = run(capsys, "cache", "purge")
    assert code == 0 and "purged 1 entry" in out
    # Everything went where $SHAKEN_CACHE_DIR says, and --cache-dir overrides it.
    assert (tmp_path / "cache").is_dir()
    other = tmp_path / "elsewhere"
    run(capsys, "cache", "import", str(files["chain"]), "--url", X5U, "--cache-dir", str(other))
    assert len(list(other.glob("*.json"))) == 1


def test_cache_import_refusals(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    code, _, err = run(capsys, "cache", "import", str(files["junk"]), "--url", X5U)
    assert code == 2 and "junk" in err
    code, _, err = run(capsys, "cache", "import", str(files["chain"]), "--url", "http://x.test/a")
    assert code == 2 and "--lab" in err
    lab_url = "http://127.0.0.1:8080/a.pem"
    assert run(capsys, "cache", "import", str(files["chain"]), "--url", lab_url, "--lab")[0] == 0
    code, _, err = run(capsys, "cache", "import", str(files["chain"]), "--url", X5U, "--ttl", "0")
    assert code == 2


def test_cache_import_refuses_an_expired_chain(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    old = make_sti_pki(datetime(2020, 1, 1, tzinfo=UTC))
    path = tmp_path / "old.pem"
    path.write_bytes(old.chain_pem)
    code, _, err = run(capsys, "cache", "import", str(path), "--url", X5U)
    assert code == 2 and "expired" in err


# ----------------------------------------------------------------------------- shaken trust


def test_trust_import_and_list(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path, pki: StiPki
) -> None:
    code, out, _ = run(capsys, "trust", "list")
    assert code == 0 and "no trust anchors" in out
    code, out, _ = run(capsys, "trust", "import", str(files["root"]))
    assert code == 0 and "1 anchor(s)" in out
    run(capsys, "trust", "import", str(files["sti_pa"]), "--crl-signer")
    code, out, _ = run(capsys, "trust", "list", "--json")
    roles = {r["role"]: r for r in json_lines(out)}
    assert roles["anchor"]["subject"] == pki.root.subject.rfc4514_string()
    assert roles["crl_signer"]["subject"] == pki.sti_pa.subject.rfc4514_string()
    code, _, err = run(capsys, "trust", "import", str(files["chain"]))
    assert code == 2 and "not a CA" in err  # the SP leaf is no root


def test_trust_import_of_a_trust_list(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path, pki: StiPki
) -> None:
    other = make_sti_pki(NOW, spc="5678")
    listing = tmp_path / "ca-list.json"
    jws = make_trust_list([pki.root, other.root], pki.sti_pa_key, iat=int(NOW.timestamp()) - 60)
    listing.write_text(json.dumps({"caList": jws}))
    code, _, err = run(capsys, "trust", "import", str(listing))
    assert code == 2 and "--sti-pa-cert" in err
    forged = tmp_path / "forged.pem"
    forged.write_bytes(other.sti_pa_pem)
    code, _, err = run(capsys, "trust", "import", str(listing), "--sti-pa-cert", str(forged))
    assert code == 2 and "signature" in err
    code, out, _ = run(
        capsys, "trust", "import", str(listing), "--sti-pa-cert", str(files["sti_pa"])
    )
    assert code == 0 and "2 anchor(s)" in out and "signature checked" in out
    code, out, _ = run(capsys, "trust", "list", "--json")
    assert sorted(r["role"] for r in json_lines(out)) == ["anchor", "anchor", "crl_signer"]


# ---------------------------------------------------------------------------- shaken verify


def _identity(pki: StiPki, url: str) -> str:
    return sign_shaken(key=pki.leaf_key, x5u=url, orig=ORIG, dest=DEST, attest="A", iat=int(EPOCH))


def _verify(
    capsys: pytest.CaptureFixture[str], value: str, *extra: str
) -> tuple[int, dict[str, object]]:
    code, out, err = run(
        capsys,
        "verify",
        "--identity",
        value,
        "--orig",
        ORIG,
        "--dest",
        DEST,
        "--at",
        EPOCH,
        "--json",
        *extra,
    )
    assert out, err
    return code, json.loads(out)


def test_verify_fetches_once_then_answers_from_the_cache(
    capsys: pytest.CaptureFixture[str],
    files: dict[str, Path],
    server: RepositoryServer,
    pki: StiPki,
    tmp_path: Path,
) -> None:
    path = "/cli/sp.pem"
    server.route(path, Route(body=pki.chain_pem))
    server.route("/crl", Route(body=pki.sti_pa_crl()))
    url = f"https://127.0.0.1:{server.port}{path}"
    value = _identity(pki, url)
    lab = (
        "--lab",
        "--tls-ca",
        server.ca_file,
        "--ca",
        str(files["root"]),
        "--sti-pa-cert",
        str(files["sti_pa"]),
    )
    # Without --lab the loopback repository is refused before any connection.
    before = server.connections
    code, out = _verify(capsys, value, "--ca", str(files["root"]))
    assert code == 1 and out["reason"] == "x5u_rejected" and server.connections == before
    code, out = _verify(capsys, value, *lab)
    assert code == 0 and out["verstat"] == "TN-Validation-Passed", out
    assert server.count(path) == 1
    # The repository goes away; the persisted cache answers.
    server.route(path, Route(status=503))
    code, out = _verify(capsys, value, *lab)
    assert code == 0 and out["verstat"] == "TN-Validation-Passed"
    assert server.count(path) == 1
    code, listing, _ = run(capsys, "cache", "list", "--json")
    assert {r["kind"] for r in json_lines(listing)} == {"certificate", "crl"}


def test_verify_reports_a_revoked_certificate(
    capsys: pytest.CaptureFixture[str],
    files: dict[str, Path],
    server: RepositoryServer,
    pki: StiPki,
) -> None:
    path = "/cli-revoked/sp.pem"
    server.route(path, Route(body=pki.chain_pem))
    server.route("/crl", Route(body=pki.sti_pa_crl(revoked=[pki.leaf.serial_number])))
    url = f"https://127.0.0.1:{server.port}{path}"
    code, out = _verify(
        capsys,
        _identity(pki, url),
        "--lab",
        "--tls-ca",
        server.ca_file,
        "--ca",
        str(files["root"]),
        "--sti-pa-cert",
        str(files["sti_pa"]),
        "--no-cache",
    )
    assert code == 1 and out["reason"] == "cert_revoked" and out["sip_code"] == 437


def test_verify_with_an_unreachable_crl_soft_and_hard(
    capsys: pytest.CaptureFixture[str],
    files: dict[str, Path],
    server: RepositoryServer,
    pki: StiPki,
) -> None:
    path = "/cli-nocrl/sp.pem"
    server.route(path, Route(body=pki.chain_pem))
    server.route("/crl", Route(status=404))
    value = _identity(pki, f"https://127.0.0.1:{server.port}{path}")
    common = ("--lab", "--tls-ca", server.ca_file, "--ca", str(files["root"]), "--no-cache")
    code, out = _verify(capsys, value, *common, "--crl", "soft")
    assert code == 0 and any("crl_unavailable" in f for f in out["findings"])  # type: ignore[attr-defined]
    code, out = _verify(capsys, value, *common, "--crl", "hard")
    assert code == 1 and out["reason"] == "cert_untrusted"


def test_verify_offline_from_an_imported_entry_and_the_trust_dir(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], pki: StiPki, tmp_path: Path
) -> None:
    # cr.example.test does not resolve here: only the imported entry can answer.
    run(capsys, "cache", "import", str(files["chain"]), "--url", X5U)
    run(capsys, "trust", "import", str(files["root"]))
    code, out = _verify(capsys, _identity(pki, X5U), "--crl", "off")
    assert code == 0 and out["spc"] == "1234", out
    # With an explicit --ca, the trust directory is not read.
    other = make_sti_pki(NOW, spc="5678")
    wrong = tmp_path / "other-root.pem"
    wrong.write_bytes(other.root_pem)
    code, out = _verify(capsys, _identity(pki, X5U), "--crl", "off", "--ca", str(wrong))
    assert code == 1 and out["reason"] == "cert_untrusted"


def test_verify_with_a_trust_list(
    capsys: pytest.CaptureFixture[str], files: dict[str, Path], pki: StiPki, tmp_path: Path
) -> None:
    run(capsys, "cache", "import", str(files["chain"]), "--url", X5U)
    listing = tmp_path / "ca-list.jwt"
    listing.write_text(make_trust_list([pki.root], pki.sti_pa_key, iat=int(EPOCH) - 60))
    code, out = _verify(
        capsys,
        _identity(pki, X5U),
        "--crl",
        "off",
        "--trust-list",
        str(listing),
        "--sti-pa-cert",
        str(files["sti_pa"]),
    )
    assert code == 0 and out["verstat"] == "TN-Validation-Passed"
    code, _, err = run(
        capsys,
        "verify",
        "--identity",
        _identity(pki, X5U),
        "--orig",
        ORIG,
        "--dest",
        DEST,
        "--at",
        EPOCH,
        "--trust-list",
        str(listing),
    )
    assert code == 2 and "STI-PA certificate" in err


def test_verify_without_anchors_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], pki: StiPki
) -> None:
    code, _, err = run(
        capsys,
        "verify",
        "--identity",
        _identity(pki, X5U),
        "--orig",
        ORIG,
        "--dest",
        DEST,
        "--at",
        EPOCH,
    )
    assert code == 2 and "--ca FILE" in err


def test_verify_no_cache_leaves_no_files(
    capsys: pytest.CaptureFixture[str],
    files: dict[str, Path],
    server: RepositoryServer,
    pki: StiPki,
    tmp_path: Path,
) -> None:
    server.route("/cli-nocache/sp.pem", Route(body=pki.chain_pem))
    value = _identity(pki, f"https://127.0.0.1:{server.port}/cli-nocache/sp.pem")
    code, out = _verify(
        capsys,
        value,
        "--lab",
        "--tls-ca",
        server.ca_file,
        "--ca",
        str(files["root"]),
        "--no-cache",
        "--crl",
        "off",
    )
    assert code == 0 and out["verified"] is True
    assert not (tmp_path / "cache").exists()
