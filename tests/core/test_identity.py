from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shaken.core.errors import IdentityHeaderError
from shaken.core.identity import IdentityHeader
from shaken.core.reasons import Reason

TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJpYXQiOjF9.c2ln"


@pytest.mark.parametrize(
    "value",
    [
        f"{TOKEN};info=<https://cert.example.org/p.pem>;alg=ES256;ppt=shaken",
        f'{TOKEN};info=<https://cert.example.org/p.pem>;alg=ES256;ppt="shaken"',
        f"{TOKEN} ; info=<https://cert.example.org/p.pem> ; alg=ES256 ; ppt=shaken",
        f"{TOKEN};INFO=<https://cert.example.org/p.pem>;ALG=ES256;PPT=shaken",
    ],
)
def test_parse_full_form_quoted_or_not(value: str) -> None:
    h = IdentityHeader.parse(value)
    assert h.token == TOKEN
    assert h.info == "https://cert.example.org/p.pem"
    assert h.alg == "ES256"
    assert h.ppt == "shaken"
    assert not h.is_compact_form


def test_format_emits_bare_ppt_and_angle_info() -> None:
    h = IdentityHeader(token=TOKEN, info="https://x.example/c.pem", alg="ES256", ppt="shaken")
    assert h.format() == f"{TOKEN};info=<https://x.example/c.pem>;alg=ES256;ppt=shaken"


def test_unknown_parameters_are_kept_in_order() -> None:
    value = f'{TOKEN};info=<https://x.example/c>;foo=bar;flag;alg=ES256;ppt=shaken;z="q v"'
    h = IdentityHeader.parse(value)
    assert h.extra == (("foo", "bar"), ("flag", None), ("z", '"q v"'))
    assert IdentityHeader.parse(h.format()) == h


def test_compact_form() -> None:
    h = IdentityHeader.parse("..c2lnbmF0dXJl;info=<https://x.example/c>")
    assert h.is_compact_form
    assert h.alg is None and h.ppt is None


def test_missing_info_parses_so_the_verifier_can_say_436() -> None:
    assert IdentityHeader.parse(f"{TOKEN};alg=ES256;ppt=shaken").info is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        ";info=<https://x.example/c>",
        # legacy Asterisk: no ';' between info and alg
        f"{TOKEN};info=<https://x.example/c>alg=ES256;ppt=shaken",
        f"{TOKEN};info=https://x.example/c",
        f"{TOKEN};info=<>",
        f"{TOKEN};info=<https://a.example/>;info=<https://b.example/>",
        f"{TOKEN};ppt",
        f"{TOKEN} garbage",
        '{"alg":"ES256"};info=<https://x.example/c>',
    ],
)
def test_malformed_headers_are_invalid_header(value: str) -> None:
    with pytest.raises(IdentityHeaderError) as exc:
        IdentityHeader.parse(value)
    assert exc.value.reason is Reason.INVALID_HEADER


_b64 = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1
)
_token_value = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1).filter(
    lambda s: s[0] != "."
)


@given(
    header=_b64,
    payload=_b64,
    sig=_b64,
    host=st.from_regex(r"[a-z][a-z0-9-]{0,20}\.example", fullmatch=True),
    ppt=st.one_of(st.none(), _token_value),
    alg=st.one_of(st.none(), _token_value),
    extra=st.lists(
        st.tuples(st.from_regex(r"x[a-z]{0,8}", fullmatch=True), _token_value), max_size=3
    ),
)
def test_round_trip(
    header: str,
    payload: str,
    sig: str,
    host: str,
    ppt: str | None,
    alg: str | None,
    extra: list[tuple[str, str]],
) -> None:
    h = IdentityHeader(
        token=f"{header}.{payload}.{sig}",
        info=f"https://{host}/cert.pem",
        alg=alg,
        ppt=ppt,
        extra=tuple((k, v) for k, v in extra),
    )
    assert IdentityHeader.parse(h.format()) == h


@given(st.text(max_size=300))
def test_parse_never_raises_anything_but_identity_header_error(value: str) -> None:
    with contextlib.suppress(IdentityHeaderError):
        IdentityHeader.parse(value)
