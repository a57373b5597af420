"""The recipe API end to end, and the promise that no input string makes verify raise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shaken
from shaken.testing import make_sti_pki

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
PKI = make_sti_pki(NOW)
X5U = "https://cr.example.test/sp.pem"
GOOD = shaken.sign_identity(
    key=PKI.leaf_key_pem, x5u=X5U, orig="12025550100", dest="12025550101", attest="B", now=NOW
)


def _verify(identity: str | list[str], **kw: object) -> shaken.VerificationResult:
    args: dict[str, object] = {
        "orig": "12025550100",
        "dest": "12025550101",
        "certificate": PKI.chain_pem,
        "trust_anchors": PKI.root_pem,
        "now": NOW,
    }
    args.update(kw)
    return shaken.verify_identity(identity, **args)  # type: ignore[arg-type]


def test_round_trip() -> None:
    result = _verify(GOOD)
    assert result.verified
    assert result.verstat is shaken.Verstat.PASSED
    assert (result.attest, result.orig, result.dest, result.spc) == (
        "B",
        "12025550100",
        ("12025550101",),
        "1234",
    )
    assert result.x5u == X5U


def test_sip_header_values_as_orig_and_dest() -> None:
    result = _verify(
        GOOD,
        orig='"Alice" <sip:+1-202-555-0100@example.test;user=phone>;tag=1',
        dest="<tel:+12025550101>",
    )
    assert result.verified


def test_stale_after_a_minute() -> None:
    result = _verify(GOOD, now=NOW + timedelta(seconds=61))
    assert result.reason is shaken.Reason.STALE_IAT and result.sip_code == 403


def test_caller_mistakes_raise() -> None:
    with pytest.raises(shaken.ConfigurationError):
        _verify(GOOD, now=datetime(2026, 11, 22, 12, 0, 0))
    with pytest.raises(shaken.ConfigurationError):
        _verify(GOOD, trust_anchors=None)
    with pytest.raises(shaken.ConfigurationError):
        shaken.sign_identity(key=b"junk", x5u=X5U, orig="1", dest="2", attest="A", now=NOW)


_identity_text = st.one_of(
    st.text(max_size=400),
    st.builds(
        lambda a, b: a + GOOD[len(a) : len(a) + b],
        st.text(max_size=40),
        st.integers(0, len(GOOD)),
    ),
    st.builds(
        lambda i, ch: GOOD[:i] + ch + GOOD[i + 1 :], st.integers(0, len(GOOD) - 1), st.characters()
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    identities=st.lists(_identity_text, min_size=0, max_size=3),
    orig=st.text(max_size=40),
    dest=st.text(max_size=40),
    date=st.one_of(st.none(), st.text(max_size=40)),
)
def test_no_input_string_makes_verify_raise(
    identities: list[str], orig: str, dest: str, date: str | None
) -> None:
    result = _verify(identities, orig=orig or "1", dest=dest or "2", date=date)
    assert isinstance(result, shaken.VerificationResult)
    assert result.verified is (result.reason is None)
    if result.reason is not None:
        assert result.sip_code == shaken.REASONS[result.reason].sip_code
