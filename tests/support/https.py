"""A real HTTPS certificate repository on loopback, with per-path misbehaviour.

:class:`RepositoryServer` runs an asyncio server on its own thread (so synchronous code such as
the CLI can reach it as well as async tests), bound to 127.0.0.1 on a free port. Its TLS
certificate comes from a throwaway :class:`TestTlsCa` made with ``cryptography`` and names the
lab hosts (``cr.example.test``, ``sti-pa.example.test``, ``localhost``) and 127.0.0.1; clients
trust it through :attr:`RepositoryServer.ca_file`.

Each path answers according to a :class:`Route`: status, headers, body, a delay before the
answer, a slow drip of the body, no Content-Length, an ETag honoured with 304. The server
counts TCP connections as they are accepted (before TLS), so a test can prove that a refused
URL caused no connection at all, and records every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "LAB_NAMES",
    "PEM_CHAIN",
    "RepositoryServer",
    "Request",
    "Route",
    "TestTlsCa",
    "mapping_resolver",
]

PEM_CHAIN = "application/pem-certificate-chain"
LAB_NAMES = ("cr.example.test", "sti-pa.example.test", "localhost")


class TestTlsCa:
    """A throwaway CA for the repository's TLS certificate (not part of any STI PKI)."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TEST TLS CA (TEST ONLY)")])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, names: Iterable[str], addresses: Iterable[str]) -> tuple[bytes, bytes]:
        """A server certificate and key (PEM) for ``names`` and IP ``addresses``."""
        now = datetime.now(UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        names = list(names)
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value), False
            )
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem


@dataclass(slots=True)
class Route:
    """How one path answers.

    ``drip`` > 0 sends the body ``chunk`` bytes at a time with that pause in between;
    ``content_length=False`` omits the header and ends the body by closing; ``etag`` is sent
    and a matching ``If-None-Match`` gets 304; ``delay`` waits before the status line.
    """

    body: bytes = b""
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=lambda: {"Content-Type": PEM_CHAIN})
    delay: float = 0.0
    drip: float = 0.0
    chunk: int = 64
    content_length: bool = True
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]


_REASONS = {
    200: "OK",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    307: "Temporary Redirect",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class RepositoryServer:
    """An HTTPS (or, with ``tls=False``, HTTP) server on 127.0.0.1 for certificate fetch tests.

    Use as a context manager; :meth:`route` sets what a path answers; unknown paths get 404.
    ``sock`` is an already bound listening socket to serve on (so its port can be known, and
    put in certificates, before the server exists).
    """

    def __init__(
        self,
        *,
        tls: bool = True,
        names: Iterable[str] = LAB_NAMES,
        ca: TestTlsCa | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.tls = tls
        self._sock = sock
        self.ca = ca or TestTlsCa()
        self._names = tuple(names)
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._connections = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="repo-")
        self.ca_file = str(Path(self._tmp.name) / "tls-ca.pem")
        Path(self.ca_file).write_bytes(self.ca.pem)
        self._ssl: ssl.SSLContext | None = None
        if tls:
            cert_pem, key_pem = self.ca.issue(self._names, ("127.0.0.1",))
            cert_file = Path(self._tmp.name) / "server.pem"
            cert_file.write_bytes(cert_pem + key_pem)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(cert_file))
            self._ssl = ctx
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------------------------ lifecycle

    def start(self) -> RepositoryServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def serve() -> None:
                if self._sock is not None:
                    self._server = await asyncio.start_server(self._on_client, sock=self._sock)
                else:
                    self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()

            loop.run_until_complete(serve())
            loop.run_forever()
            # Shut down: close the listener and give open handlers a moment to finish.
            assert self._server is not None
            self._server.close()
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="repository-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the repository server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None
        self._tmp.cleanup()

    def __enter__(self) -> RepositoryServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --------------------------------------------------------------------------------- routes

    def route(self, path: str, route: Route) -> str:
        """Set what ``path`` answers; returns the path."""
        with self._lock:
            self._routes[path] = route
        return path

    def url(self, path: str, host: str = "cr.example.test") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    @property
    def connections(self) -> int:
        """TCP connections accepted (counted before any TLS)."""
        with self._lock:
            return self._connections

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def count(self, path: str | None = None) -> int:
        """Requests received, for ``path`` or in all."""
        return sum(1 for r in self.requests if path is None or r.path == path)

    def reset_counters(self) -> None:
        with self._lock:
            self._requests.clear()
            self._connections = 0

    # ------------------------------------------------------------------------------- protocol

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self._connections += 1
        raw = writer.get_extra_info("socket")
        if raw is not None:
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self._ssl is not None:
                await writer.start_tls(self._ssl)
            while await self._one_request(reader, writer):
                pass
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
                writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        request = Request(method=method, path=target, headers=headers)
        with self._lock:
            self._requests.append(request)
            route = self._routes.get(target)
        if route is None:
            route = Route(status=404, body=b"not found", headers={"Content-Type": "text/plain"})
        if route.delay:
            await asyncio.sleep(route.delay)
        status, body = route.status, route.body
        out_headers = dict(route.headers)
        if route.etag is not None:
            out_headers["ETag"] = route.etag
            if headers.get("if-none-match") == route.etag:
                status, body = 304, b""
        close = headers.get("connection", "").lower() == "close" or not route.content_length
        if route.content_length:
            out_headers["Content-Length"] = str(len(body))
        if close:
            out_headers["Connection"] = "close"
        status_line = f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
        header_text = "".join(f"{k}: {v}\r\n" for k, v in out_headers.items())
        head_bytes = (status_line + header_text + "\r\n").encode("latin-1")
        if method == "HEAD":
            body = b""
        if route.drip > 0 and body:
            writer.write(head_bytes)
            await writer.drain()
            for start in range(0, len(body), route.chunk):
                writer.write(body[start : start + route.chunk])
                await writer.drain()
                await asyncio.sleep(route.drip)
        else:
            # One write: a header segment followed by a small body segment would wait for the
            # client's delayed ACK (Nagle), adding ~40 ms that no real repository has.
            writer.write(head_bytes + body)
            await writer.drain()
        return not close


def mapping_resolver(
    table: Mapping[str, str | list[str]],
) -> tuple[Callable[[str, int], Awaitable[list[str]]], list[str]]:
    """A resolver that answers from ``table`` and the list of names it was asked for.

    Unknown names fail as the system resolver would (``OSError``).
    """
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        answer = table.get(host)
        if answer is None:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return [answer] if isinstance(answer, str) else list(answer)

    return resolve, asked
