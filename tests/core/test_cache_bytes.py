"""Issue 17 item 7: the core's memo caches are bounded in bytes, not only in entries.

Each cache keeps at most its ``maxsize`` entries and only inputs up to a length bound, so
entries x bound is a ceiling whatever a caller sends. These tests send what an attacker
would (thousands of distinct 60 KB values) and measure with tracemalloc what stays.
"""

from __future__ import annotations

import base64
import gc
import json
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from shaken.core import context, passport, tn, verify, x5u

BIG = 60_000


@contextmanager
def retained() -> Iterator[list[int]]:
    """Bytes still allocated after the block (garbage collected), in a one-item list."""
    out = [0]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        yield out
        gc.collect()
        out[0] = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def _from(i: int) -> str:
    return f'"{"A" * BIG}{i}" <sip:+12025550100@example.org>;tag={i}'


def _segment(i: int) -> str:
    header = {
        "alg": "ES256",
        "typ": "passport",
        "ppt": "shaken",
        "x5u": f"https://a/{i}{'x' * BIG}",
    }
    return base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()


def _try(call: Callable[[], object]) -> None:
    try:
        call()
    except Exception:  # a rejected value is fine: what matters is what stays cached
        return


CASES: dict[str, tuple[Callable[[int], None], Callable[[], None]]] = {
    "identity_from_header": (
        lambda i: _try(lambda: tn.identity_from_header(_from(i))),
        tn._identity_from_header.cache_clear,
    ),
    "identity_from_uri": (
        lambda i: _try(lambda: tn.identity_from_uri(f"sip:+1202555{i}@{'x' * BIG}.example.org")),
        tn._identity_from_uri.cache_clear,
    ),
    "parse_sip_date": (
        lambda i: _try(lambda: context.parse_sip_date(f"Tue, 01 Dec 2026 {i} {'x' * BIG}")),
        context._parse_sip_date.cache_clear,
    ),
    "header_segment": (
        lambda i: _try(lambda: passport.header_segment(x5u=f"https://a/{i}{'x' * BIG}")),
        passport._header_segment.cache_clear,
    ),
    "common_header_x5u": (
        lambda i: _try(lambda: verify._header_x5u(_segment(i))),
        verify._common_header_x5u.cache_clear,
    ),
}


def test_17_7_x5u_verdicts_are_kept_only_for_short_urls() -> None:
    # Under the default policy a URL is at most 2,048 characters; 4,096 entries of that
    # would be 8 MB. (The standard library's urlsplit keeps its own 128 entries.)
    x5u._verdict.cache_clear()
    with retained() as kept:
        for i in range(4096):
            _try(lambda i=i: x5u.check_x5u(f"https://cr.example.org/{i}/{'x' * 1990}"))
    x5u._verdict.cache_clear()
    assert kept[0] < 1_000_000, kept[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_17_7_core_caches_do_not_keep_oversized_inputs(name: str) -> None:
    call, clear = CASES[name]
    clear()
    with retained() as kept:
        for i in range(300):  # 300 x 60 KB = 18 MB if each were kept
            call(i)
    clear()
    assert kept[0] < 1_000_000, f"{name} kept {kept[0]} bytes of 300 oversized inputs"


def test_17_7_identity_cache_ceiling_with_inputs_at_the_bound() -> None:
    # The worst that fits: 8,192 distinct values just under the bound.
    tn._identity_from_header.cache_clear()
    pad = tn.CACHED_HEADER_CHARS - 60
    with retained() as kept:
        for i in range(9000):
            tn.identity_from_header(f'"{"B" * pad}" <sip:+1202555{i:04d}@example.org>;tag={i}')
    info = tn._identity_from_header.cache_info()
    tn._identity_from_header.cache_clear()
    assert info.currsize == 8192
    # Each entry: the key (<= 512 characters) and a parsed identity of a few short strings.
    ceiling = 8192 * (tn.CACHED_HEADER_CHARS + 1500)
    assert kept[0] < ceiling, (kept[0], ceiling)


def test_17_7_cached_results_are_still_the_same() -> None:
    value = '"Alice" <sip:+12025550100@example.org>'
    assert tn.identity_from_header(value) == tn.identity_from_header(value)
    long_value = f'"{"A" * 600}" <sip:+12025550100@example.org>'
    assert tn.identity_from_header(long_value) == tn.identity_from_header(value)
    assert passport.header_segment(x5u="https://a/b") == passport.header_segment(x5u="https://a/b")
