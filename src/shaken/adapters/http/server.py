"""Serve the REST application with uvicorn inside the caller's event loop.

``shaken serve`` runs REST beside SIP from one configuration and one :class:`Runtime`, so the
REST server cannot own the process: no ``uvicorn.run``, no event loop of its own, no signal
handlers (``Server.serve`` would install SIGINT/SIGTERM handlers over the caller's). Instead the
sockets are bound here and handed to ``Server.startup``; the server runs until the task running
:func:`serve_rest` is cancelled, then closes its listeners and lets requests in progress finish
(at most 5 s).

Listeners are ``http:HOST:PORT`` and ``https:HOST:PORT`` (``[server] rest``; an IPv6 host in
brackets). HTTPS uses ``[server] tls_certificate`` and ``tls_key``. With ``[server] workers``
above 1 the sockets are bound with ``SO_REUSEPORT``, so that many processes, each running
:func:`serve_rest` over its own runtime, share the port and the kernel spreads connections
across them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Sequence

import uvicorn

from shaken.adapters.http.app import create_app
from shaken.adapters.wiring import Runtime
from shaken.core.errors import ConfigurationError
from shaken.services.calllog import CallLog

__all__ = ["parse_listener", "serve_rest"]

_BACKLOG = 2048


def parse_listener(text: str) -> tuple[str, str, int]:
    """``http:127.0.0.1:8080`` as (scheme, host, port); IPv6 hosts come without brackets.

    :raises ConfigurationError: not ``http`` or ``https``, or no usable host and port.
    """
    scheme, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if scheme not in ("http", "https") or not host or not port.isdigit():
        raise ConfigurationError(f"REST listener {text!r} is not 'http:HOST:PORT'")
    number = int(port)
    if not 0 <= number < 65536:
        raise ConfigurationError(f"REST listener {text!r}: port out of range")
    return scheme, host, number


def _bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigurationError(f"REST listener host {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


async def serve_rest(
    runtime: Runtime,
    listeners: Sequence[str],
    call_log: CallLog | None,
    *,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve the REST API on ``listeners`` until cancelled; set ``ready`` once listening.

    :raises ConfigurationError: a bad listener, an address that cannot be bound, or an https
        listener without ``tls_certificate`` and ``tls_key``.
    """
    parsed = [parse_listener(text) for text in listeners]
    if not parsed:
        raise ConfigurationError("no REST listeners configured ([server] rest)")
    server_settings = runtime.settings.server
    tls = any(scheme == "https" for scheme, _, _ in parsed)
    certificate = server_settings.get("tls_certificate")
    key = server_settings.get("tls_key")
    if tls and not (certificate and key):
        raise ConfigurationError("https REST listeners need [server] tls_certificate and tls_key")
    reuse_port = int(server_settings.get("workers", 1)) > 1 and hasattr(socket, "SO_REUSEPORT")
    app = create_app(runtime, call_log=call_log)
    groups: dict[str, list[socket.socket]] = {}
    servers: list[tuple[uvicorn.Server, list[socket.socket]]] = []
    try:
        for scheme, host, port in parsed:
            groups.setdefault(scheme, []).append(_bind(host, port, reuse_port=reuse_port))
        for scheme, sockets in groups.items():
            config = uvicorn.Config(
                app,
                loop="none",
                http="httptools",
                ws="none",
                lifespan="off",
                interface="asgi3",
                log_config=None,
                log_level="warning",
                access_log=False,
                server_header=False,
                proxy_headers=False,
                backlog=_BACKLOG,
                timeout_graceful_shutdown=5,
                ssl_certfile=certificate if scheme == "https" else None,
                ssl_keyfile=key if scheme == "https" else None,
            )
            try:
                config.load()
            except (OSError, ssl.SSLError) as exc:
                raise ConfigurationError(f"cannot load the REST TLS key pair: {exc}") from None
            server = uvicorn.Server(config)
            # What Server.serve() does before startup(), without its signal handlers.
            server.lifespan = config.lifespan_class(config)
            await server.startup(sockets=sockets)
            servers.append((server, sockets))
        if ready is not None:
            ready.set()
        await asyncio.gather(*(server.main_loop() for server, _ in servers))
    finally:
        for server, sockets in servers:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await server.shutdown(sockets=sockets)
        for sockets in groups.values():
            for sock in sockets:
                sock.close()
