"""The certificate repository over real HTTPS on a loopback port: media types, caching headers,
revalidation, files that appear or change while it runs, and what it refuses to serve."""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shaken.core.jws import generate_private_key, private_key_pem
from shaken.testing import make_sti_pki
from shaken.toolkit.repository import RepositoryServer, serve_repository
from shaken.toolkit.x509build import (
    build_tls_ca,
    build_tls_server_certificate,
    certificates_pem,
)

NOW = datetime.now(UTC)


@dataclass
class Served:
    server: RepositoryServer
    root: Path
    context: ssl.SSLContext

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.server.port, context=self.context, timeout=10
        )
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return response, response.read()
        finally:
            connection.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    ca_key, key = generate_private_key(), generate_private_key()
    start, end = NOW - timedelta(hours=1), NOW + timedelta(days=2)
    ca = build_tls_ca(ca_key, cn="TEST TLS CA", org="Test", not_before=start, not_after=end)
    server = build_tls_server_certificate(
        key.public_key(),
        hosts=["127.0.0.1", "localhost"],
        org="Test",
        ca=ca,
        ca_key=ca_key,
        not_before=start,
        not_after=end,
    )
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(certificates_pem(ca))
    paths["cert"].write_bytes(certificates_pem(server))
    paths["key"].write_bytes(private_key_pem(key))
    return paths


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tls: dict[str, Path]) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("served")
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    pki = make_sti_pki(NOW)
    (root / "sp.pem").write_bytes(pki.chain_pem)
    (root / "crl.der").write_bytes(pki.sti_pa_crl())
    (root / "trust.jwt").write_text("a.b.c\n")
    (root / "notes.txt").write_text("not a certificate\n")
    (root / ".hidden.pem").write_bytes(pki.chain_pem)
    (root / "sub" / "x.pem").write_bytes(pki.root_pem)
    (tmp_path / "secret.pem").write_bytes(pki.leaf_key_pem)
    (root / "link.pem").symlink_to(tmp_path / "secret.pem")
    server = serve_repository(
        root, host="127.0.0.1", port=0, tls_cert=tls["cert"], tls_key=tls["key"]
    ).start()
    context = ssl.create_default_context(cafile=str(tls["ca"]))
    try:
        yield Served(server=server, root=root, context=context)
    finally:
        server.close()


def test_chain_headers(served: Served) -> None:
    response, body = served.request("GET", "/sp.pem")
    expected = (served.root / "sp.pem").read_bytes()
    assert response.status == 200
    assert body == expected
    assert response.getheader("Content-Type") == "application/pem-certificate-chain"
    assert response.getheader("Cache-Control") == "max-age=86400"
    assert response.getheader("ETag") == f'"{hashlib.sha256(expected).hexdigest()}"'
    mtime = int((served.root / "sp.pem").stat().st_mtime)
    assert response.getheader("Last-Modified") == email.utils.formatdate(mtime, usegmt=True)
    assert response.getheader("Content-Length") == str(len(expected))
    assert response.getheader("Server") == "shaken-repository"
    assert served.server.base_url == f"https://127.0.0.1:{served.server.port}/"


def test_crl_and_trust_list_types(served: Served) -> None:
    response, body = served.request("GET", "/crl.der")
    assert response.getheader("Content-Type") == "application/pkix-crl"
    assert body == (served.root / "crl.der").read_bytes()
    response, _ = served.request("GET", "/trust.jwt")
    assert response.getheader("Content-Type") == "application/jwt"
    response, body = served.request("GET", "/sub/x.pem")
    assert response.status == 200 and body.startswith(b"-----BEGIN CERTIFICATE-----")


def test_head(served: Served) -> None:
    response, body = served.request("HEAD", "/sp.pem")
    assert response.status == 200 and body == b""
    assert response.getheader("Content-Length") == str((served.root / "sp.pem").stat().st_size)
    assert response.getheader("ETag")


def test_revalidation(served: Served) -> None:
    first, _ = served.request("GET", "/sp.pem")
    etag, modified = first.getheader("ETag"), first.getheader("Last-Modified")
    assert etag is not None and modified is not None
    response, body = served.request("GET", "/sp.pem", {"If-None-Match": etag})
    assert response.status == 304 and body == b""
    assert response.getheader("ETag") == etag
    assert response.getheader("Cache-Control") == "max-age=86400"
    assert response.getheader("Content-Type") is None
    listed, _ = served.request("GET", "/sp.pem", {"If-None-Match": f'"other", W/{etag}'})
    assert listed.status == 304
    other, body = served.request("GET", "/sp.pem", {"If-None-Match": '"other"'})
    assert other.status == 200 and body
    since, _ = served.request("GET", "/sp.pem", {"If-Modified-Since": modified})
    assert since.status == 304
    earlier = email.utils.formatdate((served.root / "sp.pem").stat().st_mtime - 3600, usegmt=True)
    stale, _ = served.request("GET", "/sp.pem", {"If-Modified-Since": earlier})
    assert stale.status == 200
    # RFC 9110 13.2.2: If-None-Match decides; a matching date does not rescue a changed tag.
    both, _ = served.request(
        "GET", "/sp.pem", {"If-None-Match": '"other"', "If-Modified-Since": modified}
    )
    assert both.status == 200
    garbage, _ = served.request("GET", "/sp.pem", {"If-Modified-Since": "yesterday"})
    assert garbage.status == 200


def test_new_and_changed_files_without_restart(served: Served) -> None:
    missing, _ = served.request("GET", "/new.pem")
    assert missing.status == 404
    (served.root / "new.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nAA==\n")
    appeared, body = served.request("GET", "/new.pem")
    assert appeared.status == 200 and body.startswith(b"-----BEGIN")
    path = served.root / "changing.pem"
    path.write_bytes(make_sti_pki(NOW).chain_pem)
    before, _ = served.request("GET", "/changing.pem")
    path.write_bytes(make_sti_pki(NOW).chain_pem)
    later = path.stat().st_mtime + 10
    os.utime(path, (later, later))
    etag = before.getheader("ETag") or ""
    after, body = served.request("GET", "/changing.pem", {"If-None-Match": etag})
    assert after.status == 200 and body == path.read_bytes()
    assert after.getheader("ETag") != etag
    assert after.getheader("Last-Modified") == email.utils.formatdate(int(later), usegmt=True)
    path.unlink()
    gone, _ = served.request("GET", "/changing.pem")
    assert gone.status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/sub",
        "/sub/",
        "/notes.txt",
        "/.hidden.pem",
        "/../secret.pem",
        "/%2e%2e/secret.pem",
        "/sub/..%2f..%2fsecret.pem",
        "/sub/%2e%2e/%2e%2e/secret.pem",
        "/link.pem",
        "/sp.pem%00.pem",
        "/%ff.pem",
    ],
)
def test_refused_paths(served: Served, path: str) -> None:
    response, body = served.request("GET", path)
    assert response.status == 404, path
    assert b"BEGIN" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"])
def test_other_methods(served: Served, method: str) -> None:
    response, _ = served.request(method, "/sp.pem")
    assert response.status == 405
    assert response.getheader("Allow") == "GET, HEAD"


def test_query_is_ignored(served: Served) -> None:
    response, _ = served.request("GET", "/sp.pem?x=1")
    assert response.status == 200


def test_tls_is_real(served: Served) -> None:
    untrusting = ssl.create_default_context()  # the system roots do not know our test CA
    connection = http.client.HTTPSConnection(
        "127.0.0.1", served.server.port, context=untrusting, timeout=10
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        connection.request("GET", "/sp.pem")
    connection.close()
    # The server survives a failed handshake.
    response, _ = served.request("GET", "/sp.pem")
    assert response.status == 200


def test_plain_http_and_max_age(tmp_path: Path) -> None:
    (tmp_path / "a.pem").write_bytes(b"x")
    with serve_repository(tmp_path, port=0, max_age=60).start() as server:
        assert server.scheme == "http"
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/a.pem")
        response = connection.getresponse()
        assert response.status == 200 and response.read() == b"x"
        assert response.getheader("Cache-Control") == "max-age=60"
        connection.close()


def test_arguments_are_checked(tmp_path: Path, tls: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        serve_repository(tmp_path / "absent", port=0)
    with pytest.raises(ValueError, match="both"):
        serve_repository(tmp_path, port=0, tls_cert=tls["cert"])
    with pytest.raises(ValueError, match="negative"):
        serve_repository(tmp_path, port=0, max_age=-1)
