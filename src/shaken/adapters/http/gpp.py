"""The 3GPP TS 24.229 "Ms" shape of the REST API.

Requests carry ``identityHeader`` / ``identityHeaders``, parties as bare strings (a TN or a
SIP/tel URI) or ``{"tn": ...}`` / ``{"uri": [...]}`` objects, ``dest`` for the Request-URI,
and ``profileId``, ``requestId``, ``displayName``; answers carry ``identityHeader`` /
``verstatValue``, ``verifyResults``, ``divResult``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shaken.adapters.http import fields
from shaken.adapters.http.errors import THREE_GPP, dumps
from shaken.adapters.http.fields import FieldError, bad
from shaken.adapters.http.requests import VerificationRequest
from shaken.core.result import VerificationResult

__all__ = [
    "SIGNING_MEMBERS",
    "VERIFICATION_MEMBERS",
    "parse_verification",
    "parties",
    "party",
    "verification_body",
]

#: Members only this shape has: "auto" takes a request holding one of them (and no ATIS
#: "identity") as 3GPP.
VERIFICATION_MEMBERS = frozenset(
    {
        "identityHeader",
        "identityHeaders",
        "dest",
        "protectedHeaders",
        "profileId",
        "requestId",
        "displayName",
    }
)
SIGNING_MEMBERS = frozenset({"ppt", "profileId", "requestId", "rph", "sph", "div"})


def party(value: Any, name: str) -> tuple[str | None, str | None]:
    """A bare TN or URI string, ``{"tn": "..."}`` or ``{"uri": "..."}``: (tn, uri)."""
    if isinstance(value, str):
        if fields.is_tn_text(value):
            return fields.tn(value, name), None
        return None, fields.uri(value, name)
    if not isinstance(value, dict):
        raise bad(name, 'expected an object such as {"tn": "12025550100"}')
    if "tn" in value:
        return fields.tn(value["tn"], f"{name}.tn"), None
    if "uri" in value:
        return None, fields.uri(value["uri"], f"{name}.uri")
    raise FieldError("SVC4001", f"{name}.tn")


def parties(value: Any, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A bare string, ``{"tn": [...]}`` and/or ``{"uri": [...]}``, or a one-element array of
    one of those (the Neustar examples wrap ``dest`` so): (tns, uris)."""
    if isinstance(value, str):
        tn, uri = party(value, name)
        return ((tn,) if tn else ()), ((uri,) if uri else ())
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, dict):
        raise bad(name, 'expected an object such as {"tn": ["12025550100"]}')
    tns: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    if "tn" in value:
        items = value["tn"]
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, list) or not 1 <= len(items) <= fields.MAX_TNS:
            raise bad(f"{name}.tn", f"expected an array of 1 to {fields.MAX_TNS} numbers")
        tns = tuple(fields.tn(item, f"{name}.tn") for item in items)
    if "uri" in value:
        items = value["uri"]
        if not isinstance(items, list) or not 1 <= len(items) <= fields.MAX_TNS:
            raise bad(f"{name}.uri", f"expected an array of 1 to {fields.MAX_TNS} URIs")
        uris = tuple(fields.uri(item, f"{name}.uri") for item in items)
    if not tns and not uris:
        raise FieldError("SVC4001", f"{name}.tn")
    return tns, uris


def parse_verification(request: Mapping[str, Any]) -> VerificationRequest:
    """A 3GPP ``verificationRequest`` (the object under that member)."""
    identities: list[str] = []
    if request.get("identityHeader") is not None:
        identities.append(fields.identity_value(request["identityHeader"], "identityHeader"))
    more = request.get("identityHeaders")
    if more is not None:
        if not isinstance(more, list) or not 1 <= len(more) <= fields.MAX_IDENTITIES:
            raise bad("identityHeaders", f"expected 1 to {fields.MAX_IDENTITIES} strings")
        identities.extend(fields.identity_value(v, "identityHeaders") for v in more)
    if not identities:
        raise FieldError("SVC4001", "identityHeader")
    for name in ("from", "to", "time"):
        fields.need(request, name)
    orig_tn, orig_uri = party(request["from"], "from")
    to_tns, to_uris = parties(request["to"], "to")
    request_uri = None
    if request.get("dest") is not None:
        dest_tns, dest_uris = parties(request["dest"], "dest")
        request_uri = f"tel:{dest_tns[0]}" if dest_tns else dest_uris[0]
    return VerificationRequest(
        schema=THREE_GPP,
        identities=tuple(dict.fromkeys(identities)),
        orig_tn=orig_tn,
        orig_uri=orig_uri,
        to_tn=to_tns[0] if to_tns else None,
        to_uri=None if to_tns else to_uris[0],
        request_uri=request_uri,
        time=fields.time_value(request["time"], "time"),
        profile_id=fields.optional_text(request, "profileId"),
        request_id=fields.request_id(request),
        display_name=fields.optional_text(request, "displayName"),
    )


def verification_body(
    request: VerificationRequest,
    result: VerificationResult,
    *,
    display_name: str | None,
    rcd: Mapping[str, Any] | None = None,
) -> bytes:
    """The 200 answer with ``verifyResults`` (and ``divResult`` for diverted calls)."""
    verify: dict[str, Any] = {"ppt": result.ppt or "shaken"}
    if result.verified:
        verify["status"] = "pass"
        verify["validClaims"] = {
            "attest": result.attest,
            "dest": {"tn": list(result.dest)},
            "iat": result.iat,
            "orig": {"tn": result.orig},
            "origid": result.origid,
        }
    else:
        verify["status"] = "fail"
        info = result.reason_info
        if info is not None:
            verify["reasonCode"] = info.sip_code
            verify["reasonText"] = info.phrase
            verify["reasonDescription"] = info.description
    inner: dict[str, Any] = {
        "verstatValue": result.verstat.value,
        "verifyResults": [{"verifyResult": verify}],
    }
    if result.diversions:
        inner["divResult"] = [
            {"div": div, "verstatValue": result.verstat.value} for div in result.diversions
        ]
    if request.request_id is not None:
        inner["requestId"] = request.request_id
    if display_name is not None:
        inner["displayName"] = display_name
    if rcd is not None:
        inner["rcd"] = dict(rcd)
    return dumps({"verificationResponse": inner})
