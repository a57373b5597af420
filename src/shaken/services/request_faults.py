"""When a verification result is the request's fault rather than a verdict on the call.

The verification service answers every Identity value with a result; some results say the
value given was not an Identity header value at all. A REST schema may report those as a bad
request parameter instead of a verification outcome (ATIS-1000082 error SVC4005): which
results that is, is this module's rule; how the error is spelled stays the REST adapter's.
"""

from __future__ import annotations

from dataclasses import dataclass

from shaken.core.reasons import Reason
from shaken.core.result import VerificationResult

__all__ = ["RequestFault", "request_fault"]


@dataclass(frozen=True, slots=True)
class RequestFault:
    """The request parameter at fault, and what is wrong with it."""

    parameter: str
    detail: str


_NOT_AN_IDENTITY = RequestFault("identity", "not an Identity header value")


def request_fault(result: VerificationResult) -> RequestFault | None:
    """What the request got wrong when ``result`` says so (ATIS-1000082 E2), else None."""
    if result.reason is Reason.INVALID_HEADER:
        return _NOT_AN_IDENTITY
    return None
