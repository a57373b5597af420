"""The HTTPS fetcher against a real TLS server on loopback.

Loopback is reachable only because each test says so: an injected resolver maps the lab names
to 127.0.0.1 and the policy lists the lab host in ``allowed_hosts`` (or is the lab policy).
The strict default is tested on the same server: a refused URL must leave its connection
counter at zero.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from shaken.adapters.fetch import (
    LAB_POLICY,
    FetchLimits,
    HttpsFetcher,
    fetch_certificate,
)
from shaken.core.errors import CertificateFetchError, X5uRejected
from shaken.core.reasons import Reason
from shaken.core.x5u import X5uPolicy
from shaken.testing import StiPki, make_sti_pki
from tests.support.https import RepositoryServer, Route, mapping_resolver

HOST = "cr.example.test"
NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def pki() -> StiPki:
    return make_sti_pki(NOW)


@pytest.fixture(scope="module")
def server() -> Iterator[RepositoryServer]:
    with RepositoryServer() as srv:
        yield srv


def lab_policy(server: RepositoryServer) -> X5uPolicy:
    """Strict in every respect except that the lab host and the server's port are allowed."""
    return X5uPolicy(allowed_hosts=(HOST,), allowed_ports=(443, 8443, server.port))


def make_fetcher(
    server: RepositoryServer,
    *,
    policy: X5uPolicy | None = None,
    table: dict[str, str | list[str]] | None = None,
    limits: FetchLimits | None = None,
) -> HttpsFetcher:
    resolver, _ = mapping_resolver(table if table is not None else {HOST: "127.0.0.1"})
    return HttpsFetcher(
        policy=policy or lab_policy(server),
        resolver=resolver,
        tls_ca_file=server.ca_file,
        limits=limits or FetchLimits(),
    )


# ------------------------------------------------------------------------------ good answers


@pytest.mark.anyio
async def test_pem_chain_with_headers(server: RepositoryServer, pki: StiPki) -> None:
    path = server.route(
        "/pem/sp.pem",
        Route(
            body=pki.chain_pem,
            headers={
                "Content-Type": "application/pem-certificate-chain",
                "Cache-Control": "public, max-age=86400",
                "Expires": "Wed, 25 Nov 2026 12:00:00 GMT",
                "Date": "Sun, 22 Nov 2026 12:00:00 GMT",
            },
            etag='"v1"',
        ),
    )
    async with make_fetcher(server) as fetcher:
        doc = await fetcher.fetch(server.url(path))
    assert doc.body == pki.chain_pem
    assert doc.content_type == "application/pem-certificate-chain"
    assert doc.cache_control == "public, max-age=86400"
    assert doc.expires == "Wed, 25 Nov 2026 12:00:00 GMT"
    assert doc.date == "Sun, 22 Nov 2026 12:00:00 GMT"
    assert doc.etag == '"v1"' and doc.warnings == () and not doc.not_modified
    (request,) = [r for r in server.requests if r.path == path]
    # The name travels in Host (and SNI); the TCP connection went to the checked address.
    assert request.headers["host"] == f"{HOST}:{server.port}"
    assert request.headers["accept-encoding"] == "identity"
    assert request.headers["connection"] == "close"


@pytest.mark.anyio
async def test_der_body_is_returned_as_is(server: RepositoryServer, pki: StiPki) -> None:
    der = pki.leaf.public_bytes(Encoding.DER)
    path = server.route(
        "/der/leaf.cer", Route(body=der, headers={"Content-Type": "application/pkix-cert"})
    )
    async with make_fetcher(server) as fetcher:
        doc = await fetcher.fetch(server.url(path))
    assert doc.body == der and doc.warnings == ()


@pytest.mark.anyio
@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", None])
async def test_unexpected_content_type_is_a_warning_not_a_refusal(
    server: RepositoryServer, pki: StiPki, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    path = server.route(
        f"/ctype/{bool(content_type)}.pem", Route(body=pki.chain_pem, headers=headers)
    )
    async with make_fetcher(server) as fetcher:
        doc = await fetcher.fetch(server.url(path))
    assert doc.body == pki.chain_pem
    (warning,) = doc.warnings
    assert warning.startswith("content_type:")
    assert (content_type or "no Content-Type") in warning


@pytest.mark.anyio
async def test_etag_gives_not_modified(server: RepositoryServer, pki: StiPki) -> None:
    path = server.route("/etag/sp.pem", Route(body=pki.chain_pem, etag='"abc"'))
    async with make_fetcher(server) as fetcher:
        first = await fetcher.fetch(server.url(path))
        again = await fetcher.fetch(server.url(path), etag=first.etag)
    assert first.body == pki.chain_pem and not first.not_modified
    assert again.not_modified and again.body == b""
    assert [r.headers.get("if-none-match") for r in server.requests if r.path == path] == [
        None,
        '"abc"',
    ]


@pytest.mark.anyio
async def test_next_checked_address_after_a_refused_connection(
    server: RepositoryServer, pki: StiPki
) -> None:
    # 127.0.0.2 is loopback too but nothing listens there: the fetcher moves on to the next
    # address it checked, and TLS still verifies the name.
    path = server.route("/two/sp.pem", Route(body=pki.chain_pem))
    fetcher = make_fetcher(server, table={HOST: ["127.0.0.2", "127.0.0.1"]})
    async with fetcher:
        doc = await fetcher.fetch(server.url(path))
    assert doc.body == pki.chain_pem and fetcher.requests == 2


# ----------------------------------------------------------------------------- bad answers


@pytest.mark.anyio
async def test_404(server: RepositoryServer) -> None:
    async with make_fetcher(server) as fetcher:
        with pytest.raises(CertificateFetchError) as info:
            await fetcher.fetch(server.url("/nothing-here.pem"))
    assert info.value.reason is Reason.CERT_FETCH_FAILED
    assert info.value.fields["status"] == 404


@pytest.mark.anyio
@pytest.mark.parametrize("status", [301, 302, 307])
async def test_redirects_are_not_followed(
    server: RepositoryServer, pki: StiPki, status: int
) -> None:
    target = server.route(f"/redirect-target-{status}.pem", Route(body=pki.chain_pem))
    path = server.route(
        f"/redirect-{status}.pem",
        Route(status=status, headers={"Location": server.url(target)}),
    )
    async with make_fetcher(server) as fetcher:
        with pytest.raises(CertificateFetchError) as info:
            await fetcher.fetch(server.url(path))
    assert info.value.fields["status"] == status
    assert info.value.fields["location"] == server.url(target)
    assert server.count(target) == 0


@pytest.mark.anyio
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "until-close"])
async def test_oversized_body(server: RepositoryServer, declared: bool) -> None:
    path = server.route(f"/big-{declared}.pem", Route(body=b"A" * 70_000, content_length=declared))
    async with make_fetcher(server) as fetcher:
        with pytest.raises(CertificateFetchError) as info:
            await fetcher.fetch(server.url(path))
    assert info.value.fields["size"] is True
    assert "65536" in info.value.detail


@pytest.mark.anyio
async def test_body_cap_is_configurable(server: RepositoryServer, pki: StiPki) -> None:
    path = server.route("/cap/sp.pem", Route(body=pki.chain_pem))
    limits = FetchLimits(max_bytes=len(pki.chain_pem) - 1)
    async with make_fetcher(server, limits=limits) as fetcher:
        with pytest.raises(CertificateFetchError, match="bytes"):
            await fetcher.fetch(server.url(path))
    async with make_fetcher(server, limits=FetchLimits(max_bytes=len(pki.chain_pem))) as fetcher:
        assert (await fetcher.fetch(server.url(path))).body == pki.chain_pem


@pytest.mark.anyio
async def test_slow_drip_hits_the_total_deadline(server: RepositoryServer, pki: StiPki) -> None:
    # 16 bytes every 50 ms would take seconds; each read is quick, so only a deadline over
    # the whole fetch stops it.
    path = server.route("/drip/sp.pem", Route(body=pki.chain_pem, drip=0.05, chunk=16))
    async with make_fetcher(server, limits=FetchLimits(timeout=0.3)) as fetcher:
        with pytest.raises(CertificateFetchError) as info:
            await fetcher.fetch(server.url(path))
    assert info.value.fields.get("timeout") is True
    assert "0.3 s" in info.value.detail


@pytest.mark.anyio
async def test_slow_first_byte_hits_the_deadline(server: RepositoryServer, pki: StiPki) -> None:
    path = server.route("/delay/sp.pem", Route(body=pki.chain_pem, delay=1.0))
    async with make_fetcher(server, limits=FetchLimits(timeout=0.3)) as fetcher:
        with pytest.raises(CertificateFetchError) as info:
            await fetcher.fetch(server.url(path))
    assert info.value.fields.get("timeout") is True


@pytest.mark.anyio
async def test_compressed_body_is_refused(server: RepositoryServer) -> None:
    path = server.route(
        "/gzip.pem",
        Route(body=b"\x1f\x8b junk", headers={"Content-Encoding": "gzip"}),
    )
    async with make_fetcher(server) as fetcher:
        with pytest.raises(CertificateFetchError, match="encoded"):
            await fetcher.fetch(server.url(path))


@pytest.mark.anyio
async def test_tls_is_verified_against_the_name(server: RepositoryServer, pki: StiPki) -> None:
    # The server's certificate names cr.example.test and 127.0.0.1, not other.example.org:
    # connecting to the checked IP must not turn hostname verification off.
    path = server.route("/tls/sp.pem", Route(body=pki.chain_pem))
    other = "other.example.org"
    policy = X5uPolicy(allowed_hosts=(other,), allowed_ports=(server.port,))
    async with make_fetcher(server, policy=policy, table={other: "127.0.0.1"}) as fetcher:
        with pytest.raises(CertificateFetchError, match="certificate verify failed"):
            await fetcher.fetch(server.url(path, host=other))


@pytest.mark.anyio
async def test_tls_needs_a_trusted_ca(server: RepositoryServer, pki: StiPki) -> None:
    path = server.route("/tls2/sp.pem", Route(body=pki.chain_pem))
    resolver, _ = mapping_resolver({HOST: "127.0.0.1"})
    async with HttpsFetcher(policy=lab_policy(server), resolver=resolver) as fetcher:
        with pytest.raises(CertificateFetchError, match="certificate verify failed"):
            await fetcher.fetch(server.url(path))
    assert server.count(path) == 0


@pytest.mark.anyio
async def test_unresolvable_name(server: RepositoryServer) -> None:
    async with make_fetcher(server, table={}) as fetcher:
        with pytest.raises(CertificateFetchError, match="cannot resolve"):
            await fetcher.fetch(server.url("/x.pem"))


@pytest.mark.anyio
async def test_connection_refused(server: RepositoryServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    policy = X5uPolicy(allowed_hosts=(HOST,), allowed_ports=(free_port,))
    async with make_fetcher(server, policy=policy) as fetcher:
        with pytest.raises(CertificateFetchError, match="cannot connect"):
            await fetcher.fetch(f"https://{HOST}:{free_port}/x.pem")


# ------------------------------------------------------------------------- the SSRF filter


@pytest.mark.anyio
@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1"]
)
async def test_names_resolving_to_special_addresses_are_refused_before_connecting(
    server: RepositoryServer, pki: StiPki, address: str
) -> None:
    # The default special-address rule; only the port is opened so that a fetcher that
    # skipped the check would reach this very server (127.0.0.1, ::ffff:127.0.0.1).
    path = server.route("/ssrf/sp.pem", Route(body=pki.chain_pem))
    name = "innocent.example.net"
    policy = X5uPolicy(allowed_ports=(server.port,))
    before = server.connections
    fetcher = make_fetcher(
        server, policy=policy, table={name: address}, limits=FetchLimits(timeout=0.5)
    )
    async with fetcher:
        with pytest.raises(X5uRejected) as info:
            await fetcher.fetch(server.url(path, host=name))
    assert info.value.reason is Reason.X5U_REJECTED
    assert info.value.info.sip_code == 436
    assert info.value.fields["rule"] == "special_address"
    assert info.value.fields["address"] == address
    assert fetcher.requests == 0
    assert server.connections == before


@pytest.mark.anyio
async def test_one_special_address_among_several_refuses_the_name(
    server: RepositoryServer,
) -> None:
    name = "mixed.example.net"
    before = server.connections
    policy = X5uPolicy(allowed_ports=(server.port,))
    table: dict[str, str | list[str]] = {name: ["198.51.101.7", "127.0.0.1"]}
    async with make_fetcher(server, policy=policy, table=table) as fetcher:
        with pytest.raises(X5uRejected, match=r"127\.0\.0\.1"):
            await fetcher.fetch(server.url("/x.pem", host=name))
    assert server.connections == before


@pytest.mark.anyio
async def test_17_15_an_ipv4_compatible_literal_is_refused_before_connecting(
    server: RepositoryServer, pki: StiPki
) -> None:
    """``https://[::127.0.0.2]/``: before, it passed the policy and a connection was tried."""
    path = server.route("/compat/sp.pem", Route(body=pki.chain_pem))
    before = server.connections
    policy = X5uPolicy(allowed_ports=(server.port,))
    async with make_fetcher(server, policy=policy) as fetcher:
        for literal in ("::127.0.0.2", "::7f00:1"):
            with pytest.raises(X5uRejected) as info:
                await fetcher.fetch(f"https://[{literal}]:{server.port}{path}")
            assert info.value.fields["rule"] == "special_address"
    assert fetcher.requests == 0
    assert server.connections == before


@pytest.mark.anyio
async def test_17_15_a_name_resolving_to_an_ipv4_compatible_address_is_refused(
    server: RepositoryServer, pki: StiPki
) -> None:
    path = server.route("/compat/named.pem", Route(body=pki.chain_pem))
    name = "innocent.example.net"
    before = server.connections
    policy = X5uPolicy(allowed_ports=(server.port,))
    fetcher = make_fetcher(server, policy=policy, table={name: "::127.0.0.1"})
    async with fetcher:
        with pytest.raises(X5uRejected) as info:
            await fetcher.fetch(server.url(path, host=name))
    assert info.value.fields["address"] == "::127.0.0.1"
    assert fetcher.requests == 0 and server.connections == before


@pytest.mark.anyio
async def test_17_15_an_ipv4_compatible_address_is_reached_as_its_ipv4_address(
    server: RepositoryServer, pki: StiPki
) -> None:
    """An allowed lab host that resolves to ``::127.0.0.1`` is fetched from 127.0.0.1."""
    path = server.route("/compat/lab.pem", Route(body=pki.chain_pem))
    async with make_fetcher(server, table={HOST: "::127.0.0.1"}) as fetcher:
        doc = await fetcher.fetch(server.url(path))
    assert doc.body == pki.chain_pem


# A subprocess that runs out of file descriptors, then fetches (a cold fetcher first: making
# its TLS context opens the CA file; then a warm one: the connection needs a descriptor).
_EMFILE_PROGRAM = r"""
import asyncio, json, os, resource, sys
from shaken.adapters.fetch import HttpsFetcher
from shaken.core.errors import VerificationFailure
from shaken.core.x5u import X5uPolicy

url, ca_file, port = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def resolve(host, _port):
    return ["127.0.0.1"]

async def attempt(warm):
    fetcher = HttpsFetcher(
        policy=X5uPolicy(allowed_hosts=("cr.example.test",), allowed_ports=(port,)),
        resolver=resolve,
        tls_ca_file=ca_file,
    )
    if warm:
        await fetcher.fetch(url)
    hog = []
    try:
        while True:
            hog.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    try:
        await fetcher.fetch(url)
        outcome = {"raised": None}
    except VerificationFailure as failure:
        outcome = {"raised": "failure", "reason": failure.reason.value, "detail": failure.detail}
    except BaseException as exc:
        outcome = {"raised": type(exc).__name__, "detail": str(exc)}
    for fd in hog:
        os.close(fd)
    await fetcher.aclose()
    return outcome

resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
print(json.dumps([asyncio.run(attempt(False)), asyncio.run(attempt(True))]))
"""


def test_17_5_out_of_file_descriptors_is_cert_fetch_failed(
    server: RepositoryServer, pki: StiPki
) -> None:
    """EMFILE was an OSError outside the error mapping: a traceback, and no SIP answer."""
    path = server.route("/emfile/sp.pem", Route(body=pki.chain_pem))
    url = server.url(path)
    proc = subprocess.run(
        [sys.executable, "-c", _EMFILE_PROGRAM, url, server.ca_file, str(server.port)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    cold, warm = json.loads(proc.stdout)
    for outcome in (cold, warm):
        assert outcome["raised"] == "failure", outcome
        assert outcome["reason"] == "cert_fetch_failed"
        assert "EMFILE" in outcome["detail"] and "Too many open files" in outcome["detail"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://cr.example.test/x.pem", "scheme"),
        ("https://cr.example.test:9443/x.pem", "port"),
        ("https://user:pw@cr.example.test/x.pem", "userinfo"),
        ("https://cr.example.test/x.pem?a=1", "query"),
        ("https://cr.example.test/x.pem#f", "fragment"),
        ("https://127.0.0.1/x.pem", "special_address"),
        ("https://[::ffff:7f00:1]/x.pem", "special_address"),
    ],
)
async def test_url_policy_applies_before_resolution(url: str, rule: str) -> None:
    resolver, asked = mapping_resolver({"cr.example.test": "127.0.0.1"})
    async with HttpsFetcher(resolver=resolver) as fetcher:
        with pytest.raises(X5uRejected) as info:
            await fetcher.fetch(url)
    assert info.value.fields["rule"] == rule
    assert asked == [] and fetcher.requests == 0


# ------------------------------------------------------------------------------- lab mode


def test_lab_policy_reaches_plain_http_on_loopback(pki: StiPki) -> None:
    with RepositoryServer(tls=False) as plain:
        path = plain.route("/lab/sp.pem", Route(body=pki.chain_pem))
        url = f"http://127.0.0.1:{plain.port}{path}"
        with pytest.raises(X5uRejected):
            fetch_certificate(url)
        assert plain.connections == 0
        assert fetch_certificate(url, policy=LAB_POLICY) == pki.chain_pem
        assert plain.count(path) == 1


# ------------------------------------------------------------------------- the sync wrapper


def test_sync_fetch_certificate(server: RepositoryServer, pki: StiPki) -> None:
    path = server.route("/sync/sp.pem", Route(body=pki.chain_pem))
    resolver, _ = mapping_resolver({HOST: "127.0.0.1"})
    body = fetch_certificate(
        server.url(path), policy=lab_policy(server), verify_tls=server.ca_file, resolver=resolver
    )
    assert body == pki.chain_pem
    with pytest.raises(CertificateFetchError):
        fetch_certificate(
            server.url("/missing.pem"),
            policy=lab_policy(server),
            verify_tls=server.ca_file,
            resolver=resolver,
        )


@pytest.mark.anyio
async def test_sync_fetch_certificate_inside_a_running_loop(
    server: RepositoryServer, pki: StiPki
) -> None:
    path = server.route("/sync-in-loop/sp.pem", Route(body=pki.chain_pem))
    resolver, _ = mapping_resolver({HOST: "127.0.0.1"})
    asyncio.get_running_loop()  # we are inside one
    body = fetch_certificate(
        server.url(path), policy=lab_policy(server), verify_tls=server.ca_file, resolver=resolver
    )
    assert body == pki.chain_pem
