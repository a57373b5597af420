"""The content and claims of the Rich Call Data conformance rows, shared by their two runners.

``tests/core/test_conformance.py`` judges each row purely (bytes in, verdict out);
``tests/services/test_rcd_conformance.py`` runs the same rows end to end: a lab delegate
certificate with the row's claim constraints, the content on a real HTTPS server, the
verification service with its rcd step.
"""

from __future__ import annotations

import json
from typing import Any

from shaken.core.claimconstraints import ClaimConstraints
from shaken.core.rcd import compute_rcdi

ICN = "https://brand.example.test/acme.png"
JCL = "https://brand.example.test/acme.json"
LOGO = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
JCARD = json.dumps(
    ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", "Acme Bank"]]]
).encode()
NESTED_JCARD = json.dumps(
    ["vcard", [["fn", {}, "text", "Acme Bank"], ["logo", {}, "uri", ICN]]]
).encode()

#: What the brand's server holds when the call is signed.
SIGNED_CONTENT = {ICN: LOGO, JCL: JCARD}


def served_content(case: dict[str, Any]) -> dict[str, bytes | None]:
    """What the server returns when the call is verified (None: 404)."""
    out: dict[str, bytes | None] = dict(SIGNED_CONTENT)
    for url, change in case.get("served", {}).items():
        if change == "tampered":
            out[url] = LOGO[:-1] + b"\x00"
        elif change == "missing":
            out[url] = None
        elif change == "nested":
            out[url] = NESTED_JCARD
    return out


def signed_content(case: dict[str, Any]) -> dict[str, bytes]:
    """What the brand's server held when the row's call was signed."""
    contents = dict(SIGNED_CONTENT)
    if case.get("served", {}).get(JCL) == "nested":
        contents[JCL] = NESTED_JCARD
    return contents


def rcd_claims(case: dict[str, Any], contents: dict[str, bytes] | None = None) -> dict[str, Any]:
    """The rcd, rcdi and crn claims the row signs (rcdi over ``contents``, the signed content)."""
    claims: dict[str, Any] = {}
    if "rcd" in case:
        claims["rcd"] = case["rcd"]
        if "rcdi" in case:
            if case["rcdi"] is not None:
                claims["rcdi"] = case["rcdi"]
        else:
            claims["rcdi"] = compute_rcdi(case["rcd"], contents or signed_content(case))
    if "crn" in case:
        claims["crn"] = case["crn"]
    return claims


def row_constraints(case: dict[str, Any]) -> ClaimConstraints | None:
    spec = case.get("constraints")
    if spec is None:
        return None
    return ClaimConstraints(
        must_include=tuple(spec.get("mustInclude", ())),
        permitted={k: tuple(v) for k, v in spec.get("permittedValues", {}).items()},
        must_exclude=tuple(spec.get("mustExclude", ())),
        enhanced=bool(spec.get("enhanced")),
    )
