"""The ATIS-1000082 shape of the REST API: ``signingRequest`` / ``verificationRequest``.

Requests carry ``identity`` (verification) or the SHAKEN claims (signing); answers carry
``identity`` / ``verstat``, ``reasoncode``, ``reasontext``, ``reasondesc`` (ATIS-1000082
section 5). Parties are objects: ``{"tn": "12025550100"}``, ``{"tn": ["12025550101"]}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shaken.adapters.http import fields
from shaken.adapters.http.errors import ATIS, dumps
from shaken.adapters.http.fields import FieldError, bad
from shaken.adapters.http.requests import VerificationRequest
from shaken.core.reasons import REASONS, Reason, Verstat
from shaken.core.result import VerificationResult

__all__ = [
    "SIGNING_MEMBERS",
    "orig_party",
    "parse_verification",
    "signed_parties",
    "verification_body",
]

#: The members of an ATIS signing request: the five SHAKEN claims, and the Rich Call Data
#: claims (RFC 9795) as vendors' ATIS-1000082 APIs take them, ``rcd`` and ``crn``.
SIGNING_MEMBERS = frozenset({"attest", "dest", "iat", "orig", "origid", "rcd", "crn"})


def orig_party(value: Any, name: str) -> str:
    """``{"tn": "..."}``: the canonical TN."""
    if not isinstance(value, dict):
        raise bad(name, 'expected an object such as {"tn": "12025550100"}')
    if "tn" not in value:
        raise FieldError("SVC4001", f"{name}.tn")
    return fields.tn(value["tn"], f"{name}.tn")


def signed_parties(value: Any, name: str) -> tuple[str, ...]:
    """``{"tn": [...]}``: the canonical TNs (only telephone numbers are signed)."""
    if not isinstance(value, dict):
        raise bad(name, 'expected an object such as {"tn": ["12025550100"]}')
    if "uri" in value:
        raise bad(f"{name}.uri", "only telephone numbers are supported")
    if "tn" not in value:
        raise FieldError("SVC4001", f"{name}.tn")
    items = value["tn"]
    if not isinstance(items, list) or not 1 <= len(items) <= fields.MAX_TNS:
        raise bad(f"{name}.tn", f"expected an array of 1 to {fields.MAX_TNS} numbers")
    return tuple(fields.tn(item, f"{name}.tn") for item in items)


def parse_verification(request: Mapping[str, Any]) -> VerificationRequest:
    """An ATIS ``verificationRequest`` (the object under that member)."""
    for name in ("from", "to", "time", "identity"):
        fields.need(request, name)
    return VerificationRequest(
        schema=ATIS,
        identities=(fields.identity_value(request["identity"], "identity"),),
        orig_tn=orig_party(request["from"], "from"),
        orig_uri=None,
        to_tn=signed_parties(request["to"], "to")[0],
        to_uri=None,
        request_uri=None,
        time=fields.time_value(request["time"], "time"),
    )


# Response bodies that do not depend on the request, made once: most answers are one of these.
_BODIES: dict[tuple[Verstat, Reason | None], bytes] = {}


def verification_body(result: VerificationResult, *, rcd: Mapping[str, Any] | None = None) -> bytes:
    """The 200 answer: a verification failure is a result, not an HTTP error (section 4.3).

    ``rcd`` is the branding verdict member (RFC 9795), beside the ATIS members.
    """
    key = (result.verstat, result.reason)
    body = None if rcd is not None else _BODIES.get(key)
    if body is None:
        inner: dict[str, Any] = {}
        if result.reason is not None:
            info = REASONS[result.reason]
            inner = {
                "reasoncode": info.sip_code,
                "reasontext": info.phrase,
                "reasondesc": info.description,
            }
        inner["verstat"] = result.verstat.value
        if rcd is not None:
            inner["rcd"] = dict(rcd)
            return dumps({"verificationResponse": inner})
        body = _BODIES[key] = dumps({"verificationResponse": inner})
    return body
