"""The positional constructors build what the keyword constructors build, field for field."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shaken.adapters.sip import codec
from shaken.adapters.sip.codec import Via
from shaken.core import sign, verify
from shaken.core.context import SipContext, make_context
from shaken.core.fastinit import positional_constructor
from shaken.core.identity import IdentityHeader
from shaken.core.policy import Decision
from shaken.core.reasons import Reason, Verstat
from shaken.core.result import CheckTrace, Outcome, VerificationResult, make_verification_result
from shaken.core.tn import NameAddr, parse_name_addr
from shaken.services import signing
from shaken.services.calllog import CallRecord, CallRecordBuilder
from shaken.services.signing import Attestation, SignedCall

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
    # services.signing (every signed call) and core.sign._identity.
    Attestation: ("credential", "level", "why"),
    SignedCall: (
        "identity",
        "orig",
        "dest",
        "attest",
        "x5u",
        "iat",
        "date",
        "why",
        "origid",
        "brand",
        "rcd_identity",
    ),
    IdentityHeader: ("token", "info", "alg", "ppt", "extra"),
    Via: ("transport", "host", "port", "params"),  # adapters.sip.codec.parse_via
    NameAddr: ("display_name", "uri", "params", "bracketed"),
    CallRecordBuilder: (
        "time",
        "interface",
        "call_id",
        "profile",
        "instance",
        "source_ip",
        "source_port",
        "presented_from",
        "presented_pai",
        "presented_to",
        "request_uri",
        "transaction",
    ),
    Decision: (
        "action",
        "verstat",
        "sip_code",
        "sip_phrase",
        "reason_header",
        "display_name",
        "tag_verstat",
        "call_info",
        "brand_presented",
    ),
    CallRecord: (
        "time",
        "direction",
        "interface",
        "call_id",
        "profile",
        "orig",
        "dest",
        "attest",
        "verstat",
        "reason",
        "sip_code",
        "action",
        "allowed",
        "x5u",
        "latency_ms",
        "brand",
        "rcd_status",
        "rcd_reason",
        "record_id",
        "instance",
        "source_ip",
        "source_port",
        "presented_from",
        "presented_pai",
        "presented_to",
        "request_uri",
        "origid",
        "spc",
        "cert_serial",
    ),
}


def test_the_recognizer_knows_the_field_order_of_its_tuple() -> None:
    # core.verify._recognize builds its _Common with tuple.__new__, positionally.
    assert verify._Common._fields == (
        "token",
        "info",
        "header_b64",
        "payload_b64",
        "signature_b64",
        "signature",
        "header_json",
        "passport_header",
        "payload",
        "attest",
        "iat",
        "origid",
        "orig",
        "dest_tn",
    )


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


@given(text, st.none() | st.text(max_size=10), st.none() | st.text(max_size=10))
def test_the_signing_constructors_equal_the_keyword_constructors(
    date: str | None, brand: str | None, rcd_identity: str | None
) -> None:
    call = {
        "identity": "a.b.c;info=<https://cr.example.test/a.pem>",
        "orig": "12025550100",
        "dest": ("12025550101",),
        "attest": "A",
        "x5u": "https://cr.example.test/a.pem",
        "iat": 1_700_000_000,
        "date": date,
        "why": "w",
        "origid": "o",
        "brand": brand,
        "rcd_identity": rcd_identity,
    }
    made = signing.make_signed_call(*(call[n] for n in FIELD_ORDER[SignedCall]))
    assert made == SignedCall(**call) and type(made) is SignedCall
    level = {"credential": object(), "level": "B", "why": "because"}
    chosen = signing._make_attestation(*(level[n] for n in FIELD_ORDER[Attestation]))
    assert chosen == Attestation(**level)
    header = {"token": "a.b.c", "info": "https://x", "alg": "ES256", "ppt": "shaken", "extra": ()}
    built = sign._make_identity_header(*(header[n] for n in FIELD_ORDER[IdentityHeader]))
    assert built == IdentityHeader(**header)


@given(st.sampled_from(["UDP", "TCP"]), st.none() | st.integers(1, 65535))
def test_make_via_equals_the_keyword_constructor(transport: str, port: int | None) -> None:
    params: dict[str, str | None] = {"branch": "z9hG4bK1", "rport": None}
    made = codec._make_via(transport, "192.0.2.1", port, params)
    assert made == Via(transport=transport, host="192.0.2.1", port=port, params=params)
    assert made.params is params


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


def test_the_record_builder_defaults_are_the_records_own() -> None:
    # CallRecordBuilder._record names each per-decision field with CallRecord's default, so a
    # default changed in one place and not the other fails here.
    params = inspect.signature(CallRecordBuilder._record).parameters
    defaults = {f.name: f.default for f in dataclasses.fields(CallRecord)}
    per_decision = [name for name in params if name not in ("self", "direction")]
    assert per_decision
    for name in per_decision:
        assert params[name].default == defaults[name], name


def test_a_built_record_equals_the_keyword_constructor() -> None:
    builder = CallRecordBuilder(
        time=1.5,
        interface="sip",
        call_id="c",
        profile="p",
        instance="i",
        source_ip="192.0.2.1",
        source_port=5060,
        presented_from="<sip:a@b>",
        presented_pai=None,
        presented_to="<sip:c@d>",
        request_uri="sip:c@d",
        transaction=("z9hG4bK1", "192.0.2.1:5060", "INVITE"),
    )
    made = builder.not_processed("verify", why="no profile", latency_ms=0.5)
    expected = CallRecord(
        time=1.5,
        direction="verify",
        interface="sip",
        call_id="c",
        profile="p",
        action="not_processed",
        reason="no profile",
        latency_ms=0.5,
        record_id=made.record_id,
        instance="i",
        source_ip="192.0.2.1",
        source_port=5060,
        presented_from="<sip:a@b>",
        presented_to="<sip:c@d>",
        request_uri="sip:c@d",
    )
    assert made == expected
    assert made.record_id.startswith("t-")


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=30))
def test_a_display_name_survives_format_then_parse(name: str) -> None:
    # parse_name_addr reads a quoted display name without escapes by slicing, one with
    # escapes character by character: both give back what format() wrote.
    written = NameAddr(display_name=name or None, uri="sip:+12025550100@example.org")
    parsed = parse_name_addr(written.format() + ";tag=1")
    assert parsed.display_name == (name or None)
    assert parsed.uri == "sip:+12025550100@example.org" and parsed.params == ";tag=1"
