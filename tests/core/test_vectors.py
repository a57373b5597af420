"""Published test vectors (RFC 8225, RFC 8588, RFC 8946 Appendix A), through the whole pipeline.

V-D1 is signed with the RFC 8946 Appendix A key (K3). To run it end to end we certify K3 under
a throwaway STI PKI dated at the vector's iat (2015-09-25), then derive the negative vectors the
reference lists: flipped signature, attest D, no origid, compact form, ppt=div parameter, typ
JWT, x5u different from info, and a Date header 61 s old.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from shaken.core.certs import TNAUTHLIST_OID, Spc, TNAuthList
from shaken.core.context import SipContext, format_sip_date
from shaken.core.identity import IdentityHeader
from shaken.core.jws import b64url_decode, b64url_encode, load_private_key, sign_es256
from shaken.core.passport import PassportClaims, canonical_json, decode_token
from shaken.core.reasons import Reason
from shaken.core.verify import verify
from shaken.testing import make_sti_pki

K3_PRIVATE = b"""-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIFKCsFZ4Wsw3ZpBxgc4Z0sOjaXDdMk07Ny1fKg6OntAkoAoGCCqGSM49
AwEHoUQDQgAEmzGM1VsO+3IqbMF54rQMaYKQftO4hUYm9wv5wutLgEd9FsiTy3+4
+Wa2O7pffOXPC0QzO+yD8hGEXGP/2mZo6w==
-----END EC PRIVATE KEY-----
"""
V_D1 = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jZXJ0LmV4"
    "YW1wbGUub3JnL3Bhc3Nwb3J0LmNlciJ9.eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0biI6WyIxMjE1NTU1MDEzMSJdfSw"
    "iaWF0IjoxNDQzMjA4MzQ1LCJvcmlnIjp7InRuIjoiMTIxNTU1NTAxMjEifSwib3JpZ2lkIjoiMTIzZTQ1NjctZTg5Yi0x"
    "MmQzLWE0NTYtNDI2NjU1NDQwMDAwIn0.BuOEj7jvXtnbzdCr8wbRgkqvUU7mhB96bmzgU5u7kTDmEIpts_ziGWeGPGroP"
    "gI5tb7RWl8HdWk_91EupeMMfA"
)
X5U = "https://cert.example.org/passport.cer"
IAT = 1443208345
NOW = datetime.fromtimestamp(IAT, UTC) + timedelta(seconds=5)
K3 = load_private_key(K3_PRIVATE)
PKI = make_sti_pki(NOW)


def _k3_certificate() -> bytes:
    """An SP certificate for K3 under the test intermediate (SPC 1234)."""
    inter = PKI.intermediate
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "US"),
                    x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "RFC 8946 key (TEST ONLY)"),
                    x509.NameAttribute(x509.NameOID.COMMON_NAME, "SHAKEN 1234"),
                ]
            )
        )
        .issuer_name(inter.subject)
        .public_key(K3.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.UnrecognizedExtension(
                TNAUTHLIST_OID, TNAuthList(entries=(Spc(code="1234"),)).to_der()
            ),
            critical=False,
        )
        .sign(PKI.intermediate_key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM) + inter.public_bytes(Encoding.PEM)


CHAIN = _k3_certificate()


def _resign(header: dict[str, object], claims: dict[str, object]) -> str:
    h = b64url_encode(canonical_json(header))
    p = b64url_encode(canonical_json(claims))
    return f"{h}.{p}.{b64url_encode(sign_es256(K3, f'{h}.{p}'.encode()))}"


def _parts() -> tuple[dict[str, object], dict[str, object]]:
    t = decode_token(V_D1)
    return dict(t.header), dict(t.payload)


def _run(identity: str, *, date: str | None = None, info: str = X5U) -> Reason | None:
    ctx = SipContext(
        identity=(identity,),
        from_header="<sip:+12155550121@example.org;user=phone>;tag=1",
        to="<sip:+12155550131@example.org;user=phone>",
        date=date,
    )
    result = verify(ctx, {info: CHAIN, X5U: CHAIN}, PKI.trust_anchors, now=NOW)
    return result.reason


def _value(token: str, **params: str | None) -> str:
    p: dict[str, str | None] = {"info": X5U, "alg": "ES256", "ppt": "shaken"}
    p.update(params)
    return IdentityHeader(token=token, info=p["info"], alg=p["alg"], ppt=p["ppt"]).format()


def test_v_d1_verifies_end_to_end() -> None:
    assert _run(_value(V_D1)) is None
    assert _run(V_D1 + f';info=<{X5U}>;alg=ES256;ppt="shaken"') is None


def _negative_cases() -> list[tuple[str, str, Reason]]:
    header, claims = _parts()
    sig = b64url_decode(V_D1.split(".")[2])
    flipped = ".".join([*V_D1.split(".")[:2], b64url_encode(bytes([sig[0] ^ 1]) + sig[1:])])
    attest_d = _resign(header, {**claims, "attest": "D"})
    no_origid = _resign(header, {k: v for k, v in claims.items() if k != "origid"})
    typ_jwt = _resign({**header, "typ": "JWT"}, claims)
    return [
        ("flipped-signature", _value(flipped), Reason.BAD_SIGNATURE),
        ("attest-D", _value(attest_d), Reason.INVALID_ATTEST),
        ("no-origid", _value(no_origid), Reason.MISSING_CLAIM),
        ("compact-form", _value(".." + V_D1.split(".")[2]), Reason.COMPACT_FORM),
        ("ppt-param-div", _value(V_D1, ppt="div"), Reason.PPT_MISMATCH),
        ("typ-JWT", _value(typ_jwt), Reason.UNSUPPORTED_TYP),
        (
            "x5u-not-info",
            _value(V_D1, info="https://other.example.org/c.pem"),
            Reason.X5U_INFO_MISMATCH,
        ),
    ]


@pytest.mark.parametrize(
    ("name", "value", "reason"), _negative_cases(), ids=[c[0] for c in _negative_cases()]
)
def test_v_d1_negative_vectors(name: str, value: str, reason: Reason) -> None:
    assert _run(value) is reason, name


def test_v_d1_date_61s_old_is_stale() -> None:
    old = format_sip_date(NOW - timedelta(seconds=61))
    assert _run(_value(V_D1), date=old) is Reason.STALE_DATE


def test_v_r2_verifies_but_info_differs_from_x5u() -> None:
    """RFC 8224 4.1.1: a good signature, but info=biloxi while x5u=cert.example.org: 436."""
    token = (
        "eyJhbGciOiJFUzI1NiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jZXJ0LmV4YW1wbGUub3JnL3Bhc3Nw"
        "b3J0LmNlciJ9.eyJkZXN0Ijp7InVyaSI6WyJzaXA6YWxpY2VAZXhhbXBsZS5jb20iXX0sImlhdCI6IjE0NDMyMDgzND"
        "UiLCJvcmlnIjp7InRuIjoiMTIxNTU1NTEyMTIifX0.rq3pjT1hoRwakEGjHCnWSwUnshd0-zJ6F1VOgFWSjHBr8Qjpjlk"
        "-cpFYpFYsojNCpTzO3QfPOlckGaS6hEck7w"
    )
    value = f"{token};info=<https://biloxi.example.org/biloxi.cert>"
    ctx = SipContext(
        identity=(value,),
        from_header="<sip:12155551212@example.com;user=phone>",
        to="<sip:alice@example.com>",
    )
    result = verify(ctx, {}, PKI.trust_anchors, now=NOW)
    # The header has no ppt: the SHAKEN profile requires it (E9) before comparing x5u and info.
    assert result.reason is Reason.BAD_PASSPORT_HEADER
    from dataclasses import replace

    from shaken.core.verify import SHAKEN

    baseline = replace(SHAKEN, full_form_only=False)
    result = verify(ctx, {}, PKI.trust_anchors, now=NOW, profile=baseline)
    assert result.reason is Reason.X5U_INFO_MISMATCH


def test_v_r6_div_o_dest_as_string_is_read_leniently() -> None:
    payload = (
        "eyJkZXN0Ijp7InRuIjoiMTIxNTU1NTEyMTQifSwiZGl2Ijp7InRuIjoiMTIxNTU1NTUxMjEzIn0sImlhdCI6MTQ0MzIw"
        "ODM0NSwib3B0IjoiZXlKaGJHY2lPaUpGVXpJMU5pSXNJblI1Y0NJNkluQmhjM053YjNKMElpd2llRFYxSWpvaWFIUjBj"
        "SE02THk5M2QzY3VaWGhoYlhCc1pTNWpiMjB2WTJWeWRDNWpaWElpZlEuZXlKa1pYTjBJanA3SW5SdUlqcGJJakV5TVRV"
        "MU5UVXhNakV6SWwxOUxDSnBZWFFpT2pFME5ETXlNRGd6TkRVc0ltOXlhV2NpT25zaWRHNGlPaUl4TWpFMU5UVTFNVEl4"
        "TWlKOWZRLjFiRXpremNOYkt2Z3o0UW9NeDBfREoyVDhxRk1EQzFzUHFIUFhsMVd2YmF1elJKUnZZbFpxUTBxZ0dUbFM4"
        "dEpfd1hqVmUwN1ozd3ZEcmRBcEhoaFl3Iiwib3JpZyI6eyJ0biI6IjEyMTU1NTUxMjEyIn19"
    )
    claims = PassportClaims.from_json(json.loads(b64url_decode(payload)), ppt="div-o")
    assert claims.dest_tn == ("12155551214",)
    assert claims.opt is not None and claims.opt.startswith("eyJhbGciOiJFUzI1NiIs")
    assert claims.to_json()["dest"] == {"tn": ["12155551214"]}  # strict on output


def test_v_r7_malformed_rph_is_rejected_as_a_parse_error() -> None:
    token = (
        "eyJhbGciOiJFUzI1NiIsInBwdCI6InJwaCIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly93d3cuZXhhbXBs"
        "ZS5jb20vY2VydC5jZXIifQo.eyJkZXN0Ijp7WyJ0biI6IjEyMTI1NTUwMTEzIl19LCJpYXQiOiIxNDQzMjA4MzQ1Iiwib"
        "3JpZyI6eyJ0biI6IjEyMTU1NTUwMTEyIn0sInJwaCI6eyJhdXRoIjpbImV0cy4wIiwid3BzLjAiXX19Cg.s37S6VC8HM"
        "6Dl6YzJeQDsrZcwJ0lizxhUrA7f_98oWBHvo-cl-n8MIhoCr18vYYFy3blXvs3fslM_oos2P2Dyw"
    )
    value = f'{token};info=<https://www.example.org/cert.cer>;alg=ES256;ppt="rph"'
    from dataclasses import replace

    from shaken.core.verify import SHAKEN

    rph = replace(SHAKEN, accepted_ppt=("shaken", "rph"))
    ctx = SipContext(identity=(value,), from_header="<tel:+12155550112>", to="<tel:+12125550113>")
    assert verify(ctx, {}, PKI.trust_anchors, now=NOW, profile=rph).reason is Reason.INVALID_TOKEN
    # Under the default SHAKEN profile an rph header alone is ignored, leaving nothing: E5.
    assert verify(ctx, {}, PKI.trust_anchors, now=NOW).reason is Reason.UNSUPPORTED_PPT


def test_v_r8_string_iat_is_an_invalid_claim() -> None:
    claims = {
        "attest": "A",
        "dest": {"tn": ["12155550131"]},
        "iat": "1443208345",
        "orig": {"tn": "12155550121"},
        "origid": "123e4567-e89b-12d3-a456-426655440000",
    }
    header, _ = _parts()
    assert _run(_value(_resign(header, claims))) is Reason.INVALID_CLAIM
