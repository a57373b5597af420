"""A valid REST request, whichever schema it came in: what the app works with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shaken.core.context import SipContext, format_epoch_date, make_context

__all__ = ["SigningRequest", "VerificationRequest"]


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
        return make_context(  # SipContext's fields, in order
            self.identities,  # identity
            f"<tel:{self.orig_tn}>" if self.orig_tn else f"<{self.orig_uri}>",  # from_header
            (),  # pai
            f"<tel:{self.to_tn}>" if self.to_tn else f"<{self.to_uri}>",  # to
            self.request_uri,  # request_uri
            format_epoch_date(self.time),  # date
            None,  # call_id
        )


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
    #: Rich Call Data the client asks to sign (RFC 9795); the signer checks it is vetted.
    rcd: Mapping[str, Any] | None = None
    crn: str | None = None
