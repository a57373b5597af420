"""The fields of REST request bodies: strict JSON, and one check per kind of value.

Validation is strict because a verifier's input comes from the network: duplicate JSON member
names, NaN, wrong types and out-of-range values are API errors, never exceptions. The checks
here know nothing of the two schemas: a bad field raises :class:`FieldError` (the message id
and its variables), and the schema's parser turns it into the :class:`ApiError` of its schema,
once. Error texts name fields and problems rather than repeating the values a client sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from shaken.adapters.http.errors import ApiError
from shaken.core.tn import canonicalize_tn

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_IDENTITIES",
    "MAX_IDENTITY",
    "MAX_TEXT",
    "MAX_TNS",
    "TN_PATTERN",
    "FieldError",
    "bad",
    "decode_body",
    "identity_value",
    "is_tn_text",
    "need",
    "optional_text",
    "request_id",
    "time_value",
    "tn",
    "uri",
    "wrapped",
]

#: The largest request body read; a verification request is well under 10 KiB.
MAX_BODY_BYTES = 64 * 1024
MAX_IDENTITY = 8192
MAX_IDENTITIES = 8
MAX_TNS = 16
MAX_TEXT = 256

# A TN as SBCs send it: 3 to 15 of digits, '#' and '*' (E.164 has at most 15), an optional
# leading '+', visual separators between them.
TN_PATTERN = r"\+?[0-9#*](?:[().\- ]{0,3}[0-9#*]){2,14}"
_TN_TEXT = re.compile(TN_PATTERN)
_URI_TEXT = re.compile(r"(?:sips?|tel):[!#-;=?-~]{1,250}", re.IGNORECASE)
_TOKEN_TEXT = re.compile(r"[!-~]{1,128}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class FieldError(Exception):
    """A missing (SVC4001) or invalid (SVC4005) request field, before a schema is applied."""

    def __init__(self, message_id: str, *variables: str) -> None:
        super().__init__(message_id, *variables)
        self.message_id = message_id
        self.variables = variables

    def api_error(self, schema: str) -> ApiError:
        return ApiError(self.message_id, *self.variables, schema=schema)


def bad(name: str, problem: str) -> FieldError:
    return FieldError("SVC4005", name, problem)


def need(request: Mapping[str, Any], name: str) -> Any:
    value = request.get(name)
    if value is None:
        raise FieldError("SVC4001", name)
    return value


def wrapped(document: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The object under the body's one top-level member (``verificationRequest``...)."""
    request = need(document, name)
    if not isinstance(request, dict):
        raise bad(name, "expected a JSON object")
    return request


def is_tn_text(value: str) -> bool:
    return _TN_TEXT.fullmatch(value) is not None


def tn(value: Any, name: str) -> str:
    """A canonical TN (RFC 8224 section 8.3: separators and '+' removed), 3 to 15 long."""
    if type(value) is str and value.isdigit() and value.isascii() and 3 <= len(value) <= 15:
        return value  # already canonical: what nearly every client sends
    if not isinstance(value, str) or not _TN_TEXT.fullmatch(value):
        raise bad(name, "expected a telephone number of 3 to 15 digits")
    return canonicalize_tn(value)


def uri(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _URI_TEXT.fullmatch(value):
        raise bad(name, "expected a sip, sips or tel URI")
    return value


def time_value(value: Any, name: str) -> int:
    # JSON Schema counts 86400.0 as an integer, so an integral float is one here too; up to
    # 2**33 s (year 2242): anything larger is no time a SIP Date header could carry.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or not 1 <= value < 2**33:
        raise bad(name, "expected a positive integer (seconds since 1970)")
    return value


def identity_value(value: Any, name: str) -> str:
    # Printable ASCII (str.isprintable on ASCII is exactly [ -~]): no CR/LF or other control
    # characters that could smuggle a header line into a SIP message built from this value.
    if (
        not isinstance(value, str)
        or not value.isascii()
        or not value.isprintable()
        or len(value) > MAX_IDENTITY
        or not value.strip()
    ):
        raise bad(name, "expected an Identity header value (printable ASCII)")
    return value.strip()


def optional_text(request: Mapping[str, Any], name: str) -> str | None:
    value = request.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT or _CONTROL.search(value):
        raise bad(name, f"expected a string of at most {MAX_TEXT} characters")
    return value


def request_id(request: Mapping[str, Any]) -> str | None:
    value = request.get("requestId")
    if value is not None and (not isinstance(value, str) or not _TOKEN_TEXT.fullmatch(value)):
        raise bad("requestId", "expected 1 to 128 printable ASCII characters")
    return value


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
