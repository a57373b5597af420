from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shaken.core.errors import PassportError
from shaken.core.jws import b64url_encode
from shaken.core.passport import (
    PassportClaims,
    PassportHeader,
    canonical_json,
    decode_token,
    encode_segments,
)
from shaken.core.reasons import Reason
from shaken.core.tn import PartyIdentity

# RFC 8225 Appendix A (V-R1): our serializer must produce exactly these two segments.
V_R1_HEADER = (
    "eyJhbGciOiJFUzI1NiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jZXJ0LmV4YW1wbGUub3JnL3Bhc3Nw"
    "b3J0LmNlciJ9"
)
V_R1_PAYLOAD = (
    "eyJkZXN0Ijp7InVyaSI6WyJzaXA6YWxpY2VAZXhhbXBsZS5jb20iXX0sImlhdCI6MTQ3MTM3NTQxOCwib3JpZyI6eyJ0"
    "biI6IjEyMTU1NTUxMjEyIn19"
)


def test_rfc8225_appendix_a_segments_byte_for_byte() -> None:
    header = PassportHeader(ppt=None, x5u="https://cert.example.org/passport.cer")
    claims = PassportClaims(
        orig=PartyIdentity(tn="12155551212"), dest_uri=("sip:alice@example.com",), iat=1471375418
    )
    assert encode_segments(header, claims) == (V_R1_HEADER, V_R1_PAYLOAD)


def test_canonical_json_sorts_recursively_without_whitespace() -> None:
    assert canonical_json({"b": {"z": 1, "a": [2, {"d": 1, "c": 0}]}, "a": "é"}) == (
        '{"a":"é","b":{"a":[2,{"c":0,"d":1}],"z":1}}'.encode()
    )


def _token(header: object, payload: object, sig: bytes = b"\0" * 64) -> str:
    import json

    def enc(obj: object) -> str:
        raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        return b64url_encode(raw)

    return f"{enc(header)}.{enc(payload)}.{b64url_encode(sig)}"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("..c2ln", Reason.COMPACT_FORM),
        ("a.b", Reason.INVALID_TOKEN),
        ("a.b.c.d", Reason.INVALID_TOKEN),
        ("e30=.e30.c2ln", Reason.INVALID_TOKEN),  # padding
        (_token([1], {}), Reason.INVALID_TOKEN),
        (_token({}, "x"), Reason.INVALID_TOKEN),
        (_token(b'{"a":1,"a":2}', {}), Reason.INVALID_TOKEN),  # duplicate member
        (_token(b'{"a":NaN}', {}), Reason.INVALID_TOKEN),
        (_token(b"\xff\xfe", {}), Reason.INVALID_TOKEN),
    ],
)
def test_decode_errors(token: str, reason: Reason) -> None:
    with pytest.raises(PassportError) as exc:
        decode_token(token)
    assert exc.value.reason is reason


def test_decode_keeps_segments_as_received() -> None:
    t = decode_token(_token({"b": 1, "a": 2}, {"x": "y"}))
    assert t.signing_input == ".".join(_token({"b": 1, "a": 2}, {"x": "y"}).split(".")[:2]).encode()
    assert dict(t.header) == {"b": 1, "a": 2}


GOOD = {
    "attest": "A",
    "dest": {"tn": ["12155550131"]},
    "iat": 1443208345,
    "orig": {"tn": "12155550121"},
    "origid": "123e4567-e89b-12d3-a456-426655440000",
}


def _with(**changes: object) -> dict[str, object]:
    out = dict(GOOD)
    for k, v in changes.items():
        if v is None:
            out.pop(k)
        else:
            out[k] = v
    return out


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        (_with(origid=None), Reason.MISSING_CLAIM),
        (_with(attest=None), Reason.MISSING_CLAIM),
        (_with(iat=None), Reason.MISSING_CLAIM),
        (_with(attest="D"), Reason.INVALID_ATTEST),
        (_with(attest="a"), Reason.INVALID_ATTEST),
        (_with(iat="1443208345"), Reason.INVALID_CLAIM),
        (_with(iat=True), Reason.INVALID_CLAIM),
        (_with(iat=1.5), Reason.INVALID_CLAIM),
        (_with(orig='{"tn":"1"}'), Reason.INVALID_CLAIM),  # libstirshaken quirk
        (_with(orig={"tn": "1", "uri": "sip:a@b"}), Reason.INVALID_CLAIM),
        (_with(orig={}), Reason.INVALID_CLAIM),
        (_with(dest={}), Reason.INVALID_CLAIM),
        (_with(dest={"tn": [1]}), Reason.INVALID_CLAIM),
        (_with(dest="12155550131"), Reason.INVALID_CLAIM),
        (_with(origid=5), Reason.INVALID_CLAIM),
        (_with(rcd="x"), Reason.INVALID_CLAIM),
        (_with(rcd={"nam": 5}), Reason.INVALID_CLAIM),
    ],
)
def test_shaken_claim_errors(claims: dict[str, object], reason: Reason) -> None:
    with pytest.raises(PassportError) as exc:
        PassportClaims.from_json(claims, ppt="shaken")
    assert exc.value.reason is reason


def test_div_requires_div_and_accepts_string_dest() -> None:
    with pytest.raises(PassportError) as exc:
        PassportClaims.from_json({"dest": {"tn": ["1"]}, "iat": 1, "orig": {"tn": "2"}}, ppt="div")
    assert exc.value.reason is Reason.MISSING_CLAIM
    c = PassportClaims.from_json(
        {
            "dest": {"tn": "12155551214"},
            "div": {"tn": "12155551213", "hi": "1.1"},
            "iat": 1,
            "orig": {"tn": "12155551212"},
        },
        ppt="div-o",
    )
    assert c.dest_tn == ("12155551214",)
    assert c.div == PartyIdentity(tn="12155551213") and c.div_hi == "1.1"


def test_header_requires_members() -> None:
    for missing in ("alg", "typ", "x5u", "ppt"):
        obj = {"alg": "ES256", "typ": "passport", "x5u": "https://a", "ppt": "shaken"}
        del obj[missing]
        with pytest.raises(PassportError) as exc:
            PassportHeader.from_json(obj)
        assert exc.value.reason is Reason.BAD_PASSPORT_HEADER


def test_unknown_claims_are_kept_and_written_back() -> None:
    c = PassportClaims.from_json(_with(rcd={"nam": "Alice"}, crn="Lunch", zzz=[1, 2]), ppt="shaken")
    assert dict(c.extra) == {"zzz": [1, 2]}
    assert c.to_json() == _with(rcd={"nam": "Alice"}, crn="Lunch", zzz=[1, 2])


_tn = st.from_regex(r"[0-9]{1,15}", fullmatch=True)


@given(
    orig=_tn,
    dests=st.lists(_tn, min_size=1, max_size=3),
    iat=st.integers(min_value=0, max_value=2**40),
    attest=st.sampled_from("ABC"),
    origid=st.uuids().map(str),
    nam=st.one_of(st.none(), st.text(max_size=20)),
)
def test_claims_round_trip_through_canonical_json(
    orig: str, dests: list[str], iat: int, attest: str, origid: str, nam: str | None
) -> None:
    import json

    from shaken.core.jws import b64url_decode

    claims = PassportClaims(
        orig=PartyIdentity(tn=orig),
        dest_tn=tuple(sorted(dests)),
        iat=iat,
        attest=attest,
        origid=origid,
        rcd=None if nam is None else {"nam": nam},
    )
    header = PassportHeader(x5u="https://cr.example/c.pem")
    h64, p64 = encode_segments(header, claims)
    back = PassportClaims.from_json(json.loads(b64url_decode(p64)), ppt="shaken")
    assert back == claims
    assert PassportHeader.from_json(json.loads(b64url_decode(h64))) == header


@given(st.text(max_size=200))
def test_decode_token_raises_only_passport_error(text: str) -> None:
    with contextlib.suppress(PassportError):
        decode_token(text)
