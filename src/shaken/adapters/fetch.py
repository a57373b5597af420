"""Fetch x5u certificates (and CRLs) over HTTPS under the SHAKEN URL policy.

The attacker picks the x5u URL, so this is the verifier's most exposed piece of I/O
(ATIS-1000074 v003 section 5.3.1). In order:

1. :func:`shaken.core.x5u.check_x5u` before anything else: https only (http with the lab
   setting), port absent/443/8443, no userinfo, query or fragment, no special-purpose IP literal.
2. The host is resolved through an injectable resolver, and **every** address is checked
   against the RFC 6890 special-purpose list (v4-mapped, IPv4-compatible, NAT64, 6to4 and Teredo
   unwrapped; see :func:`shaken.core.x5u.is_special_purpose`). One bad address refuses the URL:
   nothing is sent. An IPv4-compatible address (``::a.b.c.d``) is its IPv4 address, checked and
   connected to as such (:func:`shaken.core.x5u.connect_address`).
3. The connection goes **to the address that was checked**: the URL is rewritten to the IP, the
   Host header and the TLS SNI carry the name (httpx's ``sni_hostname`` extension), and TLS
   still verifies the server certificate against the *name* (httpcore passes the SNI name as
   ``server_hostname``). A second DNS answer therefore has no window (DNS rebinding).
4. No redirects (ATIS-1000074), no proxies from the environment (a proxy would connect to a
   name we never checked), no keep-alive reuse across names (a pooled connection to an IP was
   verified for one name only), ``Accept-Encoding: identity`` (a compressed body could expand
   past the cap in memory).
5. A body cap (64 KiB by default: Asterisk's 8 KiB broke long chains) and one deadline over the
   whole fetch, resolution included (2 s by default), so a slow drip cannot hold a call.

Every httpx error becomes :class:`~shaken.core.errors.CertificateFetchError` and every policy
break :class:`~shaken.core.errors.X5uRejected`; no httpx exception crosses into the services.
Neither does any ``OSError``, wherever in a fetch it happens (creating the TLS context opens
the CA file, a connection needs a descriptor): a process out of file descriptors (EMFILE)
answers ``cert_fetch_failed`` naming the error, like any other local failure (issue 17 item 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from shaken.core.errors import CertificateFetchError, X5uRejected
from shaken.core.reasons import Reason
from shaken.core.x5u import STRICT, X5uPolicy, check_x5u, connect_address, is_special_purpose
from shaken.services.ports import Clock, FetchedDocument, FetchLimits, SystemClock

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "LAB_POLICY",
    "FetchLimits",
    "HttpsFetcher",
    "Resolver",
    "fetch_certificate",
    "system_resolver",
]

#: The limits of a fetcher given none (FetchLimits' defaults).
_LIMITS = FetchLimits()

#: Resolves (host, port) to IP address strings.
Resolver = Callable[[str, int], Awaitable[list[str]]]

#: The lab relaxations of :class:`~shaken.core.x5u.X5uPolicy`: http, loopback, any port.
LAB_POLICY = X5uPolicy(allow_http=True, any_port=True, allow_special_addresses=True)

#: Content-Types an STI-CR or a CRL distribution point is seen to send. Anything else is
#: reported as a warning; the body is still parsed, because real repositories are sloppy.
ACCEPTED_CONTENT_TYPES = frozenset(
    {
        "application/pem-certificate-chain",  # RFC 8555 section 9.1, ATIS-1000080
        "application/x-pem-file",
        "application/pkix-cert",  # RFC 2585, DER
        "application/x-x509-ca-cert",
        "application/x-x509-user-cert",
        "application/pkix-crl",  # RFC 2585, CRLs
        "application/x-pkcs7-crl",
        "application/octet-stream",
        "text/plain",
    }
)

_ACCEPT = (
    "application/pem-certificate-chain, application/pkix-cert;q=0.9, "
    "application/pkix-crl;q=0.9, */*;q=0.1"
)


async def system_resolver(host: str, port: int) -> list[str]:
    """The event loop's ``getaddrinfo``: every A and AAAA address of ``host``."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _failed(url: str, detail: str, **fields: Any) -> CertificateFetchError:
    return CertificateFetchError(Reason.CERT_FETCH_FAILED, detail, url=url, **fields)


def _refused(url: str, host: str, address: str) -> X5uRejected:
    return X5uRejected(
        Reason.X5U_REJECTED,
        f"x5u {url!r} rejected: {host} resolves to the special-purpose address {address}"
        " (RFC 6890); nothing was sent",
        url=url,
        rule="special_address",
        why=f"{host} resolves to {address}",
        address=address,
    )


def _os_error_in(exc: BaseException) -> OSError | None:
    """The ``OSError`` an httpx exception wraps (its cause or context chain), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current
        current = current.__cause__ or current.__context__
    return None


def _os_detail(exc: OSError) -> str:
    if exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{name}: {exc.strerror or os.strerror(exc.errno)}"
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def _map_httpx_errors(url: str, address: str) -> Iterator[None]:
    """httpx's exceptions, as the one failure the services understand."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise _failed(url, f"{url} ({address}) timed out: {type(exc).__name__}") from None
    except httpx.ConnectError as exc:
        # httpx says "All connection attempts failed"; the errno says why (EMFILE, ...).
        cause = _os_error_in(exc)
        why = _os_detail(cause) if cause is not None else str(exc)
        raise _failed(url, f"cannot connect to {url} ({address}): {why}", connect=True) from None
    except httpx.HTTPError as exc:
        raise _failed(url, f"cannot fetch {url} ({address}): {type(exc).__name__}: {exc}") from None
    except httpx.InvalidURL as exc:
        raise _failed(url, f"cannot fetch {url}: {exc}") from None
    except ssl.SSLError as exc:  # normally wrapped by httpx; kept for safety
        raise _failed(url, f"TLS failure with {url} ({address}): {exc}") from None
    except OSError as exc:
        raise _failed(url, f"cannot fetch {url} ({address}): {_os_detail(exc)}") from None


def _media_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


class HttpsFetcher:
    """The :class:`~shaken.services.ports.CertificateFetcher` over ``httpx.AsyncClient``.

    :param policy: the URL policy; its lab relaxations (``allow_http``, ``any_port``,
        ``allow_special_addresses``, ``allowed_hosts``) are the only way to reach loopback or
        private addresses.
    :param limits: body cap and total deadline.
    :param resolver: ``(host, port) -> [ip, ...]``; the system resolver by default. Tests
        inject one that maps lab names to 127.0.0.1.
    :param tls_ca_file: PEM file of the CAs that may sign repository TLS certificates (a lab
        CA); the certifi bundle when omitted.
    :param verify_tls: ``False`` turns TLS verification off (labs only).
    :param transport: an httpx transport to use instead of the network (tests).
    :param clock: stamps ``fetched_at`` on each document (the system clock by default).

    The client is created on first use, in the running event loop; close it with
    :meth:`aclose` or ``async with``.
    """

    def __init__(
        self,
        *,
        policy: X5uPolicy = STRICT,
        limits: FetchLimits = _LIMITS,
        resolver: Resolver | None = None,
        tls_ca_file: str | None = None,
        verify_tls: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.policy = policy
        self._clock = clock or SystemClock()
        self.limits = limits
        self._resolver = resolver or system_resolver
        self._tls_ca_file = tls_ca_file
        self._verify_tls = verify_tls
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        #: Requests sent (after every check passed), for metrics and tests.
        self.requests = 0

    @property
    def tls_ca_file(self) -> str | None:
        """The CA file repository TLS is checked with, when it is not the certifi bundle."""
        return self._tls_ca_file

    def _ssl_context(self) -> ssl.SSLContext | bool:
        if not self._verify_tls:
            return False
        if self._tls_ca_file is not None:
            return ssl.create_default_context(cafile=self._tls_ca_file)
        import certifi  # noqa: PLC0415  (httpx's own CA bundle; imported when first needed)

        return ssl.create_default_context(cafile=certifi.where())

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                verify=self._ssl_context(),
                timeout=httpx.Timeout(self.limits.timeout),
                follow_redirects=False,
                trust_env=False,
                limits=httpx.Limits(max_keepalive_connections=0),
                transport=self._transport,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def __aenter__(self) -> HttpsFetcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def fetch(self, url: str, *, etag: str | None = None) -> FetchedDocument:
        """GET ``url`` under the policy and limits.

        :param etag: sent as ``If-None-Match``; a ``304`` then gives ``not_modified=True``.
        :raises X5uRejected: the URL or a resolved address breaks the policy; nothing was sent.
        :raises CertificateFetchError: DNS, TCP, TLS, HTTP status, redirect, size or time.
        """
        check_x5u(url, self.policy)
        try:
            async with asyncio.timeout(self.limits.timeout):
                return await self._fetch(url, etag)
        except TimeoutError:
            raise _failed(
                url, f"fetching {url} took longer than {self.limits.timeout:g} s", timeout=True
            ) from None
        except OSError as exc:  # anything local the mapping below did not see
            raise _failed(url, f"cannot fetch {url}: {_os_detail(exc)}") from None

    async def _addresses(self, url: str, host: str, port: int) -> list[str]:
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            return [str(connect_address(literal))]
        try:
            resolved = list(dict.fromkeys(await self._resolver(host, port)))
        except (OSError, UnicodeError) as exc:
            raise _failed(url, f"cannot resolve {host}: {exc}", host=host) from None
        if not resolved:
            raise _failed(url, f"{host} has no address", host=host)
        addresses: list[str] = []
        for address in resolved:
            try:
                special = is_special_purpose(address)
                checked = str(connect_address(address))
            except ValueError:
                # Not an address at all: refuse rather than guess, whatever the policy.
                raise _refused(url, host, address) from None
            if special and not self.policy.host_allowed(host):
                raise _refused(url, host, address)
            addresses.append(checked)
        return list(dict.fromkeys(addresses))

    async def _fetch(self, url: str, etag: str | None) -> FetchedDocument:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        addresses = await self._addresses(url, host, port)
        headers = {
            # The name as it was in the URL: virtual hosting and TLS are about the name.
            "Host": parts.netloc,
            "Accept": _ACCEPT,
            "Accept-Encoding": "identity",
            "Connection": "close",
        }
        if etag:
            headers["If-None-Match"] = etag
        try:
            ipaddress.ip_address(host)
        except ValueError:
            is_name = True
        else:
            is_name = False  # SNI carries names only (RFC 6066 section 3)
        extensions = {"sni_hostname": host} if is_name and scheme == "https" else {}
        path = parts.path or "/"
        last_error: CertificateFetchError | None = None
        for address in addresses:
            netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
            direct = f"{scheme}://{netloc}{path}"
            try:
                return await self._get(url, direct, address, headers, extensions)
            except CertificateFetchError as exc:
                # Only a failed connection moves on to the next checked address; anything the
                # server said is the answer.
                if not exc.fields.get("connect"):
                    raise
                last_error = exc
        assert last_error is not None
        raise last_error

    async def _get(
        self,
        url: str,
        direct: str,
        address: str,
        headers: dict[str, str],
        extensions: dict[str, Any],
    ) -> FetchedDocument:
        with _map_httpx_errors(url, address):
            # Inside the mapping: making the client reads the CA file, which needs a descriptor.
            client = self._get_client()
            request = client.build_request("GET", direct, headers=headers, extensions=extensions)
            self.requests += 1
            response = await client.send(request, stream=True)
            try:
                return await self._read(url, response)
            finally:
                await response.aclose()

    async def _read(self, url: str, response: httpx.Response) -> FetchedDocument:
        status = response.status_code
        headers = response.headers
        fetched_at = self._clock.now()
        if status == 304:
            return FetchedDocument(
                url=url,
                body=b"",
                cache_control=headers.get("cache-control"),
                expires=headers.get("expires"),
                date=headers.get("date"),
                age=headers.get("age"),
                etag=headers.get("etag"),
                fetched_at=fetched_at,
                not_modified=True,
            )
        if 300 <= status < 400:
            location = headers.get("location")
            raise _failed(
                url,
                f"{url} answered HTTP {status} (redirect to {location!r}); redirects are not"
                " followed (ATIS-1000074)",
                status=status,
                location=location,
            )
        if status != 200:
            raise _failed(url, f"{url} answered HTTP {status}", status=status)
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise _failed(url, f"{url} sent a {encoding!r} encoded body; identity was asked for")
        cap = self.limits.max_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > cap:
            raise _failed(
                url, f"{url} announces {int(declared)} bytes, over the {cap} byte cap", size=True
            )
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > cap:
                raise _failed(url, f"{url} sent more than {cap} bytes", size=True)
        content_type = headers.get("content-type")
        warnings: tuple[str, ...] = ()
        media = _media_type(content_type)
        if media not in ACCEPTED_CONTENT_TYPES:
            shown = content_type if content_type is not None else "no Content-Type"
            warnings = (f"content_type: {url} was served as {shown}",)
        return FetchedDocument(
            url=url,
            body=bytes(body),
            content_type=content_type,
            cache_control=headers.get("cache-control"),
            expires=headers.get("expires"),
            date=headers.get("date"),
            age=headers.get("age"),
            etag=headers.get("etag"),
            fetched_at=fetched_at,
            warnings=warnings,
        )


# --------------------------------------------------------------------------------------------
# The synchronous entry point (CLI, labs, scripts)


def fetch_certificate(
    url: str,
    *,
    policy: X5uPolicy = STRICT,
    limits: FetchLimits = _LIMITS,
    verify_tls: bool | str = True,
    resolver: Resolver | None = None,
) -> bytes:
    """GET ``url`` and return the body: :meth:`HttpsFetcher.fetch` run to completion.

    ``verify_tls`` may name a PEM CA file (a lab's TLS CA). Safe to call from a thread that
    runs an event loop: the fetch then runs on a worker thread.

    :raises X5uRejected: the URL or a resolved address breaks the policy (nothing was sent).
    :raises CertificateFetchError: DNS, TCP, TLS, HTTP status, size or time failure.
    """

    async def once() -> bytes:
        async with HttpsFetcher(
            policy=policy,
            limits=limits,
            resolver=resolver,
            tls_ca_file=verify_tls if isinstance(verify_tls, str) else None,
            verify_tls=verify_tls is not False,
        ) as fetcher:
            return (await fetcher.fetch(url)).body

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(once())
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            box["value"] = asyncio.run(once())
        except BaseException as exc:  # handed back to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=worker, name="shaken-fetch", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: bytes = box["value"]
    return value
