"""One exception tree for the whole library.

Two kinds of trouble are kept apart (docs/architecture.md section 2, principle 3):

* :class:`VerificationFailure` and its subclasses: the *peer's* data is bad. Each carries the
  :class:`~shaken.core.reasons.Reason` it stands for, a human sentence, and structured fields
  (url, depth, subject, iat, now, max_age, ...). ``verify`` turns them into a result; they never
  escape the public verification API.
* :class:`ConfigurationError`, :class:`SigningError`, :class:`CertificateError` raised to a
  caller: the *caller's* mistake or an impossible request. These are raised, never hidden in a
  result.
"""

from __future__ import annotations

from typing import Any

from shaken.core.reasons import REASONS, Reason, ReasonInfo


class ShakenError(Exception):
    """Root of every exception this library raises on purpose."""


class ConfigurationError(ShakenError, ValueError):
    """A caller passed something unusable: a naive datetime, an empty trust store, a bad option."""


class SigningError(ShakenError):
    """We cannot produce a PASSporT as asked (bad claims, wrong key type, no authority)."""


class CertificateError(ShakenError):
    """A certificate or TNAuthList cannot be read. Raised by the certificate toolkit."""


class TNAuthListError(CertificateError):
    """A TNAuthList extension value is not valid DER for RFC 8226 ``TNAuthorizationList``."""


class AcquisitionError(ShakenError):
    """Obtaining, renewing or switching a signing certificate failed.

    The message is the operator's: it names the step, the server and, for ACME, the problem
    document type (``urn:ietf:params:acme:error:...``). It never holds a password or a token.
    """


class VerificationFailure(ShakenError):
    """The peer's request or token fails a check; names the :class:`Reason`.

    ``fields`` holds structured context so the message is built from data and tools can read
    it without parsing text.
    """

    def __init__(self, reason: Reason, detail: str, **fields: Any) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.fields: dict[str, Any] = fields

    @property
    def info(self) -> ReasonInfo:
        return REASONS[self.reason]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason.value!r}, {self.detail!r})"


class IdentityHeaderError(VerificationFailure):
    """The Identity header value does not parse or lacks a required parameter."""


class PassportError(VerificationFailure):
    """The PASSporT (JWS segments, header or claims) is malformed or unsupported."""


class StaleError(VerificationFailure):
    """``iat`` or the Date header is outside the freshness window."""


class IdentityMismatch(VerificationFailure):
    """orig/dest do not match the SIP request."""


class X5uRejected(VerificationFailure):
    """The x5u URL fails the URL policy; nothing was fetched."""


class CertificateFetchError(VerificationFailure):
    """The certificate could not be obtained."""


class ChainError(VerificationFailure):
    """The certificate chain does not validate (untrusted, expired, revoked, profile, scope)."""


class SignatureInvalid(VerificationFailure):
    """The ES256 signature does not verify over the received segments."""
