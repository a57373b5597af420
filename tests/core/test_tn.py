from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shaken.core.tn import (
    NANP,
    NumberingPlan,
    PartyIdentity,
    canonicalize_tn,
    identity_from_header,
    identity_from_uri,
    normalize_uri,
    parse_name_addr,
)


@pytest.mark.parametrize(
    ("header", "plan", "expected"),
    [
        # the RFC 8224 section 8 examples
        ("<sip:+1-215-555-1212@example.com;user=phone>", None, PartyIdentity(tn="12155551212")),
        ("<tel:+1(215)555.1212>", None, PartyIdentity(tn="12155551212")),
        ("<sip:2155551212@pbx.example.com>", NANP, PartyIdentity(tn="12155551212")),
        ("<sip:011442079460000@gw.example.com>", NANP, PartyIdentity(tn="442079460000")),
        ("<sip:911@example.com;user=phone>", NANP, PartyIdentity(tn="911")),
        (
            "<sip:Alice:secret@Example.COM:5061;transport=tls?Subject=x>",
            None,
            PartyIdentity(uri="sip:alice@example.com"),
        ),
        (
            '"Bob" <sip:+12155551212;verstat=TN-Validation-Passed@example.com;user=phone>;tag=1',
            None,
            PartyIdentity(tn="12155551212"),
        ),
        ("sip:+12155551212@example.com;tag=abc", None, PartyIdentity(tn="12155551212")),
        (
            '"Anonymous" <sip:anonymous@anonymous.invalid>;tag=x',
            None,
            PartyIdentity(anonymous=True),
        ),
        ("<sip:anonymous@example.com>", None, PartyIdentity(anonymous=True)),
        ("<tel:+12155551212;verstat=No-TN-Validation>", None, PartyIdentity(tn="12155551212")),
        # A leading + means the number is already international: no plan applies.
        ("<tel:+2155551212>", NANP, PartyIdentity(tn="2155551212")),
    ],
)
def test_identity_from_header(
    header: str, plan: NumberingPlan | None, expected: PartyIdentity
) -> None:
    assert identity_from_header(header, plan=plan) == expected


def test_numeric_user_policy_can_be_turned_off() -> None:
    assert identity_from_uri("sip:2155551212@pbx.example.com", numeric_user_is_tn=False) == (
        PartyIdentity(uri="sip:2155551212@pbx.example.com")
    )


def test_canonicalize_keeps_digits_hash_star() -> None:
    assert canonicalize_tn("+1 (215) 555-12.12 #*x") == "12155551212#*"


def test_normalize_uri_percent_decodes_unreserved_only() -> None:
    assert normalize_uri("SIP:%41lice%20x@EXAMPLE.com:5060;user=ip") == "sip:alice%20x@example.com"


def test_parse_name_addr_quoted_display_with_escapes() -> None:
    a = parse_name_addr('"A \\"B\\" <C>" <sip:a@b.example>;tag=1')
    assert a.display_name == 'A "B" <C>'
    assert a.uri == "sip:a@b.example"
    assert a.params == ";tag=1"
    assert parse_name_addr(a.format()) == a


@pytest.mark.parametrize("bad", ["", "nothing here", "<sip:a@b", '"unterminated <sip:a@b>'])
def test_parse_name_addr_errors(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_name_addr(bad)


def test_plan_trunk_prefix() -> None:
    uk = NumberingPlan(
        country_code="44", national_lengths=(10,), international_prefixes=("00",), trunk_prefix="0"
    )
    assert uk.to_e164("02079460000") == "442079460000"
    assert uk.to_e164("0012125550100") == "12125550100"
    assert uk.to_e164("999") == "999"


@given(st.text(max_size=60))
def test_canonical_tn_is_idempotent_and_clean(text: str) -> None:
    tn = canonicalize_tn(text)
    assert canonicalize_tn(tn) == tn
    assert set(tn) <= set("0123456789#*")


@given(st.text(max_size=80))
def test_header_parsing_raises_only_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        identity_from_header(text, plan=NANP)


@given(
    display=st.one_of(st.just(""), st.just('"Alice B" '), st.just("Bob "), st.text(max_size=10)),
    scheme=st.sampled_from(["tel:", "sip:", "sips:", "SIP:", "tel:+", "sip:+"]),
    number=st.text(alphabet="0123456789-.()#*+ a", min_size=0, max_size=14),
    host=st.sampled_from(
        ["", "@example.com", "@h;user=phone", "@h:5060;transport=tcp", ";x=y", "@anonymous.invalid"]
    ),
    params=st.sampled_from(["", ";tag=1", ";tag=a;x", ">", "<"]),
    plan=st.sampled_from([None, NANP]),
)
def test_common_header_fast_path_agrees_with_the_general_parser(
    display: str, scheme: str, number: str, host: str, params: str, plan: NumberingPlan | None
) -> None:
    """identity_from_header's one-regex path must give what the general parser gives."""
    from shaken.core import tn as tn_module

    value = f"{display}<{scheme}{number}{host}>{params}"
    try:
        fast = identity_from_header(value, plan=plan)
    except ValueError:
        fast = None
    try:
        general = tn_module.identity_from_uri(parse_name_addr(value).uri, plan=plan)
    except ValueError:
        general = None
    assert fast == general, value
