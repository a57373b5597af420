"""Every way a verification can end, in one table.

Each :class:`Reason` maps to exactly one :class:`ReasonInfo`: the SIP status code and phrase
(RFC 8224 section 6.2.2, ATIS-1000082 cases E1-E19), the verstat value (3GPP TS 24.229) a
verifier reports, and a one-line description used as ATIS-1000082 ``reasondesc`` and in logs.
A test proves the table complete, so a new Reason cannot ship without its row.

Where the standards leave a code open (docs/architecture.md section 3) the choice
made here is documented on the row:

* a TN outside a TN-scoped certificate: 437 (we do not support the credential for that TN);
* a missing Date header when policy requires one: 438;
* a broken ``div`` chain (RFC 8946 section 4.2): 438.

The ``rcd_*`` Reasons are the Rich Call Data verdict (RFC 9795), which is separate from the
SHAKEN verdict: a call can pass SHAKEN while its branding is refused, so their verstat is the
one the call still gets (TN-Validation-Passed) and their code is what a profile that rejects
unverified branding sends: 436 when referenced content could not be had (as for x5u), 438 when
what the signer asserted is wrong.

:data:`SIP_PHRASES` is the one table of SIP reason phrases: every status code this project
renders (a handler's own answers, a configured ``reject_code``) takes its phrase from
:func:`sip_phrase`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verstat(enum.StrEnum):
    """The verstat tel URI parameter values of 3GPP TS 24.229 section 7.2A.20."""

    PASSED = "TN-Validation-Passed"
    FAILED = "TN-Validation-Failed"
    NO_VALIDATION = "No-TN-Validation"


class Reason(enum.StrEnum):
    """Why a verification did not pass. Values are stable snake_case names."""

    MISSING_IDENTITY = "missing_identity"
    NO_CALLER_ID = "no_caller_id"
    INVALID_HEADER = "invalid_header"
    MISSING_INFO = "missing_info"
    UNSUPPORTED_PPT = "unsupported_ppt"
    COMPACT_FORM = "compact_form"
    INVALID_TOKEN = "invalid_token"
    BAD_PASSPORT_HEADER = "bad_passport_header"
    X5U_INFO_MISMATCH = "x5u_info_mismatch"
    UNSUPPORTED_TYP = "unsupported_typ"
    UNSUPPORTED_ALG = "unsupported_alg"
    PPT_MISMATCH = "ppt_mismatch"
    MISSING_CLAIM = "missing_claim"
    INVALID_CLAIM = "invalid_claim"
    INVALID_ATTEST = "invalid_attest"
    STALE_IAT = "stale_iat"
    STALE_DATE = "stale_date"
    MISSING_DATE = "missing_date"
    ORIG_MISMATCH = "orig_mismatch"
    DEST_MISMATCH = "dest_mismatch"
    INVALID_DIV_CHAIN = "invalid_div_chain"
    X5U_REJECTED = "x5u_rejected"
    CERT_FETCH_FAILED = "cert_fetch_failed"
    CERT_UNPARSEABLE = "cert_unparseable"
    CERT_UNTRUSTED = "cert_untrusted"
    CERT_EXPIRED = "cert_expired"
    CERT_REVOKED = "cert_revoked"
    CERT_PROFILE = "cert_profile"
    CERT_NO_TNAUTHLIST = "cert_no_tnauthlist"
    TN_OUT_OF_SCOPE = "tn_out_of_scope"
    BAD_SIGNATURE = "bad_signature"
    REPLAYED = "replayed"
    RCD_INVALID = "rcd_invalid"
    RCD_INTEGRITY_FAILED = "rcd_integrity_failed"
    RCD_RESOURCE_REFUSED = "rcd_resource_refused"
    RCD_RESOURCE_UNAVAILABLE = "rcd_resource_unavailable"
    RCD_CONSTRAINT_VIOLATED = "rcd_constraint_violated"
    RCD_NOT_AUTHORIZED = "rcd_not_authorized"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReasonInfo:
    """The wire facts of one Reason."""

    sip_code: int
    phrase: str
    verstat: Verstat
    description: str

    @property
    def rfc9410_text(self) -> str:
        """The ``text`` of an RFC 9410 Reason header: the RFC 8224 reason phrase."""
        return self.phrase


_NO = Verstat.NO_VALIDATION
_FAILED = Verstat.FAILED
_PASSED = Verstat.PASSED
_USE = "Use Identity Header"
_BAD_INFO = "Bad Identity Info"
_UNSUPPORTED = "Unsupported Credential"
_INVALID = "Invalid Identity Header"
_STALE = "Stale Date"

REASONS: dict[Reason, ReasonInfo] = {
    Reason.MISSING_IDENTITY: ReasonInfo(
        sip_code=428, phrase=_USE, verstat=_NO, description="No Identity header in the request."
    ),
    Reason.NO_CALLER_ID: ReasonInfo(
        sip_code=433,
        phrase="Anonymity Disallowed",
        verstat=_NO,
        description="No caller identity (P-Asserted-Identity or From) to verify.",
    ),
    Reason.INVALID_HEADER: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_NO,
        description="The Identity header does not parse.",
    ),
    Reason.MISSING_INFO: ReasonInfo(
        sip_code=436,
        phrase=_BAD_INFO,
        verstat=_NO,
        description="The Identity header has no info=<URI> parameter.",
    ),
    Reason.UNSUPPORTED_PPT: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_NO,
        description="The Identity header's ppt is not one this profile accepts.",
    ),
    Reason.COMPACT_FORM: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_NO,
        description="Identity header in compact form instead of the full form SHAKEN requires.",
    ),
    Reason.INVALID_TOKEN: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_NO,
        description="The PASSporT is not a well-formed compact JWS with JSON object segments.",
    ),
    Reason.BAD_PASSPORT_HEADER: ReasonInfo(
        sip_code=436,
        phrase=_BAD_INFO,
        verstat=_NO,
        description="The PASSporT header lacks alg, typ, ppt or x5u.",
    ),
    Reason.X5U_INFO_MISMATCH: ReasonInfo(
        sip_code=436,
        phrase=_BAD_INFO,
        verstat=_NO,
        description="'x5u' from the PASSporT header does not match the 'info' parameter.",
    ),
    Reason.UNSUPPORTED_TYP: ReasonInfo(
        sip_code=437,
        phrase=_UNSUPPORTED,
        verstat=_NO,
        description="The PASSporT 'typ' is not 'passport'.",
    ),
    Reason.UNSUPPORTED_ALG: ReasonInfo(
        sip_code=437,
        phrase=_UNSUPPORTED,
        verstat=_NO,
        description="The PASSporT 'alg' is not ES256 or differs from the Identity alg parameter.",
    ),
    Reason.PPT_MISMATCH: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_NO,
        description="The PASSporT header 'ppt' differs from the Identity ppt parameter.",
    ),
    Reason.MISSING_CLAIM: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_NO,
        description="A required claim (attest, dest, iat, orig, origid) is missing.",
    ),
    Reason.INVALID_CLAIM: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_NO,
        description="A claim has the wrong type or shape.",
    ),
    Reason.INVALID_ATTEST: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_NO,
        description="The 'attest' claim is not A, B or C.",
    ),
    Reason.STALE_IAT: ReasonInfo(
        sip_code=403,
        phrase=_STALE,
        verstat=_NO,
        description="The PASSporT 'iat' is outside the freshness window.",
    ),
    Reason.STALE_DATE: ReasonInfo(
        sip_code=403,
        phrase=_STALE,
        verstat=_NO,
        description="The SIP Date header is outside the freshness window.",
    ),
    Reason.MISSING_DATE: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_NO,
        description="The profile requires a Date header and the request has none.",
    ),
    Reason.ORIG_MISMATCH: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_NO,
        description="The PASSporT 'orig' does not match the caller identity of the request.",
    ),
    Reason.DEST_MISMATCH: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_NO,
        description="The PASSporT 'dest' does not match the called identity of the request.",
    ),
    Reason.INVALID_DIV_CHAIN: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_NO,
        description="A 'div' PASSporT does not link to the PASSporT it diverts (RFC 8946).",
    ),
    Reason.X5U_REJECTED: ReasonInfo(
        sip_code=436,
        phrase=_BAD_INFO,
        verstat=_NO,
        description="The certificate URL fails the x5u policy.",
    ),
    Reason.CERT_FETCH_FAILED: ReasonInfo(
        sip_code=436,
        phrase=_BAD_INFO,
        verstat=_NO,
        description="The certificate could not be obtained from the x5u URL.",
    ),
    Reason.CERT_UNPARSEABLE: ReasonInfo(
        sip_code=437,
        phrase=_UNSUPPORTED,
        verstat=_FAILED,
        description="The x5u response is not a PEM chain or DER certificate.",
    ),
    Reason.CERT_UNTRUSTED: ReasonInfo(
        sip_code=437,
        phrase=_UNSUPPORTED,
        verstat=_FAILED,
        description="Failed to authenticate CA: no chain to a trusted STI-CA.",
    ),
    Reason.CERT_EXPIRED: ReasonInfo(
        sip_code=437,
        phrase=_UNSUPPORTED,
        verstat=_FAILED,
        description="A certificate of the chain is expired or not yet valid.",
    ),
    Reason.CERT_REVOKED: ReasonInfo(
        sip_code=437,
        phrase=_UNSUPPORTED,
        verstat=_FAILED,
        description="A certificate of the chain is revoked.",
    ),
    Reason.CERT_PROFILE: ReasonInfo(
        sip_code=437,
        phrase=_UNSUPPORTED,
        verstat=_FAILED,
        description="The certificate breaks an ATIS-1000080 rule this profile enforces.",
    ),
    Reason.CERT_NO_TNAUTHLIST: ReasonInfo(
        sip_code=437,
        phrase=_UNSUPPORTED,
        verstat=_FAILED,
        description="The certificate has no usable TNAuthList (absent or malformed).",
    ),
    Reason.TN_OUT_OF_SCOPE: ReasonInfo(
        sip_code=437,
        phrase=_UNSUPPORTED,
        verstat=_FAILED,
        description="The calling TN is outside the TN scope of the certificate.",
    ),
    Reason.BAD_SIGNATURE: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_FAILED,
        description="Signature validation failed.",
    ),
    Reason.REPLAYED: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_FAILED,
        description="The same PASSporT signature was already seen within the freshness window.",
    ),
    Reason.RCD_INVALID: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_PASSED,
        description="The rcd, rcdi or crn claim is malformed (RFC 9795); the brand is not shown.",
    ),
    Reason.RCD_INTEGRITY_FAILED: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_PASSED,
        description="Content referenced by the rcd claim does not match its rcdi digest.",
    ),
    Reason.RCD_RESOURCE_REFUSED: ReasonInfo(
        sip_code=436,
        phrase=_BAD_INFO,
        verstat=_PASSED,
        description="A URL of the rcd claim fails the URL policy; nothing was fetched.",
    ),
    Reason.RCD_RESOURCE_UNAVAILABLE: ReasonInfo(
        sip_code=436,
        phrase=_BAD_INFO,
        verstat=_PASSED,
        description="Content referenced by the rcd claim could not be obtained.",
    ),
    Reason.RCD_CONSTRAINT_VIOLATED: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_PASSED,
        description="The claims break the certificate's JWTClaimConstraints (RFC 8226, 9118).",
    ),
    Reason.RCD_NOT_AUTHORIZED: ReasonInfo(
        sip_code=438,
        phrase=_INVALID,
        verstat=_PASSED,
        description="The certificate does not allow Rich Call Data (mustExclude rcd, RFC 9118).",
    ),
}


#: Reason phrases of the IANA "SIP Response Codes" registry: RFC 3261 section 21 and the
#: codes registered since (the RFC named on each later row).
SIP_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",  # RFC 6228
    200: "OK",
    202: "Accepted",  # RFC 6665
    204: "No Notification",  # RFC 5839
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",  # RFC 3903
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",  # RFC 4412
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",  # RFC 4028
    423: "Interval Too Brief",
    424: "Bad Location Information",  # RFC 6442
    425: "Bad Alert Message",  # RFC 8876
    428: "Use Identity Header",  # RFC 8224
    429: "Provide Referrer Identity",  # RFC 3892
    430: "Flow Failed",  # RFC 5626
    433: "Anonymity Disallowed",  # RFC 5079
    436: "Bad Identity Info",  # RFC 8224
    437: "Unsupported Credential",  # RFC 8224
    438: "Invalid Identity Header",  # RFC 8224
    439: "First Hop Lacks Outbound Support",  # RFC 5626
    440: "Max-Breadth Exceeded",  # RFC 5393
    469: "Bad Info Package",  # RFC 6086
    470: "Consent Needed",  # RFC 5360
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",  # RFC 6665
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",  # RFC 3329
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",  # RFC 8599
    580: "Precondition Failure",  # RFC 3312
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",  # RFC 8197
    608: "Rejected",  # RFC 8688
}

#: RFC 3261 section 21: an unregistered code is understood as its class's x00; these are the
#: class names section 21 gives them.
_CLASS_PHRASES = {
    1: "Provisional",
    2: "Successful",
    3: "Redirection",
    4: "Request Failure",
    5: "Server Failure",
    6: "Global Failure",
}


def sip_phrase(code: int) -> str:
    """The reason phrase for SIP status ``code`` (its class's name when unregistered)."""
    phrase = SIP_PHRASES.get(code)
    if phrase is not None:
        return phrase
    return _CLASS_PHRASES.get(code // 100, "Unknown")


def info(reason: Reason) -> ReasonInfo:
    """The table row of ``reason``."""
    return REASONS[reason]
