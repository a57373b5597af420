"""The JSON of the REST API: request validation, response bodies, errors, the OpenAPI document.

Two schemas share the paths ``/stir/v1/signing`` and ``/stir/v1/verification``
(``reference/standards.md`` section 4):

* ATIS-1000082: ``signingRequest`` / ``verificationRequest`` with ``identity``, answered with
  ``identity`` / ``verstat``, ``reasoncode``, ``reasontext``, ``reasondesc``; API errors as
  ``requestError.serviceException`` (``SVC*``) or ``policyException`` (``POL*``).
* 3GPP TS 24.229 "Ms": ``identityHeader`` / ``identityHeaders``, answered with
  ``identityHeader`` / ``verstatValue``, ``verifyResults``, ``divResult``; errors as
  ``{"error": "..."}``.

``[server] api_schema`` picks one, or ``auto`` (the default) tells them apart by the request's
shape. Validation is strict because a verifier's input comes from the network: duplicate JSON
member names, NaN, wrong types and out-of-range values are API errors, never exceptions.
Error texts never echo header values that could hold a secret, and variables name fields and
problems rather than repeating the values a client sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shaken.core.context import SipContext, format_sip_date
from shaken.core.passport import ATTESTATION_LEVELS, UUID_PATTERN
from shaken.core.reasons import REASONS, Reason, Verstat
from shaken.core.result import VerificationResult
from shaken.core.tn import canonicalize_tn

__all__ = [
    "ATIS",
    "AUTO",
    "ERRORS",
    "MAX_BODY_BYTES",
    "THREE_GPP",
    "ApiError",
    "ErrorSpec",
    "SigningRequest",
    "VerificationRequest",
    "decode_body",
    "openapi_document",
    "parse_signing",
    "parse_verification",
    "signing_body",
    "verification_body",
]

ATIS = "atis"
THREE_GPP = "3gpp"
AUTO = "auto"

#: The largest request body read; a verification request is well under 10 KiB.
MAX_BODY_BYTES = 64 * 1024
_MAX_IDENTITY = 8192
_MAX_IDENTITIES = 8
_MAX_TNS = 16
_MAX_TEXT = 256


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """One API error: its HTTP status and its text with ``%1``, ``%2`` placeholders."""

    status: int
    text: str


#: ATIS-1000082 errors (the first ten, texts as in ``reference/standards.md`` 4.5), then the
#: ones this server adds in the same shape, named ``POL`` + HTTP status + ``0`` like POL4050.
ERRORS: dict[str, ErrorSpec] = {
    "SVC4000": ErrorSpec(400, "Error: Missing JSON body in the request."),
    "SVC4001": ErrorSpec(400, "Error: Missing mandatory parameter '%1'."),
    "SVC4002": ErrorSpec(406, "Error: Requested response body type '%1' is not supported."),
    "SVC4003": ErrorSpec(404, "Error: Requested resource was not found."),
    "SVC4004": ErrorSpec(415, "Error: Unsupported request body type, expected '%1'."),
    "SVC4005": ErrorSpec(400, "Error: Invalid '%1' parameter value: %2."),
    "SVC4006": ErrorSpec(400, "Error: Failed to parse received message body: '%1'."),
    "SVC4007": ErrorSpec(411, "Error: Missing mandatory Content-Length header."),
    "POL4050": ErrorSpec(405, "Error: Method Not Allowed: Invalid HTTP method used"),
    "POL5000": ErrorSpec(500, "Error: Internal Server Issue"),
    "POL4010": ErrorSpec(401, "Error: Missing or unknown API key."),
    "POL4030": ErrorSpec(403, "Error: Not authorized: %1."),
    "POL4130": ErrorSpec(413, "Error: Request body larger than %1 bytes."),
    "POL4290": ErrorSpec(429, "Error: Too many requests; retry after %1 s."),
    "POL5030": ErrorSpec(503, "Error: Server busy; retry after %1 s."),
}


class ApiError(Exception):
    """An API-level error (HTTP 4xx/5xx): a row of :data:`ERRORS` and its variables.

    ``schema`` is the request's schema once known (errors before the body is read use the
    configured default). ``retry_after`` and ``allow`` become the Retry-After and Allow headers.
    """

    def __init__(
        self,
        message_id: str,
        *variables: str,
        schema: str | None = None,
        retry_after: int | None = None,
        allow: str | None = None,
    ) -> None:
        super().__init__(message_id)
        self.message_id = message_id
        self.variables = variables
        self.schema = schema
        self.retry_after = retry_after
        self.allow = allow

    @property
    def status(self) -> int:
        return ERRORS[self.message_id].status

    def text(self) -> str:
        """The error text with its variables filled in (the 3GPP body carries only this)."""
        text = ERRORS[self.message_id].text
        for i, value in enumerate(self.variables, start=1):
            text = text.replace(f"%{i}", value)
        return text

    def body(self, schema: str) -> bytes:
        if schema == THREE_GPP:
            return _dumps({"error": self.text()})
        kind = "policyException" if self.message_id.startswith("POL") else "serviceException"
        inner: dict[str, Any] = {
            "messageId": self.message_id,
            "text": ERRORS[self.message_id].text,
        }
        if self.variables:
            inner["variables"] = list(self.variables)
        return _dumps({"requestError": {kind: inner}})

    def __str__(self) -> str:
        return f"{self.message_id}: {self.text()}"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")


# ------------------------------------------------------------------------------- JSON bodies


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a member name is repeated")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_no_constant)


def decode_body(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object.

    :raises ApiError: SVC4000 for an empty body, SVC4006 for anything that is not one UTF-8
        JSON object without repeated member names.
    """
    if not body.strip():
        raise ApiError("SVC4000")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("SVC4006", "the body is not UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise ApiError("SVC4006", f"invalid JSON at offset {exc.pos}") from None
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise ApiError("SVC4006", reason[:80]) from None
    if not isinstance(value, dict):
        raise ApiError("SVC4006", "the body is not a JSON object")
    return value


# ---------------------------------------------------------------------------- field checks

# A TN as SBCs send it: 3 to 15 of digits, '#' and '*' (E.164 has at most 15), an optional
# leading '+', visual separators between them.
_TN_PATTERN = r"\+?[0-9#*](?:[().\- ]{0,3}[0-9#*]){2,14}"
_TN_TEXT = re.compile(_TN_PATTERN)
_URI_TEXT = re.compile(r"(?:sips?|tel):[!#-;=?-~]{1,250}", re.IGNORECASE)
_TOKEN_TEXT = re.compile(r"[!-~]{1,128}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _need(request: Mapping[str, Any], name: str, schema: str) -> Any:
    value = request.get(name)
    if value is None:
        raise ApiError("SVC4001", name, schema=schema)
    return value


def _bad(name: str, problem: str, schema: str) -> ApiError:
    return ApiError("SVC4005", name, problem, schema=schema)


def _tn(value: Any, name: str, schema: str) -> str:
    """A canonical TN (RFC 8224 section 8.3: separators and '+' removed), 3 to 15 long."""
    if type(value) is str and value.isdigit() and value.isascii() and 3 <= len(value) <= 15:
        return value  # already canonical: what nearly every client sends
    if not isinstance(value, str) or not _TN_TEXT.fullmatch(value):
        raise _bad(name, "expected a telephone number of 3 to 15 digits", schema)
    return canonicalize_tn(value)


def _uri(value: Any, name: str, schema: str) -> str:
    if not isinstance(value, str) or not _URI_TEXT.fullmatch(value):
        raise _bad(name, "expected a sip, sips or tel URI", schema)
    return value


def _time(value: Any, name: str, schema: str) -> int:
    # JSON Schema counts 86400.0 as an integer, so an integral float is one here too; up to
    # 2**33 s (year 2242): anything larger is no time a SIP Date header could carry.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or not 1 <= value < 2**33:
        raise _bad(name, "expected a positive integer (seconds since 1970)", schema)
    return value


def _identity_value(value: Any, name: str, schema: str) -> str:
    # Printable ASCII (str.isprintable on ASCII is exactly [ -~]): no CR/LF or other control
    # characters that could smuggle a header line into a SIP message built from this value.
    if (
        not isinstance(value, str)
        or not value.isascii()
        or not value.isprintable()
        or len(value) > _MAX_IDENTITY
        or not value.strip()
    ):
        raise _bad(name, "expected an Identity header value (printable ASCII)", schema)
    return value.strip()


def _optional_text(request: Mapping[str, Any], name: str, schema: str) -> str | None:
    value = request.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _MAX_TEXT or _CONTROL.search(value):
        raise _bad(name, f"expected a string of at most {_MAX_TEXT} characters", schema)
    return value


def _party(value: Any, name: str, schema: str, *, uri_ok: bool) -> tuple[str | None, str | None]:
    """``{"tn": "..."}`` (or, 3GPP, ``{"uri": "..."}`` or a bare string): (tn, uri)."""
    if schema == THREE_GPP and isinstance(value, str):
        if _TN_TEXT.fullmatch(value):
            return _tn(value, name, schema), None
        return None, _uri(value, name, schema)
    if not isinstance(value, dict):
        raise _bad(name, 'expected an object such as {"tn": "12025550100"}', schema)
    if "tn" in value:
        return _tn(value["tn"], f"{name}.tn", schema), None
    if uri_ok and "uri" in value:
        return None, _uri(value["uri"], f"{name}.uri", schema)
    raise ApiError("SVC4001", f"{name}.tn", schema=schema)


def _parties(
    value: Any, name: str, schema: str, *, uri_ok: bool
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``{"tn": [...]}`` and/or (3GPP) ``{"uri": [...]}``, or a bare string: (tns, uris)."""
    if schema == THREE_GPP:
        if isinstance(value, str):
            tn, uri = _party(value, name, schema, uri_ok=True)
            return ((tn,) if tn else ()), ((uri,) if uri else ())
        if isinstance(value, list) and len(value) == 1:
            value = value[0]  # the Neustar examples wrap dest in a one-element array
    if not isinstance(value, dict):
        raise _bad(name, 'expected an object such as {"tn": ["12025550100"]}', schema)
    tns: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    if "tn" in value:
        items = value["tn"]
        if isinstance(items, str) and schema == THREE_GPP:
            items = [items]
        if not isinstance(items, list) or not 1 <= len(items) <= _MAX_TNS:
            raise _bad(f"{name}.tn", f"expected an array of 1 to {_MAX_TNS} numbers", schema)
        tns = tuple(_tn(item, f"{name}.tn", schema) for item in items)
    if "uri" in value:
        if not uri_ok:
            raise _bad(f"{name}.uri", "only telephone numbers are supported", schema)
        items = value["uri"]
        if not isinstance(items, list) or not 1 <= len(items) <= _MAX_TNS:
            raise _bad(f"{name}.uri", f"expected an array of 1 to {_MAX_TNS} URIs", schema)
        uris = tuple(_uri(item, f"{name}.uri", schema) for item in items)
    if not tns and not uris:
        raise ApiError("SVC4001", f"{name}.tn", schema=schema)
    return tns, uris


def _wrapped(document: Mapping[str, Any], name: str, schema: str) -> dict[str, Any]:
    request = document.get(name)
    if request is None:
        raise ApiError("SVC4001", name, schema=schema)
    if not isinstance(request, dict):
        raise _bad(name, "expected a JSON object", schema)
    return request


# -------------------------------------------------------------------------------- verification

# Members only the 3GPP schema has; "auto" takes a request holding one of them (and no ATIS
# "identity") as 3GPP.
_GPP_VERIFICATION = frozenset(
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
_GPP_SIGNING = frozenset({"ppt", "profileId", "requestId", "rph", "sph", "div"})
_ATIS_SIGNING = frozenset({"attest", "dest", "iat", "orig", "origid"})


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationRequest:
    """A valid verification request, in either schema."""

    schema: str
    identities: tuple[str, ...]
    orig_tn: str | None
    orig_uri: str | None
    to_tn: str | None
    to_uri: str | None
    request_uri: str | None
    time: int
    profile_id: str | None = None
    request_id: str | None = None
    display_name: str | None = None

    @property
    def orig(self) -> str | None:
        return self.orig_tn or self.orig_uri

    def context(self) -> SipContext:
        """The SIP view of the request: From and To as URIs, ``time`` as the Date header.

        ATIS E3 (``time`` not fresh) is the core's Date check (403 Stale Date).
        """
        date = format_sip_date(datetime.fromtimestamp(self.time, UTC))
        return SipContext(
            identity=self.identities,
            from_header=f"<tel:{self.orig_tn}>" if self.orig_tn else f"<{self.orig_uri}>",
            to=f"<tel:{self.to_tn}>" if self.to_tn else f"<{self.to_uri}>",
            request_uri=self.request_uri,
            date=date,
        )


def parse_verification(document: Mapping[str, Any], mode: str) -> VerificationRequest:
    """Validate a verification request body (already a JSON object).

    :raises ApiError: SVC4001 for a missing member (ATIS E1), SVC4005 for a bad value (E2).
    """
    request = _wrapped(document, "verificationRequest", ATIS if mode == AUTO else mode)
    schema = mode
    if mode == AUTO:
        gpp = "identity" not in request and not _GPP_VERIFICATION.isdisjoint(request)
        schema = THREE_GPP if gpp else ATIS
    if schema == ATIS:
        for name in ("from", "to", "time", "identity"):
            _need(request, name, schema)
        orig_tn, _ = _party(request["from"], "from", schema, uri_ok=False)
        to_tns, _ = _parties(request["to"], "to", schema, uri_ok=False)
        return VerificationRequest(
            schema=schema,
            identities=(_identity_value(request["identity"], "identity", schema),),
            orig_tn=orig_tn,
            orig_uri=None,
            to_tn=to_tns[0],
            to_uri=None,
            request_uri=None,
            time=_time(request["time"], "time", schema),
        )
    identities: list[str] = []
    if request.get("identityHeader") is not None:
        identities.append(_identity_value(request["identityHeader"], "identityHeader", schema))
    more = request.get("identityHeaders")
    if more is not None:
        if not isinstance(more, list) or not 1 <= len(more) <= _MAX_IDENTITIES:
            raise _bad("identityHeaders", f"expected 1 to {_MAX_IDENTITIES} strings", schema)
        identities.extend(_identity_value(v, "identityHeaders", schema) for v in more)
    if not identities:
        raise ApiError("SVC4001", "identityHeader", schema=schema)
    for name in ("from", "to", "time"):
        _need(request, name, schema)
    orig_tn, orig_uri = _party(request["from"], "from", schema, uri_ok=True)
    to_tns, to_uris = _parties(request["to"], "to", schema, uri_ok=True)
    request_uri = None
    if request.get("dest") is not None:
        dest_tns, dest_uris = _parties(request["dest"], "dest", schema, uri_ok=True)
        request_uri = f"tel:{dest_tns[0]}" if dest_tns else dest_uris[0]
    request_id = request.get("requestId")
    if request_id is not None and (
        not isinstance(request_id, str) or not _TOKEN_TEXT.fullmatch(request_id)
    ):
        raise _bad("requestId", "expected 1 to 128 printable ASCII characters", schema)
    return VerificationRequest(
        schema=schema,
        identities=tuple(dict.fromkeys(identities)),
        orig_tn=orig_tn,
        orig_uri=orig_uri,
        to_tn=to_tns[0] if to_tns else None,
        to_uri=None if to_tns else to_uris[0],
        request_uri=request_uri,
        time=_time(request["time"], "time", schema),
        profile_id=_optional_text(request, "profileId", schema),
        request_id=request_id,
        display_name=_optional_text(request, "displayName", schema),
    )


# Response bodies that do not depend on the request, made once: most answers are one of these.
_ATIS_BODIES: dict[tuple[Verstat, Reason | None], bytes] = {}


def _atis_verification(result: VerificationResult) -> bytes:
    key = (result.verstat, result.reason)
    body = _ATIS_BODIES.get(key)
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
        body = _ATIS_BODIES[key] = _dumps({"verificationResponse": inner})
    return body


def verification_body(
    request: VerificationRequest, result: VerificationResult, *, display_name: str | None
) -> bytes:
    """The 200 answer: verification failures are results, not HTTP errors (ATIS 4.3)."""
    if request.schema == ATIS:
        return _atis_verification(result)
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
    return _dumps({"verificationResponse": inner})


# ----------------------------------------------------------------------------------- signing


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningRequest:
    """A valid signing request, in either schema."""

    schema: str
    attest: str
    orig: str
    dest: tuple[str, ...]
    iat: int
    origid: str | None = None
    profile_id: str | None = None
    request_id: str | None = None


def parse_signing(document: Mapping[str, Any], mode: str) -> SigningRequest:
    """Validate a signing request body.

    Members beyond the SHAKEN claims are refused (SVC4005) rather than dropped: ATIS lets a
    client add claims to be signed, and this signer signs the five SHAKEN claims only, so a
    silently unsigned claim would be a lie to the client.

    :raises ApiError: SVC4001 for a missing member, SVC4005 for a bad or unsupported one.
    """
    request = _wrapped(document, "signingRequest", ATIS if mode == AUTO else mode)
    schema = mode
    if mode == AUTO:
        schema = ATIS if _GPP_SIGNING.isdisjoint(request) else THREE_GPP
    allowed = _ATIS_SIGNING if schema == ATIS else _ATIS_SIGNING | {"ppt", "profileId", "requestId"}
    for name in request:
        if name not in allowed:
            raise _bad(name, "not supported: only the SHAKEN claims are signed", schema)
    for name in ("attest", "dest", "iat", "orig"):
        _need(request, name, schema)
    if schema == THREE_GPP and request.get("ppt", "shaken") != "shaken":
        raise _bad("ppt", "only 'shaken' PASSporTs are signed", schema)
    attest = request["attest"]
    if attest not in ATTESTATION_LEVELS:
        raise _bad("attest", "expected 'A', 'B' or 'C'", schema)
    orig, _ = _party(request["orig"], "orig", schema, uri_ok=False)
    dest, _ = _parties(request["dest"], "dest", schema, uri_ok=False)
    origid = request.get("origid")
    if origid is not None and (not isinstance(origid, str) or not UUID_PATTERN.fullmatch(origid)):
        raise _bad("origid", "expected a UUID", schema)
    request_id = request.get("requestId")
    if request_id is not None and (
        not isinstance(request_id, str) or not _TOKEN_TEXT.fullmatch(request_id)
    ):
        raise _bad("requestId", "expected 1 to 128 printable ASCII characters", schema)
    assert orig is not None  # uri_ok=False: a TN or an ApiError
    return SigningRequest(
        schema=schema,
        attest=attest,
        orig=orig,
        dest=dest,
        iat=_time(request["iat"], "iat", schema),
        origid=origid,
        profile_id=_optional_text(request, "profileId", schema),
        request_id=request_id,
    )


def signing_body(request: SigningRequest, identity: str, *, attest: str, why: str) -> bytes:
    """The signing response; ``attest`` is the level signed, ``why`` the reason for it.

    ATIS-1000082 answers ``identity`` only. When the level signed is not the one the request
    asked for (a client may only lower it; the number or the profile may allow less), the
    answer says so in two informational members beside it, ``attest`` (the level applied) and
    ``attestReason``, rather than sign a weaker PASSporT silently.
    """
    inner: dict[str, Any] = (
        {"identity": identity} if request.schema == ATIS else {"identityHeader": identity}
    )
    if request.schema != ATIS and request.request_id is not None:
        inner["requestId"] = request.request_id
    if attest != request.attest:
        inner["attest"] = attest
        inner["attestReason"] = why
    return _dumps({"signingResponse": inner})


# -------------------------------------------------------------------------------- OpenAPI

_TN_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": f"^{_TN_PATTERN}$",
    "description": "a telephone number; '+' and visual separators are removed (RFC 8224 8.3)",
    "examples": ["12025550100"],
}
_URI_SCHEMA: dict[str, Any] = {"type": "string", "pattern": r"^(sips?|tel):[!#-;=?-~]{1,250}$"}
_IDENTITY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": _MAX_IDENTITY,
    "pattern": r"^[ -~]+$",
    "description": "an Identity header value: <jws>;info=<x5u>;alg=ES256;ppt=shaken",
}
_TIME_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 2**33 - 1}
_TN_OBJECT: dict[str, Any] = {
    "type": "object",
    "required": ["tn"],
    "properties": {"tn": {"$ref": "#/components/schemas/TelephoneNumber"}},
}
_TN_LIST_OBJECT: dict[str, Any] = {
    "type": "object",
    "required": ["tn"],
    "properties": {
        "tn": {
            "type": "array",
            "minItems": 1,
            "maxItems": _MAX_TNS,
            "items": {"$ref": "#/components/schemas/TelephoneNumber"},
        }
    },
}
_GPP_PARTY: dict[str, Any] = {
    "oneOf": [
        {"$ref": "#/components/schemas/TelephoneNumber"},
        _TN_OBJECT,
        {
            "type": "object",
            "required": ["uri"],
            "properties": {"uri": {"$ref": "#/components/schemas/Uri"}},
        },
    ]
}
_GPP_PARTIES: dict[str, Any] = {
    "oneOf": [
        {"$ref": "#/components/schemas/TelephoneNumber"},
        _TN_LIST_OBJECT,
        {
            "type": "object",
            "required": ["uri"],
            "properties": {
                "uri": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": _MAX_TNS,
                    "items": {"$ref": "#/components/schemas/Uri"},
                }
            },
        },
    ]
}
_REQUEST_ID: dict[str, Any] = {"type": "string", "pattern": "^[!-~]{1,128}$"}
_SHORT_TEXT: dict[str, Any] = {
    "type": "string",
    "maxLength": _MAX_TEXT,
    "pattern": "^[^\\u0000-\\u001f\\u007f]*$",
}
_CLAIMS: dict[str, Any] = {
    "attest": {"type": "string", "enum": list(ATTESTATION_LEVELS)},
    "dest": _TN_LIST_OBJECT,
    "iat": _TIME_SCHEMA,
    "orig": _TN_OBJECT,
    "origid": {"type": "string", "format": "uuid"},
}
_VERSTAT: dict[str, Any] = {"type": "string", "enum": [v.value for v in Verstat]}

#: Present only when the level signed differs from the one requested (see ``signing_body``).
_APPLIED_ATTEST: dict[str, Any] = {
    "attest": {
        "type": "string",
        "enum": list(ATTESTATION_LEVELS),
        "description": "the attestation signed, when it is not the one requested",
    },
    "attestReason": {
        "type": "string",
        "description": "why the number or the profile allowed no more than that level",
    },
}

_COMPONENTS: dict[str, Any] = {
    "TelephoneNumber": _TN_SCHEMA,
    "Uri": _URI_SCHEMA,
    "AtisSigningRequest": {
        "type": "object",
        "required": ["signingRequest"],
        "properties": {
            "signingRequest": {
                "type": "object",
                "required": ["attest", "dest", "iat", "orig"],
                "additionalProperties": False,
                "properties": _CLAIMS,
            }
        },
    },
    "GppSigningRequest": {
        "type": "object",
        "required": ["signingRequest"],
        "properties": {
            "signingRequest": {
                "type": "object",
                "required": ["attest", "dest", "iat", "orig", "ppt"],
                "additionalProperties": False,
                "properties": {
                    **_CLAIMS,
                    "ppt": {"type": "string", "enum": ["shaken"]},
                    "profileId": _SHORT_TEXT,
                    "requestId": _REQUEST_ID,
                },
            }
        },
    },
    "AtisVerificationRequest": {
        "type": "object",
        "required": ["verificationRequest"],
        "properties": {
            "verificationRequest": {
                "type": "object",
                "required": ["from", "to", "time", "identity"],
                "properties": {
                    "from": _TN_OBJECT,
                    "to": _TN_LIST_OBJECT,
                    "time": _TIME_SCHEMA,
                    "identity": _IDENTITY_SCHEMA,
                },
            }
        },
    },
    "GppVerificationRequest": {
        "type": "object",
        "required": ["verificationRequest"],
        "properties": {
            "verificationRequest": {
                "type": "object",
                "required": ["identityHeader", "from", "to", "time"],
                "properties": {
                    "identityHeader": _IDENTITY_SCHEMA,
                    "identityHeaders": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": _MAX_IDENTITIES,
                        "items": _IDENTITY_SCHEMA,
                    },
                    "from": _GPP_PARTY,
                    "to": _GPP_PARTIES,
                    "dest": _GPP_PARTIES,
                    "time": _TIME_SCHEMA,
                    "protectedHeaders": {"description": "accepted and not interpreted"},
                    "profileId": _SHORT_TEXT,
                    "requestId": _REQUEST_ID,
                    "displayName": _SHORT_TEXT,
                },
            }
        },
    },
    "AtisSigningResponse": {
        "type": "object",
        "required": ["signingResponse"],
        "properties": {
            "signingResponse": {
                "type": "object",
                "required": ["identity"],
                "properties": {"identity": {"type": "string"}, **_APPLIED_ATTEST},
            }
        },
    },
    "GppSigningResponse": {
        "type": "object",
        "required": ["signingResponse"],
        "properties": {
            "signingResponse": {
                "type": "object",
                "required": ["identityHeader"],
                "properties": {
                    "identityHeader": {"type": "string"},
                    "requestId": _REQUEST_ID,
                    **_APPLIED_ATTEST,
                },
            }
        },
    },
    "AtisVerificationResponse": {
        "type": "object",
        "required": ["verificationResponse"],
        "properties": {
            "verificationResponse": {
                "type": "object",
                "required": ["verstat"],
                "properties": {
                    "verstat": _VERSTAT,
                    "reasoncode": {"type": "integer"},
                    "reasontext": {"type": "string"},
                    "reasondesc": {"type": "string"},
                },
            }
        },
    },
    "GppVerificationResponse": {
        "type": "object",
        "required": ["verificationResponse"],
        "properties": {
            "verificationResponse": {
                "type": "object",
                "required": ["verstatValue", "verifyResults"],
                "properties": {
                    "verstatValue": _VERSTAT,
                    "verifyResults": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["verifyResult"],
                            "properties": {
                                "verifyResult": {
                                    "type": "object",
                                    "required": ["ppt", "status"],
                                    "properties": {
                                        "ppt": {"type": "string"},
                                        "status": {"type": "string", "enum": ["pass", "fail"]},
                                        "reasonCode": {"type": "integer"},
                                        "reasonText": {"type": "string"},
                                        "reasonDescription": {"type": "string"},
                                        "validClaims": {"type": "object"},
                                    },
                                }
                            },
                        },
                    },
                    "divResult": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["div", "verstatValue"],
                            "properties": {"div": {"type": "string"}, "verstatValue": _VERSTAT},
                        },
                    },
                    "requestId": _REQUEST_ID,
                    "displayName": {"type": "string"},
                },
            }
        },
    },
    "AtisError": {
        "type": "object",
        "required": ["requestError"],
        "properties": {
            "requestError": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "properties": {
                    "serviceException": {"$ref": "#/components/schemas/Exception"},
                    "policyException": {"$ref": "#/components/schemas/Exception"},
                },
            }
        },
    },
    "Exception": {
        "type": "object",
        "required": ["messageId", "text"],
        "properties": {
            "messageId": {"type": "string", "enum": list(ERRORS)},
            "text": {"type": "string"},
            "variables": {"type": "array", "items": {"type": "string"}},
        },
    },
    "GppError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string"},
            "checks": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["ok", "detail"],
                    "properties": {"ok": {"type": "boolean"}, "detail": {"type": "string"}},
                },
            },
        },
    },
}

_REQUEST_ID_HEADER: dict[str, Any] = {
    "description": "the request's X-RequestID, or one generated for it",
    "required": True,
    "schema": {"type": "string"},
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ref(*names: str) -> dict[str, Any]:
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in names]
    return refs[0] if len(refs) == 1 else {"anyOf": refs}


def _error_responses(errors: list[str], schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for message_id in errors:
        status = str(ERRORS[message_id].status)
        text = ERRORS[message_id].text
        if status in out:
            out[status]["description"] += f"; {message_id}"
            continue
        out[status] = {
            "description": f"{message_id} ({text})",
            "headers": {"X-RequestID": _REQUEST_ID_HEADER},
            "content": _json(schema),
        }
        if message_id in ("POL4290", "POL5030"):
            out[status]["headers"]["Retry-After"] = {
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
    return out


def openapi_document(*, schema: str = AUTO, verification_open: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 description of this server as configured (served at /openapi.json)."""
    names = {ATIS: ("Atis",), THREE_GPP: ("Gpp",), AUTO: ("Atis", "Gpp")}[schema]
    errors = _ref(*(f"{n}Error" for n in names))
    common = ["SVC4000", "SVC4001", "SVC4002", "SVC4004", "SVC4005", "SVC4006", "SVC4007"]
    common += ["POL4010", "POL4030", "POL4130", "POL4290", "POL5030", "POL5000"]
    keyed: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
    request_id = {
        "name": "X-RequestID",
        "in": "header",
        "required": False,
        "description": "echoed in the response; one is generated when absent or unusable",
        "schema": {"type": "string"},
    }

    def operation(kind: str, summary: str, security: list[dict[str, list[str]]]) -> dict[str, Any]:
        return {
            "summary": summary,
            "operationId": kind,
            "parameters": [request_id],
            "security": security,
            "requestBody": {
                "required": True,
                "content": _json(_ref(*(f"{n}{kind.title()}Request" for n in names))),
            },
            "responses": {
                "200": {
                    "description": "the result (a verification failure is a result, not an error)",
                    "headers": {"X-RequestID": _REQUEST_ID_HEADER},
                    "content": _json(_ref(*(f"{n}{kind.title()}Response" for n in names))),
                },
                **_error_responses(common, errors),
            },
        }

    health = {"content": _json(_ref("Health"))}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "shaken STI-AS / STI-VS",
            "version": "1",
            "description": (
                "ATIS-1000082 signing and verification (and the 3GPP TS 24.229 Ms variant). "
                "Errors SVC4000-SVC4007, POL4050 and POL5000 are ATIS-1000082's; POL4010, "
                "POL4030, POL4130, POL4290 and POL5030 are this server's, in the same shape."
            ),
        },
        "paths": {
            "/stir/v1/signing": {
                "post": operation("signing", "Sign a call (STI-AS)", keyed),
            },
            "/stir/v1/verification": {
                "post": operation(
                    "verification",
                    "Verify a call (STI-VS)",
                    [*keyed, {}] if verification_open else keyed,
                ),
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: the process answers",
                    "operationId": "healthz",
                    "responses": {"200": {"description": "alive", **health}},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: trust anchors, signing keys, cache and call log",
                    "operationId": "readyz",
                    "responses": {
                        "200": {"description": "ready", **health},
                        "503": {"description": "not ready", **health},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "text exposition format 0.0.4",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": _json({"type": "object"}),
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": _COMPONENTS,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
