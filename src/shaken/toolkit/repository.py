"""A certificate repository (STI-CR): serves x5u chains and CRLs from a directory over HTTPS.

What a verifier expects from an x5u URL (ATIS-1000080,
RFC 8224 section 7.4) and what this server does:

* ``https`` on 443 or 8443: TLS is on whenever a certificate and key are given (a lab makes
  both); plain HTTP is only for running behind a TLS-terminating proxy;
* ``Content-Type: application/pem-certificate-chain`` for ``*.pem`` (leaf first, as written by
  the CA), ``application/pkix-crl`` for ``*.crl`` and ``*.der`` CRLs, ``application/jwt`` for a
  ``*.jwt`` trust list;
* at least one Cache-Control directive: ``max-age=N`` (a day by default, the ATIS minimum
  cache lifetime), plus a strong ``ETag`` (the SHA-256 of the body) and ``Last-Modified`` (the
  file's mtime), so caches can revalidate with ``If-None-Match``/``If-Modified-Since`` and get
  a 304;
* stable URLs: a file is read (and hashed) when it is requested, so a new or replaced file is
  served at once without a restart, and an old file stays served until it is deleted.

What it refuses: methods other than GET and HEAD (405), directory listings, names outside the
directory (``..``, encoded slashes, symlinks that leave it), hidden files, other file types
(404). It never follows a redirect because it never issues one.

Built on the standard library's ``ThreadingHTTPServer``: one thread per connection is plenty
for a repository that serves a handful of small files to caches that revalidate daily. The
TLS handshake runs in the connection's thread, so a slow client cannot stall ``accept``.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import re
import socket
import ssl
import sys
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

__all__ = ["CONTENT_TYPES", "RepositoryServer", "serve_repository"]

#: File suffix -> Content-Type. Anything else is not served.
CONTENT_TYPES = {
    ".pem": "application/pem-certificate-chain",
    ".crl": "application/pkix-crl",
    ".der": "application/pkix-crl",
    ".jwt": "application/jwt",
    # Branded calling (RFC 9795): the logos and jCards an rcd claim references.
    ".png": "image/png",
    ".json": "application/json",
}
#: A repository serves certificate chains and CRLs, a few KiB each; refuse anything huge.
MAX_FILE_BYTES = 1024 * 1024
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class _Entity:
    body: bytes
    content_type: str
    etag: str
    mtime: int


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "shaken-repository"
    timeout = 30  # seconds a connection may stay idle (a stalled handshake included)

    def version_string(self) -> str:
        return self.server_version  # no Python version for the world to fingerprint

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _not_allowed(self) -> None:
        # The request may carry a body we will not read: close rather than misparse it.
        self.close_connection = True
        headers = {"Allow": "GET, HEAD", "Connection": "close"}
        self._reply(HTTPStatus.METHOD_NOT_ALLOWED, b"method not allowed\n", headers)

    def parse_request(self) -> bool:
        """Answer every method but GET and HEAD with 405 (the stdlib would say 501)."""
        if not super().parse_request():
            return False
        if self.command not in ("GET", "HEAD"):
            self._not_allowed()
            return False
        return True

    def _reply(
        self,
        status: HTTPStatus,
        body: bytes,
        headers: dict[str, str] | None = None,
        *,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        merged = {"Content-Type": "text/plain; charset=utf-8"}
        merged.update(headers or {})
        if status is HTTPStatus.NOT_MODIFIED:
            # RFC 9110 section 15.4.5: a 304 has no body and repeats the validators and
            # Cache-Control, not the representation's Content-Type or length.
            del merged["Content-Type"]
        for name, value in merged.items():
            self.send_header(name, value)
        if status is not HTTPStatus.NOT_MODIFIED:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and status is not HTTPStatus.NOT_MODIFIED:
            self.wfile.write(body)

    def _serve(self, *, head: bool) -> None:
        entity = self.server.lookup(self.path)
        if entity is None:
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n", head=head)
            return
        headers = {
            "Content-Type": entity.content_type,
            "Cache-Control": f"max-age={self.server.max_age}",
            "ETag": entity.etag,
            "Last-Modified": email.utils.formatdate(entity.mtime, usegmt=True),
        }
        if self._not_modified(entity):
            self._reply(HTTPStatus.NOT_MODIFIED, b"", headers, head=True)
            return
        self._reply(HTTPStatus.OK, entity.body, headers, head=head)

    def _not_modified(self, entity: _Entity) -> bool:
        # RFC 9110 section 13.2.2: If-None-Match decides when present; If-Modified-Since
        # is only looked at without it.
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
            return "*" in tags or entity.etag in tags
        since = self.headers.get("If-Modified-Since")
        if since is None:
            return False
        try:
            parsed = email.utils.parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
        return parsed.tzinfo is not None and entity.mtime <= int(parsed.timestamp())

    def log_message(self, format: str, *args: object) -> None:
        if self.server.log is not None:
            address = self.client_address[0] if self.client_address else "-"
            print(f"{address} {format % args}", file=self.server.log, flush=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        root: Path,
        *,
        max_age: int,
        tls: ssl.SSLContext | None,
        log: TextIO | None,
    ) -> None:
        self.root = root.resolve()
        self.max_age = max_age
        self.log = log
        self.tls = tls
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is None:
            return sock, address
        # The handshake happens on the first read, in the connection's own thread.
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that drops the connection or fails the TLS handshake is not our error.
        error = sys.exc_info()[1]
        if isinstance(error, ssl.SSLError | ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]

    def lookup(self, raw_path: str) -> _Entity | None:
        """The file a request path names, read now; None for anything we do not serve."""
        path = urlsplit(raw_path).path
        if not path.startswith("/"):
            return None
        segments = path[1:].split("/")
        # Validate before decoding (no encoded '/'), then after (no '..', no hidden files).
        if any(not segment for segment in segments):
            return None
        try:
            decoded = [unquote(segment, errors="strict") for segment in segments]
        except UnicodeDecodeError:
            return None
        if not all(_SEGMENT.fullmatch(segment) for segment in decoded):
            return None
        candidate = self.root.joinpath(*decoded)
        content_type = CONTENT_TYPES.get(candidate.suffix.lower())
        if content_type is None:
            return None
        try:
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not resolved.is_relative_to(self.root) or not resolved.is_file():
            return None
        try:
            with resolved.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                if stat.st_size > MAX_FILE_BYTES:
                    return None
                body = handle.read(MAX_FILE_BYTES + 1)
        except OSError:
            return None
        if len(body) > MAX_FILE_BYTES:
            return None
        return _Entity(
            body=body,
            content_type=content_type,
            etag=f'"{hashlib.sha256(body).hexdigest()}"',
            mtime=int(stat.st_mtime),
        )


class RepositoryServer:
    """A running repository: :attr:`base_url` to build x5u URLs, :meth:`close` to stop it.

    :meth:`start` serves from a background thread (tests, the lab); :meth:`serve_forever`
    blocks the caller (the CLI).
    """

    def __init__(self, server: _Server, host: str) -> None:
        self._server = server
        self._thread: threading.Thread | None = None
        self.host = host

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def scheme(self) -> str:
        return "https" if self._server.tls is not None else "http"

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/"

    def url(self, name: str) -> str:
        return self.base_url + name

    def start(self) -> RepositoryServer:
        # A short poll interval only makes close() quick; requests never wait for it.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="shaken-repository",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> RepositoryServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def serve_repository(
    root: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8443,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    max_age: int = 86400,
    log: TextIO | None = None,
) -> RepositoryServer:
    """Bind a repository for ``root`` (not yet serving: call ``start`` or ``serve_forever``).

    ``port`` 0 picks a free port. ``tls_cert`` and ``tls_key`` go together; without them the
    server speaks plain HTTP. ``log`` receives one line per request.

    :raises ValueError: ``root`` is not a directory, only one of the TLS files is given, or
        ``max_age`` is negative.
    :raises OSError: the address cannot be bound, or the TLS files cannot be loaded.
    """
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory")
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("give both the TLS certificate and its key, or neither")
    if max_age < 0:
        raise ValueError("max-age must not be negative")
    tls = _tls_context(tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    server = _Server((host, port), root, max_age=max_age, tls=tls, log=log)
    return RepositoryServer(server, host)
