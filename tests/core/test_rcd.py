"""Rich Call Data claims (RFC 9795): shape, limits, references and rcdi digests."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from shaken.core.rcd import (
    RcdError,
    check_integrity,
    check_referenced_jcard,
    compute_rcdi,
    content_digest,
    jcs,
    parse_digest,
    parse_rich_call_data,
)
from shaken.core.reasons import Reason

LOGO = b"\x89PNG\r\n\x1a\n-acme-logo-bytes"
ICN = "https://brand.example.com/acme.png"
JCARD: list[Any] = [
    "vcard",
    [
        ["version", {}, "text", "4.0"],
        ["fn", {}, "text", "Acme Bank"],
        ["logo", {}, "uri", "https://brand.example.com/acme-logo.png"],
    ],
]


def _parse(**claims: Any) -> Any:
    return parse_rich_call_data(claims)


def _invalid(match: str, **claims: Any) -> None:
    with pytest.raises(RcdError, match=match) as info:
        _parse(**claims)
    assert info.value.reason is Reason.RCD_INVALID


def test_no_rcd_claims_is_none() -> None:
    assert _parse(attest="A") is None


def test_valid_brand_with_icon() -> None:
    digest = content_digest(LOGO)
    data = _parse(rcd={"nam": "Acme Bank", "icn": ICN}, rcdi={"/icn": digest}, crn="Fraud alert")
    assert (data.nam, data.icn, data.crn) == ("Acme Bank", ICN, "Fraud alert")
    assert [(r.pointer, r.uri, r.role) for r in data.references] == [("/icn", ICN, "icon")]
    assert check_integrity(data, {ICN: LOGO}) == []


def test_digest_is_sri_form_over_the_bytes() -> None:
    expected = base64.b64encode(hashlib.sha256(LOGO).digest()).decode()
    assert content_digest(LOGO) == f"sha256-{expected}"
    assert content_digest(LOGO, "sha512").startswith("sha512-")
    assert parse_digest(content_digest(LOGO, "sha384"))[0] == "sha384"


def test_changed_logo_fails_integrity() -> None:
    data = _parse(rcd={"nam": "Acme Bank", "icn": ICN}, rcdi={"/icn": content_digest(LOGO)})
    problems = check_integrity(data, {ICN: LOGO + b"tampered"})
    assert [p.pointer for p in problems] == ["/icn"]
    assert "does not match" in problems[0].detail


def test_reference_without_digest_fails_integrity_when_rcdi_is_used() -> None:
    rcd = {"nam": "Acme Bank", "jcd": JCARD, "icn": ICN}
    data = _parse(rcd=rcd, rcdi={"/icn": content_digest(LOGO)})
    problems = check_integrity(data, {ICN: LOGO})
    assert [p.pointer for p in problems] == ["/jcd/1/2/3"]


def test_jcd_uris_are_references_with_json_pointers() -> None:
    logo_uri = JCARD[1][2][3]
    rcdi = compute_rcdi({"nam": "Acme Bank", "jcd": JCARD}, {logo_uri: LOGO})
    assert rcdi == {"/jcd/1/2/3": content_digest(LOGO)}
    data = _parse(rcd={"nam": "Acme Bank", "jcd": JCARD}, rcdi=rcdi)
    assert check_integrity(data, {logo_uri: LOGO}) == []


def test_inline_jcd_digest_is_over_its_jcs_form() -> None:
    rcdi = {"/jcd": content_digest(jcs(JCARD))}
    data = _parse(rcd={"nam": "Acme Bank", "jcd": JCARD}, rcdi=rcdi)
    assert [p.pointer for p in check_integrity(data, {})] == ["/jcd/1/2/3"]  # logo not fetched
    logo = JCARD[1][2][3]
    data = _parse(
        rcd={"nam": "Acme Bank", "jcd": JCARD}, rcdi={**rcdi, "/jcd/1/2/3": content_digest(LOGO)}
    )
    assert check_integrity(data, {logo: LOGO}) == []


def test_jcd_and_jcl_together_are_invalid() -> None:
    _invalid("MUST NOT", rcd={"nam": "Acme", "jcd": JCARD, "jcl": "https://x.example/c.json"})


def test_crn_over_its_limit_is_invalid() -> None:
    _invalid("over the limit of 64", crn="x" * 65)
    assert _parse(crn="x" * 64).crn == "x" * 64
    with pytest.raises(RcdError):
        parse_rich_call_data({"crn": "x" * 11}, max_crn_length=10)


@pytest.mark.parametrize(
    ("claims", "match"),
    [
        ({"rcd": {"icn": ICN}}, "no 'nam'"),
        ({"rcd": {"nam": 5}}, "not a non-empty string"),
        ({"rcd": {"nam": "A\r\nInjected: x"}}, "control characters"),
        ({"rcd": {"nam": "A", "icn": "http://brand.example.com/a.png"}}, "https or data"),
        ({"rcd": {"nam": "A", "icn": "https://brand.example.com/a b.png"}}, "not a URI"),
        ({"rcd": {"nam": "A", "jcd": {"fn": "A"}}}, "not a jCard"),
        ({"rcd": {"nam": "A", "jcd": ["vcard", [["fn", "text", "A"]]]}}, "property 0"),
        ({"rcd": "Acme"}, "not a JSON object"),
        ({"rcdi": {"/icn": "sha256-x"}}, "without 'rcd'"),
        ({"rcd": {"nam": "A", "icn": ICN}, "rcdi": {"icn": "sha256-x"}}, "not a JSON Pointer"),
        ({"rcd": {"nam": "A", "icn": ICN}, "rcdi": {"/jcl": "sha256-x"}}, "points at nothing"),
        ({"rcd": {"nam": "A", "icn": ICN}, "rcdi": {"/nam": content_digest(b"")}}, "names no URI"),
        ({"rcd": {"nam": "A", "icn": ICN}, "rcdi": {"/icn": "md5-AAAA"}}, "only sha256"),
        ({"rcd": {"nam": "A", "icn": ICN}, "rcdi": {"/icn": "sha256-!!"}}, "not base64"),
        ({"rcd": {"nam": "A", "icn": ICN}, "rcdi": {"/icn": "sha256-AAAA"}}, "wrong length"),
        ({"crn": ""}, "non-empty"),
    ],
)
def test_malformed_rcd_is_invalid(claims: dict[str, Any], match: str) -> None:
    _invalid(match, **claims)


def test_data_uri_icon_is_inline_not_a_reference() -> None:
    uri = "data:image/png;base64," + base64.b64encode(LOGO).decode()
    data = _parse(rcd={"nam": "Acme", "icn": uri}, rcdi={"/icn": content_digest(LOGO)})
    assert data.references == ()
    assert check_integrity(data, {}) == []
    data = _parse(rcd={"nam": "Acme", "icn": uri}, rcdi={"/icn": content_digest(b"other")})
    assert [p.pointer for p in check_integrity(data, {})] == ["/icn"]


def test_referenced_jcard_may_not_reference_further() -> None:
    import json

    with pytest.raises(RcdError, match=r"RFC 9796 section 8\.1"):
        check_referenced_jcard(json.dumps(JCARD).encode(), "https://x.example/c.json")
    flat = ["vcard", [["fn", {}, "text", "Acme Bank"]]]
    assert check_referenced_jcard(json.dumps(flat).encode(), "https://x") == flat
    with pytest.raises(RcdError, match="not UTF-8 JSON"):
        check_referenced_jcard(b"\xff", "https://x")


def test_compute_rcdi_needs_every_content() -> None:
    with pytest.raises(ValueError, match="no content"):
        compute_rcdi({"nam": "Acme", "icn": ICN}, {})
    with pytest.raises(ValueError, match="MUST NOT"):
        compute_rcdi({"nam": "Acme", "jcd": JCARD, "jcl": ICN}, {})


def test_crn_alone_is_present_without_rcd() -> None:
    data = _parse(crn="Appointment reminder")
    assert data.present and data.rcd is None and data.references == ()
