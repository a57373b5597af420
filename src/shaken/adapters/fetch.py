"""Fetch an x5u certificate over HTTPS under the strict SHAKEN URL policy.

The policy is checked before any byte leaves (:func:`shaken.core.x5u.check_x5u`); the host is
resolved here and refused when any of its addresses is special-purpose (RFC 6890), and the
connection goes to the address that was checked, so a second DNS answer cannot redirect it.
Redirects are not followed; the body is capped and the whole fetch has a deadline.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from shaken.core.errors import CertificateFetchError, X5uRejected
from shaken.core.reasons import Reason
from shaken.core.x5u import STRICT, X5uPolicy, check_x5u, is_special_purpose

__all__ = ["FetchLimits", "fetch_certificate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchLimits:
    timeout: float = 2.0
    max_bytes: int = 64 * 1024


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CertificateFetchError(
            Reason.CERT_FETCH_FAILED, f"cannot resolve {host}: {exc}", host=host
        ) from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def fetch_certificate(
    url: str,
    *,
    policy: X5uPolicy = STRICT,
    limits: FetchLimits = FetchLimits(),
    verify_tls: bool | str = True,
) -> bytes:
    """GET ``url`` and return the body.

    :raises X5uRejected: the URL or a resolved address breaks the policy (nothing was sent).
    :raises CertificateFetchError: DNS, TCP, TLS, HTTP status, size or time failure.
    """
    check_x5u(url, policy)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = _resolve(host, port)
    if not policy.host_allowed(host):
        for address in addresses:
            if is_special_purpose(ipaddress.ip_address(address.split("%")[0])):
                raise X5uRejected(
                    Reason.X5U_REJECTED,
                    f"{host} resolves to the special-purpose address {address}",
                    url=url,
                    rule="special_address",
                )
    deadline = time.monotonic() + limits.timeout
    # Connect to the checked address; TLS still verifies the certificate for the host name.
    target = addresses[0]
    netloc = f"[{target}]:{port}" if ":" in target else f"{target}:{port}"
    direct = parts._replace(netloc=netloc).geturl()
    try:
        with (
            httpx.Client(
                verify=verify_tls, timeout=limits.timeout, follow_redirects=False
            ) as client,
            client.stream(
                "GET",
                direct,
                headers={"Host": parts.netloc, "Accept": "application/pem-certificate-chain"},
                extensions={"sni_hostname": host},
            ) as response,
        ):
            if response.status_code != 200:
                raise CertificateFetchError(
                    Reason.CERT_FETCH_FAILED,
                    f"{url} answered HTTP {response.status_code}",
                    url=url,
                    status=response.status_code,
                )
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limits.max_bytes:
                    raise CertificateFetchError(
                        Reason.CERT_FETCH_FAILED,
                        f"{url} sent more than {limits.max_bytes} bytes",
                        url=url,
                    )
                if time.monotonic() > deadline:
                    raise CertificateFetchError(
                        Reason.CERT_FETCH_FAILED, f"{url} took longer than {limits.timeout} s"
                    )
            return bytes(body)
    except httpx.HTTPError as exc:
        raise CertificateFetchError(
            Reason.CERT_FETCH_FAILED, f"cannot fetch {url}: {exc}", url=url
        ) from None
