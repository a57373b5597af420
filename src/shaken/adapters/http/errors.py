"""The REST API's errors: ATIS-1000082's SVC and POL codes, and this server's own in that shape.

An :class:`ApiError` is an HTTP 4xx/5xx answer (a caller's mistake or a policy refusal); a
verification failure is never one (it is a result, answered 200). The body depends on the
request's schema: ATIS-1000082's ``requestError`` with a ``serviceException`` or
``policyException``, or the 3GPP TS 24.229 Ms ``{"error": "..."}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["ATIS", "AUTO", "ERRORS", "THREE_GPP", "ApiError", "ErrorSpec", "dumps"]

ATIS = "atis"
THREE_GPP = "3gpp"
AUTO = "auto"


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """One API error: its HTTP status and its text with ``%1``, ``%2`` placeholders."""

    status: int
    text: str


#: ATIS-1000082 errors (the first ten, with ATIS-1000082's texts), then the
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
            return dumps({"error": self.text()})
        kind = "policyException" if self.message_id.startswith("POL") else "serviceException"
        inner: dict[str, Any] = {
            "messageId": self.message_id,
            "text": ERRORS[self.message_id].text,
        }
        if self.variables:
            inner["variables"] = list(self.variables)
        return dumps({"requestError": {kind: inner}})

    def __str__(self) -> str:
        return f"{self.message_id}: {self.text()}"


def dumps(value: Any) -> bytes:
    """Compact ASCII JSON, the form of every body this server sends."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")
