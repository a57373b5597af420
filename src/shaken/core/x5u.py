"""The x5u URL policy (ATIS-1000074 v003 section 5.3.1), applied before any byte leaves.

Pure: it looks at the URL text and, for hosts written as IP literals, at the address. Hostnames
are resolved by the fetcher adapter, which must apply :func:`is_special_purpose` to every address
it resolved and connect to the address it checked (DNS rebinding).

The special-purpose list is explicit (RFC 6890 plus multicast and later IANA registrations)
instead of ``ipaddress``'s ``is_global``, whose answers
changed between CPython patch releases. Embedded IPv4 addresses (v4-mapped, NAT64, 6to4, Teredo)
are unwrapped and checked too. An IPv4-compatible address (``::a.b.c.d``, deprecated by RFC 4291
section 2.5.5.1, in no special-purpose registry) *is* its IPv4 address here: it is judged as
that address, and :func:`connect_address` says to connect to that address.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from shaken.core.errors import X5uRejected
from shaken.core.reasons import Reason

__all__ = [
    "SPECIAL_PURPOSE_NETWORKS",
    "X5uPolicy",
    "check_x5u",
    "connect_address",
    "is_special_purpose",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SPECIAL_PURPOSE_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        # RFC 6890 IPv4
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
        "255.255.255.255/32",
        # multicast and later IANA special-purpose registrations
        "224.0.0.0/4",
        "192.31.196.0/24",
        "192.52.193.0/24",
        "192.175.48.0/24",
        # RFC 6890 IPv6
        "::1/128",
        "::/128",
        "64:ff9b::/96",
        "::ffff:0:0/96",
        "100::/64",
        "2001::/23",
        "2001::/32",
        "2001:2::/48",
        "2001:db8::/32",
        "2001:10::/28",
        "2002::/16",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
        "64:ff9b:1::/48",
        "2001:20::/28",
        "3fff::/20",
        "5f00::/16",
    )
)


_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _ipv4_compatible(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """``::a.b.c.d`` (RFC 4291 section 2.5.5.1) as ``a.b.c.d``; ``::`` and ``::1`` are not."""
    if addr in _IPV4_COMPATIBLE and int(addr) > 1 and not addr.scope_id:
        return ipaddress.IPv4Address(int(addr))
    return None


def connect_address(address: IPAddress | str) -> IPAddress:
    """The address to connect to for ``address``: an IPv4-compatible one is its IPv4 address."""
    addr = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(addr, ipaddress.IPv6Address):
        inner = _ipv4_compatible(addr)
        if inner is not None:
            return inner
    return addr


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    compatible = _ipv4_compatible(addr)
    if compatible is not None:
        return compatible
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def is_special_purpose(address: IPAddress | str) -> bool:
    """True when ``address`` (or an IPv4 address embedded in it) is special-purpose."""
    addr = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        return True
    if any(addr in net for net in SPECIAL_PURPOSE_NETWORKS if net.version == addr.version):
        return True
    if isinstance(addr, ipaddress.IPv6Address):
        inner = _embedded_ipv4(addr)
        if inner is not None:
            return is_special_purpose(inner)
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class X5uPolicy:
    """What an x5u (or CRL) URL may look like.

    The defaults are the SHAKEN rules. The three relaxations exist for labs and are off by
    default: ``allow_http`` (plain http), ``any_port``, ``allow_special_addresses`` (loopback
    and private hosts). ``allowed_hosts`` lists hosts that skip the special-address rule, such
    as a lab repository on 127.0.0.1.
    """

    allowed_ports: tuple[int, ...] = (443, 8443)
    allow_http: bool = False
    any_port: bool = False
    allow_special_addresses: bool = False
    allowed_hosts: tuple[str, ...] = ()
    max_length: int = 2048

    def __post_init__(self) -> None:
        # Host names compare case-insensitively (RFC 3986 section 3.2.2).
        object.__setattr__(self, "allowed_hosts", tuple(h.lower() for h in self.allowed_hosts))

    def host_allowed(self, host: str) -> bool:
        return self.allow_special_addresses or host.lower() in self.allowed_hosts


STRICT = X5uPolicy()


def _reject(url: str, rule: str, detail: str) -> X5uRejected:
    return X5uRejected(
        Reason.X5U_REJECTED, f"x5u {url!r} rejected: {detail}", url=url, rule=rule, why=detail
    )


def check_x5u(url: str, policy: X5uPolicy = STRICT) -> str:
    """Check ``url`` against ``policy`` and return it unchanged.

    The verdict is cached per (url, policy): a verifier sees the same few signers' URLs on
    almost every call, and the check is a pure function of its arguments.

    :raises X5uRejected: with ``rule`` naming the broken rule (scheme, port, userinfo, query,
        fragment, host, special_address, length).
    """
    if len(url) > policy.max_length:
        raise _reject(url[:80] + "...", "length", f"longer than {policy.max_length} characters")
    # Only URLs of a real x5u's size are cached: 4096 entries x 512 characters at most.
    if len(url) > _CACHED_URL_CHARS:
        verdict = _verdict.__wrapped__(url, policy)
    else:
        verdict = _verdict(url, policy)
    if verdict is not None:
        rule, detail = verdict
        raise _reject(url, rule, detail)
    return url


_CACHED_URL_CHARS = 512


@functools.lru_cache(maxsize=4096)
def _verdict(url: str, policy: X5uPolicy) -> tuple[str, str] | None:
    try:
        _check_uncached(url, policy)
    except X5uRejected as exc:
        return str(exc.fields["rule"]), str(exc.fields["why"])
    return None


def _check_uncached(url: str, policy: X5uPolicy) -> None:
    if not url.isascii() or any(ch.isspace() for ch in url):
        raise _reject(url, "syntax", "non-ASCII characters or whitespace")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise _reject(url, "syntax", str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme != "https" and not (policy.allow_http and scheme == "http"):
        raise _reject(url, "scheme", f"scheme {scheme or '(none)'!r} is not https")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise _reject(url, "userinfo", "user information is not allowed")
    if parts.query or url.endswith("?"):
        raise _reject(url, "query", "a query string is not allowed")
    if parts.fragment or "#" in url:
        raise _reject(url, "fragment", "a fragment is not allowed")
    if not host:
        raise _reject(url, "host", "no host")
    if port is not None and not policy.any_port and port not in policy.allowed_ports:
        allowed = ", ".join(map(str, policy.allowed_ports))
        raise _reject(url, "port", f"port {port} is not one of {allowed}")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and is_special_purpose(literal) and not policy.host_allowed(host):
        raise _reject(url, "special_address", f"{host} is a special-purpose address (RFC 6890)")
    loopback_name = host.lower() in ("localhost", "localhost.localdomain")
    if literal is None and loopback_name and not policy.host_allowed(host):
        raise _reject(url, "special_address", f"{host} names the loopback host")
