from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from shaken.core.errors import ConfigurationError, SigningError
from shaken.core.identity import IdentityHeader
from shaken.core.jws import b64url_decode, generate_private_key, verify_es256
from shaken.core.passport import decode_token
from shaken.core.sign import sign_div, sign_shaken
from shaken.core.tn import PartyIdentity

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
KEY = generate_private_key()
X5U = "https://cr.example.test/sp.pem"


def _parts(value: str) -> tuple[IdentityHeader, dict[str, object], dict[str, object]]:
    header = IdentityHeader.parse(value)
    token = decode_token(header.token)
    assert verify_es256(KEY.public_key(), token.signing_input, token.signature)
    return header, dict(token.header), dict(token.payload)


def test_shaken_identity_value_shape() -> None:
    value = sign_shaken(
        key=KEY, x5u=X5U, orig="+1 (202) 555-0100", dest="12025550101", attest="B", now=NOW
    )
    assert value.endswith(f";info=<{X5U}>;alg=ES256;ppt=shaken")
    header, jose, claims = _parts(value)
    assert jose == {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": X5U}
    assert claims["orig"] == {"tn": "12025550100"}
    assert claims["dest"] == {"tn": ["12025550101"]}
    assert claims["iat"] == int(NOW.timestamp())
    assert claims["attest"] == "B"
    assert uuid.UUID(str(claims["origid"])).version == 4
    # canonical JSON: the payload segment is exactly the sorted, compact encoding
    raw = b64url_decode(header.token.split(".")[1])
    assert raw == json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()


def test_origid_given_and_unique_when_not() -> None:
    origid = "123e4567-e89b-12d3-a456-426655440000"
    _, _, claims = _parts(
        sign_shaken(key=KEY, x5u=X5U, orig="1", dest="2", attest="A", iat=1, origid=origid)
    )
    assert claims["origid"] == origid
    a = _parts(sign_shaken(key=KEY, x5u=X5U, orig="1", dest="2", attest="A", iat=1))[2]
    b = _parts(sign_shaken(key=KEY, x5u=X5U, orig="1", dest="2", attest="A", iat=1))[2]
    assert a["origid"] != b["origid"]


def test_several_dests_are_sorted_and_uris_allowed() -> None:
    _, _, claims = _parts(
        sign_shaken(
            key=KEY,
            x5u=X5U,
            orig="1",
            dest=["3", "2", PartyIdentity(uri="sip:alice@example.com")],
            attest="C",
            iat=5,
        )
    )
    assert claims["dest"] == {"tn": ["2", "3"], "uri": ["sip:alice@example.com"]}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attest": "D"},
        {"origid": "not-a-uuid"},
        {"orig": "+-()"},
        {"orig": "1234567890123456"},
        {"dest": []},
        {"x5u": "https://a.example/x>;ppt=div"},
        {"x5u": ""},
        {"iat": -1},
    ],
)
def test_signing_errors(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "key": KEY,
        "x5u": X5U,
        "orig": "1",
        "dest": "2",
        "attest": "A",
        "now": NOW,
    }
    args.update(kwargs)
    with pytest.raises(SigningError):
        sign_shaken(**args)  # type: ignore[arg-type]


def test_naive_now_is_a_caller_error() -> None:
    with pytest.raises(ConfigurationError):
        sign_shaken(key=KEY, x5u=X5U, orig="1", dest="2", attest="A", now=datetime(2026, 1, 1))


def test_div_passport() -> None:
    value = sign_div(
        key=KEY,
        x5u=X5U,
        orig="12155551212",
        diverted_from="12155551213",
        dest="12155551214",
        iat=1443208345,
        history_index="1.1",
    )
    header, jose, claims = _parts(value)
    assert header.ppt == "div" and jose["ppt"] == "div"
    assert claims == {
        "dest": {"tn": ["12155551214"]},
        "div": {"hi": "1.1", "tn": "12155551213"},
        "iat": 1443208345,
        "orig": {"tn": "12155551212"},
    }
    with pytest.raises(SigningError):
        sign_div(key=KEY, x5u=X5U, orig="1", diverted_from="2", dest="2", iat=1)


@pytest.mark.parametrize("origid", [None, "123E4567-E89B-12D3-A456-426655440000"])
@pytest.mark.parametrize(
    ("orig", "dest"), [("12025550100", "12025550101"), ("+1 (202) 555", "#*9")]
)
def test_common_path_payload_is_canonical_json(origid: str | None, orig: str, dest: str) -> None:
    """The written-out payload of the common call equals canonical_json of its claims."""
    from shaken.core.passport import canonical_json

    value = sign_shaken(key=KEY, x5u=X5U, orig=orig, dest=dest, attest="C", iat=7, origid=origid)
    token = IdentityHeader.parse(value).token
    raw = b64url_decode(token.split(".")[1])
    assert raw == canonical_json(json.loads(raw))
    general = sign_shaken(
        key=KEY,
        x5u=X5U,
        orig=PartyIdentity(tn=json.loads(raw)["orig"]["tn"]),
        dest=[dest],
        attest="C",
        iat=7,
        origid=json.loads(raw)["origid"],
    )
    assert IdentityHeader.parse(general).token.split(".")[1] == token.split(".")[1]


def test_der_to_jose_handles_short_and_padded_integers() -> None:
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from shaken.core.jws import _der_to_jose

    for r, s in [(1, 2), (2**255 + 5, 2**256 - 1), (2**248, 3), (2**256 - 2, 2**200)]:
        der = encode_dss_signature(r, s)
        assert _der_to_jose(der) == r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_jose_to_der_matches_the_library_encoder() -> None:
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from shaken.core.jws import _jose_to_der

    for r, s in [(1, 2), (0, 5), (2**255 + 5, 2**256 - 1), (2**248, 3), (127, 128), (2**7, 2**15)]:
        jose = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        assert _jose_to_der(jose) == encode_dss_signature(r, s)
