"""The positional constructors build what the keyword constructors build, field for field."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shaken.core.context import SipContext, make_context
from shaken.core.fastinit import positional_constructor
from shaken.core.reasons import Reason, Verstat
from shaken.core.result import CheckTrace, Outcome, VerificationResult, make_verification_result

# The hot paths call these constructors positionally (core.verify._result, the SIP handler's
# and the REST request's context, shaken.verify_identity): a field added, removed or moved
# must fail here, so that those call sites are revisited.
FIELD_ORDER = {
    VerificationResult: (
        "verstat",
        "outcome",
        "reason",
        "detail",
        "attest",
        "orig",
        "dest",
        "origid",
        "iat",
        "ppt",
        "spc",
        "cert_serial",
        "x5u",
        "certificate_subject",
        "identity_index",
        "diversions",
        "findings",
        "rcd",
        "trace",
    ),
    SipContext: ("identity", "from_header", "pai", "to", "request_uri", "date", "call_id"),
}


@pytest.mark.parametrize("cls", list(FIELD_ORDER), ids=lambda c: c.__name__)
def test_the_hot_paths_know_the_field_order(cls: type[Any]) -> None:
    assert tuple(f.name for f in dataclasses.fields(cls)) == FIELD_ORDER[cls]


text = st.none() | st.text(max_size=20)
texts = st.lists(st.text(max_size=10), max_size=3).map(tuple)


@given(text, text, texts, text, text, text, text, texts)
def test_make_context_equals_the_keyword_constructor(
    frm: str | None,
    to: str | None,
    pai: tuple[str, ...],
    uri: str | None,
    date: str | None,
    call_id: str | None,
    _unused: str | None,
    identity: tuple[str, ...],
) -> None:
    made = make_context(identity, frm, pai, to, uri, date, call_id)
    expected = SipContext(
        identity=identity,
        from_header=frm,
        pai=pai,
        to=to,
        request_uri=uri,
        date=date,
        call_id=call_id,
    )
    assert made == expected
    assert type(made) is SipContext
    assert [getattr(made, n) for n in FIELD_ORDER[SipContext]] == [
        getattr(expected, n) for n in FIELD_ORDER[SipContext]
    ]


@given(
    st.sampled_from(list(Verstat)),
    st.sampled_from(list(Outcome)),
    st.none() | st.sampled_from(list(Reason)),
    st.text(max_size=10),
    st.none() | st.integers(),
    texts,
)
def test_make_verification_result_equals_the_keyword_constructor(
    verstat: Verstat,
    outcome: Outcome,
    reason: Reason | None,
    detail: str,
    iat: int | None,
    dest: tuple[str, ...],
) -> None:
    values: dict[str, Any] = {
        "verstat": verstat,
        "outcome": outcome,
        "reason": reason,
        "detail": detail,
        "attest": "A",
        "orig": "12025550100",
        "dest": dest,
        "origid": "o",
        "iat": iat,
        "ppt": "shaken",
        "spc": "1234",
        "cert_serial": "0a",
        "x5u": "https://cr.example.test/a.pem",
        "certificate_subject": "CN=x",
        "identity_index": 0,
        "diversions": ("1",),
        "findings": ("f",),
        "rcd": None,
        "trace": CheckTrace(),
    }
    made = make_verification_result(*(values[n] for n in FIELD_ORDER[VerificationResult]))
    expected = VerificationResult(**values)
    assert made == expected
    assert all(getattr(made, n) is getattr(expected, n) for n in values)


def test_the_made_object_stays_frozen() -> None:
    made = make_context((), None, (), None, None, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.to = "x"  # type: ignore[misc]


def test_classes_whose_init_does_more_are_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("negative")

    @dataclass(frozen=True)
    class Unslotted:
        a: int

    @dataclass(frozen=True, slots=True)
    class Derived:
        a: int
        b: int = dataclasses.field(init=False, default=0)

    for cls in (Checked, Unslotted, Derived, int):
        with pytest.raises(TypeError):
            positional_constructor(cls)


def test_a_wrong_number_of_values_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        make_context((), None)
