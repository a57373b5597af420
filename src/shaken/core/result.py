"""The frozen outputs of verification, kept apart so policy and verify do not import each other."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from shaken.core.branding import RcdVerdict
from shaken.core.fastinit import positional_constructor
from shaken.core.reasons import REASONS, Reason, ReasonInfo, Verstat

__all__ = [
    "Check",
    "CheckTrace",
    "HeaderTrace",
    "Outcome",
    "VerificationResult",
    "make_verification_result",
]


class Outcome(enum.StrEnum):
    """What verification found, before any policy (docs/architecture.md section 5)."""

    VERIFIED = "verified"
    MISSING = "missing"
    FAILED = "failed"
    NOT_CHECKED = "not_checked"


class Check(NamedTuple):
    """One check the pipeline ran, in order. ``header`` is the Identity header index.

    A NamedTuple rather than a frozen dataclass: verifiers make these on every call, and a
    tuple is built in C.
    """

    name: str
    passed: bool
    detail: str = ""
    header: int | None = None

    def describe(self) -> str:
        where = f"[{self.header}] " if self.header is not None else ""
        mark = "ok  " if self.passed else "FAIL"
        return f"{mark} {where}{self.name}" + (f": {self.detail}" if self.detail else "")


class HeaderTrace(NamedTuple):
    """How far one Identity header got: ``stage`` checks of ``names`` passed, in order.

    ``details`` holds the few notes worth showing, by stage index; ``failure`` is the detail of
    the check at ``stage`` when it failed. Kept this small because a verifier builds one per
    header per call; :class:`Check` records are made only when someone reads them.
    """

    header: int
    stage: int
    names: tuple[str, ...]
    details: Mapping[int, str]
    failure: str | None

    def checks(self) -> list[Check]:
        out = [
            Check(
                name=self.names[i], passed=True, detail=self.details.get(i, ""), header=self.header
            )
            for i in range(self.stage)
        ]
        if self.failure is not None:
            out.append(
                Check(
                    name=self.names[self.stage],
                    passed=False,
                    detail=self.failure,
                    header=self.header,
                )
            )
        return out


class CheckTrace(NamedTuple):
    """Every check a verification ran: request-wide ones, then each header's, then the tail."""

    request: tuple[Check, ...] = ()
    headers: tuple[HeaderTrace, ...] = ()
    tail: tuple[Check, ...] = ()

    def expand(self) -> tuple[Check, ...]:
        out = list(self.request)
        for header in self.headers:
            out.extend(header.checks())
        out.extend(self.tail)
        return tuple(out)


_NO_TRACE = CheckTrace()


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationResult:
    """Everything a verifier learned about one request.

    ``reason`` is ``None`` exactly when the request verified. ``orig``/``dest`` are the
    PASSporT's identities when it could be decoded, else the ones taken from SIP.
    """

    verstat: Verstat
    outcome: Outcome
    reason: Reason | None = None
    detail: str = ""
    attest: str | None = None
    orig: str | None = None
    dest: tuple[str, ...] = ()
    origid: str | None = None
    iat: int | None = None
    ppt: str | None = None
    spc: str | None = None
    #: The serial number (hex) of the certificate that signed, for the call record.
    cert_serial: str | None = None
    x5u: str | None = None
    certificate_subject: str | None = None
    identity_index: int | None = None
    diversions: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()
    #: The Rich Call Data verdict (RFC 9795), separate from the SHAKEN one: None when no
    #: branding step ran (verification failed, or the profile does not check branding).
    rcd: RcdVerdict | None = None
    trace: CheckTrace = field(default=_NO_TRACE, repr=False, compare=False)

    @property
    def checks(self) -> tuple[Check, ...]:
        """The checks run, in order (built from :attr:`trace` on each access)."""
        return self.trace.expand()

    @property
    def verified(self) -> bool:
        return self.reason is None and self.outcome is Outcome.VERIFIED

    @property
    def reason_info(self) -> ReasonInfo | None:
        return None if self.reason is None else REASONS[self.reason]

    @property
    def sip_code(self) -> int | None:
        return None if self.reason is None else REASONS[self.reason].sip_code

    @property
    def phrase(self) -> str | None:
        return None if self.reason is None else REASONS[self.reason].phrase

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the CLI's ``--json`` and the call log use it)."""
        info = self.reason_info
        return {
            "verified": self.verified,
            "outcome": self.outcome.value,
            "verstat": self.verstat.value,
            "reason": None if self.reason is None else self.reason.value,
            "sip_code": None if info is None else info.sip_code,
            "phrase": None if info is None else info.phrase,
            "detail": self.detail,
            "attest": self.attest,
            "orig": self.orig,
            "dest": list(self.dest),
            "origid": self.origid,
            "iat": self.iat,
            "ppt": self.ppt,
            "spc": self.spc,
            "cert_serial": self.cert_serial,
            "x5u": self.x5u,
            "certificate_subject": self.certificate_subject,
            "identity_index": self.identity_index,
            "diversions": list(self.diversions),
            "findings": list(self.findings),
            "rcd": None if self.rcd is None else self.rcd.to_dict(),
            "checks": [
                {"name": c.name, "passed": c.passed, "detail": c.detail, "header": c.header}
                for c in self.trace.expand()
            ],
        }


#: :class:`VerificationResult` with every field positionally, in field order: the verifier's
#: hot paths build one per call (:mod:`shaken.core.fastinit` says why).
make_verification_result: Callable[..., VerificationResult] = positional_constructor(
    VerificationResult
)
