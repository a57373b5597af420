from __future__ import annotations

import ipaddress

import pytest

from shaken.core.errors import X5uRejected
from shaken.core.reasons import Reason
from shaken.core.x5u import X5uPolicy, check_x5u, connect_address, is_special_purpose


@pytest.mark.parametrize(
    "url",
    [
        "https://cr.example.com/sp.pem",
        "https://cr.example.com:443/sp.pem",
        "https://cr.example.com:8443/a/b/sp.pem",
        "https://8.8.8.8/x.pem",
    ],
)
def test_good_urls(url: str) -> None:
    assert check_x5u(url) == url


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://cr.example.com/sp.pem", "scheme"),
        ("ftp://cr.example.com/sp.pem", "scheme"),
        ("https://cr.example.com:8080/sp.pem", "port"),
        ("https://u:p@cr.example.com/sp.pem", "userinfo"),
        ("https://cr.example.com/sp.pem?x=1", "query"),
        ("https://cr.example.com/sp.pem#frag", "fragment"),
        ("https:///sp.pem", "host"),
        ("https://127.0.0.1/sp.pem", "special_address"),
        ("https://10.0.0.1/sp.pem", "special_address"),
        ("https://169.254.169.254/latest", "special_address"),
        ("https://[::1]/sp.pem", "special_address"),
        ("https://[::ffff:127.0.0.1]/sp.pem", "special_address"),
        ("https://localhost/sp.pem", "special_address"),
        ("https://cr.example.com/ sp.pem", "syntax"),
        ("https://cr.example.com:99999/sp.pem", "syntax"),
        ("https://cr.example.com/" + "a" * 3000, "length"),
    ],
)
def test_rejected_urls(url: str, rule: str) -> None:
    with pytest.raises(X5uRejected) as exc:
        check_x5u(url)
    assert exc.value.reason is Reason.X5U_REJECTED
    assert exc.value.fields["rule"] == rule


def test_lab_relaxations_are_explicit() -> None:
    lab = X5uPolicy(allow_http=True, any_port=True, allowed_hosts=("127.0.0.1",))
    assert check_x5u("http://127.0.0.1:8080/sp.pem", lab)
    with pytest.raises(X5uRejected):
        check_x5u("http://10.0.0.1:8080/sp.pem", lab)


@pytest.mark.parametrize(
    ("address", "special"),
    [
        ("8.8.8.8", False),
        ("2606:4700::1111", False),
        ("100.64.1.1", True),
        ("192.0.2.1", True),
        ("224.0.0.1", True),
        ("::ffff:10.1.2.3", True),
        ("::ffff:8.8.8.8", True),  # the whole v4-mapped block is special-purpose
        ("2002:7f00:1::", True),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", True),
        ("fe80::1", True),
        ("fd00::1", True),
    ],
)
def test_special_purpose(address: str, special: bool) -> None:
    assert is_special_purpose(address) is special


def test_allowed_hosts_compare_case_insensitively() -> None:
    lab = X5uPolicy(allowed_hosts=("CR.Lab.Test",))
    assert lab.allowed_hosts == ("cr.lab.test",)
    assert lab.host_allowed("cr.LAB.test")


@pytest.mark.parametrize(
    ("address", "embedded", "special"),
    [
        ("::127.0.0.2", "127.0.0.2", True),
        ("::7f00:1", "127.0.0.1", True),
        ("::10.1.2.3", "10.1.2.3", True),
        ("::169.254.169.254", "169.254.169.254", True),
        ("::8.8.8.8", "8.8.8.8", False),
    ],
)
def test_17_15_an_ipv4_compatible_address_is_its_ipv4_address(
    address: str, embedded: str, special: bool
) -> None:
    """RFC 4291 section 2.5.5.1 (deprecated) ``::a.b.c.d``: judged and reached as a.b.c.d."""
    assert is_special_purpose(address) is special
    assert str(connect_address(address)) == embedded
    url = f"https://[{address}]/sp.pem"
    if special:
        with pytest.raises(X5uRejected) as exc:
            check_x5u(url)
        assert exc.value.fields["rule"] == "special_address"
    else:
        assert check_x5u(url) == url


@pytest.mark.parametrize("address", ["::", "::1", "::ffff:8.8.8.8", "2606:4700::1111"])
def test_17_15_other_ipv6_addresses_are_connected_to_as_they_are(address: str) -> None:
    assert connect_address(address) == ipaddress.ip_address(address)
