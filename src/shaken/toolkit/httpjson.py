"""A small threaded HTTP(S) server for the toolkit's test STI-PA and ACME STI-CA.

Both test servers answer a handful of JSON routes, so they share this: the standard library's
``ThreadingHTTPServer`` (as the repository of :mod:`shaken.toolkit.repository`), TLS from a
certificate and key file, a route table of ``(method, pattern) -> handler``, and one lock
around the handlers so their in-memory state needs no finer locking (a lab serves a few
requests a minute). Handlers return a :class:`Reply`; an exception in a handler is a 500 with
no detail (a test server must not leak a traceback to a client, and the log shows it).
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

__all__ = ["JsonServer", "Reply", "Request", "Route"]

MAX_BODY = 256 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    match: re.Match[str]
    #: The URL the client used, as this server names itself (``base_url`` + path).
    url: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, status: int, data: Any, **headers: str) -> Reply:
        return cls(status, json.dumps(data, indent=2).encode(), headers=dict(headers))


Route = tuple[str, str, Callable[[Request], Reply]]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "shaken-test"
    timeout = 30

    def version_string(self) -> str:
        return self.server_version

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(Reply.of(413, {"status": "failed", "message": "body too large"}))
            return
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        owner = self.server.owner
        allowed = False
        for method, pattern, handler in owner.routes:
            match = re.fullmatch(pattern, path)
            if match is None:
                continue
            if method != self.command:
                allowed = True
                continue
            request = Request(
                method=self.command,
                path=path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                match=match,
                url=owner.base_url.rstrip("/") + path,
            )
            try:
                with owner.lock:
                    reply = handler(request)
            except Exception:
                traceback.print_exc(file=owner.log or sys.stderr)
                reply = Reply.of(500, {"status": "failed", "message": "internal error"})
            self._send(reply, head=self.command == "HEAD")
            return
        status = 405 if allowed else 404
        self._send(Reply.of(status, {"status": "failed", "message": "not found"}))

    def _send(self, reply: Reply, *, head: bool = False) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(reply.body)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: object) -> None:
        if self.server.owner.log is not None:
            print(f"{self.server.owner.name}: {format % args}", file=self.server.owner.log)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: JsonServer

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        tls = self.owner.tls
        if tls is None:
            return sock, address
        return tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request: object, client_address: object) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ssl.SSLError | ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class JsonServer:
    """Bind on construction (port 0 picks one); :meth:`start` serves from a thread."""

    name = "server"

    def __init__(
        self,
        routes: list[Route],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        log: TextIO | None = None,
    ) -> None:
        self.routes = routes
        self.lock = threading.RLock()
        self.log = log
        self.tls: ssl.SSLContext | None = None
        if tls_cert is not None and tls_key is not None:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.minimum_version = ssl.TLSVersion.TLSv1_2
            self.tls.load_cert_chain(tls_cert, tls_key)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class: type[_Server] = type(
            "_BoundServer", (_Server,), {"owner": self, "address_family": family}
        )
        self._server = server_class((host, port), _Handler)
        self.host = host
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def start(self) -> JsonServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"shaken-{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> JsonServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
