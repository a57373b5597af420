"""Which schema a REST request speaks, and the parse and answer of each endpoint in it.

Two schemas share the paths ``/stir/v1/signing`` and ``/stir/v1/verification``:

* ATIS-1000082 (:mod:`shaken.adapters.http.atis`): ``signingRequest`` /
  ``verificationRequest`` with ``identity``; API errors as ``requestError``.
* 3GPP TS 24.229 "Ms" (:mod:`shaken.adapters.http.gpp`): ``identityHeader`` /
  ``identityHeaders``, ``verstatValue``, ``verifyResults``; errors as ``{"error": "..."}``.

``[server] api_schema`` picks one, or ``auto`` (the default) tells them apart by the request's
shape. Field checks (:mod:`shaken.adapters.http.fields`) know no schema: a bad field becomes
the :class:`~shaken.adapters.http.errors.ApiError` of the request's schema here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shaken.adapters.http import atis, fields, gpp
from shaken.adapters.http.errors import ATIS, AUTO, ERRORS, THREE_GPP, ApiError, ErrorSpec, dumps
from shaken.adapters.http.fields import MAX_BODY_BYTES, FieldError, bad, decode_body
from shaken.adapters.http.openapi import openapi_document
from shaken.adapters.http.requests import SigningRequest, VerificationRequest
from shaken.core.branding import RcdStatus
from shaken.core.passport import ATTESTATION_LEVELS, UUID_PATTERN
from shaken.core.rcd import RcdError, parse_rich_call_data
from shaken.core.reasons import REASONS
from shaken.core.result import VerificationResult

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


def _request(document: Mapping[str, Any], name: str, mode: str) -> dict[str, Any]:
    try:
        return fields.wrapped(document, name)
    except FieldError as problem:
        raise problem.api_error(ATIS if mode == AUTO else mode) from None


def parse_verification(document: Mapping[str, Any], mode: str) -> VerificationRequest:
    """Validate a verification request body (already a JSON object).

    :raises ApiError: SVC4001 for a missing member (ATIS E1), SVC4005 for a bad value (E2).
    """
    request = _request(document, "verificationRequest", mode)
    schema = mode
    if mode == AUTO:
        is_gpp = "identity" not in request and not gpp.VERIFICATION_MEMBERS.isdisjoint(request)
        schema = THREE_GPP if is_gpp else ATIS
    try:
        if schema == ATIS:
            return atis.parse_verification(request)
        return gpp.parse_verification(request)
    except FieldError as problem:
        raise problem.api_error(schema) from None


def rcd_member(
    result: VerificationResult, *, call_info: str | None = None
) -> dict[str, Any] | None:
    """The ``rcd`` member of a verification answer: the branding verdict, separate from SHAKEN.

    The brand's values (name, call reason, logo and jCard URLs) appear only when the verdict
    is ``verified``, and a URL only when its content matched its digest: an unverified brand
    is never presented, to an API client any more than to a handset.
    """
    verdict = result.rcd
    if verdict is None or verdict.status is RcdStatus.NOT_PRESENT:
        return None  # an unbranded call keeps the plain ATIS / 3GPP answer
    out: dict[str, Any] = {"status": verdict.status.value}
    if verdict.reason is not None:
        info = REASONS[verdict.reason]
        out["reason"] = verdict.reason.value
        out["reasoncode"] = info.sip_code
        out["reasondesc"] = info.description
    data = verdict.data
    if verdict.presentable and data is not None:
        for name, value in (("nam", data.nam), ("apn", data.apn), ("crn", data.crn)):
            if value is not None:
                out[name] = value
        for role, name in (("icon", "icn"), ("jcard", "jcl")):
            reference = verdict.reference(role)
            if reference is not None:
                out[name] = reference.uri
        if call_info is not None:
            out["callInfo"] = call_info
    return out


def verification_body(
    request: VerificationRequest,
    result: VerificationResult,
    *,
    display_name: str | None,
    call_info: str | None = None,
) -> bytes:
    """The 200 answer: verification failures are results, not HTTP errors (ATIS 4.3)."""
    rcd = rcd_member(result, call_info=call_info)
    if request.schema == ATIS:
        return atis.verification_body(result, rcd=rcd)
    return gpp.verification_body(request, result, display_name=display_name, rcd=rcd)


def parse_signing(document: Mapping[str, Any], mode: str) -> SigningRequest:
    """Validate a signing request body.

    Members beyond the SHAKEN claims and the Rich Call Data claims (``rcd``, ``crn``) are
    refused (SVC4005) rather than dropped: ATIS lets a client add claims to be signed, and a
    silently unsigned claim would be a lie to the client. ``rcd`` and ``crn`` are checked for
    shape here and for vetting by the signer (a brand the configuration does not hold for the
    number is refused, POL4030).

    :raises ApiError: SVC4001 for a missing member, SVC4005 for a bad or unsupported one.
    """
    request = _request(document, "signingRequest", mode)
    schema = mode
    if mode == AUTO:
        schema = ATIS if gpp.SIGNING_MEMBERS.isdisjoint(request) else THREE_GPP
    try:
        return _signing(request, schema)
    except FieldError as problem:
        raise problem.api_error(schema) from None


def _signing(request: Mapping[str, Any], schema: str) -> SigningRequest:
    allowed = atis.SIGNING_MEMBERS
    if schema == THREE_GPP:
        allowed = allowed | {"ppt", "profileId", "requestId"}
    for name in request:
        if name not in allowed:
            raise bad(name, "not supported: only the SHAKEN and rcd/crn claims are signed")
    for name in ("attest", "dest", "iat", "orig"):
        fields.need(request, name)
    if schema == THREE_GPP and request.get("ppt", "shaken") != "shaken":
        raise bad("ppt", "only 'shaken' PASSporTs are signed")
    attest = request["attest"]
    if attest not in ATTESTATION_LEVELS:
        raise bad("attest", "expected 'A', 'B' or 'C'")
    if schema == ATIS:
        orig = atis.orig_party(request["orig"], "orig")
        dest = atis.signed_parties(request["dest"], "dest")
    else:
        if isinstance(request["orig"], dict) and "tn" not in request["orig"]:
            raise FieldError("SVC4001", "orig.tn")
        tn, _uri = gpp.party(request["orig"], "orig")
        if tn is None:
            raise bad("orig", "only telephone numbers are signed")
        orig = tn
        dest, uris = gpp.parties(request["dest"], "dest")
        if uris:
            raise bad("dest.uri", "only telephone numbers are supported")
    origid = request.get("origid")
    if origid is not None and (not isinstance(origid, str) or not UUID_PATTERN.fullmatch(origid)):
        raise bad("origid", "expected a UUID")
    rcd, crn = request.get("rcd"), request.get("crn")
    for name, value in (("rcd", rcd), ("crn", crn)):
        if value is not None:
            try:
                parse_rich_call_data({name: value})
            except RcdError as exc:
                raise bad(name, exc.detail) from None
    return SigningRequest(
        schema=schema,
        attest=attest,
        orig=orig,
        dest=dest,
        iat=fields.time_value(request["iat"], "iat"),
        origid=origid,
        profile_id=fields.optional_text(request, "profileId"),
        request_id=fields.request_id(request),
        rcd=rcd,
        crn=crn,
    )


def signing_body(
    request: SigningRequest,
    identity: str,
    *,
    attest: str,
    why: str,
    rcd_identity: str | None = None,
) -> bytes:
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
    if rcd_identity is not None:
        # The brand asks for a separate ppt=rcd PASSporT (RFC 9795 section 4): a second
        # Identity header value for the client to add beside the first.
        inner["rcdIdentity"] = rcd_identity
    return dumps({"signingResponse": inner})
