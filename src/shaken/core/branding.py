"""The Rich Call Data verdict: a verified PASSporT, its certificate and the fetched content.

This is a step *after* SHAKEN verification, not one of its checks: a call can pass SHAKEN while
its branding is refused, and the branding verdict never changes the SHAKEN one (RFC 9795
section 6: a failed integrity check means the rcd is not rendered, not that the identity is
false). :func:`judge` is pure: the service fetches each referenced resource under the x5u URL
policy and hands the bytes (or the failure) in.

The order of the checks, the first failure naming the :class:`~shaken.core.reasons.Reason`:

1. the claims' shape (:func:`shaken.core.rcd.parse_rich_call_data`): ``rcd_invalid``;
2. the certificate's claim constraints (:mod:`shaken.core.claimconstraints`):
   ``rcd_not_authorized`` when it forbids ``rcd`` itself (mustExclude), else
   ``rcd_constraint_violated``; an unreadable constraints extension fails closed the same way;
3. every referenced resource obtained: ``rcd_resource_refused`` (the URL policy refused it,
   nothing was sent) or ``rcd_resource_unavailable``;
4. every ``rcdi`` digest matches: ``rcd_integrity_failed``. When the claims reference content
   but carry no ``rcdi``, ``require_integrity`` (the default) fails the brand the same way,
   since nothing then ties the content to what was signed; without it, the brand verifies but
   only the signed values (name, call reason) count as verified, never the unprotected content;
5. a jCard fetched through ``jcl`` is a jCard that references nothing further (RFC 9796
   section 8.1): ``rcd_invalid``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from shaken.core.claimconstraints import ClaimConstraintError, constraints_of, evaluate
from shaken.core.errors import VerificationFailure
from shaken.core.rcd import (
    DEFAULT_MAX_CRN_LENGTH,
    RcdError,
    Reference,
    RichCallData,
    check_integrity,
    check_referenced_jcard,
    parse_rich_call_data,
)
from shaken.core.reasons import REASONS, Reason

__all__ = ["RcdStatus", "RcdVerdict", "call_info", "judge", "not_present"]


class RcdStatus(enum.StrEnum):
    """The branding outcome, separate from the SHAKEN one."""

    VERIFIED = "verified"
    INTEGRITY_FAILED = "integrity_failed"
    CONSTRAINT_VIOLATED = "constraint_violated"
    INVALID = "invalid"
    NOT_PRESENT = "not_present"


_STATUS_OF = {
    Reason.RCD_INVALID: RcdStatus.INVALID,
    Reason.RCD_INTEGRITY_FAILED: RcdStatus.INTEGRITY_FAILED,
    Reason.RCD_RESOURCE_REFUSED: RcdStatus.INTEGRITY_FAILED,
    Reason.RCD_RESOURCE_UNAVAILABLE: RcdStatus.INTEGRITY_FAILED,
    Reason.RCD_CONSTRAINT_VIOLATED: RcdStatus.CONSTRAINT_VIOLATED,
    Reason.RCD_NOT_AUTHORIZED: RcdStatus.CONSTRAINT_VIOLATED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RcdVerdict:
    """What the branding of one verified call is worth.

    The values (``nam``, ``crn``, ...) are the signed claims; they are only to be *shown* when
    :attr:`presentable`. ``verified_references`` are the references whose content matched its
    digest: only those may be presented (an icon without a digest is never shown as verified).
    """

    status: RcdStatus
    reason: Reason | None = None
    detail: str = ""
    data: RichCallData | None = None
    verified_references: tuple[Reference, ...] = ()
    #: The jCard that verified: the inline ``jcd`` or the content fetched through ``jcl``.
    jcard: Any = None

    @property
    def presentable(self) -> bool:
        return self.status is RcdStatus.VERIFIED

    @property
    def nam(self) -> str | None:
        return None if self.data is None else self.data.nam

    @property
    def crn(self) -> str | None:
        return None if self.data is None else self.data.crn

    def reference(self, role: str) -> Reference | None:
        """The verified reference with ``role`` (``icon``, ``jcard``, ...), if any."""
        return next((r for r in self.verified_references if r.role == role), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (REST responses, the call log)."""
        info = None if self.reason is None else REASONS[self.reason]
        data = self.data
        return {
            "status": self.status.value,
            "reason": None if self.reason is None else self.reason.value,
            "sip_code": None if info is None else info.sip_code,
            "detail": self.detail,
            "nam": None if data is None else data.nam,
            "apn": None if data is None else data.apn,
            "icn": None if data is None else data.icn,
            "jcl": None if data is None else data.jcl,
            "crn": None if data is None else data.crn,
            "verified_references": [r.pointer for r in self.verified_references],
        }


#: The verdict of a verified PASSporT without Rich Call Data (frozen: one value serves all).
NOT_PRESENT = RcdVerdict(status=RcdStatus.NOT_PRESENT)


def not_present() -> RcdVerdict:
    return NOT_PRESENT


def _failed(
    exc: VerificationFailure, data: RichCallData | None, reason: Reason | None = None
) -> RcdVerdict:
    why = reason or exc.reason
    status = _STATUS_OF.get(why, RcdStatus.INTEGRITY_FAILED)
    return RcdVerdict(status=status, reason=why, detail=exc.detail, data=data)


def _verdict(status: RcdStatus, reason: Reason, detail: str, data: Any) -> RcdVerdict:
    return RcdVerdict(status=status, reason=reason, detail=detail, data=data)


def judge(
    claims: Mapping[str, Any],
    certificate: x509.Certificate | None,
    contents: Mapping[str, bytes | VerificationFailure],
    *,
    max_crn_length: int = DEFAULT_MAX_CRN_LENGTH,
    require_integrity: bool = True,
) -> RcdVerdict:
    """The branding verdict of a PASSporT whose SHAKEN verification passed.

    :param claims: the decoded PASSporT payload.
    :param certificate: the validated signing certificate (its claim constraints apply).
    :param contents: each reference's URI -> the bytes fetched, or the failure of the fetch
        (:class:`~shaken.core.errors.X5uRejected` means the URL policy refused it).
    """
    try:
        data = parse_rich_call_data(claims, max_crn_length=max_crn_length)
    except RcdError as exc:
        return _failed(exc, None)
    if certificate is not None:
        try:
            constraints = constraints_of(certificate)
        except ClaimConstraintError as exc:
            return _verdict(
                RcdStatus.CONSTRAINT_VIOLATED,
                Reason.RCD_CONSTRAINT_VIOLATED,
                f"the certificate's claim constraints cannot be read: {exc}",
                data,
            )
        if constraints is not None:
            violations = evaluate(constraints, claims)
            forbidden = [v for v in violations if v.rule == "mustExclude" and v.claim == "rcd"]
            if forbidden:
                return _verdict(
                    RcdStatus.CONSTRAINT_VIOLATED,
                    Reason.RCD_NOT_AUTHORIZED,
                    "the certificate forbids Rich Call Data (mustExclude rcd)",
                    data,
                )
            if violations:
                return _verdict(
                    RcdStatus.CONSTRAINT_VIOLATED,
                    Reason.RCD_CONSTRAINT_VIOLATED,
                    "; ".join(v.detail for v in violations),
                    data,
                )
    if data is None:
        return not_present()
    if data.references and data.rcdi is None:
        if require_integrity:
            first = data.references[0]
            return _verdict(
                RcdStatus.INTEGRITY_FAILED,
                Reason.RCD_INTEGRITY_FAILED,
                f"{first.pointer} ({first.uri}) is referenced without an rcdi digest",
                data,
            )
        return RcdVerdict(status=RcdStatus.VERIFIED, data=data, jcard=data.jcd)
    bodies: dict[str, bytes] = {}
    for reference in data.references:
        got = contents.get(reference.uri)
        if got is None:
            return _verdict(
                RcdStatus.INTEGRITY_FAILED,
                Reason.RCD_RESOURCE_UNAVAILABLE,
                f"{reference.uri} was not fetched",
                data,
            )
        if isinstance(got, VerificationFailure):
            refused = got.reason in (Reason.X5U_REJECTED, Reason.RCD_RESOURCE_REFUSED)
            reason = Reason.RCD_RESOURCE_REFUSED if refused else Reason.RCD_RESOURCE_UNAVAILABLE
            return _failed(got, data, reason)
        bodies[reference.uri] = got
    problems = check_integrity(data, bodies)
    if problems:
        return _verdict(
            RcdStatus.INTEGRITY_FAILED, Reason.RCD_INTEGRITY_FAILED, problems[0].detail, data
        )
    jcard = data.jcd
    if data.jcl is not None and data.jcl in bodies:
        try:
            jcard = check_referenced_jcard(bodies[data.jcl], data.jcl)
        except RcdError as exc:
            return _failed(exc, data)
    return RcdVerdict(
        status=RcdStatus.VERIFIED, data=data, verified_references=data.references, jcard=jcard
    )


def _quoted(text: str) -> str:
    # RFC 3261 quoted-string; the claim checks already refused control characters.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def call_info(verdict: RcdVerdict) -> str | None:
    """The RFC 9796 ``Call-Info`` value presenting a verified brand, or None.

    One header field holds every RCD entry (RFC 9796 section 4): the jCard (``purpose=jcard``,
    section 5) and the icon (``purpose=icon``, section 4), each only when its content matched
    its ``rcdi`` digest, with that digest as ``integrity`` and ``verified=true`` (this verifier
    checked it), and the call reason as ``call-reason`` (section 6) on the first entry. A brand
    that did not verify, or one with no verified URI, gives None: nothing unverified is shown.
    The URIs were checked to be https URIs without quotes, spaces or angle brackets.
    """
    if not verdict.presentable or verdict.data is None:
        return None
    entries: list[str] = []
    digests = verdict.data.rcdi or {}
    for role, purpose in (("jcard", "jcard"), ("icon", "icon")):
        reference = verdict.reference(role)
        if reference is None:
            continue
        entry = f"<{reference.uri}>;purpose={purpose}"
        digest = digests.get(reference.pointer)
        if digest is not None:
            entry += f";integrity={_quoted(digest)}"
        entries.append(entry + ";verified=true")
    if not entries:
        return None
    if verdict.crn is not None:
        entries[0] += f";call-reason={_quoted(verdict.crn)}"
    return ", ".join(entries)
